"""`metropolis-env sweep`: the variants section (bound x rules x lookahead) and our best
settings beside the paper's, on a tiny grid."""

from __future__ import annotations

import itertools
import json

import pytest

import metropolis_env.bench.sweep as sweep
from metropolis_env.bench.runner import BenchConfig, BenchResult, load_trace, run_bench
from metropolis_env.runtime.metrics import RunMetrics


def test_variant_comparison_runs_every_variant_on_one_trace_and_reuses_sync_and_oracle(monkeypatch):
    monkeypatch.setattr(sweep, "BOUND_GRID", [("busy", 25, 8)])
    base = BenchConfig.of(steps=40, progress=False)
    # A grid result for the paper's variant at that point: it must be reused, not rerun.
    done = base.replace(window="busy", agents=25, gpus=8, modes=("sync", "async", "oracle"), lower_bounds=False)
    grid = run_bench(done, trace=load_trace(done))
    rows = sweep.run_bound_comparison(base, progress=False, done=[grid])
    assert len(rows) == 1 and set(rows[0]) == set(sweep.VARIANTS)
    assert rows[0][sweep.VARIANTS[0]] is grid
    for (bound, rules, lookahead), r in rows[0].items():
        assert (r.config.tracking.bound, r.config.tracking.rules, r.config.tracking.lookahead) == (bound, rules, lookahead)
        # Every variant replays the same calls.
        assert r.runs["async"].llm_calls == grid.runs["sync"].llm_calls
    # The versioned rules wait for fewer agents than the paper's on the same trace.
    paper = rows[0]["box", "paper", "off"].runs["async"].deps_per_agent_step
    assert rows[0]["map", "versioned", "off"].runs["async"].deps_per_agent_step < paper
    assert sweep.VARIANTS[-1] == ("map", "versioned", "persona")
    assert rows[0][sweep.VARIANTS[-1]].runs["async"].deps_per_agent_step < paper
    text = sweep.render_bounds(rows)
    line = next(l for l in text.splitlines() if l.startswith("| busy | 25 | 8 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    speedups = cells[3].split(" / ")
    assert len(speedups) == len(sweep.VARIANTS) and cells[4] == "1.88x"  # the paper's number beside ours
    shown = [float(x.rstrip("x")) for x in speedups]
    # The paper's variant shows the grid run's own speedup (BenchResult.rows: another code path).
    own = next(r for r in grid.rows() if r["mode"] == "async")["speedup_vs_sync"]
    assert shown[0] == pytest.approx(own, abs=0.005)
    # Each variant in its own column: a faster async run never shows a smaller speedup.
    times = [rows[0][v].runs["async"].completion_time_s for v in sweep.VARIANTS]
    assert len(set(times)) > 1  # the variants differ, so the order is a real check
    for i, j in itertools.permutations(range(len(times)), 2):
        if times[i] < times[j]:
            assert shown[i] >= shown[j], (sweep.VARIANTS[i], sweep.VARIANTS[j])


def test_sweep_keeps_the_hand_written_notes_of_the_report(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "QUICK_GRID", [("busy", 25, 8)])
    out = tmp_path / "RESULTS.md"
    out.write_text("# old generated table\n| stale |\n\n" + sweep.NOTES_MARKER + "\n## Reading the gaps\nkept text\n")
    sweep.run_sweep(str(out), quick=True, progress=False, base=BenchConfig.of(steps=20, progress=False),
                                                                              json_path=str(tmp_path / "r.json"))
    text = out.read_text()
    assert "| stale |" not in text and "## Headline numbers" in text
    assert text.endswith(sweep.NOTES_MARKER + "\n## Reading the gaps\nkept text\n")
    assert text.count(sweep.NOTES_MARKER) == 1
    # the grid point ran with the paper's settings and async again with our best, on one trace
    runs = json.loads((tmp_path / "r.json").read_text())
    assert [(r["config"]["rules"], r["config"]["lookahead"]) for r in runs] == [("paper", "off"), ("versioned", "persona")]
    paper, best = ({m["mode"]: m for m in r["runs"]} for r in runs)
    assert best["async"]["llm_calls"] == paper["sync"]["llm_calls"]
    row = next(l for l in text.splitlines() if l.startswith("| busy | 25 | 8 |") and "x, " in l)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[6] == f"{best['async']['completion_time_s']:.0f}"
    ratio = paper["sync"]["completion_time_s"] / best["async"]["completion_time_s"]
    assert cells[8] == f"{paper['async']['speedup_vs_sync']:.2f}x, {ratio:.2f}x"
    # the speculation column: async+spec ran at the point with the paper's settings, not with ours
    assert "async+spec" in paper and "async+spec" not in best
    spec = paper["async+spec"]
    assert spec["llm_calls"] == paper["sync"]["llm_calls"] and spec["wasted_call_share"] > 0
    row = next(l for l in text.split("## Speculation")[1].splitlines() if l.startswith("| busy | 25 | 8 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[4] == f"{spec['completion_time_s']:.0f}"
    assert cells[6] == f"{paper['async']['speedup_vs_sync']:.2f}x, {spec['speedup_vs_sync']:.2f}x"
    assert cells[7].endswith(f"{spec['pct_of_oracle']:.1f}%") and cells[8] == f"{spec['wasted_call_share']:.3f}"
    assert cells[9] == f"{spec['spec_gpu_share']:.3f} ({spec['wasted_gpu_share']:.3f})"
    faster = spec["completion_time_s"] <= paper["async"]["completion_time_s"]
    assert ("at 1 of 1 points." in text) == faster and ("slower at: busy 25 agents 8 GPUs" in text) != faster


def test_speculation_section_names_every_point_where_speculation_was_slower():
    def result(window, agents, gpus, t_async, t_spec):
        cfg = BenchConfig.of(window=window, agents=agents, gpus=gpus, speculate=4)
        runs = {m: RunMetrics(mode=m, completion_time_s=t, wasted_call_share=0.1 if m == "async+spec" else None)
                for m, t in (("sync", 200.0), ("async", t_async), ("oracle", 90.0), ("async+spec", t_spec))}
        return BenchResult(cfg, runs)

    lines = sweep.render_speculation([result("busy", 25, 8, 100.0, 95.0), result("busy", 1000, 8, 100.0, 100.0),
                                      result("quiet", 500, 1, 100.0, 102.5)])
    assert lines[1] == "## Speculation (async+spec, depth 4)"
    assert lines[-1] == ("Speculation at least as fast as async at 2 of 3 points; slower at: "
                         "quiet 500 agents 1 GPUs (+2.50%).")
    row = next(l for l in lines if l.startswith("| busy | 25 | 8 |"))
    # spec/async time, both speedups over sync, both shares of oracle; no GPU shares measured: '-'
    assert "| 0.950 | 2.00x, 2.11x | 90.0%, 94.7% | 0.100 | - (-) |" in row
