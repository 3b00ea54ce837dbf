"""`metropolis-env`: the command line (bench, sweep)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .bench.runner import BEST, PAPER_SETTINGS
from .errors import ConfigError, MetropolisError
from .workloads.promises import LOOKAHEADS


def _csv(s: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in s.split(",") if x.strip())


def _bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workload", default="genagents-day", help="genagents-day | the_ville-morning")
    p.add_argument("--agents", type=int, default=25, help="25, or a multiple of 25 (concatenated villes)")
    p.add_argument("--window", default="busy", help="full | busy (12-1 PM) | quiet (6-7 AM)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--modes", type=_csv, default=None,
                   help="comma-separated: single,sync,async,oracle,nodep (default: all but nodep; "
                        "no single above 500 agents, sync,async only from 5,000)")
    p.add_argument("--backend", default="sim", help="sim (embedded simulated server) | openai")
    p.add_argument("--gpu", default="l4", help="simulated GPU preset (l4, a100, h100, h200, ...)")
    p.add_argument("--model", default="llama-3-8b", help="simulated model preset")
    p.add_argument("--gpus", type=int, default=1, help="data-parallel GPU replicas of the simulated server")
    p.add_argument("--policy", default="priority", help="priority (smallest step first) | fcfs")
    # None: not given (the paper's setting, or --best's)
    p.add_argument("--bound", default=None, help="dependency bound: box (the paper's) | map (walls and rooms)")
    p.add_argument("--rules", default=None, choices=("paper", "versioned"),
                   help="dependency rules: paper (current state only, coupled clusters) | versioned "
                        "(per-step state versions: no coupling, shorter blocking)")
    p.add_argument("--lookahead", nargs="?", const="persona", default=None, choices=LOOKAHEADS,
                   help="with --rules versioned: trace agents declare what they know ahead as paths and "
                        "routes: persona (their walks, sleep, conversations; the default of a bare "
                        "--lookahead), plan-ahead (the same, with personas that plan their next activity "
                        "on arrival: a workload variant) or clairvoyant (the whole future: an upper "
                        "bound) (docs/RULES.md)")
    p.add_argument("--best", action="store_true",
                   help=f"our best settings, beyond the paper: {_flags(BEST)}")
    p.add_argument("--max-clusters", type=int, default=None, help="cap on clusters in flight")
    p.add_argument("--base-url", action="append", default=[], help="OpenAI-compatible server (repeatable)")
    p.add_argument("--api-model", default=None, help="model name on the real server")
    p.add_argument("--server", default="vllm", help="kind of real server, for priority and fixed output "
                   "length: vllm | sglang | llamacpp | transformers | openai")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request attempt (real servers)")
    p.add_argument("--steps", type=int, default=None, help="replay only the window's first N steps")
    p.add_argument("--trace", default=None, help="replay a trace file saved with Trace.save instead")
    p.add_argument("--executor", default="local", choices=("local", "ray"),
                   help="where agent-steps run: local (this process) | ray (a pool of Ray actors)")
    p.add_argument("--address", default=None,
                   help="Ray cluster to join with --executor ray (e.g. auto, ray://head:10001); default: a local Ray")
    p.add_argument("--actors", type=int, default=4, help="Ray actors hosting the agents (--executor ray)")
    p.add_argument("--jobs", type=int, default=None,
                   help="worker processes running the modes side by side (simulated backend; the results "
                        "are those of a sequential run); default: one per mode up to the usable CPUs; 1: "
                        "all modes in this process, one after another")
    p.add_argument("--json", dest="json_path", default=None, help="write results as JSON here")
    p.add_argument("--plot", dest="plot_dir", default=None, help="write figures (PNG) into this folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-bounds", action="store_true",
                   help="skip the critical-path and gpu-limit bounds (skipped anyway above 1,000 agents)")


def default_modes(agents: int) -> tuple[str, ...]:
    """Modes worth their time at a scale: single-thread replays every call one after another."""
    if agents >= 5000:
        return ("sync", "async")
    if agents > 500:
        return ("sync", "async", "oracle")
    return ("single", "sync", "async", "oracle")


def _flags(settings: dict) -> str:
    return " ".join(f"--{k} {v}" for k, v in settings.items())


def _config(a: argparse.Namespace):
    from .bench.runner import BenchConfig

    given = {k: getattr(a, k) for k in PAPER_SETTINGS if getattr(a, k) is not None}
    if a.best and given:
        raise ConfigError(f"--best sets {_flags(BEST)}; drop {_flags(given)}")
    for k, v in (BEST if a.best else {**PAPER_SETTINGS, **given}).items():
        setattr(a, k, v)

    return BenchConfig(workload=a.workload, agents=a.agents, window=a.window, seed=a.seed,
                       modes=a.modes or default_modes(a.agents),
                       backend=a.backend, gpu=a.gpu, model=a.model, gpus=a.gpus, policy=a.policy,
                       bound=a.bound, rules=a.rules, lookahead=a.lookahead, max_clusters=a.max_clusters, base_urls=tuple(a.base_url),
                       api_model=a.api_model, server=a.server, timeout_s=a.timeout, steps=a.steps, trace_path=a.trace,
                       executor=a.executor, ray_address=a.address, ray_actors=a.actors,
                       progress=not a.no_progress, lower_bounds=not a.no_bounds and a.agents <= 1000,
                       record_calls=a.plot_dir is not None and a.agents <= 100, jobs=a.jobs)


def cmd_bench(a: argparse.Namespace) -> int:
    from .bench.report import table
    from .bench.runner import run_bench

    result = run_bench(_config(a))
    print(table(result))
    if a.json_path:
        Path(a.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json_path).write_text(json.dumps(result.to_json(), indent=2))
        print(f"results written to {a.json_path}")
    if a.plot_dir:
        from .bench.plots import plot_result

        for path in plot_result(result, a.plot_dir):
            print(f"figure written to {path}")
    return 0


def cmd_sweep(a: argparse.Namespace) -> int:
    from .bench.sweep import run_sweep

    run_sweep(out=a.out, quick=a.quick, progress=not a.no_progress, json_path=a.json_path,
              sections=a.sections)
    print(f"results written to {a.out}")
    return 0


def cmd_resume(a: argparse.Namespace) -> int:
    from .runtime.checkpoint import resume

    metrics = resume(a.directory, progress=not a.no_progress)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="metropolis-env",
                                     description="Out-of-order LLM multi-agent simulation: benchmark and tools.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench", help="run one workload in several modes and print the speedups")
    _bench_args(b)
    b.set_defaults(fn=cmd_bench)
    s = sub.add_parser("sweep", help="run the paper's grid and write docs/RESULTS.md")
    s.add_argument("--out", default="docs/RESULTS.md")
    s.add_argument("--json", dest="json_path", default=None)
    s.add_argument("--quick", action="store_true", help="a reduced grid (for a smoke test)")
    s.add_argument("--sections", type=_csv, default=("grid", "priority", "bounds"),
                   help="comma-separated: grid (the paper's grid), priority (on/off at 500 agents), "
                        "bounds (map vs box)")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(fn=cmd_sweep)
    r = sub.add_parser("resume", help="continue a checkpointed run from its directory")
    r.add_argument("directory")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(fn=cmd_resume)
    m = sub.add_parser("replay", help="watch a workload run out of order: write it as an animated GIF/MP4")
    _replay_args(m)
    m.set_defaults(fn=cmd_replay)
    a = parser.parse_args(argv)
    try:
        return a.fn(a)
    except MetropolisError as e:
        print(f"metropolis-env: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
