"""One replica of the simulated server: admission, batching, KV cache and preemption, event-driven.

Two engines (`ServerConfig.scheduler`), as their schedulers do it:
- "vllm" (vLLM v1, vllm/v1/core/sched/scheduler.py): every iteration, running requests first (one
  token each while decoding, prompt chunks while prefilling, under the token budget
  `max_batched_tokens`), then waiting requests in policy order while fewer than `max_batch` run, the
  budget has room and the KV cache has blocks for their first chunk. KV lives in `block_size`-token
  blocks taken as a request's context grows; when an iteration needs more blocks than are free, the
  lowest-priority running request (largest `effective_priority`, latest arrival among equals; under
  fcfs the last admitted) is preempted: its blocks are freed and it waits again, to recompute its
  prompt and the tokens it already produced. No admission in an iteration that preempted.
  With `reserve_kv` the whole context (prompt + output) is reserved at admission instead and
  nothing is ever preempted (the roofline presets of earlier versions).
- "sglang" (SGLang v0.1, the paper's server, managers/controller/tp_worker.py): a prefill batch
  runs alone, before any decode: waiting requests in policy order while fewer than `max_batch`
  run, their prompts fit `max_batched_tokens` (the first always) and the KV pool holds prompt +
  output of every admitted request (reserved, so nothing is preempted). Otherwise the running
  requests decode for up to `decode_steps` iterations before the next admission check.

A request whose caller is cancelled leaves at the next iteration boundary, freeing its batch slot
and KV (a running decode-only segment is cut at the end of the iteration in progress).

Event-driven: between boundaries the batch is fixed, so a run of decode-only iterations is one
segment (duration in closed form, `ServerConfig.decode_time`) that ends at the next completion,
the end of a decode run (sglang), or the iteration whose new KV blocks would not fit (vllm). Block
demand is kept as a histogram of the decoding requests' context length modulo `block_size`, so a
segment's block need is O(block_size) whatever the batch.

GPU time per request: each segment's busy seconds are split over the requests it served, and the
shares add up to the replica's busy time. An iteration with prompt chunks: its fixed cost
(`iteration_overhead_s`: launch and scheduling, paid once per iteration whatever it holds) in
equal parts per request in it, the rest (the roofline part) in proportion to the tokens each
computed (one per decoding request, its chunk per prefilling one). A decode-only segment: in equal
parts, since every request in it computes one token per iteration. Decode shares go into one
running sum per replica (`decode_cum`) that a request reads when it starts and stops decoding,
so charging a segment is O(1) whatever the batch. A cancelled or preempted request keeps what
it was charged up to its release. `gpu_s_speculative` sums the shares of requests sent with
`LLMRequest.speculative` (their whole time, even what was computed after the runtime adopted
their step).
"""

from __future__ import annotations

import asyncio
import heapq
from dataclasses import dataclass, field

WAITING, PREFILL, DECODE, DONE = range(4)


