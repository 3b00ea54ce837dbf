"""A checkpointed run for tests/test_checkpoint.py, importable by the resumed process.

    PYTHONPATH=tests python -c "import ckpt_job; ckpt_job.main()" RUN_DIR KILL_AFTER MODE
    # SIGKILLs itself after KILL_AFTER commits (imported, not run as __main__, so that the
    # pickled agents name this module)
"""

from __future__ import annotations

import functools
import os
import signal
import sys

import metropolis_env as me
from metropolis_env import navigation as nav
from metropolis_env.backends.echo import EchoBackend
from metropolis_env.runtime import Controller
from metropolis_env.runtime.checkpoint import Checkpointer

AGENTS, STEPS = 10, 40


class Walker:
    """Deterministic: walks to a tile chosen from its last LLM answer; remembers what it saw."""

    def __init__(self, env, name):
        self.env, self.name = env, name
        self.history: list[tuple[int, tuple[int, int], tuple[str, ...], str]] = []

    async def act(self, obs, ctx):
        a = await ctx.llm.complete(f"{self.name} at {tuple(obs['position'])} step {obs['step']}")
        b = await ctx.llm.complete(f"{self.name} heard {a.text}")
        target = [(60, 20), (72, 14), (30, 70), (100, 60)][len(b.text) % 4]
        seen = tuple(o["name"] for o in obs["perceived"])
        # state changes after the last await: the checkpoint contract
        self.history.append((obs["step"], tuple(int(v) for v in obs["position"]), seen, b.text))
        return dict(self.move(obs, target), utterance=b.text[:40])

    def move(self, obs, target) -> dict:
        return self.env.move_to(self.name, target)


class ObsWalker(Walker):
    """Walker that walks from the tile its observation gives, not the env's: under speculation a
    held step may run before the env has committed the agent's previous step (docs/SPECULATION.md)."""

    def move(self, obs, target) -> dict:
        here = tuple(int(v) for v in obs["position"])
        return nav.move_to(self.env.world, here, target, self.env.max_vel, f"{self.name} to {target}")


def backend_factory() -> EchoBackend:
    return EchoBackend(base_s=0.2, per_token_s=0.05)


def build(mode: str = "async"):
    env = me.make("the_ville", agents=AGENTS, max_steps=STEPS, seed=7)
    kind = ObsWalker if mode == "async+spec" else Walker
    return env, {a: kind(env, a) for a in env.possible_agents}


def controller(run_dir: str, on_commit=None, mode: str = "async") -> Controller:
    """mode: a controller mode, or "async+spec": async with speculation (depth 1: Walker reads
    its own tile from the env)."""
    env, agents = build(mode)
    ck = Checkpointer(run_dir, functools.partial(backend_factory), every=25)
    spec = mode == "async+spec"
    return Controller(env, agents, ck.build_backend(), "async" if spec else mode, seed=7, checkpoint=ck,
                      on_commit=on_commit, speculation=1 if spec else None)


def main() -> None:
    from metropolis_env import clock

    run_dir, kill_after, mode = sys.argv[-3], int(sys.argv[-2]), sys.argv[-1]
    commits = 0

    def maybe_die(agent, step, action):
        nonlocal commits
        commits += 1
        if commits == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    clock.run(controller(run_dir, maybe_die, mode).run(), virtual=True)


if __name__ == "__main__":
    main()
