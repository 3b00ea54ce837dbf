"""`metropolis-env`: the command line (bench, sweep, resume)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from .bench.config import BEST, SCALE, BenchConfig, RunConfig, ServerConfig, TraceConfig, TrackingConfig, option
from .bench.options import add_options, as_flags, comma_list, given
from .bench.report import LEGEND
from .errors import ConfigError, MetropolisError


@dataclass(frozen=True)
class BenchOutputs:
    """Where the results go besides the table."""

    json_path: str | None = option(None, "write results as JSON here", flag="--json")
    plot_dir: str | None = option(
        None, "write figures (PNG) into this folder (needs matplotlib: pip install 'metropolis-env[plot]'; "
        f"Gantt charts up to {SCALE.call_records_max_agents} agents)", flag="--plot")


def _bench_args(p: argparse.ArgumentParser) -> None:
    add_options(p, TraceConfig, "workload")
    add_options(p, ServerConfig, "LLM server")
    tracking = add_options(p, TrackingConfig, "dependency tracking", also={"--best": BEST})
    tracking.add_argument("--best", action="store_true",
                          help=f"our best settings, beyond the paper: {as_flags(TrackingConfig, asdict(BEST))} "
                               f"(speculation stays off: it is slower than async at some sweep points, "
                               f"docs/SPECULATION.md; add --speculate for it)")
    add_options(p, RunConfig, "run")
    add_options(p, BenchOutputs, "output")


def _bars(no_progress: bool) -> bool:
    """Progress bars only on a terminal: piped into a log, tqdm's cursor moves would be escape codes."""
    return not no_progress and sys.stderr.isatty()


def _clear_bars() -> None:
    """Back to column 0 and clear below: a closed bar of a mode worker leaves the cursor at the
    end of its blanked line, where the table's first line would otherwise start."""
    sys.stderr.write("\r\x1b[J")
    sys.stderr.flush()


def _config(a: argparse.Namespace, out: BenchOutputs) -> BenchConfig:
    """The bench's config from the command line: what was given over the defaults, `--best`'s
    tracking when asked, per-call records when `--plot` wants Gantt charts (by scale), and
    progress bars only on a terminal."""
    tracking = given(a, TrackingConfig)
    if a.best and tracking:
        raise ConfigError(f"--best sets {as_flags(TrackingConfig, asdict(BEST))}; "
                          f"drop {as_flags(TrackingConfig, tracking)}")
    cfg = BenchConfig(trace=TraceConfig(**given(a, TraceConfig)), llm=ServerConfig(**given(a, ServerConfig)),
                      tracking=BEST if a.best else TrackingConfig(**tracking), run=RunConfig(**given(a, RunConfig)))
    if out.plot_dir is not None:
        _check_matplotlib()
        cfg = cfg.replace(record_calls=SCALE.record_calls(cfg.trace.agents))
    return cfg.replace(progress=_bars(not cfg.run.progress))


def _check_matplotlib() -> None:
    # Checked before the run, so a missing extra costs nothing (matplotlib stays optional: it
    # is 40+ MB with its own dependencies, and only --plot and the sweep's figure need it).
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError("--plot needs matplotlib, an optional extra: pip install 'metropolis-env[plot]' "
                          "(or drop --plot)") from None


