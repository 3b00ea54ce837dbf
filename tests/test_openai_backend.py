"""OpenAIBackend against a recorded transport: what goes on the wire, routing, retries, errors.

The openai client is real; only its HTTP transport is replaced (MockTransport), so these tests
pin the request bodies a vLLM/SGLang/llama.cpp server would receive and the backend's reaction to
each kind of failure the client reports.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from metropolis_env.backends.base import BackendError, LLMRequest
from metropolis_env.backends.openai_backend import PLACEHOLDER_API_KEY, OpenAIBackend, is_local_url
from metropolis_env.errors import ConfigError
from metropolis_env.testing import httpx_module

httpx = httpx_module()

A = "http://127.0.0.1:9001/v1"
B = "http://127.0.0.1:9002/v1"


def completion(text="ok", prompt_tokens=7, completion_tokens=3):
    return {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "text": text, "finish_reason": "length", "logprobs": None}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


def chat_completion(text="hi", prompt_tokens=11, completion_tokens=2):
    return {"id": "chat-1", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


class Recorder:
    """A transport per endpoint; `script` yields what each successive request gets."""

    def __init__(self, script=None):
        self.requests: list[tuple[str, str, dict, dict]] = []  # (base_url, path, body, headers)
        self.script = list(script or [])

    def factory(self, base_url):
        async def handler(request):
            body = json.loads(request.content or b"{}")
            self.requests.append((base_url, request.url.path, body, dict(request.headers)))
            action = self.script.pop(0) if self.script else None
            if callable(action):
                action = await action(request)
            if isinstance(action, BaseException):
                raise action
            if isinstance(action, httpx.Response):
                return action
            if request.url.path.endswith("/chat/completions"):
                return httpx.Response(200, json=chat_completion())
            return httpx.Response(200, json=completion())
        return httpx.AsyncClient(transport=httpx.MockTransport(handler))

    @property
    def bodies(self):
        return [r[2] for r in self.requests]


def make_backend(rec, base_url=A, **kw):
    kw.setdefault("model", "m")
    kw.setdefault("backoff_base", 0.0)
    return OpenAIBackend(base_url, http_client=rec.factory, **kw)


def run(coro):
    return asyncio.run(coro)


async def _complete(backend, *requests):
    try:
        return [await backend.complete(r) for r in requests]
    finally:
        await backend.aclose()


@pytest.fixture(autouse=True)
def _no_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


# -- what is sent ---------------------------------------------------------------------------------

def test_prompt_uses_completions_api_and_messages_use_chat_api():
    rec = Recorder()
    b = make_backend(rec)
    r1, r2 = run(_complete(b, LLMRequest("a", 0, prompt="hello", max_tokens=5),
                           LLMRequest("a", 0, 1, messages=({"role": "user", "content": "hey"},))))
    assert [r[1] for r in rec.requests] == ["/v1/completions", "/v1/chat/completions"]
    assert rec.bodies[0]["prompt"] == "hello" and rec.bodies[0]["max_tokens"] == 5
    assert rec.bodies[1]["messages"] == [{"role": "user", "content": "hey"}]
    assert (r1.text, r2.text) == ("ok", "hi")


def test_usage_is_recorded_per_response_and_in_stats():
    rec = Recorder([httpx.Response(200, json=completion("x", 40, 9)),
                    httpx.Response(200, json=completion("y", 2, 1))])
    b = make_backend(rec)
    r1, r2 = run(_complete(b, LLMRequest("a", 0, prompt="p"), LLMRequest("a", 0, 1, prompt="q")))
    assert (r1.input_tokens, r1.output_tokens) == (40, 9)
    assert (r2.input_tokens, r2.output_tokens) == (2, 1)
    assert b.stats()["tokens_in"] == 42 and b.stats()["tokens_out"] == 10
    assert r1.end >= r1.start and r1.retries == 0 and r1.endpoint == A


def test_priority_is_the_step_lowest_first_by_default():
    rec = Recorder()
    b = make_backend(rec)
    run(_complete(b, LLMRequest("a", 17, prompt="p"), LLMRequest("b", 3, prompt="p", priority=1)))
    assert [body["priority"] for body in rec.bodies] == [17, 1]


def test_priority_high_first_negates_and_off_sends_nothing():
    rec = Recorder()
    run(_complete(make_backend(rec, priority="high_first"), LLMRequest("a", 17, prompt="p")))
    assert rec.bodies[0]["priority"] == -17
    rec = Recorder()
    run(_complete(make_backend(rec, priority="off", fixed_length=False),
                  LLMRequest("a", 17, prompt="p", output_tokens=4)))
    body = rec.bodies[0]
    assert "priority" not in body and "ignore_eos" not in body and "min_tokens" not in body
    assert body["max_tokens"] == 4


def test_fixed_output_length_sends_max_tokens_ignore_eos_and_min_tokens():
    rec = Recorder()
    run(_complete(make_backend(rec), LLMRequest("a", 0, prompt="p", max_tokens=64,
                                                output_tokens=22)))
    body = rec.bodies[0]
    assert body["max_tokens"] == 22 and body["ignore_eos"] is True and body["min_tokens"] == 22


def test_free_length_request_sends_no_eos_override():
    rec = Recorder()
    run(_complete(make_backend(rec), LLMRequest("a", 0, prompt="p", max_tokens=30)))
    assert rec.bodies[0]["max_tokens"] == 30
    assert "ignore_eos" not in rec.bodies[0] and "min_tokens" not in rec.bodies[0]


def test_model_per_agent_from_dict_callable_and_request():
    rec = Recorder()
    b = make_backend(rec, model="default-m", models={"bob": "bob-m"})
    run(_complete(b, LLMRequest("alice", 0, prompt="p"), LLMRequest("bob", 0, prompt="p"),
                  LLMRequest("bob", 0, 1, prompt="p", model="override")))
    assert [body["model"] for body in rec.bodies] == ["default-m", "bob-m", "override"]
    rec = Recorder()
    b = make_backend(rec, model=None, models=lambda agent: f"m-{agent}")
    run(_complete(b, LLMRequest("carol", 0, prompt="p")))
    assert rec.bodies[0]["model"] == "m-carol"


def test_missing_model_is_a_config_error():
    b = make_backend(Recorder(), model=None)
    with pytest.raises(ConfigError, match="no model for agent 'zed'"):
        run(_complete(b, LLMRequest("zed", 0, prompt="p")))


def test_extra_body_from_backend_and_request_reaches_the_server():
    rec = Recorder()
    b = make_backend(rec, extra_body={"top_k": 1})
    run(_complete(b, LLMRequest("a", 0, prompt="p", extra={"extra_body": {"seed": 5}})))
    assert rec.bodies[0]["top_k"] == 1 and rec.bodies[0]["seed"] == 5


# -- API key --------------------------------------------------------------------------------------

def test_local_server_without_key_gets_placeholder():
    rec = Recorder()
    run(_complete(make_backend(rec, base_url="http://localhost:8000/v1"),
                  LLMRequest("a", 0, prompt="p")))
    assert rec.requests[0][3]["authorization"] == f"Bearer {PLACEHOLDER_API_KEY}"


def test_key_comes_from_the_named_environment_variable(monkeypatch):
    monkeypatch.setenv("MY_LLM_KEY", "sk-test-from-env")
    rec = Recorder()
    run(_complete(make_backend(rec, base_url="https://llm.example.invalid/v1",
                               api_key_env="MY_LLM_KEY"), LLMRequest("a", 0, prompt="p")))
    assert rec.requests[0][3]["authorization"] == "Bearer sk-test-from-env"


def test_remote_server_without_key_is_a_config_error():
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAIBackend("https://llm.example.invalid/v1", model="m")


def test_is_local_url():
    assert is_local_url("http://127.0.0.1:1/v1") and is_local_url("http://localhost/v1")
    assert is_local_url("http://[::1]:80/v1")
    assert not is_local_url("https://api.openai.com/v1")
    assert not is_local_url("http://10.0.0.1/v1")


# -- routing --------------------------------------------------------------------------------------

def test_least_outstanding_routing_sends_to_the_idle_endpoint():
    arrived, release = {}, {}

    async def main():
        for url in (A, B):
            arrived[url] = asyncio.Event()
            release[url] = asyncio.Event()

        def hold(url):
            async def action(request):
                arrived[url].set()
                await release[url].wait()
                return httpx.Response(200, json=completion(url))
            return action

        rec = Recorder([hold(A), hold(B)])
        b = OpenAIBackend([A, B], model="m", http_client=rec.factory)
        t1 = asyncio.create_task(b.complete(LLMRequest("a", 0, prompt="1")))
        await arrived[A].wait()
        t2 = asyncio.create_task(b.complete(LLMRequest("b", 0, prompt="2")))
        await arrived[B].wait()
        assert [e.outstanding for e in b.endpoints] == [1, 1]
        release[B].set()
        r2 = await t2
        # A still busy, B idle: the next request goes to B.
        r3 = await b.complete(LLMRequest("c", 0, prompt="3"))
        release[A].set()
        r1 = await t1
        await b.aclose()
        return r1, r2, r3, rec, b.stats()

    r1, r2, r3, rec, stats = run(main())
    assert (r1.endpoint, r2.endpoint, r3.endpoint) == (A, B, B)
    assert [r[0] for r in rec.requests] == [A, B, B]
    assert stats["endpoints"][A]["requests"] == 1 and stats["endpoints"][B]["requests"] == 2
    assert stats["max_outstanding"] == 2


def test_sequential_requests_alternate_between_idle_endpoints():
    rec = Recorder()
    b = OpenAIBackend([A, B], model="m", http_client=rec.factory)
    run(_complete(b, *[LLMRequest("a", 0, i, prompt="p") for i in range(4)]))
    assert [r[0] for r in rec.requests] == [A, B, A, B]


# -- retries --------------------------------------------------------------------------------------

@pytest.mark.parametrize("failure", [
    lambda: httpx.Response(500, json={"error": {"message": "boom"}}),
    lambda: httpx.Response(503, text="unavailable"),
    lambda: httpx.Response(429, json={"error": {"message": "slow down"}}),
    lambda: httpx.ReadTimeout("read timed out"),
    lambda: httpx.ConnectError("connection refused"),
    lambda: httpx.RemoteProtocolError("server disconnected"),
], ids=["500", "503", "429", "timeout", "connect", "disconnect"])
def test_transient_failures_are_retried_and_counted(failure):
    rec = Recorder([failure(), failure()])
    b = make_backend(rec)
    (resp,) = run(_complete(b, LLMRequest("a", 2, prompt="p")))
    assert resp.text == "ok" and resp.retries == 2
    assert len(rec.requests) == 3
    assert b.stats()["retries"] == 2 and b.stats()["errors"] == 0


def test_retries_are_counted_per_response():
    rec = Recorder([httpx.Response(500), None, httpx.Response(502), httpx.Response(502)])
    b = make_backend(rec)
    r1, r2 = run(_complete(b, LLMRequest("a", 0, prompt="p"), LLMRequest("a", 0, 1, prompt="q")))
    assert (r1.retries, r2.retries) == (1, 2)
    assert b.stats()["retries"] == 3


def test_exhausted_retries_raise_retryable_backend_error_naming_the_call():
    rec = Recorder([httpx.Response(500, json={"error": {"message": "kaputt"}})] * 4)
    b = make_backend(rec, max_retries=3)
    with pytest.raises(BackendError) as info:
        run(_complete(b, LLMRequest("alice", 12, 1, prompt="p")))
    msg = str(info.value)
    assert "'alice'" in msg and "step 12" in msg and "call 1" in msg and "kaputt" in msg
    assert "after 3 retries" in msg
    assert info.value.retryable and info.value.request.key == ("alice", 12, 1)
    assert len(rec.requests) == 4


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_non_retryable_status_raises_at_once_with_server_message(status):
    message = "This model's maximum context length is 256 tokens, however you requested 900"
    rec = Recorder([httpx.Response(status, json={"error": {"message": message,
                                                           "code": "context_length_exceeded"}})])
    b = make_backend(rec)
    with pytest.raises(BackendError) as info:
        run(_complete(b, LLMRequest("bob", 7, 3, prompt="p")))
    msg = str(info.value)
    assert "'bob'" in msg and "step 7" in msg and "call 3" in msg
    assert f"HTTP {status}" in msg and "maximum context length" in msg
    assert not info.value.retryable
    assert len(rec.requests) == 1 and b.stats()["retries"] == 0 and b.stats()["errors"] == 1


def test_backoff_is_exponential_with_seeded_jitter():
    def delays(seed):
        waited = []

        async def fake_sleep(s):
            waited.append(s)

        rec = Recorder([httpx.Response(500)] * 4)
        b = make_backend(rec, backoff_base=0.5, backoff_max=3.0, jitter=0.5, seed=seed,
                         sleep=fake_sleep)
        run(_complete(b, LLMRequest("a", 0, prompt="p")))
        return waited

    d = delays(seed=1)
    assert len(d) == 4
    for k, (lo, hi) in enumerate([(0.5, 0.75), (1.0, 1.5), (2.0, 3.0), (3.0, 4.5)]):
        assert lo <= d[k] <= hi
    assert delays(seed=1) == d
    assert delays(seed=2) != d


def test_retry_after_of_a_429_is_respected_up_to_the_cap():
    waited = []

    async def fake_sleep(s):
        waited.append(s)

    rec = Recorder([httpx.Response(429, headers={"retry-after": "2"}),
                    httpx.Response(429, headers={"retry-after": "100"})])
    b = make_backend(rec, backoff_base=0.01, backoff_max=5.0, jitter=0.0, sleep=fake_sleep)
    run(_complete(b, LLMRequest("a", 0, prompt="p")))
    assert waited == [2.0, 5.0]


def test_a_retry_is_routed_to_the_other_endpoint_when_one_fails():
    rec = Recorder([httpx.ConnectError("refused")])
    b = OpenAIBackend([A, B], model="m", http_client=rec.factory, backoff_base=0.0)
    (resp,) = run(_complete(b, LLMRequest("a", 0, prompt="p")))
    assert [r[0] for r in rec.requests] == [A, B]
    assert resp.endpoint == B and resp.retries == 1
    assert b.stats()["endpoints"][A]["failures"] == 1


def test_request_without_prompt_is_rejected_before_sending():
    rec = Recorder()
    b = make_backend(rec)
    with pytest.raises(BackendError, match="needs a prompt or messages"):
        run(_complete(b, LLMRequest("a", 0, input_tokens=10, output_tokens=3)))
    assert rec.requests == []


def test_invalid_configuration_is_rejected():
    with pytest.raises(ConfigError):
        OpenAIBackend(A, model="m", priority="sometimes")
    with pytest.raises(ConfigError):
        OpenAIBackend([], model="m")
    with pytest.raises(ConfigError):
        OpenAIBackend(A, model="m", max_retries=-1)


def test_new_requests_avoid_an_endpoint_that_just_failed():
    """A refused connection sends the retry to B, and the next requests too while A cools
    down, although A has nothing in flight (least-outstanding alone would pick it again)."""
    rec = Recorder([httpx.ConnectError("refused")])
    b = OpenAIBackend([A, B], model="m", http_client=rec.factory, backoff_base=0.0, failure_cooldown=600.0)
    run(_complete(b, *[LLMRequest("a", k, prompt="p") for k in range(4)]))
    assert [r[0] for r in rec.requests] == [A, B, B, B, B]
    stats = b.stats()["endpoints"]
    assert stats[A]["failures"] == 1 and stats[B]["completed"] == 4


def test_a_cooled_down_endpoint_is_used_again():
    rec = Recorder([httpx.ConnectError("refused")])
    b = OpenAIBackend([A, B], model="m", http_client=rec.factory, backoff_base=0.0, failure_cooldown=0.0)
    run(_complete(b, *[LLMRequest("a", k, prompt="p") for k in range(3)]))
    # A failed, B served the retry; with no cooldown A (least loaded, first on ties) is back
    assert [r[0] for r in rec.requests] == [A, B, A, B]


def test_when_every_endpoint_is_cooling_down_the_first_to_recover_is_tried():
    """Both endpoints fail and cool down: the call is not failed; each retry goes to the one due
    back first (A), and once A has failed again, doubling its cooldown, to B."""
    rec = Recorder([httpx.ConnectError("refused"), httpx.ConnectError("refused"), httpx.ConnectError("refused")])
    b = OpenAIBackend([A, B], model="m", http_client=rec.factory, backoff_base=0.0, failure_cooldown=600.0,
                      backoff_max=10_000.0)
    (resp,) = run(_complete(b, LLMRequest("a", 0, prompt="p")))
    # A (fails), B (fails: both cooling, A due first), A (fails again: 1,200 s now), B succeeds
    assert [r[0] for r in rec.requests] == [A, B, A, B]
    assert resp.endpoint == B and resp.retries == 3
