"""Run metrics: what a run cost and how much parallelism it found (the paper's measures)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, NamedTuple

import numpy as np

from ..backends.base import LLMRequest, LLMResponse
from .answers import REUSED


class CallSpan(NamedTuple):
    """One LLM call of a run, for Gantt plots (`RunMetrics.calls`); times in the run's clock."""

    agent: str
    step: int
    index: int
    start: float
    end: float


class CallRecord(NamedTuple):
    """One LLM call made on another worker, as it reaches the driver's metrics.

    sent / answered: the client's span (request sent, answer received); start / end: the
    backend's own times for the request; all in one clock (the worker turns them into the
    driver's before they leave)."""

    index: int
    sent: float
    answered: float
    start: float
    end: float
    tokens_in: int
    tokens_out: int
    retries: int

    def shifted(self, offset: float) -> "CallRecord":
        """The record with every time moved by `offset` seconds (one clock to another)."""
        return self._replace(sent=self.sent + offset, answered=self.answered + offset,
                             start=self.start + offset, end=self.end + offset)


@dataclass
class RunMetrics:
    """Everything measured in one run. Times are in the run's clock (virtual or wall seconds).

    parallelism: time-weighted average number of outstanding LLM requests (the paper's measure).
    deps_per_agent_step: agents each agent-step waited on, itself included (N under global sync).
    step_spread_mean / step_spread_max: max - min agent step, time-weighted mean and maximum.
    gpu_busy_share: share of time the simulated GPUs had work (None for real servers).
    step_latency_*: seconds from an agent-step's dispatch to its action.
    """

    mode: str
    completion_time_s: float = 0.0
    wall_time_s: float = 0.0
    agent_steps: int = 0
    llm_calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    retries: int = 0
    parallelism: float = 0.0
    deps_per_agent_step: float = 0.0
    true_deps_per_agent_step: float | None = None
    step_spread_mean: float = 0.0
    step_spread_max: int = 0
    gpu_busy_share: float | None = None
    step_latency_mean: float = 0.0
    step_latency_p50: float = 0.0
    step_latency_p90: float = 0.0
    step_latency_p99: float = 0.0
    controller_us_per_agent_step: float = 0.0
    #: Speculation (None when off): LLM calls of discarded speculative steps (cancelled ones
    #: included), their share of all calls issued, their completed tokens, the share of held
    #: steps whose prediction was exact, and speculative calls' share of all tokens served.
    wasted_calls: int | None = None
    wasted_call_share: float | None = None
    wasted_tokens: int | None = None
    spec_hit_rate: float | None = None
    spec_token_share: float | None = None
    #: Speculation's share of busy GPU time (`gpu_shares`; None when off or when the backend does
    #: not measure GPU time per request): of speculative calls, adopted or discarded, and of
    #: discarded ones only.
    spec_gpu_share: float | None = None
    wasted_gpu_share: float | None = None
    #: Re-run answer cache (None when off): calls answered from a discarded speculative step's
    #: identical call, without a server call, and their tokens (both included in llm_calls and
    #: tokens_in/out, which count every call an agent made).
    reused_calls: int | None = None
    reused_tokens: int | None = None
    #: Shelf (None when speculation is off): held steps dropped and later taken again from the
    #: same inputs instead of computed again (runtime/shelf.py), and the LLM calls they saved.
    recalled_steps: int | None = None
    recalled_calls: int | None = None
    backend: dict = field(default_factory=dict)
    #: (time, outstanding requests) at every change; for plots, not serialised.
    timeline: list = field(default_factory=list, repr=False)
    #: CallSpan (agent, step, index, start, end) of every call when recorded; for Gantt plots.
    calls: list | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("timeline")
        d.pop("calls")
        return d

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), **kw)


