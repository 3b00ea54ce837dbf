"""Hardware, model and server presets of the simulated backend, with the numbers they come from.

Pure data and look-ups; the server that uses them is `metropolis_env.backends.simulated`. Every
constant is cited here and in docs/SIMULATOR.md. Units: bytes, bytes/s, FLOP/s, seconds; GB and
TB are decimal (1e9, 1e12), as in the vendors' data sheets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError


@dataclass(frozen=True)
class GPU:
    """One accelerator: memory size, peak memory bandwidth and peak dense bf16 tensor compute."""

    name: str
    memory_bytes: float
    mem_bw: float  # bytes/s
    peak_flops: float  # FLOP/s, dense bf16 (no structured sparsity)


@dataclass(frozen=True)
class ModelSpec:
    """A transformer as the roofline sees it.

    params: all weights (read once per iteration when every expert is touched).
    active_params: weights one token passes through (= params for dense models; top-k experts
    plus the shared layers for a mixture of experts). KV cache per token:
    2 (K and V) * layers * kv_heads * head_dim * bytes_per_param.
    """

    name: str
    params: float
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    active_params: float | None = None
    experts: int = 1
    experts_per_token: int = 1
    bytes_per_param: int = 2  # bf16

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.bytes_per_param

    @property
    def weight_bytes(self) -> float:
        return self.params * self.bytes_per_param

    @property
    def attn_dim(self) -> int:
        """Width of the attention product (query heads x head dim)."""
        return self.heads * self.head_dim


GB = 1e9
TB = 1e12
TFLOPS = 1e12

#: Data-sheet numbers (dense bf16 tensor TFLOPS, i.e. half the "with sparsity" figure).
#: L4: NVIDIA L4 Tensor Core GPU data sheet (24 GB GDDR6, 300 GB/s, 242 TFLOPS bf16 with sparsity).
#: A100: NVIDIA A100 Tensor Core GPU data sheet (80 GB HBM2e SXM: 2,039 GB/s; 40 GB SXM: 1,555 GB/s;
#: 312 TFLOPS bf16 dense). H100 SXM: NVIDIA H100 data sheet (80 GB HBM3, 3.35 TB/s, 1,979 TFLOPS
#: bf16 with sparsity). H200: NVIDIA H200 data sheet (141 GB HBM3e, 4.8 TB/s, same compute as H100).
GPUS: dict[str, GPU] = {
    "l4": GPU("NVIDIA L4", 24 * GB, 300 * GB, 121 * TFLOPS),
    "a100-80gb": GPU("NVIDIA A100-SXM 80GB", 80 * GB, 2039 * GB, 312 * TFLOPS),
    "a100-40gb": GPU("NVIDIA A100-SXM 40GB", 40 * GB, 1555 * GB, 312 * TFLOPS),
    "h100": GPU("NVIDIA H100 SXM", 80 * GB, 3350 * GB, 989 * TFLOPS),
    "h200": GPU("NVIDIA H200", 141 * GB, 4800 * GB, 989 * TFLOPS),
}
_GPU_ALIASES = {"a100": "a100-80gb", "h100-sxm": "h100", "h200-sxm": "h200"}

#: Model shapes from the models' published configurations (Hugging Face config.json of
#: meta-llama/Meta-Llama-3-8B and -70B, mistralai/Mixtral-8x7B-v0.1). Parameter counts: Llama-3-8B
#: 8.03 B (8,030,261,248 counted in the measured H200 profile, benchmarks/gpu/results/profile.json),
#: Llama-3-70B 70.6 B (Meta's model card), Mixtral-8x7B 46.7 B total / 12.9 B active per token (Mistral AI, "Mixtral of
#: experts", Dec 2023).
MODELS: dict[str, ModelSpec] = {
    "llama-3-8b": ModelSpec("Llama-3-8B", 8.03e9, layers=32, heads=32, kv_heads=8, head_dim=128),
    "llama-3-70b": ModelSpec("Llama-3-70B", 70.6e9, layers=80, heads=64, kv_heads=8, head_dim=128),
    "mixtral-8x7b": ModelSpec("Mixtral-8x7B", 46.7e9, layers=32, heads=32, kv_heads=8, head_dim=128,
                              active_params=12.9e9, experts=8, experts_per_token=2),
}
_MODEL_ALIASES = {"llama3-8b": "llama-3-8b", "llama-3.1-8b": "llama-3-8b", "llama3-70b": "llama-3-70b",
                  "llama-3.1-70b": "llama-3-70b", "mixtral": "mixtral-8x7b"}

#: Server defaults of a bare `ServerConfig` (the engine-independent roofline of earlier versions):
#: vLLM's engine arguments `max_num_seqs`=256, `max_num_batched_tokens`=8192 with chunked
#: prefill, `gpu_memory_utilization`=0.9, `block_size`=16. Memory-bandwidth utilisation 0.8 and
#: compute utilisation 0.6 (see `EFFICIENCY` for the per-GPU figures the engine presets use).
SERVER_DEFAULTS: dict[str, Any] = {
    "max_batch": 256,
    "max_batched_tokens": 8192,
    "gpu_memory_utilization": 0.9,
    "mem_efficiency": 0.8,
    "compute_efficiency": 0.6,
    "iteration_overhead_s": 0.0,
    "block_size": 16,
}

GiB = 2 ** 30

#: Serving engines: how a server admits, batches and evicts (the `scheduler` field selects the
#: mechanism, `metropolis_env.backends.scheduling`), with the engine's own default limits.
#: vllm: the v1 scheduler (vllm/v1/core/sched/scheduler.py): mixed prefill/decode iterations
#:   under a token budget (chunked prefill), `max_num_seqs` 256, `max_num_batched_tokens` 8192,
#:   KV in 16-token blocks allocated as requests grow, preemption by recompute when blocks run out.
#:   Memory: `gpu_memory_utilization` 0.9 minus weights, activation peak and non-torch memory:
#:   1.26 GiB + 1.79 GiB for Meta-Llama-3-8B on one H100 (vLLM PR #10511, memory profiling log).
#:   Per-iteration fixed cost 1.83 ms, fitted with the L4's decode share (EFFICIENCY) to a server
#:   measurement, vLLM v0.23.0 on one L4 serving Qwen2.5-0.5B (0.49 B parameters): 5.1 ms between
#:   tokens at concurrency 1 (ai.wmx.dev/benchmarks), of which its weights take 3.27 ms at 100 %
#:   of the L4's 300 GB/s.
#: sglang: SGLang v0.1.x, the paper's server (v0.1.17): a prefill batch runs alone, before any
#:   decode, admitting waiting requests while their prompts fit `max_prefill_tokens` (16384) and
#:   the KV pool holds prompt + max_new_tokens of every running request; then up to
#:   `num_continue_decode_steps` = 10 decode iterations before the next admission check
#:   (python/sglang/srt/managers/controller/tp_worker.py, global_config.py). KV pool:
#:   `mem_fraction_static` 0.88 of memory minus weights (server_args.py, tp 1), one-token pages.
#:   Per-iteration fixed cost 1.83 ms, as vllm (no SGLang measurement here).
#: roofline: the bare roofline of earlier versions (vLLM-style mixed batches, no CPU cost,
#:   efficiencies 0.8 / 0.6): kept for comparison (`--gpu l4-roofline`).
ENGINES: dict[str, dict[str, Any]] = {
    "vllm": {"scheduler": "vllm", "max_batch": 256, "max_batched_tokens": 8192, "block_size": 16,
             "gpu_memory_utilization": 0.9, "reserved_memory_bytes": (1.26 + 1.79) * GiB,
             "iteration_overhead_s": 0.00183},
    "sglang": {"scheduler": "sglang", "max_batch": 256, "max_batched_tokens": 16384, "block_size": 1,
               "gpu_memory_utilization": 0.88, "decode_steps": 10, "iteration_overhead_s": 0.00183},
    "roofline": {"scheduler": "vllm", "mem_efficiency": 0.8, "compute_efficiency": 0.6,
                 "iteration_overhead_s": 0.0, "reserve_kv": True},
}
DEFAULT_ENGINE = "sglang"  # the paper's server: `--gpu l4` is `l4-sglang`

#: Achieved share of peak per GPU: (memory bandwidth in decode, tensor compute in prefill), fitted
#: by `benchmarks/fit_simulator.py` on fitting data only (docs/SIMULATOR.md, "Fit"):
#: Prefill, L4: 0.47, measured bf16 matrix multiplication on one NVIDIA L4 (PyTorch 2.9, CUDA 12.8;
#: torch-performance-test-data issue #120, github.com/zzc0721/torch-performance-test-data, 2026-01-12):
#: 54.91 / 59.40 / 56.90 TFLOPS at 4096 / 8192 / 10240 square (sizes of a batched prefill's GEMMs:
#: thousands of tokens x 4096 x 4096-14336; 70.89 at 2048), mean 57.1 of the data sheet's 121 dense
#: = 0.47. A GEMM-only ceiling: the model's prefill (attention, norms, launches) reaches at most this.
#: Decode, L4: jointly with the engines' per-iteration cost, to the L4 step of a small model
#: (ENGINES) and the paper's single-thread time (one request at a time; 19.5x the 6,148 s async run
#: of 500 agents, busy hour, 8 L4s = 119,886 s for our 92,578 calls of 640.6 / 21.3 tokens, 1.295 s
#: a call): the fit hits its bound, 1.0 (100 % of 300 GB/s, 1.83 ms a step), and the simulated call
#: takes 1.298 s (+0.2 %): with the measured prefill the paper's single thread is as fast as an L4
#: can be. Decode, HBM GPUs: single-stream decode of Llama-3.1-8B bf16 on one A100-SXM4-40GB
#: with vLLM, 75 tokens/s at 1024 in / 128 out (J. Musgrave, "vLLM throughput-latency sweep on
#: NVIDIA A100"): 13.3 ms a step = 1.83 ms + 16.2 GB / (1555 GB/s * e), e = 0.91; the other HBM GPUs
#: take the same share (no published single-stream point for them here).
#: Prefill, HBM GPUs: 0.6 from the measured H200 profile (benchmarks/gpu/results/profile.json:
#: 642-token prefill 44 ms at batch 1, 149 ms at batch 8 on eager PyTorch; less the 22 ms decode
#: step of fixed cost: 0.47 and 0.66 of 989 TFLOPS).
EFFICIENCY: dict[str, tuple[float, float]] = {
    "l4": (1.0, 0.47),
    "a100-80gb": (0.91, 0.6),
    "a100-40gb": (0.91, 0.6),
    "h100": (0.91, 0.6),
    "h200": (0.91, 0.6),
}

#: Measured on a real server: `transformers serve --continuous-batching` (no CUDA graphs) on one
#: H200 with a random-weight Llama-3-8B, 642 prompt / 22 output tokens, closed loop of N clients.
#: Source: docs/REAL_SERVER.md (measured 2026-11-27), raw data
#: docs/data/h200-transformers-serve-sweep.json. {concurrent requests: requests per second}.
H200_TRANSFORMERS_SERVE_REQ_PER_S: dict[int, float] = {
    1: 1.11, 2: 1.51, 4: 2.60, 8: 5.00, 16: 8.54, 32: 9.98, 64: 9.89, 128: 8.44,
}
H200_TRANSFORMERS_SERVE_SHAPE = (642, 22)  # (prompt tokens, output tokens) of every request

#: Named servers besides `<gpu>-<engine>`: a GPU, a model and server knobs.
#: `h200-transformers-serve` is fitted to the table above (grid search, docs/SIMULATOR.md): 36 ms
#: of fixed cost per iteration (the measured eager decode step is 35 ms at batch 1 against a
#: 3.4 ms roofline), per-token compute at 15 % of peak (eager kernels, no CUDA graphs, padded
#: attention), at most 1024 tokens and 32 requests per iteration, KV reserved at admission
#: (its paged cache is far larger than 32 requests need).
SERVER_PRESETS: dict[str, dict[str, Any]] = {
    "h200-transformers-serve": {
        "gpu": "h200",
        "model": "llama-3-8b",
        "scheduler": "vllm",
        "iteration_overhead_s": 0.036,
        "compute_efficiency": 0.15,
        "mem_efficiency": 1.0,
        "max_batched_tokens": 1024,
        "max_batch": 32,
        "reserve_kv": True,
    },
}


def engine_of(name: str) -> str:
    """The engine a server preset name stands for (`l4` -> sglang, `l4-vllm` -> vllm); '' if none."""
    key = str(name).lower()
    if key in SERVER_PRESETS:
        return ""
    engine = key.rpartition("-")[2]
    return engine if engine in ENGINES else DEFAULT_ENGINE


def server_preset(name: str) -> dict[str, Any] | None:
    """The knobs of a named server: `h200-transformers-serve`, `<gpu>-<engine>` (e.g. `l4-vllm`,
    `h100-sglang`, `l4-roofline`) or a bare GPU name, which takes `DEFAULT_ENGINE`. None when
    `name` is none of these. The result has "gpu" (a GPUS key), maybe "model", and ServerConfig fields."""
    key = str(name).lower()
    if key in SERVER_PRESETS:
        return dict(SERVER_PRESETS[key])
    gpu_name, _, engine = key.rpartition("-")
    if engine not in ENGINES or not gpu_name:
        gpu_name, engine = key, DEFAULT_ENGINE
    gpu_key = _GPU_ALIASES.get(gpu_name, gpu_name)
    if gpu_key not in GPUS:
        return None
    knobs: dict[str, Any] = {"gpu": gpu_key}
    if engine != "roofline":
        knobs["mem_efficiency"], knobs["compute_efficiency"] = EFFICIENCY[gpu_key]
    knobs.update(ENGINES[engine])
    return knobs


def _lookup(name, table: dict, aliases: dict, what: str):
    key = aliases.get(str(name).lower(), str(name).lower())
    if key not in table:
        raise ConfigError(f"unknown {what} {name!r}: choose one of {sorted(table)} (aliases {sorted(aliases)})"
                          + (f", <gpu>-<engine> with an engine of {sorted(ENGINES)}, or a server preset "
                             f"{sorted(SERVER_PRESETS)}" if what == "GPU" else "")
                          + f", or pass a presets.{'GPU' if what == 'GPU' else 'ModelSpec'}")
    return table[key]


def gpu_spec(name: str | GPU) -> GPU:
    """The GPU preset called `name` (case-insensitive; aliases: a100 = a100-80gb)."""
    return name if isinstance(name, GPU) else _lookup(name, GPUS, _GPU_ALIASES, "GPU")


def model_spec(name: str | ModelSpec) -> ModelSpec:
    """The model preset called `name` (case-insensitive)."""
    return name if isinstance(name, ModelSpec) else _lookup(name, MODELS, _MODEL_ALIASES, "model")


def default_tp(gpu: GPU, model: ModelSpec) -> int:
    """Smallest power-of-two tensor-parallel degree whose GPUs hold the weights in at most 70 % of
    their memory (the rest is KV cache): Llama-3-8B on one L4, Llama-3-70B on 4 A100-80GB."""
    tp = 1
    while model.weight_bytes > 0.7 * tp * gpu.memory_bytes:
        tp *= 2
    return tp
