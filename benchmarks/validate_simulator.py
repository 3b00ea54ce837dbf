"""Validate the simulated server on the paper's sync, async and oracle figures (not fitted to them).

Runs the headline points of AI Metropolis (MLSys 2025) with the paper's rules (`--rules paper
--bound box`, no lookahead) on the default simulated server (`--gpu l4`), one `metropolis-env
bench` per point, and prints the validation table of docs/SIMULATOR.md (ours vs paper, error %).

    python benchmarks/validate_simulator.py OUT_DIR [--only NAME ...] [--gpu l4]
    python benchmarks/validate_simulator.py --closed-loop [--gpu l4]
    python benchmarks/validate_simulator.py OUT_DIR --priority-mechanisms [--gpu l4]

Each point's JSON lands in OUT_DIR (an existing JSON is reused, so a run can be resumed).
--closed-loop prints the simulated GPU's requests/s and latency for N clients sending the busy
hour's mean request (641 / 21 tokens) back to back, beside which docs/SIMULATOR.md reads the
paper's implied per-GPU throughput.
--priority-mechanisms runs the paper's priority ablation (busy hour, 500 agents, 4 and 8 GPUs,
async with `--policy priority` and `fcfs`: smallest step first, or arrival order, in both the
ready queue and the server's queue) under each mechanism that could make the order matter
(MECHANISMS) and prints what fcfs costs beside the paper's +3.8 % / +15.7 %.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from metropolis_env.bench.sweep import PAPER_PRIORITY as SWEEP_PAPER  # {(GPUs, priority on): (async, oracle)}

# (name, window, agents, GPUs, modes, policy, paper figures). Paper: Table "Headline numbers"
# and the priority table (completion seconds), copied into docs/SIMULATOR.md.
POINTS = [
    ("busy-25-8", "busy", 25, 8, "single,sync,async,oracle", "priority",
     {"async/sync": 1.88, "async/single": 3.37, "% of oracle": 53.1}),
    ("busy-500-8", "busy", 500, 8, "single,sync,async,oracle", "priority",
     {"async/sync": 4.15, "async/single": 19.5, "async s": 6148, "oracle s": 5683}),
    ("busy-1000-8", "busy", 1000, 8, "sync,async,oracle", "priority", {"async/sync": 3.94, "% of oracle": 97.0}),
    ("busy-100-1", "busy", 100, 1, "sync,async,oracle", "priority", {"async/sync": 1.87, "% of oracle": 90.9}),
    ("busy-1000-1", "busy", 1000, 1, "sync,async,oracle", "priority", {"async/sync": 1.60}),
    ("full-25-1", "full", 25, 1, "single,sync,async,oracle", "priority",
     {"async/sync": 1.44, "async/single": 2.38, "% of oracle": 82.9}),
    ("full-25-8", "full", 25, 8, "single,sync,async,oracle", "priority",
     {"async/sync": 1.67, "async/single": 3.25, "% of oracle": 74.7}),
    ("quiet-25-8", "quiet", 25, 8, "sync,async,oracle", "priority", {"async/sync": 1.28}),
    ("quiet-500-8", "quiet", 500, 8, "sync,async,oracle", "priority", {"async/sync": 2.79}),
    ("busy-500-8-fcfs", "busy", 500, 8, "async,oracle", "fcfs", {"async s": 7114, "oracle s": 5689}),
    ("busy-500-4", "busy", 500, 4, "async,oracle", "priority", {"async s": 8611, "oracle s": 8392}),
    ("busy-500-4-fcfs", "busy", 500, 4, "async,oracle", "fcfs", {"async s": 8942, "oracle s": 8484}),
]


# The paper's priority ablation (busy hour, 500 agents, L4): {GPUs: (async s with priority, without)}.
PAPER_PRIORITY = {gpus: (SWEEP_PAPER[(gpus, True)][0], SWEEP_PAPER[(gpus, False)][0]) for gpus in (4, 8)}

# (name, extra bench arguments, why it could make the queue order matter). Priority can only
# matter where ready work waits: in the server's queue or in the runtime's ready queue.
MECHANISMS = [
    ("default server", (), "the default `l4` (SGLang v0.1-like), dispatch unlimited"),
    ("round-robin routing", ("--server-option", "routing=round-robin"),
     "SGLang v0.1's data-parallel controller deals requests in turn, blind to load"),
    ("per-agent routing", ("--server-option", "routing=per-agent"),
     "each agent pinned to one GPU: busy neighbourhoods queue on their GPU while others idle"),
    ("8 running per GPU", ("--server-option", "max_batch=8"),
     "a server that holds requests back: at most 8 running per GPU, about the paper's 6.4 in flight"),
    ("dispatch cap 51", ("--max-clusters", "51"), "ready clusters wait for one of 51 workers (the paper's parallelism)"),
    ("dispatch cap 26", ("--max-clusters", "26"), "half as many workers"),
]


def run_point(out: Path, gpu: str, name, window, agents, gpus, modes, policy, extra: tuple[str, ...] = ()) -> dict:
    path = out / f"{name}.json"
    if not path.exists():
        cmd = [sys.executable, "-m", "metropolis_env.cli", "bench", "--window", window, "--agents", str(agents),
               "--gpus", str(gpus), "--gpu", gpu, "--modes", modes, "--policy", policy, "--rules", "paper",
               "--bound", "box", "--no-progress", "--no-bounds", "--json", str(path), *extra]
        t0 = time.monotonic()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        print(f"{name}: {time.monotonic() - t0:.0f} s wall", file=sys.stderr)
    return json.loads(path.read_text())


def figures(result: dict) -> dict:
    runs = {r["mode"]: r for r in result["runs"]}
    t = {m: r["completion_time_s"] for m, r in runs.items()}
    f = {}
    if "async" in t:
        f["async s"] = t["async"]
        if "sync" in t:
            f["async/sync"] = t["sync"] / t["async"]
        if "single" in t:
            f["async/single"] = t["single"] / t["async"]
        if "oracle" in t:
            f["% of oracle"] = 100 * t["oracle"] / t["async"]
    if "oracle" in t:
        f["oracle s"] = t["oracle"]
    f["wall s"] = result.get("wall_s")
    return f


def closed_loop(gpu: str, clients: int, per_client: int = 20) -> tuple[float, float]:
    """(requests/s, mean latency s) of `clients` clients each sending `per_client` requests."""
    from metropolis_env import clock
    from metropolis_env.backends.base import LLMRequest
    from metropolis_env.backends.simulated import make_backend

    backend, latencies = make_backend(gpu), []

    async def client(c):
        for k in range(per_client):
            r = await backend.complete(LLMRequest(f"c{c}", k, input_tokens=641, output_tokens=21))
            latencies.append(r.latency)

    async def main():
        await asyncio.gather(*(client(c) for c in range(clients)))
        return clients * per_client / asyncio.get_running_loop().time()

    return clock.run(main()), sum(latencies) / len(latencies)


def priority_mechanisms(out: Path, gpu: str) -> None:
    """Print the priority ablation under each of MECHANISMS (see the module docstring)."""
    print("| mechanism | GPUs | async priority (s) | async fcfs (s) | fcfs costs | paper | % of oracle "
          "(priority, fcfs) |")
    print("|---|---|---|---|---|---|---|")
    for name, extra, _ in MECHANISMS:
        for gpus, (paper_on, paper_off) in PAPER_PRIORITY.items():
            slug = name.replace(" ", "-").replace("=", "")
            t = {policy: figures(run_point(out, gpu, f"priority-{slug}-{gpus}-{policy}", "busy", 500, gpus,
                                           "async,oracle", policy, extra))
                 for policy in ("priority", "fcfs")}
            on, off = t["priority"]["async s"], t["fcfs"]["async s"]
            print(f"| {name} | {gpus} | {on:.0f} | {off:.0f} | {100 * (off / on - 1):+.1f}% | "
                  f"{100 * (paper_off / paper_on - 1):+.1f}% | {t['priority']['% of oracle']:.1f}%, "
                  f"{t['fcfs']['% of oracle']:.1f}% |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, nargs="?")
    p.add_argument("--only", nargs="*", default=None)
    p.add_argument("--gpu", default="l4")
    p.add_argument("--closed-loop", action="store_true")
    p.add_argument("--priority-mechanisms", action="store_true")
    a = p.parse_args()
    if a.closed_loop:
        print("| clients | req/s | latency s |\n|---|---|---|")
        for clients in (1, 4, 6, 9, 16, 32, 64):
            rps, lat = closed_loop(a.gpu, clients)
            print(f"| {clients} | {rps:.2f} | {lat:.2f} |")
        return
    if a.out is None:
        p.error("give OUT_DIR (or --closed-loop)")
    a.out.mkdir(parents=True, exist_ok=True)
    if a.priority_mechanisms:
        priority_mechanisms(a.out, a.gpu)
        return
    print("| point | figure | ours | paper | error |")
    print("|---|---|---|---|---|")
    for name, window, agents, gpus, modes, policy, paper in POINTS:
        if a.only and name not in a.only:
            continue
        ours = figures(run_point(a.out, a.gpu, name, window, agents, gpus, modes, policy))
        for fig, ref in paper.items():
            val = ours.get(fig)
            if val is None:
                continue
            err = 100 * (val / ref - 1)
            print(f"| {name} | {fig} | {val:.2f} | {ref} | {err:+.0f}% |", flush=True)


if __name__ == "__main__":
    main()
