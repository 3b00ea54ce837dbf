"""Markdown report of the real-GPU check beside its simulated twin.

    python benchmarks/gpu/report.py [RESULTS_DIR]   # default: benchmarks/gpu/results

Reads the bench JSON files that `run.sh` wrote on the GPU machine, replays the same trace files
(benchmarks/gpu/traces) on the simulated server preset calibrated to a real H200 server
(`h200-transformers-serve`), and compares the model's measured forward times (profile.json) with
the simulator's per-iteration times, both the calibrated preset and the bare H200 roofline.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from metropolis_env.backends.simulated import make_backend
from metropolis_env.bench.runner import BenchConfig, run_bench

HERE = Path(__file__).parent
CASES = (("busy25", "busy-25.npz"), ("busy100", "busy-100.npz"))


def main() -> None:
    results = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "results"
    gpu = (results / "gpu.txt").read_text().splitlines()[-1].split(",")[0] if (results / "gpu.txt").exists() else "GPU"
    out = [f"## Real GPU: {gpu}, `transformers serve` (continuous batching), Llama-3-8B shape", "",
           "Same trace files replayed on the real server and on the simulated preset calibrated to it "
           "(`--gpu h200-transformers-serve`). Output lengths fixed to the trace's.", "",
           "| slice | mode | real time (s) | simulated (s) | real parallelism | simulated parallelism |",
           "|---|---|---|---|---|---|"]
    ratios = []
    for name, trace in CASES:
        path = results / f"{name}.json"
        if not path.exists():
            continue
        real = json.loads(path.read_text())
        modes = tuple(r["mode"] for r in real["runs"])
        cfg = BenchConfig.of(trace_path=str(HERE / "traces" / trace), steps=real["config"]["steps"],
                             gpu="h200-transformers-serve", gpus=1, modes=modes, progress=False, lower_bounds=False)
        sim = run_bench(cfg)
        calls = real["runs"][0]["llm_calls"]
        label = f"{name[4:]} agents, {real['config']['steps']} steps, {calls} calls"
        for r in real["runs"]:
            s = sim.runs[r["mode"]]
            out.append(f"| {label} | {r['mode']} | {r['completion_time_s']:.1f} | {s.completion_time_s:.1f} | "
                       f"{r['parallelism']:.2f} | {s.parallelism:.2f} |")
        real_t = {r["mode"]: r["completion_time_s"] for r in real["runs"]}
        ratios.append((label, real_t["sync"] / real_t["async"], sim.ratio("async", "sync")))
    out += ["", "| slice | async/sync real | async/sync simulated |", "|---|---|---|"]
    out += [f"| {label} | {r:.2f}x | {s:.2f}x |" for label, r, s in ratios]

    prof_path = results / "profile.json"
    if prof_path.exists():
        prof = json.loads(prof_path.read_text())
        ctx = int(prof.get("prompt_tokens", 642))
        calibrated = make_backend("h200-transformers-serve").config
        roofline = make_backend("h200").config
        out += ["", f"Per-iteration time of the model itself (eager PyTorch in one process, {ctx}-token "
                "context), against the simulator:", "",
                "| iteration | measured (ms) | calibrated preset (ms) | bare H200 roofline (ms) |", "|---|---|---|---|"]
        for b, t in sorted(prof.get("decode_iteration_s", {}).items(), key=lambda kv: int(kv[0])):
            b = int(b)
            args = (b, b * (ctx + 1), b * (ctx + 1))
            out.append(f"| decode, batch {b} | {1e3 * t:.1f} | {1e3 * calibrated.iteration_time(*args):.1f} | "
                       f"{1e3 * roofline.iteration_time(*args):.1f} |")
        for b, t in sorted(prof.get("prefill_s", {}).items(), key=lambda kv: int(kv[0])):
            b = int(b)
            args = (b * ctx, b * ctx, b * ctx * (ctx + 1) // 2)
            out.append(f"| prefill {ctx} tokens, batch {b} | {1e3 * t:.1f} | "
                       f"{1e3 * calibrated.iteration_time(*args):.1f} | {1e3 * roofline.iteration_time(*args):.1f} |")
    print("\n".join(out))


if __name__ == "__main__":
    main()
