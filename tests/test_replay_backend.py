"""Record a run's LLM calls to JSONL and serve them back by (agent, step, index)."""

from __future__ import annotations

import asyncio
import json

import pytest

from metropolis_env.backends.base import Backend, BackendError, LLMRequest, LLMResponse
from metropolis_env.backends.replay import (
    RecordingBackend,
    ReplayBackend,
    load_records,
    prompt_hash,
)


class EchoBackend(Backend):
    """A deterministic stand-in server: answers with a function of the request."""

    def __init__(self, virtual_time=False):
        self.calls: list[LLMRequest] = []
        self.closed = False
        self.virtual_time = virtual_time

    async def complete(self, request):
        self.calls.append(request)
        question = request.prompt or request.messages
        text = f"{request.agent}@{request.step}.{request.index}:{question}"
        return LLMResponse(text=text, input_tokens=len(text), output_tokens=request.index + 1,
                           start=0.0, end=0.25, retries=request.step % 2)

    async def aclose(self):
        self.closed = True

    def stats(self):
        return {"echo_calls": len(self.calls)}


def requests():
    out = []
    for step in range(3):
        for agent in ("ann", "bo"):
            out.append(LLMRequest(agent, step, 0, prompt=f"{agent} sees step {step}"))
            out.append(LLMRequest(agent, step, 1,
                                  messages=({"role": "user", "content": f"plan {agent} {step}"},)))
    return out


async def serve(backend, reqs):
    try:
        return [await backend.complete(r) for r in reqs]
    finally:
        await backend.aclose()


def test_replay_serves_exactly_what_was_recorded(tmp_path):
    path = tmp_path / "calls.jsonl"
    inner = EchoBackend()
    live = asyncio.run(serve(RecordingBackend(inner, path), requests()))
    assert inner.closed
    assert len(path.read_text().splitlines()) == len(requests())

    # Served in another order (as an async run would ask), the answers are the same.
    reordered = list(reversed(requests()))
    replay = ReplayBackend(path)
    got = asyncio.run(serve(replay, reordered))
    by_key = {r.key: resp for r, resp in zip(requests(), live)}
    for req, resp in zip(reordered, got):
        want = by_key[req.key]
        assert (resp.text, resp.input_tokens, resp.output_tokens) == (
            want.text, want.input_tokens, want.output_tokens)
        assert resp.retries == 0
    assert replay.stats()["replay"]["hits"] == len(requests())


def test_record_line_holds_key_hash_tokens_and_text(tmp_path):
    path = tmp_path / "calls.jsonl"
    req = LLMRequest("ann", 4, 2, prompt="hello")
    asyncio.run(serve(RecordingBackend(EchoBackend(), path), [req]))
    line = json.loads(path.read_text())
    assert (line["agent"], line["step"], line["index"]) == ("ann", 4, 2)
    assert line["prompt_hash"] == prompt_hash(req)
    assert line["text"] == "ann@4.2:hello" and line["output_tokens"] == 3
    assert line["latency"] == 0.25


def test_prompt_hash_depends_on_prompt_and_messages_only():
    a = LLMRequest("x", 0, prompt="p", max_tokens=3)
    assert prompt_hash(a) == prompt_hash(LLMRequest("y", 9, 4, prompt="p", max_tokens=99))
    assert prompt_hash(a) != prompt_hash(LLMRequest("x", 0, prompt="q"))
    m1 = LLMRequest("x", 0, messages=({"role": "user", "content": "p"},))
    m2 = LLMRequest("x", 0, messages=({"content": "p", "role": "user"},))
    assert prompt_hash(m1) == prompt_hash(m2) != prompt_hash(a)


def test_changed_prompt_is_a_clear_error(tmp_path):
    path = tmp_path / "calls.jsonl"
    asyncio.run(serve(RecordingBackend(EchoBackend(), path), [LLMRequest("ann", 5, 1, prompt="a")]))
    replay = ReplayBackend(path)
    with pytest.raises(BackendError) as info:
        asyncio.run(serve(replay, [LLMRequest("ann", 5, 1, prompt="b")]))
    msg = str(info.value)
    assert "'ann'" in msg and "step 5" in msg and "call 1" in msg and "differs" in msg
    assert not info.value.retryable
    assert replay.stats()["replay"]["mismatches"] == 1


