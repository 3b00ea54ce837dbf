"""OpenAIBackend's streamed calls over a recorded transport: which calls stream, what they return,
how their tokens are counted, and that a stream broken in the middle is retried like any fault.
(That a cancelled stream stops llama.cpp mid-generation: tests/test_llamacpp_speculation.py.)"""

from __future__ import annotations

import json

import pytest
from test_openai_backend import Recorder, _complete, _no_key, httpx, make_backend, run  # noqa: F401

from metropolis_env.backends.base import LLMRequest
from metropolis_env.errors import ConfigError


def sse(chunks, done=True):
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + ("data: [DONE]\n\n" if done else "")
    return body.encode()


def text_chunk(text, finish=None):
    return {"id": "c", "object": "text_completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}]}


def chat_chunk(content=None, role=None, finish=None):
    delta = {k: v for k, v in (("role", role), ("content", content)) if v is not None}
    return {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


USAGE = {"id": "c", "object": "text_completion", "created": 0, "model": "m", "choices": [],
         "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}


def streamed(body):
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)


def spec(prompt="p", **kw):
    return LLMRequest("a", 4, prompt=prompt, speculative=True, **kw)


def test_speculative_calls_stream_and_return_what_the_server_said():
    rec = Recorder([None, streamed(sse([text_chunk("he"), text_chunk("llo"), text_chunk("", "length"), USAGE]))])
    b = make_backend(rec)
    normal, specd = run(_complete(b, LLMRequest("a", 4, prompt="p"), spec()))
    assert "stream" not in rec.bodies[0] and "stream_options" not in rec.bodies[0]  # as before
    assert rec.bodies[1]["stream"] is True and rec.bodies[1]["stream_options"] == {"include_usage": True}
    assert (specd.text, specd.input_tokens, specd.output_tokens) == ("hello", 12, 3)
    assert (normal.text, normal.input_tokens, normal.output_tokens) == ("ok", 7, 3)
    assert b.stats()["tokens_in"] == 19 and b.stats()["completed"] == 2


def test_a_stream_without_usage_counts_its_pieces_and_the_known_prompt_tokens():
    chat = (chat_chunk(role="assistant"), chat_chunk("a"), chat_chunk("b"), chat_chunk("c"), chat_chunk(finish="stop"))
    rec = Recorder([streamed(sse([text_chunk("x"), text_chunk("y", "stop")])), streamed(sse(chat))])
    b = make_backend(rec)
    r1, r2 = run(_complete(b, spec(input_tokens=30),
                           LLMRequest("a", 4, 1, messages=({"role": "user", "content": "hi"},), speculative=True)))
    assert (r1.text, r1.input_tokens, r1.output_tokens) == ("xy", 30, 2)
    assert (r2.text, r2.input_tokens, r2.output_tokens) == ("abc", 0, 3)
    assert rec.requests[1][1] == "/v1/chat/completions" and rec.bodies[1]["stream"] is True


@pytest.mark.parametrize("policy, streams", [("never", [False, False]), ("always", [True, True]),
                                             ("speculative", [False, True])])
def test_stream_policy_chooses_the_calls_that_stream(policy, streams):
    rec = Recorder([None if not streams[0] else streamed(sse([text_chunk("n", "stop")])),
                    None if not streams[1] else streamed(sse([text_chunk("s", "stop")]))])
    b = make_backend(rec, stream=policy)
    run(_complete(b, LLMRequest("a", 4, prompt="p"), spec()))
    assert [bool(body.get("stream")) for body in rec.bodies] == streams


def test_a_stream_broken_in_the_middle_is_retried_whole():
    async def broken():
        yield sse([text_chunk("hal")], done=False)
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")

    rec = Recorder([streamed(broken()), streamed(sse([text_chunk("hal"), text_chunk("lo", "length"), USAGE]))])
    b = make_backend(rec)
    (resp,) = run(_complete(b, spec()))
    assert (resp.text, resp.retries, resp.output_tokens) == ("hallo", 1, 3)
    assert len(rec.requests) == 2 and b.stats()["retries"] == 1 and b.stats()["errors"] == 0


def test_a_stream_cut_short_without_a_finish_reason_is_retried():
    """llama-cpp-python's server with interrupt_requests on ends a stream with [DONE] and no
    finish reason when another request arrives: that short answer must not pass for the model's."""
    rec = Recorder([streamed(sse([text_chunk("ha")])), streamed(sse([text_chunk("hallo", "length")]))])
    b = make_backend(rec)
    (resp,) = run(_complete(b, spec()))
    assert (resp.text, resp.retries) == ("hallo", 1)


def test_unknown_stream_policy_is_a_config_error():
    with pytest.raises(ConfigError, match="stream must be"):
        make_backend(Recorder(), stream="sometimes")
