"""Fit the simulated server's per-iteration cost and per-GPU decode efficiencies, on fitting data only.

Fitting data (docs/SIMULATOR.md, "Fit"): two server measurements, a GEMM measurement on the L4
and the paper's single-thread time (one request at a time). Nothing here reads the paper's sync,
async or oracle figures: those are the validation (docs/SIMULATOR.md, "Validation").

    python benchmarks/fit_simulator.py

prints the fitted numbers; `presets.ENGINES` and `presets.EFFICIENCY` hold them (rounded).
"""

from __future__ import annotations

from dataclasses import replace

from metropolis_env import clock
from metropolis_env.backends.base import LLMRequest
from metropolis_env.backends.simulated import SimulatedBackend, make_backend

# Server measurement: Llama-3.1-8B bf16, vLLM, one A100-SXM4-40GB, 1024 in / 128 out, one request at
# a time: about 75 output tokens/s (J. Musgrave, "vLLM throughput-latency sweep on NVIDIA A100").
A100_TPOT_S = 1 / 75.0
# The paper (AI Metropolis, MLSys 2025), busy hour, 500 agents, 8 L4s: async 6,148 s, 19.5x faster
# than single-thread, so single-thread took 119,886 s; our busy hour of 500 agents has 92,578 calls
# of 640.6 prompt / 21.35 output tokens on average: 1.295 s a call.
PAPER_SINGLE_S, CALLS, MEAN_IN, MEAN_OUT = 6148 * 19.5, 92_578, 641, 21
# The L4's prefill share is not fitted here: it is measured (presets.EFFICIENCY: bf16 GEMMs on one L4,
# 57.1 of 121 TFLOPS = 0.47) and enters the single-thread time the decode share is solved against.
# Server measurement: Qwen2.5-0.5B-Instruct bf16 (0.49 B parameters, model card), vLLM v0.23.0 (V1),
# one L4, 256 in / 128 out, concurrency 1: inter-token latency p50 5.1 ms (ai.wmx.dev/benchmarks).
L4_SMALL_ITL_S, SMALL_WEIGHT_BYTES = 5.1e-3, 0.49e9 * 2


def latency(cfg, n_in: int, n_out: int) -> float:
    backend = SimulatedBackend(cfg)

    async def one():
        return (await backend.complete(LLMRequest("fit", 0, input_tokens=n_in, output_tokens=n_out))).latency

    return clock.run(one())


def solve(f, target: float, lo: float = 0.05, hi: float = 1.0) -> float:
    """The efficiency e in [lo, hi] with f(e) == target (f decreasing in e); hi if unreachable."""
    if f(hi) > target:
        return hi
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) > target else (lo, mid)
    return (lo + hi) / 2


def fit_l4(engine: str) -> tuple[float, float]:
    """(per-iteration cost, L4 decode share) meeting both L4 data: the small model's decode step
    (cost + its weights at the L4's share of 300 GB/s) and the paper's single-thread time."""
    l4 = make_backend(f"l4-{engine}").config
    per_call = PAPER_SINGLE_S / CALLS

    def overhead(e):
        return L4_SMALL_ITL_S - SMALL_WEIGHT_BYTES / (l4.gpu.mem_bw * e)

    e = solve(lambda e: latency(replace(l4, mem_efficiency=e, iteration_overhead_s=max(0.0, overhead(e))),
                                MEAN_IN, MEAN_OUT), per_call, lo=0.4)
    return overhead(e), e


def main() -> None:
    for engine in ("sglang", "vllm"):
        o, e = fit_l4(engine)
        l4 = make_backend(f"l4-{engine}").config
        got = latency(replace(l4, mem_efficiency=e, iteration_overhead_s=o), MEAN_IN, MEAN_OUT)
        print(f"{engine} on L4: per-iteration cost {o * 1e3:.2f} ms, L4 decode share {e:.4f}"
              f"{' (bound: 100 % of bandwidth)' if e >= 1.0 else ''}, prefill share {l4.compute_efficiency} "
              f"(measured); small-model step {L4_SMALL_ITL_S * 1e3:.1f} ms, single call {got:.3f} s vs the "
              f"paper's single-thread {PAPER_SINGLE_S / CALLS:.3f} s")
    a100 = make_backend("a100-40gb-vllm").config

    def tpot(e):
        cfg = replace(a100, mem_efficiency=e)
        ttft = cfg.iteration_time(1024, 1024, 1024 * 1025 // 2)
        return (latency(cfg, 1024, 128) - ttft) / 127

    e_hbm = solve(tpot, A100_TPOT_S)
    print(f"HBM decode share (A100-40GB, vLLM single stream 75 tok/s, "
          f"{a100.iteration_overhead_s * 1e3:.2f} ms per iteration): {e_hbm:.4f}")


if __name__ == "__main__":
    main()
