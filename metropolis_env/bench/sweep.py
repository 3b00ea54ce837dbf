"""`metropolis-env sweep`: the paper's experiment grid, written to docs/RESULTS.md beside its numbers."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import fields, replace
from pathlib import Path

from .config import BEST, SCALE, SPEC_MODE, SPECULATION_DEPTH, BenchConfig
from .runner import BenchResult, load_trace, run_bench

#: The paper's headline numbers (docs/PAPER.md; Llama-3-8B on NVIDIA L4).
#: key: (window, agents, gpus) -> {"vs_single", "vs_sync", "pct_oracle", "par_async", "par_sync"}
PAPER = {
    ("full", 25, 1): {"vs_single": 2.38, "vs_sync": 1.44, "pct_oracle": 82.9},
    ("full", 25, 8): {"vs_single": 3.25, "vs_sync": 1.67, "pct_oracle": 74.7, "par_async": 3.46, "par_sync": 1.94},
    ("busy", 25, 8): {"vs_single": 3.37, "vs_sync": 1.88, "pct_oracle": 53.1, "par_async": 3.74, "par_sync": 1.89},
    ("busy", 500, 8): {"vs_single": 19.5, "vs_sync": 4.15, "par_async": 50.9},
    ("busy", 1000, 8): {"vs_sync": 3.94, "pct_oracle": 97.0},
    ("busy", 100, 1): {"vs_sync": 1.87, "pct_oracle": 90.9},
    ("busy", 500, 1): {"pct_oracle": 100.0},
    ("busy", 1000, 1): {"vs_sync": 1.60},
    ("quiet", 25, 8): {"vs_sync": 1.28, "par_async": 2.80, "par_sync": 2.25},
    ("quiet", 500, 8): {"vs_sync": 2.79},
}
#: Priority scheduling, busy hour, 500 agents, L4: completion time (s), (gpus, priority) -> ours/oracle.
PAPER_PRIORITY = {
    (4, True): (8611, 8392), (8, True): (6148, 5683),
    (4, False): (8942, 8484), (8, False): (7114, 5689),
}

FULL_GRID = [(w, n, g) for w in ("busy", "quiet") for n in (25, 100, 500, 1000) for g in (1, 2, 4, 8)]
FULL_GRID += [("full", 25, 1), ("full", 25, 8)]
QUICK_GRID = [("busy", 25, 1), ("busy", 25, 8), ("quiet", 25, 8), ("busy", 100, 8)]


#: Beyond the paper: dependency tracking variants, (bound, rules, lookahead); the first is the
#: paper's, the last our best (BEST, `bench --best`).
VARIANTS = (("box", "paper", "off"), ("map", "paper", "off"), ("box", "versioned", "off"),
            ("map", "versioned", "off"), (BEST.bound, BEST.rules, BEST.lookahead))
#: The points compared across VARIANTS: the paper's headline points, (window, agents, gpus).
BOUND_GRID = [("full", 25, 1), ("full", 25, 8), ("busy", 25, 8), ("busy", 100, 1), ("busy", 100, 8),
              ("busy", 500, 8), ("busy", 1000, 8), ("quiet", 25, 8), ("quiet", 100, 8), ("quiet", 500, 8)]
SECTIONS = ("grid", "priority", "bounds")


def _variant(cfg: BenchConfig) -> tuple[str, str, str]:
    return cfg.tracking.bound, cfg.tracking.rules, cfg.tracking.lookahead


def _point(cfg: BenchConfig) -> tuple[str, int, int]:
    return cfg.trace.window, cfg.trace.agents, cfg.llm.gpus


def run_bound_comparison(base: BenchConfig, progress: bool = True,
                         done: list[BenchResult] = ()) -> list[dict[tuple[str, str, str], BenchResult]]:
    """For each point of BOUND_GRID, {variant: result} on the same trace.

    sync and oracle do not depend on the tracker, so they run once per point (with the paper's
    variant, or taken from `done`, the grid's results) and the other variants run async only
    (or are taken from `done` too).
    """
    reuse = {(_point(r.config), _variant(r.config)): r for r in done if r.config.llm.policy == base.llm.policy}
    out = []
    for window, agents, gpus in BOUND_GRID:
        cfg = base.replace(window=window, agents=agents, gpus=gpus, modes=("sync", "async", "oracle"),
                           lower_bounds=False, progress=progress)
        trace = None
        row = {}
        for variant in VARIANTS:
            got = reuse.get(((window, agents, gpus), variant))
            if got is not None and (variant != VARIANTS[0] or {"sync", "async", "oracle"} <= set(got.runs)):
                row[variant] = got
                continue
            trace = trace if trace is not None else load_trace(cfg)
            bound, rules, lookahead = variant
            modes = cfg.modes if variant == VARIANTS[0] else ("async",)
            row[variant] = run_bench(cfg.replace(bound=bound, rules=rules, lookahead=lookahead, modes=modes),
                                     trace=trace)
        out.append(row)
        print(f"[sweep] variants {window} {agents} agents {gpus} GPUs: async/sync " + ", ".join(
            f"{'+'.join(v)} {_vs(row, v, 'sync'):.2f}x" for v in VARIANTS), flush=True)
    return out


def _vs(row: dict, variant: tuple[str, str, str], base_mode: str) -> float:
    """Completion time of `base_mode` (run with the paper's variant) over `variant`'s async."""
    return (row[VARIANTS[0]].runs[base_mode].completion_time_s
            / row[variant].runs["async"].completion_time_s)


def render_bounds(rows: list[dict[tuple[str, str, str], BenchResult]]) -> str:
    names = " / ".join("+".join(v[:2]) + ("" if v[2] == "off" else f"+{v[2]}") for v in VARIANTS)
    lines = ["## Beyond the paper: map-aware bound, versioned rules, declared routes", "",
             f"Async runs of each variant ({names}) on the same trace; sync and oracle are the "
             "same for all. `map`: walking distance around walls and rooms (docs/MAP_BOUND.md). "
             "`versioned`: the env keeps each agent's state per step, so there is no coupling and a "
             "laggard blocks one move less (metropolis_env/rules.py). `persona`: trace agents declare "
             "what a Generative Agents persona knows ahead, its walks as routes and its stays "
             "(docs/RULES.md, metropolis_env/workloads/promises.py). Dependencies per agent-step: "
             "as the tracker makes agents wait (blocked by or coupled with, itself included), "
             "next to the true ones (agents really perceived).", "",
             f"| window | agents | GPUs | async/sync ({names}) | paper | % of oracle | "
             "tracker deps | true deps |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        first = row[VARIANTS[0]]
        window, agents, gpus = _point(first.config)
        paper = PAPER.get((window, agents, gpus), {})
        lines.append(
            f"| {window} | {agents} | {gpus} | "
            + " / ".join(f"{_vs(row, v, 'sync'):.2f}x" for v in VARIANTS) + f" | {_x(paper.get('vs_sync'))} | "
            + " / ".join(_p(100 * _vs(row, v, 'oracle')) for v in VARIANTS) + " | "
            + " / ".join(f"{row[v].runs['async'].deps_per_agent_step:.2f}" for v in VARIANTS)
            + f" | {first.runs['async'].true_deps_per_agent_step:.2f} |")
    return "\n".join(lines) + "\n"


def run_sweep(out: str = "docs/RESULTS.md", quick: bool = False, progress: bool = True,
              json_path: str | None = None, base: BenchConfig | None = None,
              sections: tuple[str, ...] = SECTIONS) -> list[BenchResult]:
    """Run the grid and write the markdown report; returns every BenchResult.

    Each grid point runs its modes with `base`'s settings (the paper's by default), among them
    async with speculation (SPEC_MODE, `base`'s depth or the default one), and async once more
    with our best settings (BEST) on the same trace."""
    base = base or BenchConfig.of(progress=progress)
    grid = (QUICK_GRID if quick else FULL_GRID) if "grid" in sections else []
    results: list[BenchResult] = []
    best: list[BenchResult] = []
    traces: dict = {}
    t0 = time.perf_counter()
    for window, agents, gpus in grid:
        cfg = base.replace(window=window, agents=agents, gpus=gpus, modes=SCALE.modes(agents),
                           lower_bounds=agents <= 100, progress=progress,
                           speculate=base.run.speculate or SPECULATION_DEPTH)
        key = (cfg.trace.workload, window, agents, cfg.trace.seed)
        if key not in traces:
            traces = {key: load_trace(cfg)}  # keep one trace in memory at a time
        results.append(run_bench(cfg, trace=traces[key]))
        if _variant(cfg) != VARIANTS[-1]:
            best.append(run_bench(replace(cfg, tracking=BEST).replace(modes=("async",), lower_bounds=False,
                                                                      speculate=None),
                                  trace=traces[key]))
        print(f"[sweep] {window} {agents} agents {gpus} GPUs: async/sync "
              f"{results[-1].ratio('async', 'sync'):.2f}x, best {_best_ratio(results[-1], best, 'sync'):.2f}x, "
              f"spec {results[-1].ratio(SPEC_MODE, 'sync'):.2f}x "
              f"({time.perf_counter() - t0:.0f} s so far)", flush=True)
    priority: list[BenchResult] = []
    if not quick and "priority" in sections:
        for gpus in (4, 8):
            for policy in ("priority", "fcfs"):
                cfg = base.replace(window="busy", agents=500, gpus=gpus, policy=policy,
                                   modes=("async", "oracle"), lower_bounds=False, progress=progress)
                priority.append(run_bench(cfg, trace=load_trace(cfg)))
    variant_rows = (run_bound_comparison(base, progress, results + best)
                    if "bounds" in sections and not quick else [])
    text = render_results(results, best, priority, time.perf_counter() - t0, base)
    if variant_rows:
        text += "\n" + render_bounds(variant_rows)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    if results:
        figure = speedup_figure([r.to_json() for r in results], Path(out).parent / "figures")
        text += f"\n![async/sync speedup vs agents]({figure.relative_to(Path(out).parent)})\n"
    Path(out).write_text(text + kept_notes(Path(out)))
    if json_path:
        done = {id(r) for r in results + best}
        flat = results + best + priority + [r for row in variant_rows for r in row.values() if id(r) not in done]
        Path(json_path).write_text(json.dumps([r.to_json() for r in flat], indent=1))
    return results + best + priority


def _best_of(r: BenchResult, best: list[BenchResult]) -> BenchResult:
    """The run with our best settings on r's point and trace (r itself when r ran with them)."""
    return next((b for b in best if _point(b.config) == _point(r.config) and b.config.trace.seed == r.config.trace.seed), r)


def _best_ratio(r: BenchResult, best: list[BenchResult], base_mode: str) -> float | None:
    """`base_mode` of r (the paper's settings) over async with our best settings on the same
    point and trace."""
    mine = _best_of(r, best)
    if base_mode not in r.runs or "async" not in mine.runs:
        return None
    return r.runs[base_mode].completion_time_s / mine.runs["async"].completion_time_s


#: Everything below this line in the output file is written by people and kept by the sweep.
NOTES_MARKER = "<!-- notes below are kept by metropolis-env sweep -->"


def kept_notes(path: Path) -> str:
    """The hand-written part of an existing report (from NOTES_MARKER on), or ''."""
    if not path.exists():
        return ""
    old = path.read_text()
    at = old.find(NOTES_MARKER)
    return "" if at < 0 else "\n" + old[at:]


def speedup_figure(results: list[dict], out_dir: Path) -> Path:
    """async/sync speedup vs agents, one line per (window, GPUs), from bench JSON results."""
    from .plots import plot_speedup_vs_agents

    points = []
    for r in results:
        runs = {x["mode"]: x for x in r["runs"]}
        if "async" in runs and runs["async"].get("speedup_vs_sync"):
            c = r["config"]  # the flat JSON form (BenchConfig.flat)
            points.append((c["agents"], runs["async"]["speedup_vs_sync"], f"{c['window']}, {c['gpus']} GPUs"))
    out_dir.mkdir(parents=True, exist_ok=True)
    return plot_speedup_vs_agents(points, out_dir / "speedup_vs_agents.png")


def _x(v) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _p(v) -> str:
    return "-" if v is None else f"{v:.1f}%"


def render_results(results: list[BenchResult], best: list[BenchResult], priority: list[BenchResult],
                   wall_s: float, base: BenchConfig) -> str:
    settings = ", ".join(f"{f.name} `{getattr(base.tracking, f.name)}`" for f in fields(BEST))
    best_settings = ", ".join(f"{f.name} `{getattr(BEST, f.name)}`" for f in fields(BEST))
    lines = [
        "# Results: out-of-order vs global sync, reproduced",
        "",
        f"Produced by `metropolis-env sweep` ({wall_s / 60:.1f} min wall on {platform.machine()}, "
        f"Python {platform.python_version()}). Workload `{base.trace.workload}` (seed {base.trace.seed}), simulated "
        f"server `{base.llm.model}` on `{base.llm.gpu}`, policy `{base.llm.policy}`. Paper numbers are from AI "
        "Metropolis (MLSys 2025), Llama-3-8B on NVIDIA L4.",
        "",
        f"Every point runs each mode with the paper's dependency tracking ({settings}), and async once "
        f"more with our best (`bench --best`: {best_settings}) on the "
        "same trace; sync, single and oracle do not depend on the tracker.",
        "",
        "## Headline numbers, ours beside the paper's",
        "",
        "| window | agents | GPUs | async/sync (ours best / paper's rules / paper) | async/single (best / "
        "paper's rules / paper) | % of oracle (best / paper's rules / paper) | parallelism async, sync "
        "(paper's rules / paper) |",
        "|---|---|---|---|---|---|---|",
    ]
    by_key = {_point(r.config): r for r in results}
    for key, paper in PAPER.items():
        r = by_key.get(key)
        if r is None:
            continue
        ours_par = f"{r.runs['async'].parallelism:.2f}, {r.runs['sync'].parallelism:.2f}"
        paper_par = (f"{paper.get('par_async', '-')}, {paper.get('par_sync', '-')}"
                     if "par_async" in paper else "-")
        oracle, best_oracle = r.ratio("async", "oracle"), _best_ratio(r, best, "oracle")
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2]} | {_x(_best_ratio(r, best, 'sync'))} / {_x(r.ratio('async', 'sync'))} / "
            f"{_x(paper.get('vs_sync'))} | {_x(_best_ratio(r, best, 'single'))} / {_x(r.ratio('async', 'single'))} / "
            f"{_x(paper.get('vs_single'))} | {_p(None if best_oracle is None else 100 * best_oracle)} / "
            f"{_p(None if oracle is None else 100 * oracle)} / {_p(paper.get('pct_oracle'))} | "
            f"{ours_par} / {paper_par} |")
    lines += ["", "## Whole grid", "",
              "| window | agents | GPUs | single (s) | sync (s) | async (s) | async best (s) | oracle (s) | "
              "async/sync (paper's rules, best) | % of oracle (paper's rules, best) | parallelism async / sync | "
              "deps/agent-step async (paper's rules, best) | critical (s) | gpu-limit (s) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        t = {m: r.runs[m].completion_time_s for m in r.runs}
        mine = _best_of(r, best)
        oracle, best_oracle = r.ratio("async", "oracle"), _best_ratio(r, best, "oracle")
        window, agents, gpus = _point(r.config)
        lines.append(
            f"| {window} | {agents} | {gpus} | {t.get('single', float('nan')):.0f} | "
            f"{t['sync']:.0f} | {t['async']:.0f} | {mine.runs['async'].completion_time_s:.0f} | "
            f"{t.get('oracle', float('nan')):.0f} | "
            f"{_x(r.ratio('async', 'sync'))}, {_x(_best_ratio(r, best, 'sync'))} | "
            f"{_p(None if oracle is None else 100 * oracle)}, {_p(None if best_oracle is None else 100 * best_oracle)} | "
            f"{r.runs['async'].parallelism:.2f} / {r.runs['sync'].parallelism:.2f} | "
            f"{r.runs['async'].deps_per_agent_step:.2f}, {mine.runs['async'].deps_per_agent_step:.2f} | "
            f"{'-' if r.critical_s is None else f'{r.critical_s:.0f}'} | "
            f"{'-' if r.gpu_limit_s is None else f'{r.gpu_limit_s:.0f}'} |")
    lines += render_speculation(results)
    if priority:
        lines += ["", "## Priority scheduling (busy hour, 500 agents)", "",
                  "| GPUs | policy | async (s) | oracle (s) | paper async (s) | paper oracle (s) |",
                  "|---|---|---|---|---|---|"]
        for r in priority:
            llm = r.config.llm
            pa, po = PAPER_PRIORITY.get((llm.gpus, llm.policy == "priority"), (None, None))
            lines.append(f"| {llm.gpus} | {llm.policy} | {r.runs['async'].completion_time_s:.0f} | "
                         f"{r.runs['oracle'].completion_time_s:.0f} | {pa} | {po} |")
    return "\n".join(lines) + "\n"


def render_speculation(results: list[BenchResult]) -> list[str]:
    """The speculation section: async+spec beside async at every grid point, and the points
    where speculation was slower (what `bench --best` asks of it, docs/SPECULATION.md)."""
    rows = [r for r in results if SPEC_MODE in r.runs and "async" in r.runs]
    if not rows:
        return []
    depth = rows[0].config.run.speculate
    lines = ["", f"## Speculation (async+spec, depth {depth})", "",
             "Async with speculation (docs/SPECULATION.md) with the paper's dependency tracking, beside async "
             "without it on the same trace. wasted_call_share: calls of discarded speculative steps / all calls "
             "issued; GPU shares: speculative calls' (wasted: discarded ones') share of busy GPU time.", "",
             "| window | agents | GPUs | async (s) | async+spec (s) | spec/async time | async/sync, async+spec/sync | "
             "% of oracle (async, async+spec) | wasted_call_share | spec GPU share (wasted) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    slower = []
    for r in rows:
        a, s = r.runs["async"], r.runs[SPEC_MODE]
        window, agents, gpus = _point(r.config)
        oracle, spec_oracle = r.ratio("async", "oracle"), r.ratio(SPEC_MODE, "oracle")
        if s.completion_time_s > a.completion_time_s:
            slower.append(f"{window} {agents} agents {gpus} GPUs "
                          f"(+{100 * (s.completion_time_s / a.completion_time_s - 1):.2f}%)")
        lines.append(
            f"| {window} | {agents} | {gpus} | {a.completion_time_s:.0f} | {s.completion_time_s:.0f} | "
            f"{s.completion_time_s / a.completion_time_s:.3f} | {_x(r.ratio('async', 'sync'))}, "
            f"{_x(r.ratio(SPEC_MODE, 'sync'))} | {_p(None if oracle is None else 100 * oracle)}, "
            f"{_p(None if spec_oracle is None else 100 * spec_oracle)} | {s.wasted_call_share:.3f} | "
            f"{_share(s.spec_gpu_share)} ({_share(s.wasted_gpu_share)}) |")
    lines += ["", f"Speculation at least as fast as async at {len(rows) - len(slower)} of {len(rows)} points"
              + (f"; slower at: {', '.join(slower)}." if slower else ".")]
    return lines


def _share(v) -> str:
    return "-" if v is None else f"{v:.3f}"
