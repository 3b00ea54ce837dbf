"""EchoBackend: a deterministic stand-in for an LLM, for examples and tests of the runtime.

Its answer is a pure function of the request's prompt (a hash turned into words), its token
counts come from the text, and its latency is a fixed function of the request, served on the
event loop's clock: under the virtual clock it costs no wall time.
"""

from __future__ import annotations

import asyncio
import hashlib

from .base import Backend, LLMRequest, LLMResponse

_WORDS = ("yes", "no", "walk", "talk", "cafe", "home", "park", "hello", "later", "sure", "work", "eat")


def _digest(req: LLMRequest) -> bytes:
    text = req.prompt if req.prompt is not None else repr(req.messages)
    return hashlib.sha256(f"{req.agent}|{req.step}|{req.index}|{text}".encode()).digest()


class EchoBackend(Backend):
    """Deterministic answers; latency = base_s + per_token_s * output tokens.

    virtual: whether runs should use the virtual clock (True: latencies are simulated time).
    """

    def __init__(self, base_s: float = 0.05, per_token_s: float = 0.01, virtual: bool = True):
        self.base_s = base_s
        self.per_token_s = per_token_s
        self.virtual_time = virtual
        self.calls = 0

    async def complete(self, request: LLMRequest) -> LLMResponse:
        loop = asyncio.get_running_loop()
        start = loop.time()
        d = _digest(request)
        n_out = request.output_tokens if request.output_tokens is not None else 1 + d[0] % max(1, request.max_tokens)
        text = " ".join(_WORDS[b % len(_WORDS)] for b in d[1:1 + n_out])
        n_in = request.input_tokens if request.input_tokens is not None else len((request.prompt or "").split())
        await asyncio.sleep(self.base_s + self.per_token_s * n_out)
        self.calls += 1
        return LLMResponse(text, n_in, n_out, start, loop.time())

    def stats(self) -> dict:
        return {"calls": self.calls}
