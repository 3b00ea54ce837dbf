"""SimulatedBackend: a batched LLM server (N GPU replicas, each a vLLM- or SGLang-like scheduler) on the loop's clock.

A request arrives, is routed to a replica (`routing`: "least-loaded", the fewest outstanding
requests, lowest index on ties, and while speculative requests are in flight the fewest
non-speculative ones first; "round-robin", in turn, as SGLang v0.1's data-parallel controller;
or "per-agent", each agent to one replica) and is served there by the replica's scheduler
(`metropolis_env.backends.scheduling`: admission in policy order under the batch, token and KV
limits, chunked or exclusive prefill, KV blocks with preemption by recompute, cancellation).
This module holds the cost of one iteration and the backend around the replicas.

Iteration time (`ServerConfig.iteration_time`), a roofline plus a fixed per-iteration cost:
    t = overhead + max(bytes / (BW * mem_efficiency), flops / (FLOPS * compute_efficiency))
    bytes = weights read (all experts a batch touches) + KV entries of the batch's contexts
    flops = 2 * active_params * tokens + 4 * layers * attn_dim * (sum of attended positions)
with BW and FLOPS those of the replica's TP GPUs together. A run of decode-only iterations has a
closed-form duration (bytes and FLOPs grow linearly with the iteration, so the sum of the maxima
splits at one crossing point).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import math
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from . import presets
from .base import Backend, BackendError, LLMRequest, LLMResponse
from .presets import GPU, ModelSpec
from .scheduling import Job, Replica

__all__ = ["ServerConfig", "SimulatedBackend", "make_backend", "estimate_tokens"]

POLICIES = ("fcfs", "priority")
SCHEDULERS = ("vllm", "sglang")
#: How a request picks its replica. round-robin: SGLang v0.1.x's data-parallel controller
#: (`--dp-size`; `load_balance_method` "round_robin" by default, dealing requests in turn without
#: looking at load: python/sglang/srt/managers/controller/manager_multi.py). per-agent: every
#: request of an agent to one replica, agents dealt in turn as they first call (client-side
#: pinning, as deployments that keep an agent's prefix cache on one server do).
ROUTINGS = ("least-loaded", "round-robin", "per-agent")
CHARS_PER_TOKEN = 4  # English text through a BPE tokenizer (Llama-3 averages ~4 characters/token)
_DEFAULTS = presets.SERVER_DEFAULTS


@dataclass(frozen=True)
class ServerConfig:
    """One simulated server: `replicas` data-parallel copies, each on `tp` tensor-parallel GPUs.

    scheduler: "vllm" (v1: mixed iterations, chunked prefill, KV blocks taken as contexts grow,
    preemption by recompute; `reserve_kv` reserves whole contexts at admission instead) or
    "sglang" (v0.1: exclusive prefill batches, whole contexts reserved, `decode_steps` decode
    iterations between admission checks); see `metropolis_env.backends.scheduling`.
    reserved_memory_bytes: memory per replica that is neither weights nor KV (activations, CUDA
    graphs, runtime). The constants and their sources are in `presets` and docs/SIMULATOR.md.
    """

    gpu: GPU
    model: ModelSpec
    tp: int = 1
    replicas: int = 1
    policy: str = "priority"
    max_batch: int = _DEFAULTS["max_batch"]
    max_batched_tokens: int = _DEFAULTS["max_batched_tokens"]
    iteration_overhead_s: float = _DEFAULTS["iteration_overhead_s"]
    mem_efficiency: float = _DEFAULTS["mem_efficiency"]
    compute_efficiency: float = _DEFAULTS["compute_efficiency"]
    gpu_memory_utilization: float = _DEFAULTS["gpu_memory_utilization"]
    scheduler: str = "vllm"
    block_size: int = _DEFAULTS["block_size"]
    decode_steps: int = 1
    reserved_memory_bytes: float = 0.0
    reserve_kv: bool = False
    routing: str = "least-loaded"
    name: str = ""

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ConfigError(f"unknown admission policy {self.policy!r}: choose one of {POLICIES}")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"unknown scheduler {self.scheduler!r}: choose one of {SCHEDULERS}")
        if self.routing not in ROUTINGS:
            raise ConfigError(f"unknown routing {self.routing!r}: choose one of {ROUTINGS}")
        for knob in ("tp", "replicas", "max_batch", "max_batched_tokens", "block_size", "decode_steps"):
            if int(getattr(self, knob)) < 1:
                raise ConfigError(f"{knob} must be >= 1, got {getattr(self, knob)!r}")
        if self.max_batch > self.max_batched_tokens:
            # Every decoding request needs one token of the budget per iteration.
            raise ConfigError(f"max_batch ({self.max_batch}) must not exceed max_batched_tokens "
                              f"({self.max_batched_tokens})")
        for knob in ("mem_efficiency", "compute_efficiency", "gpu_memory_utilization"):
            if not 0 < getattr(self, knob) <= 1:
                raise ConfigError(f"{knob} must be in (0, 1], got {getattr(self, knob)!r}")
        for knob in ("iteration_overhead_s", "reserved_memory_bytes"):
            if getattr(self, knob) < 0:
                raise ConfigError(f"{knob} must be >= 0, got {getattr(self, knob)!r}")
        if self.kv_capacity_tokens < 1:
            raise ConfigError(
                f"{self.model.name} ({self.model.weight_bytes / 1e9:.1f} GB of weights) leaves no room for a "
                f"KV cache on tp={self.tp} x {self.gpu.name}; use a larger tp (or more GPUs)")

    @property
    def gpus(self) -> int:
        return self.tp * self.replicas

    @property
    def mem_bw(self) -> float:
        """Achieved bytes/s of one replica."""
        return self.tp * self.gpu.mem_bw * self.mem_efficiency

    @property
    def flops(self) -> float:
        """Achieved FLOP/s of one replica."""
        return self.tp * self.gpu.peak_flops * self.compute_efficiency

    @functools.cached_property
    def kv_capacity_tokens(self) -> int:
        """Tokens of KV cache one replica holds: the memory share the server may use, minus weights
        and the reserved (activation, runtime) memory."""
        free = (self.gpu_memory_utilization * self.tp * self.gpu.memory_bytes - self.model.weight_bytes
                - self.reserved_memory_bytes)
        return max(0, int(free // self.model.kv_bytes_per_token))

    def weight_bytes_read(self, tokens: int) -> float:
        """Weights one iteration of `tokens` tokens reads: all of a dense model; for a mixture of
        experts the shared layers plus the experts the batch touches (each token picks k of E
        experts: a given expert is missed by all tokens with probability (1 - k/E)^tokens)."""
        m = self.model
        if m.experts <= 1 or m.active_params is None:
            return m.weight_bytes
        # total = shared + E * e and active = shared + k * e give the expert size e.
        expert = (m.params - m.active_params) / (m.experts - m.experts_per_token)
        shared = m.params - m.experts * expert
        touched = m.experts * (1.0 - (1.0 - m.experts_per_token / m.experts) ** tokens)
        return (shared + touched * expert) * m.bytes_per_param

    def active_params(self) -> float:
        return self.model.active_params if self.model.active_params is not None else self.model.params

    def iteration_time(self, tokens: int, kv_tokens: int, attended: int) -> float:
        """Seconds of one iteration that processes `tokens` tokens, whose requests hold `kv_tokens`
        KV entries after it, and whose tokens attend to `attended` positions in all."""
        return self.iteration_overhead_s + max(self._mem_s(tokens, kv_tokens), self._compute_s(tokens, attended))

    def _mem_s(self, tokens: int, kv_tokens: float) -> float:
        return (self.weight_bytes_read(tokens) + self.model.kv_bytes_per_token * kv_tokens) / self.mem_bw

    def _compute_s(self, tokens: int, attended: float) -> float:
        m = self.model
        return (2.0 * self.active_params() * tokens + 4.0 * m.layers * m.attn_dim * attended) / self.flops

    def decode_segment_time(self, n: int, context: int, iterations: int) -> float:
        """Seconds of `iterations` decode-only iterations of `n` requests holding `context` KV
        entries in all before the first: iteration i (from 0) holds context + n * (i + 1) entries
        after it and attends to as many positions. Equals the sum of `iteration_time` over them."""
        if iterations <= 0:
            return 0.0
        return self.decode_time(self.decode_lines(n, context), iterations)

    def decode_lines(self, n: int, context: int) -> tuple[float, float, float, float]:
        """(a, b, c, d): iteration i of a decode segment of `n` requests over `context` entries
        takes overhead + max(a + b*i, c + d*i) seconds (memory and compute time)."""
        m = self.model
        kv = self.model.kv_bytes_per_token
        per_pos = 4.0 * m.layers * m.attn_dim
        first = context + n
        a = (self.weight_bytes_read(n) + kv * first) / self.mem_bw
        b = kv * n / self.mem_bw
        c = (2.0 * self.active_params() * n + per_pos * first) / self.flops
        d = per_pos * n / self.flops
        return a, b, c, d

    def decode_time(self, lines: tuple[float, float, float, float], iterations: int) -> float:
        """`decode_segment_time` from its `decode_lines` (a search over `iterations` computes
        them once)."""
        if iterations <= 0:
            return 0.0
        a, b, c, d = lines
        return iterations * self.iteration_overhead_s + _sum_max_linear(a, b, c, d, iterations)


def _sum_linear(a: float, b: float, lo: int, hi: int) -> float:
    """sum of a + b*i for i in [lo, hi)."""
    n = hi - lo
    return n * a + b * (lo + hi - 1) * n / 2.0 if n > 0 else 0.0


def _sum_max_linear(a: float, b: float, c: float, d: float, k: int) -> float:
    """sum over i in [0, k) of max(a + b*i, c + d*i): two lines cross at most once."""
    if b == d:
        return _sum_linear(max(a, c), b, 0, k)
    x = (c - a) / (b - d)  # a + b*x == c + d*x
    if b > d:  # the first line dominates from the crossing on
        m = min(max(math.ceil(x), 0), k)
        return _sum_linear(c, d, 0, m) + _sum_linear(a, b, m, k)
    m = min(max(math.floor(x) + 1, 0), k)  # the first line dominates up to the crossing
    return _sum_linear(a, b, 0, m) + _sum_linear(c, d, m, k)


def estimate_tokens(request: LLMRequest) -> tuple[int, int]:
    """(input, output) tokens of a request: its own counts where given, else ~4 characters per
    prompt token and `max_tokens` output tokens (a server without EOS runs to max_tokens)."""
    n_in = request.input_tokens
    if n_in is None:
        if request.prompt is not None:
            text = request.prompt
        elif request.messages is not None:
            text = "".join(str(m.get("content", "")) for m in request.messages)
        else:
            text = ""
        n_in = max(1, math.ceil(len(text) / CHARS_PER_TOKEN))
    n_out = request.output_tokens if request.output_tokens is not None else request.max_tokens
    return int(n_in), max(1, int(n_out))


_FILLER = ("the", "agent", "walks", "to", "the", "cafe", "and", "says", "hello", ".")


@functools.lru_cache(maxsize=4096)
def _filler_text(n_out: int) -> str:
    """Deterministic stand-in text: the simulated server models time, not words."""
    return " ".join(_FILLER[i % len(_FILLER)] for i in range(n_out))


class SimulatedBackend(Backend):
    """The embedded default backend: a simulated batched LLM server (see the module docstring).

    Latencies are virtual seconds on the running event loop's clock, so runs belong on the virtual
    clock (`metropolis_env.clock.run`). Responses carry a deterministic filler text, the request's
    token counts (`estimate_tokens`), `start` = arrival and `end` = completion time. A request whose
    context cannot fit a replica's KV cache raises BackendError. A cancelled caller's request leaves
    the server at the next iteration boundary (its batch slot and KV are freed).
    """

    virtual_time = True

    def __init__(self, config: ServerConfig):
        self.config = config
        self._loads = [0] * config.replicas  # outstanding requests per replica
        self._replicas = [Replica(i, config, loads=self._loads) for i in range(config.replicas)]
        self._endpoints = [f"sim-replica-{i}" for i in range(config.replicas)]
        self._seq = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._first_arrival: float | None = None
        self._span_done = 0.0  # serving span of loops used before the current one
        self._speculative: dict[int, tuple[Replica, Job]] = {}  # id(request) -> where it is, until answered
        self._real = [0] * config.replicas  # non-speculative (or promoted) requests in flight per replica
        self._turn = 0  # requests routed so far, for round-robin
        self._homes: dict[str, int] = {}  # agent -> its replica, for per-agent

    # -- the Backend interface -------------------------------------------------------------

    async def complete(self, request: LLMRequest) -> LLMResponse:
        loop = asyncio.get_running_loop()
        self._bind(loop)
        now = loop.time()
        n_in, n_out = estimate_tokens(request)
        reps = self._replicas
        if not reps[0].fits(n_in, n_out):
            raise BackendError(
                f"request {request.key} needs {n_in + n_out} tokens of KV cache; a replica of "
                f"{self.config.name or 'this server'} holds {self.config.kv_capacity_tokens}", request)
        seq = next(self._seq)
        prio = request.effective_priority
        key = (prio, seq) if self.config.policy == "priority" else (seq,)
        job = Job(request, seq, n_in, n_out, now, loop.create_future(), key, victim_key=(-prio, -seq),
                  prompt_left=n_in, out_left=n_out, speculative=request.speculative)
        if self._first_arrival is None:
            self._first_arrival = now
        rep = self._route(request.agent)
        rep.submit(job)
        if request.speculative:
            self._speculative[id(request)] = (rep, job)
        else:
            self._real[rep.index] += 1
        try:
            await job.future
        except asyncio.CancelledError:
            rep.cancel(job)
            raise
        finally:
            if self._speculative.pop(id(request), None) is None:  # real, or promoted to real
                self._real[rep.index] -= 1
        return LLMResponse(_filler_text(n_out), n_in, n_out, start=job.arrival, end=job.end,
                           endpoint=self._endpoints[rep.index], gpu_s=job.gpu_s)

    def promote(self, request: LLMRequest) -> None:
        """A speculative request still waiting is queued as its step's non-speculative one would
        be (its GPU time still counts as speculative: it was sent so)."""
        got = self._speculative.pop(id(request), None)
        if got is not None:
            rep, job = got
            self._real[rep.index] += 1  # real load from now on
            if self.config.policy == "priority":
                base = request.step if request.priority is None else request.priority
                rep.promote(job, (base, job.seq))

    def stats(self) -> dict[str, Any]:
        """Metrics of everything served so far.

        gpu_busy_share: mean over replicas of the share of the serving span (first arrival to last
        completion) during which the replica had a non-empty batch; per replica in
        gpu_busy_share_per_replica. queue_delay_*: arrival to first scheduled token.
        preemptions / recomputed_tokens: evictions for want of KV blocks and the output tokens
        they made the server compute again. dropped: requests whose caller gave up.
        gpu_busy_s: busy GPU seconds, replicas added up (each replica's busy time once, however
        many GPUs it spans); gpu_s_speculative: the part of it charged to requests sent as
        speculative (`scheduling` says how an iteration is split over its requests; each
        response carries its own share as `gpu_s`).
        """
        reps = self._replicas
        last_end = max(r.last_end for r in reps)
        span = self._span_done + (last_end - self._first_arrival if self._first_arrival is not None else 0.0)
        busy = [r.busy_s / span if span > 0 else 0.0 for r in reps]
        admitted = sum(r.first_admissions for r in reps)
        cfg = self.config
        return {
            "server": cfg.name or f"{cfg.gpu.name} / {cfg.model.name}",
            "gpus": cfg.gpus, "tp": cfg.tp, "replicas": cfg.replicas, "policy": cfg.policy,
            "scheduler": cfg.scheduler, "routing": cfg.routing,
            "gpu_busy_share": sum(busy) / len(busy),
            "gpu_busy_share_per_replica": busy,
            "gpu_busy_s": sum(r.busy_s for r in reps),
            "gpu_s_speculative": sum(r.gpu_s_speculative for r in reps),
            "iterations": sum(r.iterations for r in reps),
            "iterations_per_replica": [r.iterations for r in reps],
            "requests": sum(r.completed for r in reps),
            "tokens_in": sum(r.tokens_in for r in reps),
            "tokens_out": sum(r.tokens_out for r in reps),
            "preemptions": sum(r.preemptions for r in reps),
            "recomputed_tokens": sum(r.recomputed_tokens for r in reps),
            "dropped": sum(r.dropped for r in reps),
            "queue_delay_mean_s": sum(r.queue_delay_sum for r in reps) / admitted if admitted else 0.0,
            "queue_delay_max_s": max(r.queue_delay_max for r in reps),
            "serving_span_s": span,
        }

    # -- mechanism -----------------------------------------------------------------------------

    def _route(self, agent: str) -> Replica:
        """The replica a new request of `agent` goes to (`ServerConfig.routing`)."""
        reps = self._replicas
        if len(reps) == 1:
            return reps[0]
        routing = self.config.routing
        if routing == "per-agent":
            home = self._homes.get(agent)
            if home is None:
                home = self._homes[agent] = len(self._homes) % len(reps)
            return reps[home]
        if routing == "round-robin":
            rep = reps[self._turn % len(reps)]
            self._turn += 1
            return rep
        # least outstanding, lowest index on ties: C-level passes over the counters, since with 64
        # replicas this compares 64 of them per request. With speculative requests in flight:
        # fewest real (non-speculative) requests first, then least outstanding: speculative ones
        # are filler that runs behind real ones, so real load is what a request will wait behind
        loads = self._loads
        if not self._speculative:
            return reps[loads.index(min(loads))]
        real = self._real
        return reps[min(range(len(reps)), key=lambda i: (real[i], loads[i]))]

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Follow the caller's event loop: timers live on one loop, so a backend moves to a new
        loop only while idle (e.g. one `clock.run` after another); metrics carry over."""
        if loop is self._loop:
            return
        if self._loop is not None:
            if any(r.outstanding for r in self._replicas):
                raise BackendError("SimulatedBackend used from a second event loop while serving requests")
            if self._first_arrival is not None:
                self._span_done += max(r.last_end for r in self._replicas) - self._first_arrival
            self._first_arrival = None
            for r in self._replicas:
                r.last_end = 0.0
        self._loop = loop
        for r in self._replicas:
            r.loop = loop


