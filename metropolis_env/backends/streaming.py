"""Reading a streamed completion: how a call that may be cancelled stops at the server too.

Cancelling a call closes its HTTP request, but what the server does then differs. llama-cpp-python's
server (llama_cpp/server/app.py) checks for a disconnected client once before a non-streamed
request starts and never again: a request already generating runs to its last token, holding the
model all the while. A streamed request is different: after every chunk it checks
``request.is_disconnected()`` and stops generating (``get_event_publisher``), and sse-starlette
cancels the response's task when the client leaves. So `OpenAIBackend` streams the calls it may
cancel (speculative ones, by default) and reads them here.

Token counts: the request asks for ``stream_options: {"include_usage": true}`` (OpenAI, vLLM and
SGLang then end the stream with a usage chunk); a server that sends none (llama-cpp-python) gets
its output tokens counted as the chunks that carried text (one token each there, except where it
holds back an incomplete UTF-8 character or a possible stop sequence and sends several tokens as
one chunk: a slight undercount, 1796 counted for 1800 generated on the tests' random model), and
its prompt tokens taken from the request's known count, if any (else 0).

A stream that ends without a finish reason was cut short, not finished: llama-cpp-python's server
started without ``--interrupt_requests False`` ends a streamed request that way ("[DONE]" and
nothing more) as soon as another request arrives. `read_stream` raises `IncompleteStream` then,
which `OpenAIBackend` retries like a dropped connection, so a short answer is never taken for
the model's.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any


def transport_module() -> ModuleType:
    """The httpx package the installed `openai` client is built on (``httpx``, or ``httpx2`` in
    newer openai releases): errors in the middle of a stream are its own, not openai's."""
    import openai

    for cls in openai.DefaultAsyncHttpxClient.__mro__[1:]:
        if cls.__name__ == "AsyncClient":
            return importlib.import_module(cls.__module__.split(".")[0])
    return importlib.import_module("httpx")


class IncompleteStream(Exception):
    """A stream ended before any choice said why it finished (cut short by the server)."""


@dataclass
class StreamedAnswer:
    """What a finished stream said: its text, the server's usage (None if it sent none) and how
    many chunks carried text."""

    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    pieces: int


async def read_stream(stream: Any, chat: bool) -> StreamedAnswer:
    """Read an openai ``AsyncStream`` of completion (or chat completion, `chat`) chunks to its
    end. Its HTTP response is closed on the way out, also when the caller is cancelled: that
    close is what tells the server to stop generating. Raises IncompleteStream for a stream
    that ended without a finish reason."""
    parts: list[str] = []
    usage = finish = None
    try:
        async for chunk in stream:
            if getattr(chunk, "usage", None) is not None:
                usage = chunk.usage
            for choice in chunk.choices or ():
                if choice.index != 0:
                    continue
                piece = (choice.delta.content if chat else choice.text) or ""
                if piece:
                    parts.append(piece)
                finish = choice.finish_reason or finish
    finally:
        await stream.close()
    if finish is None:
        raise IncompleteStream(f"the stream ended after {len(parts)} pieces without a finish reason "
                               f"(cut short by the server; a llama-cpp-python server needs "
                               f"--interrupt_requests False)")
    return StreamedAnswer("".join(parts), getattr(usage, "prompt_tokens", None),
                          getattr(usage, "completion_tokens", None), len(parts))
