"""SimulatedBackend: a batched LLM server (continuous batching on N GPU replicas) on the loop's clock.

The model, in the terms of vLLM's scheduler:
- A request arrives, is routed to the replica with the fewest outstanding requests (lowest index
  on ties) and waits there. Admission order is FCFS (arrival) or priority (smallest
  `LLMRequest.effective_priority` first, FCFS among equals); admitted requests are never preempted.
- The replica runs iterations back to back while it has work. Each iteration processes one
  token for every request that is decoding, and as many prompt tokens as are left in the token
  budget (`max_batched_tokens`) for requests still in prefill (chunked prefill, in admission
  order). Waiting requests are admitted at iteration boundaries while the budget has room,
  fewer than `max_batch` requests run, and the KV cache can hold the request's whole context
  (prompt + output tokens, reserved at admission so nothing is ever preempted).
- The iteration that processes a request's last prompt token emits its first output token; every
  later iteration emits one more. The request completes at the end of the iteration that emits its
  last token.
- Iteration time (`ServerConfig.iteration_time`), a roofline plus a fixed overhead:
      t = overhead + max(bytes / (BW * mem_efficiency), flops / (FLOPS * compute_efficiency))
      bytes = weights read (all experts a batch touches) + KV entries of the batch's contexts
      flops = 2 * active_params * tokens + 4 * layers * attn_dim * (sum of attended positions)
  with BW and FLOPS those of the replica's TP GPUs together.

Event-driven: between events a replica's batch is fixed, so a run of decode-only iterations is one
segment whose duration has a closed form (bytes and FLOPs grow linearly with the iteration, so the
sum of the maxima splits at one crossing point); one `loop.call_at` per replica fires at the next
completion. An arrival that can be admitted shortens the segment to the end of the iteration in
progress. Iterations with prefill tokens are one-iteration segments.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from . import presets
from .base import Backend, BackendError, LLMRequest, LLMResponse
from .presets import GPU, ModelSpec

__all__ = ["ServerConfig", "SimulatedBackend", "make_backend", "estimate_tokens"]

POLICIES = ("fcfs", "priority")
CHARS_PER_TOKEN = 4  # English text through a BPE tokenizer (Llama-3 averages ~4 characters/token)
_DEFAULTS = presets.SERVER_DEFAULTS


@dataclass(frozen=True)
class ServerConfig:
    """One simulated server: `replicas` data-parallel copies, each on `tp` tensor-parallel GPUs.

    The constants and their sources are in `presets` and docs/SIMULATOR.md.
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
    name: str = ""

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ConfigError(f"unknown admission policy {self.policy!r}: choose one of {POLICIES}")
        for knob in ("tp", "replicas", "max_batch", "max_batched_tokens"):
            if int(getattr(self, knob)) < 1:
                raise ConfigError(f"{knob} must be >= 1, got {getattr(self, knob)!r}")
        if self.max_batch > self.max_batched_tokens:
            # Every decoding request needs one token of the budget per iteration.
            raise ConfigError(f"max_batch ({self.max_batch}) must not exceed max_batched_tokens "
                              f"({self.max_batched_tokens})")
        for knob in ("mem_efficiency", "compute_efficiency", "gpu_memory_utilization"):
            if not 0 < getattr(self, knob) <= 1:
                raise ConfigError(f"{knob} must be in (0, 1], got {getattr(self, knob)!r}")
        if self.iteration_overhead_s < 0:
            raise ConfigError(f"iteration_overhead_s must be >= 0, got {self.iteration_overhead_s!r}")
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
        """Tokens of KV cache one replica holds: the memory share the server may use, minus weights."""
        free = self.gpu_memory_utilization * self.tp * self.gpu.memory_bytes - self.model.weight_bytes
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


@dataclass(eq=False)
class _Job:
    """One request inside the server."""

    request: LLMRequest
    seq: int  # arrival order: FCFS and tie-breaks
    n_in: int
    n_out: int
    arrival: float
    future: asyncio.Future
    prompt_left: int = 0
    out_left: int = 0
    context: int = 0  # KV entries held while prefilling
    # Once decoding, the context grows by one per replica iteration: ctx0 + (iterations - iter0).
    ctx0: int = 0
    iter0: int = 0
    finish_iter: int = 0  # replica iteration count at whose end the last token is out
    admitted: float | None = None
    end: float = 0.0
    cancelled: bool = False