def make_backend(gpu: str | GPU = "l4", model: str | ModelSpec = "llama-3-8b", gpus: int | None = None,
                 policy: str = "priority", tp: int | None = None, **overrides: Any) -> SimulatedBackend:
    """A SimulatedBackend from presets.

    gpu: a server preset: `<gpu>-<engine>` with a GPU of `presets.GPUS` (l4, a100 = a100-80gb,
    a100-40gb, h100, h200) and an engine of `presets.ENGINES` (vllm, sglang, roofline), a bare GPU
    name (its `presets.DEFAULT_ENGINE` server: `l4` is `l4-sglang`), `h200-transformers-serve`
    (which also fixes the model), or a `presets.GPU` (a bare roofline ServerConfig).
    gpus: GPUs in all (default: one replica); tp: GPUs per replica (default: the fewest powers of
    two that hold the weights, `presets.default_tp`). `gpus` must be a multiple of `tp`; the
    server has gpus // tp data-parallel replicas. overrides: any other ServerConfig field
    (max_batch, max_batched_tokens, iteration_overhead_s, mem_efficiency, scheduler, ...).
    Raises ConfigError for unknown names or inconsistent sizes.
    """
    knobs: dict[str, Any] = {}
    name = ""
    preset = presets.server_preset(gpu) if isinstance(gpu, str) else None
    if preset is not None:
        name = gpu.lower()
        gpu = preset.pop("gpu")
        preset_model = preset.pop("model", None)
        if preset_model is not None:
            if model in (None, "llama-3-8b") or model == preset_model:
                model = preset_model
            else:
                raise ConfigError(f"server preset {name!r} is calibrated for model {preset_model!r}, not {model!r}")
        knobs.update(preset)
    g = presets.gpu_spec(gpu)
    m = presets.model_spec(model)
    tp = presets.default_tp(g, m) if tp is None else int(tp)
    gpus = tp if gpus is None else int(gpus)
    if tp < 1 or gpus < tp or gpus % tp:
        raise ConfigError(f"{m.name} on {g.name} runs on tp={tp} GPUs per replica: gpus must be a positive "
                          f"multiple of {tp}, got gpus={gpus}")
    unknown = set(overrides) - {f for f in ServerConfig.__dataclass_fields__} - {"name"}
    if unknown:
        raise ConfigError(f"unknown simulated-server option(s) {sorted(unknown)}")
    knobs.update(overrides)
    knobs.setdefault("name", f"{gpus}x {g.name} / {m.name}" + (f" ({name})" if name else ""))
    return SimulatedBackend(ServerConfig(gpu=g, model=m, tp=tp, replicas=gpus // tp, policy=policy, **knobs))
