"""Runs as animated pictures: frames from a run, written as a GIF (Pillow) or MP4 (imageio).

    from metropolis_env.movie import FrameRecorder, write_movie
    rec = FrameRecorder(env)                  # a frame after reset and after every step()
    ...drive env...
    write_movie(rec.pictures(), "run.gif")

`replay_movie(...)` (the `metropolis-env replay RUN --out run.gif` command) replays a workload
trace through the runtime on the embedded simulated server and keeps a frame every few commits,
titled with the run's virtual time: one sees agents drift apart in steps, wait and catch up.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np

from .errors import ConfigError
from .pictures import Frame, draw, frame_of

if TYPE_CHECKING:  # pragma: no cover
    from .env import AsyncParallelEnv

MOVIE_SUFFIXES = (".gif", ".mp4")


def write_movie(pictures: Iterable[np.ndarray], path: str | Path, fps: float = 8.0) -> Path:
    """Write uint8 (H, W, 3) pictures, all one size, as an animated GIF or an MP4 (by suffix)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MOVIE_SUFFIXES:
        raise ConfigError(f"movie {path}: the name must end in {' or '.join(MOVIE_SUFFIXES)}")
    pictures = list(pictures)
    if not pictures:
        raise ConfigError("write_movie got no pictures")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gif":
        from PIL import Image  # Pillow comes with matplotlib

        images = [Image.fromarray(p) for p in pictures]
        images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    else:
        try:
            import imageio.v2 as imageio
        except ImportError:
            raise ConfigError("MP4 needs imageio with ffmpeg: pip install 'metropolis-env[pictures]' "
                              "(or write a .gif)") from None
        try:
            imageio.mimwrite(path, pictures, fps=fps)
        except (ImportError, ValueError, RuntimeError) as e:
            raise ConfigError(f"writing {path} failed ({e}); pip install imageio-ffmpeg, or write a .gif") from None
    return path


class FrameRecorder:
    """Takes a `Frame` of `env` after `reset()` and after every `step()` (it wraps both methods
    on this env object; `stop()` unwraps them). `every`: keep one frame in `every` calls."""

    def __init__(self, env: "AsyncParallelEnv", every: int = 1):
        if every < 1:
            raise ConfigError(f"every must be >= 1, got {every}")
        self.env = env
        self.every = every
        self.frames: list[Frame] = []
        self._calls = 0
        reset, step = env.reset, env.step

        def recorded_reset(*args, **kwargs):
            out = reset(*args, **kwargs)
            self._calls = 0
            self.frames.append(frame_of(env))
            return out

        def recorded_step(actions):
            out = step(actions)
            self._calls += 1
            if self._calls % self.every == 0:
                self.frames.append(frame_of(env))
            return out

        env.reset, env.step = recorded_reset, recorded_step

    def stop(self) -> None:
        for name in ("reset", "step"):
            self.env.__dict__.pop(name, None)

    def pictures(self) -> list[np.ndarray]:
        return [draw(f, self.env.world) for f in self.frames]


def replay_movie(run: str, out: str | Path, *, agents: int = 25, steps: int = 60, mode: str = "async",
                 window: str = "full", frames: int = 80, gpus: int = 1, fps: float = 8.0, seed: int = 0) -> Path:
    """Replay `run` (a workload name, e.g. "the_ville-morning", or a saved trace file) for its first
    `steps` steps in `mode` on the simulated server, and write about `frames` pictures to `out`."""
    from .backends.simulated import make_backend
    from .bench.replay import trace_agents, trace_env
    from .runtime import Controller
    from . import clock
    from .workloads import Trace, load_workload

    if frames < 1 or steps < 1:
        raise ConfigError(f"frames and steps must be >= 1, got frames={frames}, steps={steps}")
    trace = Trace.load(run) if Path(run).is_file() else load_workload(run, agents=agents, seed=seed, window=window)
    if steps < trace.n_steps:
        trace = trace.window(0, steps)
    env = trace_env(trace, seed=seed)
    every = max(1, len(trace.agents) * trace.n_steps // frames)
    kept: list[Frame] = []
    commits = 0

    def on_commit(agent: str, step: int, action) -> None:
        nonlocal commits
        commits += 1
        if commits % every == 0:
            t = asyncio.get_running_loop().time()
            kept.append(frame_of(env, title=f"{run} {mode}, t = {t:.1f} s"))

    controller = Controller(env, trace_agents(trace), make_backend(gpus=gpus), mode, seed=seed, on_commit=on_commit)
    metrics = clock.run(controller.run(), virtual=True)
    kept.append(frame_of(env, title=f"{run} {mode}, done at t = {metrics.completion_time_s:.1f} s"))
    return write_movie([draw(f, env.world) for f in kept], out, fps=fps)