@dataclass(eq=False)
class _Replica:
    """The running state of one data-parallel replica (one owner of its queues)."""

    index: int
    waiting: list = field(default_factory=list)  # heap of (key, job)
    prefilling: list = field(default_factory=list)  # admitted, prompt not done, admission order
    decoding: list = field(default_factory=list)  # heap of (finish_iter, seq, job)
    context_sum: int = 0  # KV entries of the decoding jobs at `iterations`
    aborted: int = 0  # running jobs cancelled by their callers since the last boundary
    kv_reserved: int = 0
    iterations: int = 0
    # the segment in progress
    timer: asyncio.Handle | None = None
    seg_start: float = 0.0
    seg_iters: int = 0
    seg_chunks: list = field(default_factory=list)  # [(job, tokens)] of a prefill iteration
    # metrics
    busy_s: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    completed: int = 0
    #: `n_outstanding` of every replica of the server, by index (see below); one list per server.
    loads: list = field(default_factory=lambda: [0], repr=False)

    @property
    def n_outstanding(self) -> int:
        """`outstanding`, kept as a counter in the server's `loads` list: routing reads it for
        every replica on every request, with C-level min() and index() over the list."""
        return self.loads[self.index]

    @n_outstanding.setter
    def n_outstanding(self, value: int) -> None:
        self.loads[self.index] = value

    @property
    def outstanding(self) -> int:
        return len(self.waiting) + len(self.prefilling) + len(self.decoding)

    @property
    def running(self) -> int:
        return len(self.prefilling) + len(self.decoding)




