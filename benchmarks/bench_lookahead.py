"""Path lookahead: how close declared paths bring async to the oracle.

For each point, on one trace: async with the map bound and the versioned rules, with trace agents
declaring nothing, what a Generative Agents persona knows ahead (asleep, conversing, settled at
its sub-task; metropolis_env/workloads/promises.py), or their whole future ("clairvoyant", an
upper bound no agent can reach), next to the oracle (dependencies mined from the trace). Prints,
never asserts; all times are simulated (virtual clock). Run from the repository root:

    python benchmarks/bench_lookahead.py
    python benchmarks/bench_lookahead.py --points busy:25:8 full:25:8
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from metropolis_env.bench.runner import BenchConfig, load_trace, run_mode


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", nargs="+", default=["busy:25:8", "full:25:8", "busy:100:8", "quiet:100:8"],
                    help="window:agents:gpus")
    args = ap.parse_args(argv)
    print("| point | oracle (s) | " + " | ".join(f"async {k} (s), % of oracle, deps" for k in
                                                  ("off", "persona", "clairvoyant")) + " |")
    print("|---|---|---|---|---|")
    for point in args.points:
        window, agents, gpus = point.split(":")
        cfg = BenchConfig(window=window, agents=int(agents), gpus=int(gpus), bound="map", rules="versioned",
                          progress=False, lower_bounds=False)
        trace = load_trace(cfg)
        oracle = run_mode(trace, cfg, "oracle").completion_time_s
        cells = []
        for lookahead in ("off", "persona", "clairvoyant"):
            m = run_mode(trace, replace(cfg, lookahead=lookahead), "async")
            cells.append(f"{m.completion_time_s:.0f}, {100 * oracle / m.completion_time_s:.1f}%, "
                         f"{m.deps_per_agent_step:.2f}")
        print(f"| {window} {agents}@{gpus} | {oracle:.0f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
