"""Every example and benchmark script runs, as a user would start it, with tiny sizes (their
numbers are checked elsewhere; here: they start, finish and print their report)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from extras import import_or_skip

ROOT = Path(__file__).resolve().parents[1]

#: script -> (tiny arguments, a line its report must print)
SCRIPTS = {
    "examples/llm_village.py": (["--agents", "4", "--steps", "5"], "malformed answers"),
    "examples/replay_real_run.py": (["--steps", "30", "--perception", "box"], "| box | 750 |"),
    "examples/evaluate.py": (["--seeds", "1", "--agents", "4", "--steps", "10", "--tasks", "goto"],
                             "returns in sync and async: equal on every seed"),
    "benchmarks/bench_bounds.py": (["--steps", "30", "--no-precompute", "--horizons", "8"],
                                   "lockstep dependencies per agent-step"),
    "benchmarks/bench_env.py": (["--agents", "100", "--steps", "3"], "| 100 | async |"),
    "benchmarks/bench_lookahead.py": (["--points", "busy:25:8", "--steps", "20"], "| busy 25@8 |"),
    "benchmarks/ray_actors.py": (["--agents", "4", "--steps", "2", "--actors", "2", "--num-cpus", "2",
                                  "--latency", "0.001"], "ray x2"),
    "benchmarks/fit_simulator.py": ([], "per-iteration cost"),
    "benchmarks/validate_simulator.py": (["--closed-loop"], "| 64 |"),
    # the real-GPU check's report, from the results committed with it (build_model.py needs torch
    # and a GPU: benchmarks/gpu/README.md)
    "benchmarks/gpu/report.py": ([], "| slice | ratio | real | simulated | real vs simulated |"),
}


def test_every_script_is_listed():
    on_disk = {str(p.relative_to(ROOT)) for d in ("examples", "benchmarks") for p in (ROOT / d).glob("*.py")}
    # scripted_village.py has its own tests (test_examples.py)
    assert on_disk - {"examples/scripted_village.py"} == {s for s in SCRIPTS if s.count("/") == 1}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_script_runs_with_tiny_arguments(script):
    if script == "benchmarks/ray_actors.py":
        import_or_skip("ray", "Ray is an optional extra: pip install 'metropolis-env[ray]'")
    args, expected = SCRIPTS[script]
    done = subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert expected in done.stdout, done.stdout[-3000:]
    assert "\x1b" not in done.stdout + done.stderr  # no progress-bar escape codes in a piped run


def test_gpu_report_joins_a_slice_run_case_by_case_and_replays_its_twin(tmp_path):
    # run.sh's longer slices write one JSON per case: sync in two halves, async, async+spec.
    # Stand-ins made on the simulated twin itself must come back from the report with 0 % between
    # "real" and simulated (the halves of sync add up to the whole slice exactly); an incomplete
    # slice (one half of sync) is left out with a note.
    base = [sys.executable, "-m", "metropolis_env.cli", "bench", "--workload", "genagents-day", "--window", "busy",
            "--gpu", "h200-transformers-serve", "--no-bounds", "--no-progress"]
    cases = {"long25-sync-a": ["--agents", "25", "--steps", "30", "--modes", "sync"],
             "long25-sync-b": ["--agents", "25", "--first-step", "30", "--steps", "30", "--modes", "sync"],
             "long25-async": ["--agents", "25", "--steps", "60", "--modes", "async"],
             "long25-spec": ["--agents", "25", "--steps", "60", "--modes", "async+spec", "--speculate"],
             "long100-sync-b": ["--agents", "100", "--first-step", "10", "--steps", "10", "--modes", "sync"]}
    for name, args in cases.items():
        done = subprocess.run(base + args + ["--json", str(tmp_path / f"{name}.json")], cwd=ROOT,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu/report.py"), str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [ln for ln in done.stdout.splitlines() if ln.startswith("| 25 agents, 60 steps")]
    assert [ln.split(" | ")[1] for ln in rows[:3]] == ["sync", "async", "async+spec"]
    for row in rows[:3]:
        real, sim = row.split(" | ")[2:4]
        assert real == sim, row
    assert [ln.split(" | ")[1] for ln in rows[3:]] == ["async/sync", "async+spec/sync"]
    assert all(ln.endswith("| +0% |") for ln in rows[3:]), rows
    assert "100 agents" not in done.stdout
    assert "long100 sync: the results cover steps [(10, 20)] of 0..19" in done.stderr