class SimulatedBackend(Backend):
    """The embedded default backend: a simulated batched LLM server (see the module docstring).

    Latencies are virtual seconds on the running event loop's clock, so runs belong on the virtual
    clock (`metropolis_env.clock.run`). Responses carry a deterministic filler text, the request's
    token counts (`estimate_tokens`), `start` = arrival and `end` = completion time. A request whose
    context cannot fit a replica's KV cache raises BackendError. A cancelled caller's request is
    dropped if still waiting, else it leaves the batch (slot and KV freed) at the next iteration
    boundary, as a real server aborts it at its next step.
    """

    virtual_time = True

    def __init__(self, config: ServerConfig):
        self.config = config
        self._loads = [0] * config.replicas  # outstanding requests per replica
        self._replicas = [_Replica(i, loads=self._loads) for i in range(config.replicas)]
        self._endpoints = [f"sim-replica-{i}" for i in range(config.replicas)]
        self._seq = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._first_arrival: float | None = None
        self._last_end = 0.0
        self._span_done = 0.0  # serving span of loops used before the current one
        self._queue_delay_sum = 0.0
        self._queue_delay_max = 0.0
        self._admitted = 0

    # -- the Backend interface -------------------------------------------------------------

    async def complete(self, request: LLMRequest) -> LLMResponse:
        loop = asyncio.get_running_loop()
        self._bind(loop)
        now = loop.time()
        n_in, n_out = estimate_tokens(request)
        if n_in + n_out > self.config.kv_capacity_tokens:
            raise BackendError(
                f"request {request.key} needs {n_in + n_out} tokens of KV cache; a replica of "
                f"{self.config.name or 'this server'} holds {self.config.kv_capacity_tokens}", request)
        job = _Job(request, next(self._seq), n_in, n_out, now, loop.create_future(),
                   prompt_left=n_in, out_left=n_out)
        if self._first_arrival is None:
            self._first_arrival = now
        reps = self._replicas
        # least outstanding, lowest index on ties: C-level passes over the counters, since with 64
        # replicas this compares 64 of them per request
        if len(reps) == 1:
            rep = reps[0]
        else:
            loads = self._loads
            rep = reps[loads.index(min(loads))]
        key = (request.effective_priority, job.seq) if self.config.policy == "priority" else (job.seq,)
        heapq.heappush(rep.waiting, (key, job))
        rep.n_outstanding += 1
        self._on_arrival(rep, loop)
        try:
            await job.future
        except asyncio.CancelledError:
            job.cancelled = True
            if job.admitted is not None:
                rep.aborted += 1  # leaves the batch at the next iteration boundary
                self._end_segment_soon(rep, loop)
            raise
        return LLMResponse(_filler_text(n_out), n_in, n_out, start=job.arrival, end=job.end,
                           endpoint=self._endpoints[rep.index])

    def stats(self) -> dict[str, Any]:
        """Metrics of everything served so far.

        gpu_busy_share: mean over replicas of the share of the serving span (first arrival to last
        completion) during which the replica had a non-empty batch; per replica in
        gpu_busy_share_per_replica. queue_delay_*: arrival to first scheduled token.
        """
        span = self._span_done + (self._last_end - self._first_arrival if self._first_arrival is not None else 0.0)
        busy = [r.busy_s / span if span > 0 else 0.0 for r in self._replicas]
        cfg = self.config
        return {
            "server": cfg.name or f"{cfg.gpu.name} / {cfg.model.name}",
            "gpus": cfg.gpus, "tp": cfg.tp, "replicas": cfg.replicas, "policy": cfg.policy,
            "gpu_busy_share": sum(busy) / len(busy),
            "gpu_busy_share_per_replica": busy,
            "iterations": sum(r.iterations for r in self._replicas),
            "iterations_per_replica": [r.iterations for r in self._replicas],
            "requests": sum(r.completed for r in self._replicas),
            "tokens_in": sum(r.tokens_in for r in self._replicas),
            "tokens_out": sum(r.tokens_out for r in self._replicas),
            "queue_delay_mean_s": self._queue_delay_sum / self._admitted if self._admitted else 0.0,
            "queue_delay_max_s": self._queue_delay_max,
            "serving_span_s": span,
        }

    # -- mechanism -----------------------------------------------------------------------------

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Follow the caller's event loop: timers live on one loop, so a backend moves to a new
        loop only while idle (e.g. one `clock.run` after another); metrics carry over."""
        if loop is self._loop:
            return
        if self._loop is not None:
            if any(r.outstanding for r in self._replicas):
                raise BackendError("SimulatedBackend used from a second event loop while serving requests")
            if self._first_arrival is not None:
                self._span_done += self._last_end - self._first_arrival
            self._first_arrival = None
            self._last_end = 0.0
        self._loop = loop

    def _on_arrival(self, rep: _Replica, loop: asyncio.AbstractEventLoop) -> None:
        if rep.timer is None:
            # Idle: start at the next loop pass, so requests arriving at the same instant share
            # the first iteration.
            rep.seg_start, rep.seg_iters, rep.seg_chunks = loop.time(), 0, []
            rep.timer = loop.call_soon(self._boundary, rep)
            return
        if rep.seg_chunks or rep.seg_iters <= 1 or not self._can_admit(rep):
            return  # the next boundary (one iteration away at most, or nothing to admit) will do
        self._end_segment_soon(rep, loop)

    def _end_segment_soon(self, rep: _Replica, loop: asyncio.AbstractEventLoop) -> None:
        """End a decode-only segment at the end of the iteration in progress."""
        if rep.timer is None or rep.seg_chunks or rep.seg_iters <= 1:
            return
        cfg = self.config
        n, ctx, start = len(rep.decoding), rep.context_sum, rep.seg_start
        elapsed = loop.time() - start
        lines = cfg.decode_lines(n, ctx)
        lo, hi = 1, rep.seg_iters
        while lo < hi:  # smallest j with duration(j) >= elapsed
            mid = (lo + hi) // 2
            if cfg.decode_time(lines, mid) >= elapsed:
                hi = mid
            else:
                lo = mid + 1
        if lo < rep.seg_iters:
            rep.timer.cancel()
            rep.seg_iters = lo
            rep.timer = loop.call_at(start + cfg.decode_time(lines, lo), self._boundary, rep)

    def _can_admit(self, rep: _Replica) -> bool:
        self._drop_cancelled(rep)
        if not rep.waiting or rep.running >= self.config.max_batch:
            return False
        job = rep.waiting[0][1]
        return rep.kv_reserved + job.n_in + job.n_out <= self.config.kv_capacity_tokens

    @staticmethod
    def _drop_cancelled(rep: _Replica) -> None:
        while rep.waiting and rep.waiting[0][1].cancelled:
            heapq.heappop(rep.waiting)
            rep.n_outstanding -= 1

    @staticmethod
    def _drop_aborted(rep: _Replica) -> None:
        """Free the batch slots and KV of running jobs whose callers were cancelled."""
        for job in [j for j in rep.prefilling if j.cancelled]:
            rep.prefilling.remove(job)
            rep.kv_reserved -= job.n_in + job.n_out
            rep.n_outstanding -= 1
        gone = [e for e in rep.decoding if e[2].cancelled]
        if gone:
            for _, _, job in gone:
                rep.context_sum -= job.ctx0 + rep.iterations - job.iter0
                rep.kv_reserved -= job.n_in + job.n_out
                rep.n_outstanding -= 1
            rep.decoding = [e for e in rep.decoding if not e[2].cancelled]
            heapq.heapify(rep.decoding)
        rep.aborted = 0

    def _boundary(self, rep: _Replica) -> None:
        """End of the segment in progress: apply its iterations, finish jobs, plan the next."""
        loop = self._loop
        assert loop is not None
        now = loop.time()
        cfg = self.config
        rep.busy_s += now - rep.seg_start
        # Apply the segment's iterations.
        if rep.seg_iters:
            rep.iterations += rep.seg_iters
            rep.context_sum += len(rep.decoding) * rep.seg_iters
            rep.tokens_out += len(rep.decoding) * rep.seg_iters
            for job, m in rep.seg_chunks:
                job.prompt_left -= m
                job.context += m
                rep.tokens_in += m
                if job.prompt_left == 0:  # the last chunk emits the first token
                    rep.prefilling.remove(job)
                    rep.tokens_out += 1
                    job.out_left -= 1
                    job.ctx0, job.iter0 = job.context, rep.iterations
                    job.finish_iter = rep.iterations + job.out_left
                    rep.context_sum += job.context
                    heapq.heappush(rep.decoding, (job.finish_iter, job.seq, job))
        # Finish the jobs whose last token is out.
        while rep.decoding and rep.decoding[0][0] == rep.iterations:
            _, _, job = heapq.heappop(rep.decoding)
            rep.context_sum -= job.ctx0 + rep.iterations - job.iter0
            rep.kv_reserved -= job.n_in + job.n_out
            rep.completed += 1
            rep.n_outstanding -= 1
            job.end = now
            self._last_end = now
            if not job.future.done():
                job.future.set_result(None)
        if rep.aborted:
            self._drop_aborted(rep)
        # Plan the next iteration: decodes first, then prefill chunks, then admissions.
        budget = cfg.max_batched_tokens - len(rep.decoding)
        chunks: list[tuple[_Job, int]] = []
        for job in rep.prefilling:
            if budget <= 0:
                break
            m = min(job.prompt_left, budget)
            chunks.append((job, m))
            budget -= m
        while budget > 0 and self._can_admit(rep):
            _, job = heapq.heappop(rep.waiting)
            job.admitted = now
            delay = now - job.arrival
            self._queue_delay_sum += delay
            self._queue_delay_max = max(self._queue_delay_max, delay)
            self._admitted += 1
            rep.kv_reserved += job.n_in + job.n_out
            rep.prefilling.append(job)
            m = min(job.prompt_left, budget)
            chunks.append((job, m))
            budget -= m
        rep.seg_start, rep.seg_chunks = now, chunks
        if chunks:
            n_dec = len(rep.decoding)
            tokens = n_dec + sum(m for _, m in chunks)
            kv_after = rep.context_sum + n_dec + sum(j.context + m for j, m in chunks)
            attended = rep.context_sum + n_dec + sum(m * j.context + m * (m + 1) // 2 for j, m in chunks)
            rep.seg_iters = 1
            rep.timer = loop.call_at(now + cfg.iteration_time(tokens, kv_after, attended), self._boundary, rep)
        elif rep.decoding:
            rep.seg_iters = rep.decoding[0][0] - rep.iterations
            duration = cfg.decode_segment_time(len(rep.decoding), rep.context_sum, rep.seg_iters)
            rep.timer = loop.call_at(now + duration, self._boundary, rep)
        else:
            rep.seg_iters = 0
            rep.timer = None  # idle until the next arrival


def make_backend(gpu: str | GPU = "l4", model: str | ModelSpec = "llama-3-8b", gpus: int | None = None,
                 policy: str = "priority", tp: int | None = None, **overrides: Any) -> SimulatedBackend:
    """A SimulatedBackend from presets.

    gpu: a GPU preset (l4, a100 = a100-80gb, a100-40gb, h100, h200) or a server preset
    (h200-transformers-serve), which also fixes the model (unless given) and calibrated knobs.
    gpus: GPUs in all (default: one replica); tp: GPUs per replica (default: the fewest powers of
    two that hold the weights, `presets.default_tp`). `gpus` must be a multiple of `tp`; the
    server has gpus // tp data-parallel replicas. overrides: any other ServerConfig field
    (max_batch, max_batched_tokens, iteration_overhead_s, mem_efficiency, ...).
    Raises ConfigError for unknown names or inconsistent sizes.
    """
    knobs: dict[str, Any] = {}
    name = ""
    if isinstance(gpu, str) and gpu.lower() in presets.SERVER_PRESETS:
        name = gpu.lower()
        preset = dict(presets.SERVER_PRESETS[name])
        gpu = preset.pop("gpu")
        preset_model = preset.pop("model")
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
    knobs.setdefault("name", name or f"{gpus}x {g.name} / {m.name}")
    return SimulatedBackend(ServerConfig(gpu=g, model=m, tp=tp, replicas=gpus // tp, policy=policy, **knobs))

