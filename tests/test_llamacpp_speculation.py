"""Speculation against a real llama.cpp server (llama-cpp-python, tiny model, 127.0.0.1).

- LLM villagers at temperature 0 run with speculation (and the re-run answer cache) give the
  sync run's trajectories and memories, with held steps really used or discarded.
- A cancelled speculative call stops at the server even once it is generating: the backend
  streams speculative calls, and the server's own log shows the request disconnected without
  finishing (llama.cpp prints its timings, "eval time = ... / N runs", only at a generation's end).

Skipped only when the `llamacpp` extra is not installed.
"""

from __future__ import annotations

import asyncio
import re

import pytest
from test_llamacpp_server import backend_for, model_path  # noqa: F401  (fixture)

import metropolis_env as me
from metropolis_env.agents.village import VillagerAgent
from metropolis_env.backends.base import LLMRequest
from metropolis_env.runtime import Controller
from metropolis_env.runtime.speculation import Speculation
from metropolis_env.testing import LlamaServer, httpx_module, llama_cpp_skip_reason

pytestmark = pytest.mark.needs(llama_cpp_skip_reason())

#: Makes the random model answer in the villagers' JSON (llama.cpp's GBNF grammar field).
GRAMMAR = r'''root ::= "{\"move\": \"" dir "\", \"say\": \"" [a-z ]{0,12} "\"}"
dir ::= "N" | "S" | "E" | "W" | "STAY"'''
LONG = 1800  # tokens a cancelled request would generate to its end


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory):  # noqa: F811
    srv = LlamaServer(model_path, n_ctx=2048, extra_args=["--verbose", "True"],
                      log_path=tmp_path_factory.mktemp("log") / "server.log")
    srv.start()
    yield srv
    srv.stop()


def _villagers_run(server, mode, speculation=None):
    tiles = {f"v{k}": (3 * k, 2 + k % 2) for k in range(4)}
    env = me.make("grid", agents=tiles, width=14, height=6, max_steps=7, rules="versioned")
    agents = {a: VillagerAgent(a, max_tokens=40) for a in env.possible_agents}
    trail = {}
    backend = backend_for(server.base_url, extra_body={"grammar": GRAMMAR})
    c = Controller(env, agents, backend, mode, seed=0, speculation=speculation,
                   on_commit=lambda a, s, act: trail.__setitem__((a, s), (env.positions[a], repr(act))))

    async def run():
        try:
            return await c.run()
        finally:
            await backend.aclose()

    m = asyncio.run(run())
    return trail, {a: ag.memory for a, ag in c.agents.items()}, m


def test_llm_villagers_on_llamacpp_with_speculation_equal_sync(server):
    sync_trail, sync_memory, _ = _villagers_run(server, "sync")
    assert len({pos for pos, _ in sync_trail.values()}) > 4  # they move
    trail, memory, m = _villagers_run(server, "async", Speculation(depth=3))
    assert (trail, memory) == (sync_trail, sync_memory)
    # speculation happened: held steps were tested, and used or thrown away
    assert m.spec_hit_rate is not None and (m.spec_hit_rate > 0 or m.wasted_calls > 0)


class FirstChunk:
    """An HTTP transport for the openai client that tells when a response's first bytes of body
    arrive (the server has produced its first token)."""

    def __init__(self):
        httpx = httpx_module()
        self.inner = httpx.AsyncHTTPTransport()
        self.arrived = asyncio.Event()
        outer = self

        class Transport(httpx.AsyncBaseTransport):
            async def handle_async_request(self, request):
                resp = await outer.inner.handle_async_request(request)

                class Body(httpx.AsyncByteStream):
                    async def __aiter__(self):
                        async for part in resp.stream:
                            if b"data:" in part:
                                outer.arrived.set()
                            yield part

                    async def aclose(self):
                        await resp.stream.aclose()

                return httpx.Response(resp.status_code, headers=resp.headers, stream=Body(),
                                      extensions=resp.extensions)

            async def aclose(self):
                await outer.inner.aclose()

        self.client = lambda base_url: httpx.AsyncClient(transport=Transport())


def _timings(log: str) -> list[int]:
    """The generation lengths llama.cpp reported ("eval time = ... / N runs"), in order."""
    return [int(n) for n in re.findall(r"\beval time =.*?/\s*(\d+) runs", log)]


def test_cancelled_speculative_request_stops_generating_at_the_server(server):
    """Cancelled after its first token arrived, with LONG tokens to go (min_tokens masks EOS): the
    server logs the disconnect and never reaches the end of that generation (no timings for it);
    the next request is served normally."""
    long_call = LLMRequest("a", 3, prompt="Anna walks to the cafe and", max_tokens=LONG, output_tokens=LONG,
                           speculative=True)
    follow_up = LLMRequest("b", 3, prompt="Bob says hello", max_tokens=8)
    log_start = len(server.log_path.read_text(errors="replace"))

    async def scenario():
        first = FirstChunk()
        backend = backend_for(server.base_url, http_client=first.client)
        call = asyncio.ensure_future(backend.complete(long_call))
        await asyncio.wait_for(first.arrived.wait(), 60)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        resp = await backend.complete(follow_up)
        await backend.aclose()
        return resp

    resp = asyncio.run(scenario())
    log = server.log_path.read_text(errors="replace")[log_start:]
    assert "Disconnected from client" in log
    (ended,) = _timings(log)  # only the follow-up's generation ended
    assert ended < 8 and 0 < resp.output_tokens <= 8


def test_a_full_length_request_logs_its_timings(server):
    """The evidence above is not vacuous: a request of the same length that is not cancelled
    reaches its end and logs LONG - 1 decode runs (the first token comes from the prompt's pass)."""
    log_start = len(server.log_path.read_text(errors="replace"))
    call = LLMRequest("a", 3, prompt="Anna walks to the cafe and", max_tokens=LONG, output_tokens=LONG,
                      speculative=True)

    async def scenario():
        backend = backend_for(server.base_url)
        try:
            return await backend.complete(call)
        finally:
            await backend.aclose()

    resp = asyncio.run(scenario())
    assert 0.9 * LONG <= resp.output_tokens <= LONG  # counted chunks: a chunk may carry several tokens
    assert _timings(server.log_path.read_text(errors="replace")[log_start:]) == [LONG - 1]
