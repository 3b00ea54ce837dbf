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
from metropolis_env.bench.config import SPEC_MODE
from metropolis_env.bench.runner import BenchConfig, run_bench

HERE = Path(__file__).parent
CASES = (("busy25", "busy-25.npz"), ("busy100", "busy-100.npz"))
#: The longer slices (issue 15), {name: steps}: one JSON per run.sh case (long25-sync-a.json,
#: long25-sync-b.json: the two halves of sync; long25-async.json; long25-spec.json), their traces
#: generated from the workload on both sides (run this at run.sh's commit).
LONG = {"long25": 60, "long100": 20}
ORDER = ("single", "sync", "async", SPEC_MODE)


def _joined(parts: list[dict]) -> dict:
    """One run of consecutive slices run one after the other: times and calls add up (exact for
    sync, whose server is empty at every barrier); parallelism is time-weighted."""
    t = sum(p["completion_time_s"] for p in parts)
    return dict(parts[0], completion_time_s=t, llm_calls=sum(p["llm_calls"] for p in parts),
                parallelism=sum(p["parallelism"] * p["completion_time_s"] for p in parts) / t)


def _cases(results: Path):
    """(name, {mode: real run}, real config, trace file or None) for each case with results."""
    for name, trace in CASES:
        path = results / f"{name}.json"
        if path.exists():
            real = json.loads(path.read_text())
            yield name, {r["mode"]: r for r in real["runs"]}, real["config"], HERE / "traces" / trace
    for name, steps in LONG.items():
        runs, parts, config = {}, {}, None
        for path in sorted(results.glob(f"{name}-*.json")):
            real = json.loads(path.read_text())
            first = real["config"].get("first_step", 0)
            for r in real["runs"]:
                parts.setdefault(r["mode"], []).append((first, first + real["config"]["steps"], r))
            if config is None or SPEC_MODE in parts and config.get("speculate") is None:
                config = real["config"]  # the speculation settings come from the file that used them
        for mode, got in parts.items():
            got.sort(key=lambda p: p[0])
            covered = [(a, b) for a, b, _ in got]
            if [a for a, _ in covered] != [0] + [b for _, b in covered[:-1]] or covered[-1][1] != steps:
                print(f"{name} {mode}: the results cover steps {covered} of 0..{steps - 1}, not all of them "
                      f"once: left out (run the missing run.sh case)", file=sys.stderr)
                continue
            runs[mode] = _joined([r for _, _, r in got])
        if runs:
            config = dict(config, steps=steps, first_step=0)
            yield name, {m: runs[m] for m in sorted(runs, key=ORDER.index)}, config, None


def _twin(runs: dict, config: dict, trace: Path | None):
    """The same calls on the simulated preset calibrated to the real server."""
    spec = config.get("speculate") if SPEC_MODE in runs else None
    where = ({"trace_path": str(trace)} if trace is not None else
             {"workload": config["workload"], "agents": config["agents"], "window": config["window"],
              "seed": config["seed"]})
    cfg = BenchConfig.of(**where, steps=config["steps"], gpu="h200-transformers-serve", gpus=1,
                         modes=tuple(runs), speculate=spec, progress=False, lower_bounds=False)
    return run_bench(cfg)


def main() -> None:
    results = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "results"
    gpu = (results / "gpu.txt").read_text().splitlines()[-1].split(",")[0] if (results / "gpu.txt").exists() else "GPU"
    out = [f"## Real GPU: {gpu}, `transformers serve` (continuous batching), Llama-3-8B shape", "",
           "Same trace files replayed on the real server and on the simulated preset calibrated to it "
           "(`--gpu h200-transformers-serve`). Output lengths fixed to the trace's.", "",
           "| slice | mode | real time (s) | simulated (s) | real parallelism | simulated parallelism |",
           "|---|---|---|---|---|---|"]
    ratios = []
    for name, runs, config, trace in _cases(results):
        sim = _twin(runs, config, trace)
        calls = next(iter(runs.values()))["llm_calls"]
        label = f"{name[4:]} agents, {config['steps']} steps, {calls} calls"
        for mode, r in runs.items():
            s = sim.runs[mode]
            out.append(f"| {label} | {mode} | {r['completion_time_s']:.1f} | {s.completion_time_s:.1f} | "
                       f"{r['parallelism']:.2f} | {s.parallelism:.2f} |")
        real_t = {m: r["completion_time_s"] for m, r in runs.items()}
        for fast in ("async", SPEC_MODE):
            if fast in real_t and "sync" in real_t:
                ratios.append((label, f"{fast}/sync", real_t["sync"] / real_t[fast], sim.ratio(fast, "sync")))
    out += ["", "| slice | ratio | real | simulated | real vs simulated |", "|---|---|---|---|---|"]
    out += [f"| {label} | {what} | {r:.2f}x | {s:.2f}x | {round(100 * (r / s - 1)):+d}% |" for label, what, r, s in ratios]

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
