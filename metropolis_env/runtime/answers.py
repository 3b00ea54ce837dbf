"""Re-run answer cache: answers of discarded speculative calls, used again by identical calls.

A speculative step that turns out wrong is discarded, but the LLM calls it completed may still be
right: an agent whose prompt reads only part of what it perceives (names, not tiles) asks the
same question again when its step runs for real. `Answers` keeps, per agent, the (request ->
response) pairs of every discarded step's completed calls, and `Answers.backend(inner)` is a
Backend that answers a later call of that agent (real or speculative) from them, without a
server call, when the request is the same in everything the server reads
(`request_key`).

Contract:
- **Only deterministic requests.** A request matches only if it has a prompt or messages and
  temperature 0 (greedy): then the server's answer is a function of the request, and reusing it
  changes nothing an agent can observe. Calls without a prompt (the bench's trace agents carry
  only token counts) never match: two of them would look equal only because the trace has no
  prompts, not because they ask the same. Sampled calls (temperature > 0 or the server's
  default) never match: a second identical call must get its own sample.
- **Each kept answer is used once** (a re-run replays the discarded step's calls, not a table of
  facts), and an agent's entries from steps it has committed are dropped (`forget`), so memory
  stays bounded by what is held back.
- The response handed out is the recorded one (same text, same token counts), with the time of
  the reuse as start and end and endpoint ``"reused"``.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict, deque
from typing import Any, Iterable

from ..backends.base import Backend, LLMRequest, LLMResponse

#: LLMResponse.endpoint of an answer served from the cache.
REUSED = "reused"


def request_key(req: LLMRequest) -> tuple | None:
    """What determines a server's answer to `req`: model, prompt or messages, output length,
    sampling parameters and any extra body fields; None for a request that must never be
    reused (no prompt, or not greedy). Agent, step, call index and priority are left out: the
    server does not answer from them."""
    if req.prompt is None and req.messages is None:
        return None
    if req.temperature != 0:
        return None
    extra = json.dumps(req.extra, sort_keys=True, default=repr) if req.extra else ""
    messages = json.dumps(list(req.messages), sort_keys=True, default=repr) if req.messages is not None else None
    return (req.model, req.prompt, messages, req.max_tokens, req.output_tokens, req.input_tokens, extra)


class Answers:
    """Answers of discarded speculative calls, per agent, keyed by `request_key`."""

    def __init__(self):
        # agent -> key -> deque of (step of the discarded call, response)
        self._kept: dict[str, dict[tuple, deque]] = defaultdict(dict)
        self.kept = 0
        self.reused_calls = 0
        self.reused_tokens = 0

    def keep(self, calls: Iterable[tuple[LLMRequest, LLMResponse]]) -> None:
        """Keep the completed calls of a discarded speculative step."""
        for req, resp in calls:
            key = request_key(req)
            if key is None:
                continue
            self._kept[req.agent].setdefault(key, deque()).append((req.step, resp))
            self.kept += 1

    def take(self, req: LLMRequest) -> LLMResponse | None:
        """A kept answer to `req` (removed from the cache), or None."""
        mine = self._kept.get(req.agent)
        key = request_key(req) if mine else None
        if key is None or key not in mine:
            return None
        held = mine[key]
        _, resp = held.popleft()
        if not held:
            del mine[key]
        self.kept -= 1
        self.reused_calls += 1
        self.reused_tokens += resp.input_tokens + resp.output_tokens
        return resp

    def forget(self, agent: str, step: int) -> None:
        """Drop `agent`'s answers kept from steps up to `step` (it has committed them)."""
        mine = self._kept.get(agent)
        if not mine:
            return
        for key in list(mine):
            left = deque(x for x in mine[key] if x[0] > step)
            self.kept -= len(mine[key]) - len(left)
            if left:
                mine[key] = left
            else:
                del mine[key]

    def clear(self) -> None:
        self._kept.clear()
        self.kept = 0

    def backend(self, inner: Backend) -> "ReusingBackend":
        return ReusingBackend(inner, self)

    def report(self, m) -> None:
        """Fill the reuse fields of RunMetrics `m`."""
        m.reused_calls = self.reused_calls
        m.reused_tokens = self.reused_tokens


class ReusingBackend(Backend):
    """`inner`, except that calls with a kept answer are answered from `answers`."""

    def __init__(self, inner: Backend, answers: Answers):
        self.inner, self.answers = inner, answers
        self.virtual_time = inner.virtual_time

    async def complete(self, request: LLMRequest) -> LLMResponse:
        resp = self.answers.take(request)
        if resp is None:
            return await self.inner.complete(request)
        now = asyncio.get_running_loop().time()
        # gpu_s: the discarded call's GPU time, used after all (metrics count it as adopted speculation)
        return LLMResponse(resp.text, resp.input_tokens, resp.output_tokens, now, now, 0, REUSED, gpu_s=resp.gpu_s)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def stats(self) -> dict[str, Any]:
        return self.inner.stats()
