"""Checkpoint/resume: a run killed with SIGKILL and resumed equals an uninterrupted run."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from metropolis_env import clock
from metropolis_env.runtime.checkpoint import CHECKPOINT, CheckpointError, load

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
import ckpt_job  # noqa: E402


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    return env


def _final(run_dir: Path):
    state = load(run_dir)
    env = state["env"]
    return env.positions, env.steps, {a: ag.history for a, ag in state["agents"].items()}, state["committed"]


@pytest.mark.parametrize("mode", ["async", "sync", "async+spec"])
def test_kill_9_and_resume_equals_uninterrupted(tmp_path, mode):
    ref_dir = tmp_path / "ref"
    if mode == "async+spec":  # held steps are never saved; the resumed run equals the uninterrupted sync run
        env, agents = ckpt_job.build(mode)  # the same agents
        ck = ckpt_job.Checkpointer(str(ref_dir), ckpt_job.backend_factory, every=25)
        ref = ckpt_job.Controller(env, agents, ck.build_backend(), "sync", seed=7, checkpoint=ck)
    else:
        ref = ckpt_job.controller(str(ref_dir), mode=mode)
    clock.run(ref.run(), virtual=True)
    expected = _final(ref_dir)

    run_dir = tmp_path / "run"
    killed = subprocess.run([sys.executable, "-c", "import ckpt_job; ckpt_job.main()", str(run_dir), "137", mode],
                            env=_env(), cwd=TESTS, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    state = load(run_dir)
    done_at_kill = sum(state["committed"].values())
    assert 0 < done_at_kill < ckpt_job.AGENTS * ckpt_job.STEPS  # really mid-run
    calls_before = sum(1 for _ in open(run_dir / "calls.jsonl"))

    resumed = subprocess.run([sys.executable, "-m", "metropolis_env.cli", "resume", str(run_dir), "--no-progress"],
                             env=_env(), cwd=TESTS, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    got = _final(run_dir)
    assert got == expected
    assert got[3] == {a: ckpt_job.STEPS for a in got[3]}
    # calls made before the kill were served from the cache, not made again: every call of the
    # run is recorded exactly once (10 agents x 40 steps x 2 calls); with speculation, calls of
    # held steps are recorded too (a discarded one's key is recorded again by the real call)
    lines = [ln for ln in open(run_dir / "calls.jsonl") if ln.strip()]
    assert calls_before > 0
    keys = {tuple(json.loads(ln)[k] for k in ("agent", "step", "index")) for ln in lines}
    assert len(keys) == ckpt_job.AGENTS * ckpt_job.STEPS * 2
    if mode != "async+spec":
        assert len(lines) == len(keys)


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load(tmp_path)


def test_checkpoint_is_replaced_atomically(tmp_path):
    clock.run(ckpt_job.controller(str(tmp_path)).run(), virtual=True)
    names = os.listdir(tmp_path)
    assert CHECKPOINT in names
    assert not [n for n in names if n.startswith(".checkpoint-")]  # no temporary left behind
    with open(tmp_path / CHECKPOINT, "rb") as f:
        assert pickle.load(f)["committed"] == {a: ckpt_job.STEPS for a in load(tmp_path)["committed"]}


def test_a_resumed_run_keeps_its_ready_order_and_cap(tmp_path, monkeypatch):
    from metropolis_env.runtime import resume as resume_mod

    env, agents = ckpt_job.build()
    ck = ckpt_job.Checkpointer(str(tmp_path), ckpt_job.backend_factory, every=25)
    c = ckpt_job.Controller(env, agents, ck.build_backend(), "async", seed=7, checkpoint=ck, max_clusters=3,
                            ready_order="arrival")
    clock.run(c.run(), virtual=True)
    state = load(tmp_path)
    assert (state["ready_order"], state["max_clusters"]) == ("arrival", 3)
    built = []
    real = resume_mod.Controller
    monkeypatch.setattr(resume_mod, "Controller", lambda *a, **kw: built.append(real(*a, **kw)) or built[-1])
    resume_mod.resume(tmp_path)
    assert (built[0].policy.ready.order, built[0].policy.max_inflight) == ("arrival", 3)
