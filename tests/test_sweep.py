"""`metropolis-env sweep`: the variants section (bound x rules) on a tiny grid."""

from __future__ import annotations

from dataclasses import replace

import metropolis_env.bench.sweep as sweep
from metropolis_env.bench.runner import BenchConfig, load_trace, run_bench


def test_variant_comparison_runs_every_variant_on_one_trace_and_reuses_sync_and_oracle(monkeypatch):
    monkeypatch.setattr(sweep, "BOUND_GRID", [("busy", 25, 8)])
    base = BenchConfig(steps=40, progress=False)
    # A grid result for the paper's variant at that point: it must be reused, not rerun.
    done = replace(base, window="busy", agents=25, gpus=8, modes=("sync", "async", "oracle"), lower_bounds=False)
    grid = run_bench(done, trace=load_trace(done))
    rows = sweep.run_bound_comparison(base, progress=False, done=[grid])
    assert len(rows) == 1 and set(rows[0]) == set(sweep.VARIANTS)
    assert rows[0][sweep.VARIANTS[0]] is grid
    for (bound, rules), r in rows[0].items():
        assert (r.config.bound, r.config.rules) == (bound, rules)
        # Every variant replays the same calls.
        assert r.runs["async"].llm_calls == grid.runs["sync"].llm_calls
    # The versioned rules wait for fewer agents than the paper's on the same trace.
    paper = rows[0]["box", "paper"].runs["async"].deps_per_agent_step
    assert rows[0]["map", "versioned"].runs["async"].deps_per_agent_step < paper
    text = sweep.render_bounds(rows)
    line = next(l for l in text.splitlines() if l.startswith("| busy | 25 | 8 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    speedups = cells[3].split(" / ")
    assert len(speedups) == len(sweep.VARIANTS) and cells[4] == "1.88x"  # the paper's number beside ours
    sync_t = grid.runs["sync"].completion_time_s
    for v, shown in zip(sweep.VARIANTS, speedups):
        assert shown == f"{sync_t / rows[0][v].runs['async'].completion_time_s:.2f}x"


def test_sweep_keeps_the_hand_written_notes_of_the_report(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "QUICK_GRID", [("busy", 25, 8)])
    out = tmp_path / "RESULTS.md"
    out.write_text("# old generated table\n| stale |\n\n" + sweep.NOTES_MARKER + "\n## Reading the gaps\nkept text\n")
    sweep.run_sweep(str(out), quick=True, progress=False, base=BenchConfig(steps=20, progress=False))
    text = out.read_text()
    assert "| stale |" not in text and "## Headline numbers" in text
    assert text.endswith(sweep.NOTES_MARKER + "\n## Reading the gaps\nkept text\n")
    assert text.count(sweep.NOTES_MARKER) == 1