class MetricsRecorder:
    """Accumulates a run's metrics as events happen, with time-weighted integrals."""

    def __init__(self, clock: Callable[[], float], record_calls: bool = False):
        self._clock = clock
        self.t0 = clock()
        self.outstanding = 0
        self._area_outstanding = 0.0
        self._t_outstanding = self.t0
        self.spread = 0
        self.spread_max = 0
        self._area_spread = 0.0
        self._t_spread = self.t0
        self.llm_calls = self.tokens_in = self.tokens_out = self.retries = 0
        #: GPU seconds of the recorded calls sent as speculative (adopted speculation: a
        #: discarded step's calls are never recorded), and of answers a discarded speculative
        #: call gave that the answer cache handed out again (used after all)
        self.spec_gpu_used_s = 0.0
        self.step_latencies: list[float] = []
        self.calls: list[CallSpan] | None = [] if record_calls else None
        self.timeline: list[tuple[float, int]] = []  # (time, outstanding) change points
        self._remote_spans: list[tuple[float, float]] = []

    def now(self) -> float:
        return self._clock() - self.t0

    def _advance_outstanding(self) -> None:
        t = self._clock()
        self._area_outstanding += self.outstanding * (t - self._t_outstanding)
        self._t_outstanding = t

    def call_started(self) -> None:
        self._advance_outstanding()
        self.outstanding += 1
        self.timeline.append((self._t_outstanding - self.t0, self.outstanding))

    def call_finished(self) -> None:
        self._advance_outstanding()
        self.outstanding -= 1
        self.timeline.append((self._t_outstanding - self.t0, self.outstanding))

    def record_call(self, req: LLMRequest, resp: LLMResponse) -> None:
        self.llm_calls += 1
        self.tokens_in += resp.input_tokens
        self.tokens_out += resp.output_tokens
        self.retries += resp.retries
        if resp.gpu_s is not None and (req.speculative or resp.endpoint == REUSED):
            self.spec_gpu_used_s += resp.gpu_s
        if self.calls is not None:
            self.calls.append(CallSpan(req.agent, req.step, req.index, resp.start - self.t0, resp.end - self.t0))

    def record_remote_call(self, agent: str, step: int, call: CallRecord) -> None:
        """A call made on another worker (a Ray actor), its times in this recorder's clock:
        counts as call_started at `call.sent`, call_finished at `call.answered` and record_call
        with the backend's `start`/`end`. Parallelism stays the time-integral of outstanding
        calls (the sum of the spans); the timeline is rebuilt from the spans at finish, as they
        arrive out of order."""
        self._area_outstanding += call.answered - call.sent
        self._remote_spans.append((call.sent - self.t0, call.answered - self.t0))
        self.llm_calls += 1
        self.tokens_in += call.tokens_in
        self.tokens_out += call.tokens_out
        self.retries += call.retries
        if self.calls is not None:
            self.calls.append(CallSpan(agent, step, call.index, call.start - self.t0, call.end - self.t0))

    def set_spread(self, spread: int) -> None:
        t = self._clock()
        self._area_spread += self.spread * (t - self._t_spread)
        self._t_spread = t
        self.spread = spread
        self.spread_max = max(self.spread_max, spread)

    def step_done(self, latency: float) -> None:
        self.step_latencies.append(latency)

    def finish(self, mode: str, deps_per_agent_step: float, backend_stats: dict,
               wall_time_s: float, controller_s: float,
               true_deps_per_agent_step: float | None = None) -> RunMetrics:
        self._advance_outstanding()
        self.set_spread(self.spread)
        total = self._clock() - self.t0
        lat = np.asarray(self.step_latencies, dtype=float)
        pct = (lambda q: float(np.percentile(lat, q))) if lat.size else (lambda q: 0.0)
        n = len(self.step_latencies)
        if self._remote_spans:
            self.timeline = _timeline(self._remote_spans)
        return RunMetrics(
            mode=mode,
            completion_time_s=total,
            wall_time_s=wall_time_s,
            agent_steps=n,
            llm_calls=self.llm_calls,
            tokens_in=self.tokens_in,
            tokens_out=self.tokens_out,
            retries=self.retries,
            parallelism=self._area_outstanding / total if total > 0 else 0.0,
            deps_per_agent_step=deps_per_agent_step,
            true_deps_per_agent_step=true_deps_per_agent_step,
            step_spread_mean=self._area_spread / total if total > 0 else 0.0,
            step_spread_max=self.spread_max,
            gpu_busy_share=backend_stats.get("gpu_busy_share"),
            step_latency_mean=float(lat.mean()) if lat.size else 0.0,
            step_latency_p50=pct(50), step_latency_p90=pct(90), step_latency_p99=pct(99),
            controller_us_per_agent_step=1e6 * controller_s / n if n else 0.0,
            backend=backend_stats,
            timeline=self.timeline,
            calls=self.calls,
        )


def gpu_shares(backend_stats: dict, spec_used_s: float) -> tuple[float | None, float | None]:
    """(spec_gpu_share, wasted_gpu_share) of a run: GPU time of the calls sent as speculative,
    and of those among them whose step was discarded, over all busy GPU time.

    `backend_stats` gives the busy time and its speculative part (`gpu_busy_s`,
    `gpu_s_speculative`: the simulated server); `spec_used_s` is the GPU time of the
    speculative calls whose step was adopted (`MetricsRecorder.spec_gpu_used_s`), so the rest of
    the speculative time is waste: calls of discarded steps, finished or cancelled in flight
    (charged up to their release). A call counts by how it was sent: a speculative call whose
    step is adopted while it runs counts as speculative, and adopted, for all of its time; the
    calls its step makes after adoption are ordinary. A discarded call whose answer the answer
    cache (runtime/answers.py) hands out again counts as adopted: its GPU time was used. (None, None) when the backend does not
    measure GPU time per request."""
    busy, spec = backend_stats.get("gpu_busy_s"), backend_stats.get("gpu_s_speculative")
    if busy is None or spec is None:
        return None, None
    if busy <= 0:
        return 0.0, 0.0
    return spec / busy, max(0.0, spec - spec_used_s) / busy


def _timeline(spans: list[tuple[float, float]]) -> list[tuple[float, int]]:
    """(time, outstanding) at every change, from (start, end) spans of calls."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    out, n = [], 0
    for t, d in events:
        n += d
        out.append((t, n))
    return out