@dataclass(eq=False)
class Job:
    """One request inside the server."""

    request: object
    seq: int  # arrival order: FCFS and tie-breaks
    n_in: int
    n_out: int
    arrival: float
    future: asyncio.Future
    key: tuple  # waiting-queue order
    victim_key: tuple = ()  # preemption order: the smallest key is evicted first
    prompt_left: int = 0  # tokens to compute before the next output token (prompt, or recompute)
    out_left: int = 0
    context: int = 0  # KV entries held while prefilling
    blocks: int = 0  # KV blocks held while prefilling
    # Once decoding, the context grows by one per decode iteration: ctx0 + (dsteps - iter0).
    ctx0: int = 0
    iter0: int = 0
    finish_iter: int = 0
    state: int = WAITING
    epoch: int = 0  # admissions so far: older heap entries of this job are stale
    admitted: float | None = None
    end: float = 0.0
    cancelled: bool = False
    speculative: bool = False  # sent as a speculative request
    gpu_s: float = 0.0  # GPU seconds charged so far (decoding time folded in at release)
    cum0: float = 0.0  # the replica's decode_cum when it started decoding


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(eq=False)
class Replica:
    """The running state of one data-parallel replica (the one owner of its queues)."""

    index: int
    cfg: object  # ServerConfig
    loop: asyncio.AbstractEventLoop | None = None
    waiting: list = field(default_factory=list)  # heap of (key, job)
    prefilling: list = field(default_factory=list)  # admission order
    decoding: list = field(default_factory=list)  # heap of (finish_iter, seq, epoch, job), lazy
    victims: list = field(default_factory=list)  # heap of (victim_key, epoch, job), lazy
    n_running: int = 0
    context_sum: int = 0  # KV entries of the decoding jobs at `iterations`
    kv_reserved: int = 0  # tokens (reserve mode)
    blocks_used: int = 0  # blocks (block mode)
    phase: list = field(default_factory=list)  # decoding jobs by (ctx0 - iter0) % block_size
    iterations: int = 0
    dsteps: int = 0  # iterations the decoding jobs took part in (all but sglang's prefill batches)
    run_left: int = 0  # decode iterations left in the current sglang decode run
    to_drop: list = field(default_factory=list)  # cancelled running jobs
    admissions: int = 0
    # the segment in progress
    timer: asyncio.Handle | None = None
    seg_start: float = 0.0
    seg_iters: int = 0
    seg_chunks: list = field(default_factory=list)  # [(job, tokens)] of a prefill iteration
    seg_decodes: bool = True  # whether the decoding jobs take part in the segment
    preempted: bool = False  # the planned iteration preempted, so it admits nothing
    # metrics
    busy_s: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    completed: int = 0
    preemptions: int = 0
    recomputed_tokens: int = 0
    dropped: int = 0
    queue_delay_sum: float = 0.0
    queue_delay_max: float = 0.0
    first_admissions: int = 0
    last_end: float = 0.0
    decode_cum: float = 0.0  # GPU seconds charged to one decoding request since the start
    n_spec_decoding: int = 0  # decoding requests sent as speculative
    gpu_s_speculative: float = 0.0  # GPU seconds charged to speculative requests
    #: `n_outstanding` of every replica of the server, by index; one list per server.
    loads: list = field(default_factory=lambda: [0], repr=False)

    def __post_init__(self) -> None:
        cfg = self.cfg
        self.block = max(1, int(cfg.block_size))
        self.reserve = bool(cfg.reserve_kv) or cfg.scheduler == "sglang"
        self.cap_blocks = cfg.kv_capacity_tokens // self.block
        self.phase = [0] * self.block
        self.sglang = cfg.scheduler == "sglang"

    # -- counters ------------------------------------------------------------------------------

    @property
    def n_outstanding(self) -> int:
        """Requests routed here and not yet answered or dropped, kept as a counter in the server's
        `loads` list: routing reads it for every replica on every request."""
        return self.loads[self.index]

    @n_outstanding.setter
    def n_outstanding(self, value: int) -> None:
        self.loads[self.index] = value

    @property
    def outstanding(self) -> int:
        return len(self.waiting) + self.n_running

    def fits(self, n_in: int, n_out: int) -> bool:
        """Whether a request's whole context fits this replica's KV cache at all."""
        if self.reserve:
            return n_in + n_out <= self.cfg.kv_capacity_tokens
        return _cdiv(n_in + n_out, self.block) <= self.cap_blocks

    # -- events from the backend ---------------------------------------------------------------

    def submit(self, job: Job) -> None:
        heapq.heappush(self.waiting, (job.key, job))
        self.n_outstanding += 1
        if self.timer is None:
            # Idle: start at the next loop pass, so requests arriving at the same instant share
            # the first iteration.
            self.seg_start, self.seg_iters, self.seg_chunks = self.loop.time(), 0, []
            self.timer = self.loop.call_soon(self._boundary)
        elif not self.sglang and self._can_admit():
            self._cut_segment()

    def cancel(self, job: Job) -> None:
        """The caller gave up: a waiting job is dropped when it reaches the head of the queue, a
        running one at the next iteration boundary."""
        job.cancelled = True
        if job.state in (PREFILL, DECODE):
            self.to_drop.append(job)
            self._cut_segment()

    def promote(self, job: Job, key: tuple) -> None:
        """Queue a waiting job by `key` from now on; a running one stays as it is (under "vllm"
        its preemption order too)."""
        if job.state != WAITING or job.cancelled:
            return
        waiting = self.waiting
        i = waiting.index((job.key, job))
        job.key, waiting[i] = key, (key, job)
        job.victim_key = (-key[0], -job.seq)  # for its preemption order once admitted (vllm)
        heapq.heapify(waiting)
        if not self.sglang and self._can_admit():
            self._cut_segment()  # it may be admitted now, as on arrival

    # -- mechanism -----------------------------------------------------------------------------

    def _cut_segment(self) -> None:
        """End a decode-only segment at the end of the iteration in progress."""
        if self.timer is None or self.seg_chunks or self.seg_iters <= 1:
            return  # the next boundary is one iteration away at most
        cfg = self.cfg
        n, start = self.n_decoding, self.seg_start
        elapsed = self.loop.time() - start
        lines = cfg.decode_lines(n, self.context_sum)
        lo, hi = 1, self.seg_iters
        while lo < hi:  # smallest j with duration(j) >= elapsed
            mid = (lo + hi) // 2
            if cfg.decode_time(lines, mid) >= elapsed:
                hi = mid
            else:
                lo = mid + 1
        if lo < self.seg_iters:
            self.timer.cancel()
            self.seg_iters = lo
            self.timer = self.loop.call_at(start + cfg.decode_time(lines, lo), self._boundary)

    @property
    def n_decoding(self) -> int:
        return self.n_running - len(self.prefilling)

    def _head(self) -> Job | None:
        """The first waiting job, dropping cancelled ones."""
        waiting = self.waiting
        while waiting and waiting[0][1].cancelled:
            heapq.heappop(waiting)
            self.n_outstanding -= 1
            self.dropped += 1
        return waiting[0][1] if waiting else None

    def _can_admit(self, budget: int | None = None, need: int = 0) -> bool:
        job = self._head()
        if job is None or self.n_running >= self.cfg.max_batch:
            return False
        if self.reserve:
            return self.kv_reserved + job.n_in + job.n_out <= self.cfg.kv_capacity_tokens
        if budget is None:
            budget = self.cfg.max_batched_tokens - self.n_decoding
        chunk = min(job.prompt_left, budget)
        return self.blocks_used + need + _cdiv(chunk, self.block) <= self.cap_blocks

    def _block_need(self, first: int, k: int) -> int:
        """New blocks the decoding jobs take in iterations first .. first+k-1 (a job takes one
        when its context before the iteration is a multiple of the block size)."""
        b, phase = self.block, self.phase
        full, rem = divmod(k, b)
        need = full * self.n_decoding
        for i in range(rem):
            need += phase[-(first + i) % b]
        return need

    def _block_limit(self, k: int) -> int:
        """How many of the next k decode-only iterations the free blocks carry (at most k)."""
        free = self.cap_blocks - self.blocks_used
        n = self.n_decoding
        if n * _cdiv(k, self.block) <= free:  # each job takes at most one block per block_size iterations
            return k
        b, phase, t = self.block, self.phase, self.dsteps
        cycles = free // n
        done, free = cycles * b, free - cycles * n
        for i in range(b):
            free -= phase[-(t + done + i) % b]
            if free < 0:
                return min(k, done + i)
        return min(k, done + b)

    def _start_decoding(self, job: Job) -> None:
        self.prefilling.remove(job)
        self.tokens_out += 1
        job.out_left -= 1
        job.state = DECODE
        job.ctx0, job.iter0 = job.context, self.dsteps
        job.finish_iter = self.dsteps + job.out_left
        job.cum0 = self.decode_cum
        self.n_spec_decoding += job.speculative
        self.context_sum += job.context
        if not self.reserve:
            self.phase[(job.ctx0 - job.iter0) % self.block] += 1
        heapq.heappush(self.decoding, (job.finish_iter, job.seq, job.epoch, job))

    def _release(self, job: Job) -> None:
        """Take a running job out of the batch and free its KV."""
        self.n_running -= 1
        if job.state == DECODE:
            ctx = job.ctx0 + self.dsteps - job.iter0
            job.out_left = job.finish_iter - self.dsteps
            job.gpu_s += self.decode_cum - job.cum0
            self.n_spec_decoding -= job.speculative
            self.context_sum -= ctx
            if not self.reserve:
                self.phase[(job.ctx0 - job.iter0) % self.block] -= 1
                self.blocks_used -= _cdiv(ctx, self.block)
        else:
            self.prefilling.remove(job)
            self.blocks_used -= job.blocks
        if self.reserve:
            self.kv_reserved -= job.n_in + job.n_out
        job.context = job.blocks = 0

    def _admit(self, job: Job, now: float) -> None:
        heapq.heappop(self.waiting)
        if job.admitted is None:
            job.admitted = now
            delay = now - job.arrival
            self.queue_delay_sum += delay
            self.queue_delay_max = max(self.queue_delay_max, delay)
            self.first_admissions += 1
        job.state = PREFILL
        job.epoch += 1
        self.admissions += 1
        self.n_running += 1
        self.prefilling.append(job)
        if self.reserve:
            self.kv_reserved += job.n_in + job.n_out
        else:
            vkey = job.victim_key if self.cfg.policy == "priority" else (-self.admissions,)
            heapq.heappush(self.victims, (vkey, job.epoch, job))

    def _preempt(self) -> Job:
        """Evict the running job that goes first under the policy; it waits to recompute."""
        while True:
            _, epoch, job = heapq.heappop(self.victims)
            if job.epoch == epoch and job.state in (PREFILL, DECODE):
                break
        self._release(job)
        job.state = WAITING
        job.prompt_left = job.n_in + job.n_out - job.out_left
        self.recomputed_tokens += job.prompt_left - job.n_in
        self.preemptions += 1
        heapq.heappush(self.waiting, (job.key, job))
        return job

    def _boundary(self) -> None:
        """End of the segment in progress: apply it, drop, finish, plan the next segment."""
        loop, cfg = self.loop, self.cfg
        now = loop.time()
        self.busy_s += now - self.seg_start
        k = self.seg_iters
        if k:
            self._charge(now - self.seg_start)
            if self.seg_decodes:
                n = self.n_decoding
                if not self.reserve:
                    self.blocks_used += self._block_need(self.dsteps, k)
                self.dsteps += k
                self.context_sum += n * k
                self.tokens_out += n * k
                if self.sglang:
                    self.run_left = max(0, self.run_left - k)
            self.iterations += k
            for job, m in self.seg_chunks:
                if job.state != PREFILL:
                    continue
                job.prompt_left -= m
                job.context += m
                self.tokens_in += m
                if job.prompt_left == 0:  # the last chunk emits the next token
                    self._start_decoding(job)
        for job in self.to_drop:
            if job.state in (PREFILL, DECODE):
                self._release(job)
                job.state = DONE
                self.n_outstanding -= 1
                self.dropped += 1
        self.to_drop.clear()
        decoding = self.decoding
        while decoding:
            finish, _, epoch, job = decoding[0]
            if job.state == DECODE and epoch == job.epoch and finish != self.dsteps:
                break
            heapq.heappop(decoding)
            if job.state != DECODE or epoch != job.epoch:
                continue  # stale: preempted or dropped since
            self._release(job)
            job.state = DONE
            self.completed += 1
            self.n_outstanding -= 1
            job.end = self.last_end = now
            if not job.future.done():
                job.future.set_result(None)
        if not self.n_decoding:
            self.run_left = 0
        self.seg_start = now
        chunks = self._plan_sglang(now) if self.sglang else self._plan_vllm(now)
        self.seg_chunks = chunks
        if chunks:
            n_dec = self.n_decoding if self.seg_decodes else 0
            ctx = self.context_sum if self.seg_decodes else 0
            tokens = n_dec + sum(m for _, m in chunks)
            kv_after = ctx + n_dec + sum(j.context + m for j, m in chunks)
            attended = ctx + n_dec + sum(m * j.context + m * (m + 1) // 2 for j, m in chunks)
            self.seg_iters = 1
            self.timer = loop.call_at(now + cfg.iteration_time(tokens, kv_after, attended), self._boundary)
        elif self.n_decoding:
            self.seg_decodes = True
            while decoding[0][3].state != DECODE or decoding[0][2] != decoding[0][3].epoch:
                heapq.heappop(decoding)  # stale since the plan preempted it
            k = decoding[0][0] - self.dsteps
            if self.sglang:
                if self.run_left == 0:
                    self.run_left = cfg.decode_steps
                k = min(k, self.run_left)
            elif not self.reserve:
                # After a preemption the next iteration may admit again: plan it on its own.
                k = 1 if self.preempted else self._block_limit(k)
            self.seg_iters = k
            self.timer = loop.call_at(now + cfg.decode_segment_time(self.n_decoding, self.context_sum, k),
                                      self._boundary)
        else:
            self.seg_iters = 0
            self.timer = None  # idle until the next arrival

    def _charge(self, busy: float) -> None:
        """Split a finished segment's `busy` seconds over the requests it served (the module
        docstring says how)."""
        n = self.n_decoding if self.seg_decodes else 0
        chunks = self.seg_chunks
        if chunks:  # one iteration
            fixed = min(busy, self.cfg.iteration_overhead_s) / (n + len(chunks))
            per_token = (busy - fixed * (n + len(chunks))) / (n + sum(m for _, m in chunks))
            each = fixed + per_token
            for job, m in chunks:
                share = fixed + per_token * m
                job.gpu_s += share
                if job.speculative:
                    self.gpu_s_speculative += share
        else:
            each = busy / n if n else 0.0  # a decode-only segment always has n >= 1
        if n:
            self.decode_cum += each
            self.gpu_s_speculative += each * self.n_spec_decoding

    def _plan_vllm(self, now: float) -> list:
        """Chunks of a mixed iteration: decodes first, then prompt chunks, then admissions."""
        cfg = self.cfg
        self.seg_decodes = True
        budget = cfg.max_batched_tokens - self.n_decoding
        chunks: list[tuple[Job, int]] = []
        for job in self.prefilling:
            if budget <= 0:
                break
            m = min(job.prompt_left, budget)
            chunks.append((job, m))
            budget -= m
        need = 0
        self.preempted = False
        if not self.reserve:
            b = self.block
            need = self.phase[-self.dsteps % b] + sum(
                _cdiv(j.context + m, b) - j.blocks for j, m in chunks)
            while self.blocks_used + need > self.cap_blocks:
                self._preempt()
                self.preempted = True
                chunks, budget, need = self._replan(chunks)
            if self.preempted:
                self._take_blocks(chunks)
                return chunks
        while budget > 0 and self._can_admit(budget, need):
            job = self.waiting[0][1]
            self._admit(job, now)
            m = min(job.prompt_left, budget)
            chunks.append((job, m))
            budget -= m
            if not self.reserve:
                need += _cdiv(m, self.block)
        if not self.reserve:
            self._take_blocks(chunks)
        return chunks

    def _replan(self, chunks: list) -> tuple[list, int, int]:
        """Budget, chunks and block need again after a preemption changed the batch."""
        b = self.block
        chunks = [(j, m) for j, m in chunks if j.state == PREFILL]
        budget = self.cfg.max_batched_tokens - self.n_decoding - sum(m for _, m in chunks)
        need = self.phase[-self.dsteps % b] + sum(_cdiv(j.context + m, b) - j.blocks for j, m in chunks)
        return chunks, budget, need

    def _take_blocks(self, chunks: list) -> None:
        """Prefill chunks hold their blocks from the iteration that computes them."""
        for job, m in chunks:
            new = _cdiv(job.context + m, self.block)
            self.blocks_used += new - job.blocks
            job.blocks = new

    def _plan_sglang(self, now: float) -> list:
        """An exclusive prefill batch when between decode runs and something can be admitted."""
        if self.run_left:
            return []
        cfg = self.cfg
        chunks: list[tuple[Job, int]] = []
        tokens = 0
        while self._can_admit():
            job = self.waiting[0][1]
            if chunks and tokens + job.prompt_left > cfg.max_batched_tokens:
                break
            self._admit(job, now)
            chunks.append((job, job.prompt_left))
            tokens += job.prompt_left
        self.seg_decodes = not chunks
        return chunks