def cmd_bench(a: argparse.Namespace) -> int:
    from .bench.report import table
    from .bench.runner import run_bench

    out = BenchOutputs(**given(a, BenchOutputs))
    cfg = _config(a, out)
    result = run_bench(cfg)
    if cfg.run.progress:
        _clear_bars()
    print(table(result))
    print("\n" + LEGEND)
    if out.json_path:
        Path(out.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(out.json_path).write_text(json.dumps(result.to_json(), indent=2))
        print(f"results written to {out.json_path}")
    if out.plot_dir:
        from .bench.plots import plot_result

        for path in plot_result(result, out.plot_dir):
            print(f"figure written to {path}")
    return 0


def cmd_sweep(a: argparse.Namespace) -> int:
    from .bench.sweep import run_sweep

    run_sweep(out=a.out, quick=a.quick, progress=_bars(a.no_progress), json_path=a.json_path,
              sections=a.sections)
    print(f"results written to {a.out}")
    return 0


def cmd_resume(a: argparse.Namespace) -> int:
    from .runtime.resume import resume

    metrics = resume(a.directory, progress=_bars(a.no_progress))
    print(f"resumed run finished: {metrics.agent_steps} agent-steps, {metrics.llm_calls} LLM calls, "
          f"{metrics.retries} retries, {metrics.completion_time_s:.1f} s")
    return 0


def cmd_replay(a: argparse.Namespace) -> int:
    from .movie import replay_movie

    path = replay_movie(a.run, a.out, agents=a.agents, steps=a.steps, mode=a.mode, window=a.window,
                        frames=a.frames, gpus=a.gpus, fps=a.fps, seed=a.seed)
    print(f"movie written to {path}")
    return 0


def _replay_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a workload (the_ville-morning, genagents-day) or a trace file saved with Trace.save")
    p.add_argument("--out", default="run.gif", help="movie file, .gif or .mp4 (default: %(default)s)")
    p.add_argument("--mode", default="async", choices=("async", "sync", "single"),
                   help="execution mode to watch (default: %(default)s)")
    p.add_argument("--steps", type=int, default=60, help="replay the first N steps (default: %(default)s)")
    p.add_argument("--agents", type=int, default=25, help="25 or a multiple (villes side by side; default: %(default)s)")
    p.add_argument("--window", default="full", help="full | busy | quiet (default: %(default)s)")
    p.add_argument("--frames", type=int, default=80, help="about this many pictures (default: %(default)s)")
    p.add_argument("--fps", type=float, default=8.0, help="pictures per second (default: %(default)s)")
    p.add_argument("--gpus", type=int, default=1, help="GPUs of the simulated server (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="workload seed (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: bench (generated from the config sections), sweep, resume, replay."""
    parser = argparse.ArgumentParser(prog="metropolis-env",
                                     description="Out-of-order LLM multi-agent simulation: benchmark and tools.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench", help="run one workload in several modes and print the speedups",
                       description="Replay one workload in several execution modes on the same (simulated or "
                                   "real) LLM server and print one table: time and speedups per mode.",
                       epilog=LEGEND, formatter_class=argparse.RawDescriptionHelpFormatter)
    _bench_args(b)
    b.set_defaults(fn=cmd_bench)
    s = sub.add_parser("sweep", help="run the paper's grid and write docs/RESULTS.md")
    s.add_argument("--out", default="docs/RESULTS.md", help="the markdown report (default: docs/RESULTS.md)")
    s.add_argument("--json", dest="json_path", default=None, help="also write every result as JSON here")
    s.add_argument("--quick", action="store_true", help="a reduced grid (for a smoke test)")
    s.add_argument("--sections", type=comma_list, default=("grid", "priority", "bounds"),
                   help="comma-separated: grid (the paper's grid), priority (on/off at 500 agents), "
                        "bounds (map vs box)")
    s.add_argument("--no-progress", action="store_true", help="no progress bars (off anyway when piped)")
    s.set_defaults(fn=cmd_sweep)
    r = sub.add_parser("resume", help="continue a checkpointed run from its directory")
    r.add_argument("directory")
    r.add_argument("--no-progress", action="store_true", help="no progress bar (off anyway when piped)")
    r.set_defaults(fn=cmd_resume)
    m = sub.add_parser("replay", help="watch a workload run out of order: write it as an animated GIF/MP4")
    _replay_args(m)
    m.set_defaults(fn=cmd_replay)
    return parser


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        return a.fn(a)
    except MetropolisError as e:
        print(f"metropolis-env: error: {e}", file=sys.stderr)
        return 2


def _version() -> str:
    """The installed distribution's version (what pip installed), else the source tree's."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("metropolis-env")
    except PackageNotFoundError:
        from . import __version__

        return f"{__version__} (not installed)"


if __name__ == "__main__":
    sys.exit(main())
