"""What the runtime and every LLM backend agree on: a request, a response, a backend.

Inside one agent's step, LLM calls form a sequential chain (perceive -> retrieve -> plan), so a
request is identified by (agent, step, index in chain). Priority is the agent's step: the
smallest step is the furthest behind and gates the most others, so it goes first.

Speculative calls (a blocked agent computing ahead on a predicted observation, see the runtime's
speculation) form a lower priority class: every non-speculative call goes before any speculative
one, and inside each class the smallest step first. One integer carries both (see
`SPECULATIVE_PRIORITY_OFFSET`), so servers that take a single priority number need nothing new.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

#: Added to a speculative request's priority: larger than any step, so the speculative class
#: always sorts behind the non-speculative one (smaller priority runs first).
SPECULATIVE_PRIORITY_OFFSET = 1 << 40


@dataclass(frozen=True)
class LLMRequest:
    """One LLM call.

    prompt / messages: completion-style text or chat messages (one of them, or neither for
    trace replay on the simulated backend). input_tokens / output_tokens: known token counts
    for trace replay (the simulated backend uses them; real backends fix the output length with
    max_tokens + ignore_eos when `output_tokens` is set).
    """

    agent: str
    step: int
    index: int = 0
    prompt: str | None = None
    messages: tuple[dict, ...] | None = None
    max_tokens: int = 64
    input_tokens: int | None = None
    output_tokens: int | None = None
    temperature: float | None = 0.0
    model: str | None = None
    priority: int | None = None
    speculative: bool = False
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def effective_priority(self) -> int:
        """Smaller runs first; defaults to the agent's step; speculative calls sort behind all others."""
        base = self.step if self.priority is None else self.priority
        return base + SPECULATIVE_PRIORITY_OFFSET if self.speculative else base

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.agent, self.step, self.index)


@dataclass
class LLMResponse:
    """The answer to one LLMRequest. `start`/`end` are event-loop times (virtual or wall).
    `gpu_s`: busy GPU seconds the server charged to this request (its share of the batches it
    was in), where the backend measures it (the simulated server), else None."""

    text: str
    input_tokens: int
    output_tokens: int
    start: float = 0.0
    end: float = 0.0
    retries: int = 0
    endpoint: str = ""
    gpu_s: float | None = None

    @property
    def latency(self) -> float:
        return self.end - self.start


class BackendError(Exception):
    """A backend failed for good (non-retryable error, or retries exhausted)."""

    def __init__(self, message: str, request: LLMRequest | None = None, retryable: bool = False):
        super().__init__(message)
        self.request = request
        self.retryable = retryable


class Backend(abc.ABC):
    """An LLM server as the runtime sees it.

    `virtual_time` True means the backend's latencies are simulated on the event loop's clock,
    so the runtime must run under the virtual clock (see `metropolis_env.clock`).
    """

    virtual_time: bool = False

    @abc.abstractmethod
    async def complete(self, request: LLMRequest) -> LLMResponse:
        """Serve one request; retries transient faults itself; raises BackendError otherwise."""

    async def aclose(self) -> None:
        """Release connections, stop servers."""

    def stats(self) -> dict[str, Any]:
        """Backend-specific metrics for the run report (e.g. GPU busy share, retries)."""
        return {}

    def promote(self, request: LLMRequest) -> None:
        """`request`, sent speculative and not answered yet, is needed now (its step was
        adopted): if it still waits for admission, let it wait as a non-speculative request of
        its step would. Default: nothing (it keeps its place; servers offer no way to change a
        sent request's priority)."""
