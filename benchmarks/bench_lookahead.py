"""Lookahead: how close declared paths and routes bring async to the oracle.

For each point: async with the map bound and the versioned rules, with trace agents declaring
nothing, what a Generative Agents persona knows ahead ("persona": its walks as routes, asleep,
conversing; metropolis_env/workloads/promises.py), the same for personas that plan their next
activity on arrival ("plan-ahead", on that variant of the workload, whose oracle and sync are
run again), or their whole future ("clairvoyant", an upper bound no agent can reach). Each next
to the oracle (dependencies mined from the trace) and sync of its own workload. Prints, never
asserts; all times are simulated (virtual clock). Run from the repository root:

    python benchmarks/bench_lookahead.py
    python benchmarks/bench_lookahead.py --points busy:25:8 full:25:8
    python benchmarks/bench_lookahead.py --points busy:25:8 --steps 20   # a smoke run
"""

from __future__ import annotations

import argparse

from metropolis_env.bench.runner import BenchConfig, load_trace, run_mode

LEVELS = ("off", "persona", "plan-ahead", "clairvoyant")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", nargs="+", default=["busy:25:8", "full:25:8", "busy:100:8", "quiet:100:8"],
                    help="window:agents:gpus")
    ap.add_argument("--steps", type=int, default=None, help="replay only each window's first N steps (default: all)")
    args = ap.parse_args(argv)
    print("async with each lookahead: time (s), % of its workload's oracle, async/sync, tracker deps per agent-step")
    print("| point | " + " | ".join(LEVELS) + " |")
    print("|---|" + "---|" * len(LEVELS))
    for point in args.points:
        window, agents, gpus = point.split(":")
        base = BenchConfig.of(window=window, agents=int(agents), gpus=int(gpus), bound="map", rules="versioned",
                              steps=args.steps, progress=False, lower_bounds=False)
        traces = {}
        cells = []
        for lookahead in LEVELS:
            cfg = base.replace(lookahead=lookahead)
            key = lookahead == "plan-ahead"  # the only level that changes the workload
            if key not in traces:
                trace = load_trace(cfg)
                traces[key] = (trace, run_mode(trace, cfg, "oracle").completion_time_s,
                               run_mode(trace, cfg, "sync").completion_time_s)
            trace, oracle, sync = traces[key]
            m = run_mode(trace, cfg, "async")
            t = m.completion_time_s
            cells.append(f"{t:.0f}, {100 * oracle / t:.1f}%, {sync / t:.2f}x, {m.deps_per_agent_step:.2f}")
        print(f"| {window} {agents}@{gpus} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