def test_unrecorded_call_is_an_error_without_fallback(tmp_path):
    path = tmp_path / "calls.jsonl"
    asyncio.run(serve(RecordingBackend(EchoBackend(), path), [LLMRequest("ann", 0, prompt="a")]))
    with pytest.raises(BackendError, match=r"no recorded call for agent 'bo' step 0 call 0"):
        asyncio.run(serve(ReplayBackend(path), [LLMRequest("bo", 0, prompt="a")]))


def test_fallback_answers_misses_and_mismatches(tmp_path):
    path = tmp_path / "calls.jsonl"
    asyncio.run(serve(RecordingBackend(EchoBackend(), path), [LLMRequest("ann", 0, prompt="a")]))
    fallback = EchoBackend()
    replay = ReplayBackend(path, fallback=fallback)
    got = asyncio.run(serve(replay, [LLMRequest("ann", 0, prompt="a"),
                                     LLMRequest("ann", 0, prompt="changed"),
                                     LLMRequest("bo", 1, prompt="new")]))
    assert [r.key for r in fallback.calls] == [("ann", 0, 0), ("bo", 1, 0)]
    assert got[1].text == "ann@0.0:changed"
    stats = replay.stats()
    assert stats["replay"] == {"records": 1, "hits": 1, "misses": 1, "mismatches": 1,
                               "fallbacks": 2}
    assert stats["echo_calls"] == 2 and fallback.closed


def test_truncated_last_line_is_skipped_and_recording_resumes_cleanly(tmp_path):
    path = tmp_path / "calls.jsonl"
    reqs = requests()
    asyncio.run(serve(RecordingBackend(EchoBackend(), path), reqs[:3]))
    full = path.read_text()
    # A crash in the middle of writing the fourth line.
    path.write_text(full + '{"agent": "bo", "step": 0, "index": 1, "prompt_ha')
    assert sorted(load_records(path)) == sorted(r.key for r in reqs[:3])

    # Reopening for append cuts the partial line, so the file stays loadable afterwards.
    asyncio.run(serve(RecordingBackend(EchoBackend(), path), reqs[3:5]))
    assert path.read_text().startswith(full)
    assert sorted(load_records(path)) == sorted(r.key for r in reqs[:5])


def test_corrupt_line_in_the_middle_is_an_error(tmp_path):
    path = tmp_path / "calls.jsonl"
    asyncio.run(serve(RecordingBackend(EchoBackend(), path), requests()[:2]))
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\nnot json\n" + lines[1] + "\n")
    with pytest.raises(ValueError, match=r"calls.jsonl:2"):
        load_records(path)


def test_later_record_of_a_key_wins(tmp_path):
    path = tmp_path / "calls.jsonl"
    req = LLMRequest("ann", 0, prompt="a")
    asyncio.run(serve(RecordingBackend(EchoBackend(), path), [req]))

    class Other(EchoBackend):
        async def complete(self, request):
            return LLMResponse("second", 1, 1)

    asyncio.run(serve(RecordingBackend(Other(), path), [req]))
    (resp,) = asyncio.run(serve(ReplayBackend(path), [req]))
    assert resp.text == "second"


def test_simulated_latency_hook_decides_each_wait(tmp_path):
    path = tmp_path / "calls.jsonl"
    reqs = requests()[:2]
    asyncio.run(serve(RecordingBackend(EchoBackend(), path), reqs))
    seen = []

    def hook(req, rec):
        seen.append((req.key, rec.key, rec.latency))
        return 0.001

    replay = ReplayBackend(path, latency=hook)
    assert replay.virtual_time  # simulated waits belong under the virtual clock
    got = asyncio.run(serve(replay, reqs))
    assert seen == [(r.key, r.key, 0.25) for r in reqs]
    assert all(r.end > r.start for r in got)
    assert not ReplayBackend(path).virtual_time
    assert ReplayBackend(path, fallback=EchoBackend(virtual_time=True)).virtual_time
    with pytest.raises(ValueError):
        ReplayBackend(path, latency="sometimes")


def test_recording_backend_keeps_the_inner_clock_kind(tmp_path):
    rec = RecordingBackend(EchoBackend(virtual_time=True), tmp_path / "c.jsonl")
    assert rec.virtual_time
    asyncio.run(rec.aclose())
