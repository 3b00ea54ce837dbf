"""A backend for any OpenAI-compatible server: vLLM, SGLang, llama.cpp, OpenAI itself.

Talks through the official `openai.AsyncOpenAI` client only. What it adds on top of the client:

- **Several servers, least-outstanding routing.** Each request (and each retry) goes to the
  endpoint with the fewest requests in flight (ties: the one that served fewest so far), the
  simplest router that keeps data-parallel replicas evenly loaded when response lengths vary;
  speculative requests (`LLMRequest.speculative`) count only after that: the endpoint with the
  fewest real ones first, since speculative ones run behind them (docs/SPECULATION.md, "Load").
  An endpoint that just failed (connection error, timeout, 5xx, 429) is avoided for
  `failure_cooldown` seconds, doubling with consecutive failures up to `backoff_max` (a 429's
  Retry-After counts too), while another is healthy: a dead replica would otherwise attract
  every new request, since it has none in flight. When all are cooling down, the one that
  recovers first is tried.
- **Priority = step, smallest first.** The agent furthest behind gates the most others (docs/PAPER.md),
  so its calls should be admitted first by a server that schedules by priority. The servers
  disagree on the direction of the number, hence `priority=`:

  * ``"low_first"`` (default) sends ``priority = request.effective_priority`` in the body. vLLM's
    OpenAI server reads ``priority: int`` on completion and chat requests, "lower means earlier
    handling", and only when started with ``--scheduling-policy priority`` (otherwise a non-zero
    priority is rejected with a 400) — vllm/entrypoints/openai/completion/protocol.py,
    ``CompletionRequest.priority``. SGLang reads ``priority: Optional[int]`` on the same requests
    (python/sglang/srt/entrypoints/openai/protocol.py, ``CompletionRequest.priority``) when started
    with ``--enable-priority-scheduling``; add ``--schedule-low-priority-values-first`` so that it
    agrees with vLLM (its default schedules *higher* values first).
  * ``"high_first"`` sends ``-effective_priority`` for SGLang's default direction.
  * ``"off"`` sends nothing: OpenAI proper rejects unknown fields, and llama.cpp has no priority.

- **Fixed output length for trace replay.** When ``request.output_tokens`` is set the request asks
  for ``max_tokens = output_tokens`` and, with ``fixed_length=True``, adds ``ignore_eos: true`` and
  ``min_tokens: output_tokens`` to the body. vLLM and SGLang accept both fields (same protocol
  files as above); llama-cpp-python's server has no ``ignore_eos`` but honours ``min_tokens`` by
  masking the EOS token until that many tokens are out (llama_cpp/server/app.py,
  ``MinTokensLogitsProcessor``), and its pydantic models ignore unknown fields. Servers that
  reject unknown fields (OpenAI proper) need ``fixed_length=False``: then only ``max_tokens`` is
  sent and the output may end early.
- **Cancellable at the server.** A cancelled call closes its HTTP request; llama-cpp-python's
  server stops generating for a closed request only if it streams (backends/streaming.py). With
  ``stream="speculative"`` (default) speculative calls (the ones the runtime cancels when proven
  wrong) are streamed, every other call is not; ``"always"`` / ``"never"`` stream all or none.
  A streamed call gives the same text; its token counts come from the server's usage chunk, or
  are counted (streaming.py); a stream cut short (no finish reason) is retried. llama-cpp-python's
  server must run with ``--interrupt_requests False``: otherwise it cuts a streamed request short
  whenever another one arrives.
- **Retries it owns.** The client runs with ``max_retries=0``; timeouts, connection errors, 408,
  409, 429 and 5xx are retried here with exponential backoff and jitter from a seeded RNG (so a
  run's retry schedule is reproducible), and counted per response and in `stats()`. Anything
  else (400 context length exceeded, 401, 404, ...) raises `BackendError` at once, naming the
  agent, step, call index and the server's message.

API key: read from the environment only, ``OPENAI_API_KEY`` or the variable named by
``api_key_env``. Local servers without authentication (vLLM, SGLang, llama.cpp on localhost) need
no key: when the variable is unset and every base URL is a loopback address, the placeholder
``"EMPTY"`` is sent instead. For a remote server an unset variable is a configuration error.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import random
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Literal, Mapping, Sequence
from urllib.parse import urlparse

from ..errors import ConfigError
from .base import Backend, BackendError, LLMRequest, LLMResponse
from .streaming import IncompleteStream, read_stream, transport_module

PriorityStyle = Literal["low_first", "high_first", "off"]
StreamPolicy = Literal["speculative", "always", "never"]

#: Key sent to local servers that need none (vLLM's documented convention).
PLACEHOLDER_API_KEY = "EMPTY"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: HTTP statuses worth another try: request timeout, conflict, rate limit, server errors.
RETRYABLE_STATUS = frozenset({408, 409, 429})


def is_local_url(url: str) -> bool:
    """True when `url` points at this machine (localhost or a loopback address)."""
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _resolve_api_key(env_var: str, base_urls: Sequence[str]) -> str:
    key = os.environ.get(env_var)
    if key:
        return key
    if all(is_local_url(u) for u in base_urls):
        return PLACEHOLDER_API_KEY
    raise ConfigError(
        f"no API key: set the environment variable {env_var} (the key is read from the "
        f"environment only); a placeholder is used only when every base URL is local, and "
        f"{[u for u in base_urls if not is_local_url(u)]} are not")


@dataclass
class Endpoint:
    """One server and its client, with the load the router balances on."""

    base_url: str
    client: Any  # openai.AsyncOpenAI
    outstanding: int = 0
    speculative: int = 0  # of the outstanding calls, those sent speculative
    requests: int = 0
    completed: int = 0
    retries: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    down_until: float = 0.0  # loop time before which the router avoids it (after a failure)


class OpenAIBackend(Backend):
    """LLM calls against one or several OpenAI-compatible servers.

    base_url: one URL or a list (data-parallel replicas of the same model); defaults to the
        ``OPENAI_BASE_URL`` environment variable, else OpenAI's API.
    model: the default model name. models: per agent, a dict ``{agent: model}`` or a callable
        ``agent -> model | None``; ``LLMRequest.model`` overrides both.
    api_key_env: the environment variable holding the key (see the module docstring).
    priority: how `LLMRequest.effective_priority` is sent ("low_first", "high_first", "off").
    fixed_length: send ``ignore_eos``/``min_tokens`` when ``output_tokens`` is set.
    stream: which calls are streamed, so that cancelling them stops the server too
        ("speculative", "always", "never"; see the module docstring).
    timeout: seconds per attempt. max_retries: retries after the first attempt.
    backoff_base / backoff_max: delay before retry k (0-based) is
        ``min(backoff_max, backoff_base * 2**k) * (1 + jitter * u)`` with u ~ U[0, 1) from
        ``random.Random(seed)``; a 429's ``Retry-After`` raises it up to ``backoff_max``.
    failure_cooldown: seconds the router avoids an endpoint after a retryable failure, doubled
        for each further consecutive failure (capped at ``backoff_max``); 0 disables it.
    extra_body: fields added to every request body (server-specific sampling options).
        Per request, ``LLMRequest.extra["extra_body"]`` is added too.
    http_client: a callable ``base_url -> httpx AsyncClient`` for custom transports (tests,
        proxies); the client is closed by `aclose`.
    sleep: the coroutine used to wait between retries (``asyncio.sleep``, which follows a
        virtual clock when the loop has one).
    """

    virtual_time = False

    def __init__(
        self,
        base_url: str | Sequence[str] | None = None,
        model: str | None = None,
        *,
        models: Mapping[str, str] | Callable[[str], str | None] | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        priority: PriorityStyle = "low_first",
        fixed_length: bool = True,
        stream: StreamPolicy = "speculative",
        timeout: float = 60.0,
        max_retries: int = 6,
        backoff_base: float = 0.5,
        backoff_max: float = 20.0,
        failure_cooldown: float = 5.0,
        jitter: float = 0.5,
        seed: int = 0,
        extra_body: Mapping[str, Any] | None = None,
        http_client: Callable[[str], Any] | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ):
        import openai  # the one client this backend speaks through

        httpx = transport_module()  # the client's transport: errors in the middle of a stream are its own

        if base_url is None:
            base_url = os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ConfigError("OpenAIBackend needs at least one base_url")
        if priority not in ("low_first", "high_first", "off"):
            raise ConfigError(f"priority must be 'low_first', 'high_first' or 'off', "
                              f"not {priority!r}")
        if stream not in ("speculative", "always", "never"):
            raise ConfigError(f"stream must be 'speculative', 'always' or 'never', not {stream!r}")
        if (max_retries < 0 or timeout <= 0 or backoff_base < 0 or backoff_max < 0 or jitter < 0
                or failure_cooldown < 0):
            raise ConfigError("max_retries, backoff_base, backoff_max, failure_cooldown and jitter must be "
                              ">= 0 and timeout > 0")
        key = _resolve_api_key(api_key_env, urls)
        self._openai = openai
        self._httpx = httpx
        self._failures = (openai.OpenAIError, httpx.TransportError, IncompleteStream)
        self.endpoints = [
            Endpoint(u, openai.AsyncOpenAI(
                api_key=key, base_url=u, timeout=timeout, max_retries=0,
                http_client=http_client(u) if http_client is not None else None))
            for u in urls
        ]
        self.model = model
        self.models = models
        self.priority = priority
        self.fixed_length = fixed_length
        self.stream = stream
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.failure_cooldown = failure_cooldown
        self.jitter = jitter
        self.extra_body = dict(extra_body or {})
        self._rng = random.Random(seed)
        self._sleep = sleep
        self._calls = 0
        self._completed = 0
        self._errors = 0
        self._retries = 0
        self._tokens_in = 0
        self._tokens_out = 0
        self._max_outstanding = 0

    # -- request building -------------------------------------------------------------------

    def model_for(self, request: LLMRequest) -> str:
        """The model a request is sent to: request.model, else per agent, else the default."""
        if request.model:
            return request.model
        chosen = None
        if callable(self.models):
            chosen = self.models(request.agent)
        elif self.models is not None:
            chosen = self.models.get(request.agent)
        chosen = chosen or self.model
        if not chosen:
            raise ConfigError(f"no model for agent {request.agent!r}: pass model= (a default) or "
                              f"models= (per agent) to OpenAIBackend")
        return chosen

    def request_body(self, request: LLMRequest) -> dict[str, Any]:
        """The keyword arguments of the client call (``extra_body`` holds server extensions)."""
        if request.prompt is None and request.messages is None:
            raise BackendError(
                f"agent {request.agent!r} step {request.step} call {request.index}: a real server "
                f"needs a prompt or messages (token counts alone only drive the simulated backend)",
                request)
        extra: dict[str, Any] = dict(self.extra_body)
        max_tokens = request.max_tokens
        if request.output_tokens is not None:
            max_tokens = request.output_tokens
            if self.fixed_length:
                extra["ignore_eos"] = True
                extra["min_tokens"] = request.output_tokens
        if self.priority == "low_first":
            extra["priority"] = request.effective_priority
        elif self.priority == "high_first":
            extra["priority"] = -request.effective_priority
        extra.update(request.extra.get("extra_body") or {})
        body: dict[str, Any] = {"model": self.model_for(request), "max_tokens": max_tokens}
        if request.temperature is not None:  # None: the server's default (some reject 0 with greedy configs)
            body["temperature"] = request.temperature
        if request.messages is not None:
            body["messages"] = [dict(m) for m in request.messages]
        else:
            body["prompt"] = request.prompt
        if self.stream == "always" or (self.stream == "speculative" and request.speculative):
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        if extra:
            body["extra_body"] = extra
        return body

    # -- routing and retries ----------------------------------------------------------------

    def _pick(self, now: float) -> Endpoint:
        healthy = [e for e in self.endpoints if e.down_until <= now]
        if not healthy:
            healthy = [min(self.endpoints, key=lambda e: e.down_until)]
        # fewest real (non-speculative) calls first: speculative ones run behind them
        return min(healthy, key=lambda e: (e.outstanding - e.speculative, e.outstanding, e.requests))

    def _mark_failed(self, ep: Endpoint, now: float, retry_after: float | None) -> None:
        """Keep new requests away from `ep` for a while (see the module docstring)."""
        ep.consecutive_failures += 1
        cooldown = min(self.backoff_max, self.failure_cooldown * 2 ** (ep.consecutive_failures - 1))
        if retry_after is not None:
            cooldown = max(cooldown, min(retry_after, self.backoff_max))
        ep.down_until = max(ep.down_until, now + cooldown)

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `attempt` (0-based)."""
        delay = min(self.backoff_max, self.backoff_base * (2 ** attempt))
        delay *= 1.0 + self.jitter * self._rng.random()
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max))
        return delay

    def _classify(self, exc: BaseException) -> tuple[bool, str, float | None]:
        """(retryable, description, retry_after seconds) of a failed attempt."""
        openai = self._openai
        if isinstance(exc, (openai.APITimeoutError, self._httpx.TimeoutException)):
            return True, "timed out", None
        if isinstance(exc, IncompleteStream):
            return True, str(exc), None
        if isinstance(exc, self._httpx.TransportError):  # the connection broke in the middle of a stream
            return True, f"connection error ({type(exc).__name__}: {exc})", None
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return True, f"connection error ({type(cause).__name__}: {cause})", None
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            retry_after = None
            try:
                retry_after = float(exc.response.headers.get("retry-after"))
            except (TypeError, ValueError):
                pass
            retryable = status in RETRYABLE_STATUS or status >= 500
            return retryable, f"HTTP {status}: {_server_message(exc)}", retry_after
        return False, f"{type(exc).__name__}: {exc}", None

    async def complete(self, request: LLMRequest) -> LLMResponse:
        body = self.request_body(request)
        chat = "messages" in body
        loop = asyncio.get_running_loop()
        start = loop.time()
        self._calls += 1
        attempt = 0
        while True:
            ep = self._pick(loop.time())
            ep.outstanding += 1
            ep.speculative += request.speculative
            ep.requests += 1
            self._max_outstanding = max(self._max_outstanding,
                                        sum(e.outstanding for e in self.endpoints))
            try:
                text, tokens_in, tokens_out = await self._send(ep.client, body, chat)
            except self._failures as exc:
                retryable, what, retry_after = self._classify(exc)
                ep.failures += 1
                where = (f"agent {request.agent!r} step {request.step} call {request.index} "
                         f"on {ep.base_url}")
                if not retryable:
                    self._errors += 1
                    raise BackendError(f"LLM call failed (not retryable) for {where}: {what}",
                                       request, retryable=False) from exc
                self._mark_failed(ep, loop.time(), retry_after)
                if attempt >= self.max_retries:
                    self._errors += 1
                    raise BackendError(f"LLM call failed after {attempt} retries for {where}: "
                                       f"{what}", request, retryable=True) from exc
                delay = self.backoff(attempt, retry_after)
                attempt += 1
                ep.retries += 1
                self._retries += 1
            else:
                ep.completed += 1
                ep.consecutive_failures = 0
                ep.down_until = 0.0
                break
            finally:
                ep.outstanding -= 1
                ep.speculative -= request.speculative
            await self._sleep(delay)

        # A server that reports no usage still gets the counts the trace knows, if any.
        tokens_in = int(tokens_in if tokens_in is not None else request.input_tokens or 0)
        tokens_out = int(tokens_out if tokens_out is not None else request.output_tokens or 0)
        self._completed += 1
        self._tokens_in += tokens_in
        self._tokens_out += tokens_out
        return LLMResponse(text=text, input_tokens=tokens_in, output_tokens=tokens_out,
                           start=start, end=loop.time(), retries=attempt, endpoint=ep.base_url)

    async def _send(self, client, body: dict[str, Any], chat: bool) -> tuple[str, int | None, int | None]:
        """One attempt: (text, prompt tokens, completion tokens), the counts None where unknown."""
        create = client.chat.completions.create if chat else client.completions.create
        result = await create(**body)
        if body.get("stream"):
            answer = await read_stream(result, chat)
            out = answer.completion_tokens if answer.completion_tokens is not None else answer.pieces
            return answer.text, answer.prompt_tokens, out
        choice = result.choices[0] if result.choices else None
        if chat:
            text = (choice.message.content if choice is not None else None) or ""
        else:
            text = (choice.text if choice is not None else None) or ""
        usage = getattr(result, "usage", None)
        return text, getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None)

    # -- lifecycle and metrics --------------------------------------------------------------

    async def aclose(self) -> None:
        for ep in self.endpoints:
            await ep.client.close()

    def stats(self) -> dict[str, Any]:
        return {
            "backend": "openai",
            "calls": self._calls,
            "completed": self._completed,
            "errors": self._errors,
            "retries": self._retries,
            "tokens_in": self._tokens_in,
            "tokens_out": self._tokens_out,
            "max_outstanding": self._max_outstanding,
            "endpoints": {
                e.base_url: {"requests": e.requests, "completed": e.completed,
                             "retries": e.retries, "failures": e.failures,
                             "outstanding": e.outstanding}
                for e in self.endpoints
            },
        }


def _server_message(exc: Any) -> str:
    """The server's own words from an error response (OpenAI, vLLM, SGLang, llama.cpp shapes)."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail")
            if msg:
                return str(msg)
        elif isinstance(err, str):
            return err
        if body.get("message") or body.get("detail"):
            return str(body.get("message") or body.get("detail"))
    elif isinstance(body, str) and body:
        return body
    return str(getattr(exc, "message", exc))
