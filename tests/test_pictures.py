"""Pictures: rgb_array frames show the run (they change when agents move, not otherwise), the
human window draws without a display, movies come out with one picture per frame, and missing
matplotlib is a clear error."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import metropolis_env as me
from metropolis_env.cli import main as cli_main
from metropolis_env.movie import FrameRecorder, write_movie
from metropolis_env.pictures import frame_of


def grid(**kw):
    return me.make(me.open_grid(20, 12, blocked=[(9, y) for y in range(2, 10)]), agents=5, max_steps=10, **kw)


def test_rgb_array_frames_change_when_agents_move_and_only_then():
    env = grid(render_mode="rgb_array")
    env.reset(seed=0)
    first = env.render()
    assert first.dtype == np.uint8 and first.ndim == 3 and first.shape[2] == 3
    assert np.array_equal(env.render(), first)  # nothing happened: the same picture
    a = env.possible_agents[0]
    target = next(t for t in [(0, 0), (19, 11), (0, 11)] if t != env.positions[a])
    env.step({b: env.move_to(b, target) if b == a else 4 for b in env.ready_agents()})
    moved = env.render()
    assert moved.shape == first.shape and not np.array_equal(moved, first)


def test_frames_show_who_waits_for_whom():
    env = me.make("the_ville", agents=10, max_steps=20)
    env.reset(seed=0)
    for _ in range(40):  # leaders first: agents run ahead until laggards hold them back
        steps = env.steps
        cl = max(env.clusters(), key=lambda c: steps[c[0]])
        env.step({a: env.move_to(a, (72, 14)) for a in cl})
    frame = frame_of(env)
    names = env.possible_agents
    assert frame.steps.max() > frame.steps.min()
    assert frame.ready == {names.index(a) for a in env.ready_agents()}
    waiting = {names[k] for k, _, rule in frame.waits if rule == "blocked"}
    assert waiting and waiting == {a for a in names if any(r["rule"] == "blocked" for r in env.blocked_by(a))}


def test_human_mode_draws_in_a_window():
    import matplotlib

    matplotlib.use("Agg")  # no display in tests; the same calls open a window on a desktop
    env = grid(render_mode="human")
    env.reset(seed=1)
    assert env.render() is None
    env.step({a: 4 for a in env.ready_agents()})
    env.render()
    import matplotlib.pyplot as plt

    assert plt.fignum_exists("metropolis-env")
    env.close()
    assert not plt.fignum_exists("metropolis-env")


def test_recorded_run_becomes_a_gif_with_a_picture_per_frame(tmp_path):
    from PIL import Image

    env = grid()
    rec = FrameRecorder(env, every=2)
    env.reset(seed=2)
    while env.agents:
        env.step({a: 4 for a in env.ready_agents()})
    rec.stop()
    assert len(rec.frames) == 1 + 10 // 2
    path = write_movie(rec.pictures(), tmp_path / "run.gif")
    assert Image.open(path).n_frames == len(rec.frames)
    with pytest.raises(me.ConfigError, match=r"\.gif or \.mp4"):
        write_movie(rec.pictures(), tmp_path / "run.avi")


def test_pictures_become_an_mp4(tmp_path):
    import imageio.v2 as imageio

    env = grid(render_mode="rgb_array")
    env.reset(seed=3)
    pictures = [env.render()]
    while env.agents:
        env.step({a: env.move_to(a, (19, 0)) for a in env.ready_agents()})
        pictures.append(env.render())
    path = write_movie(pictures, tmp_path / "run.mp4", fps=4)
    assert sum(1 for _ in imageio.get_reader(path)) == len(pictures)


def test_replay_command_writes_a_movie(tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "village.gif"
    assert cli_main(["replay", "the_ville-morning", "--steps", "6", "--frames", "4", "--out", str(out)]) == 0
    assert "movie written" in capsys.readouterr().out
    assert Image.open(out).n_frames >= 4


def test_missing_matplotlib_is_a_clear_error(monkeypatch):
    env = grid(render_mode="rgb_array")
    env.reset(seed=0)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(me.ConfigError, match=r"pip install 'metropolis-env\[plot\]'"):
        env.render()


def test_bad_render_mode_is_a_config_error():
    with pytest.raises(me.ConfigError, match="render_mode"):
        grid(render_mode="video")
