"""Record LLM calls to a JSONL file and serve them back: deterministic re-runs without a server.

A call is keyed by (agent, step, index in the step's chain). Under the equivalence contract
(docs/SEMANTICS.md) an out-of-order run asks exactly the questions a sync run asks, in another order, so
the keys of a sync run's recording cover an async run, and the prompt hash proves each question
really is the same one. One JSON object per line:

    {"agent": "a0", "step": 3, "index": 0, "prompt_hash": "<sha256>", "input_tokens": 120,
     "output_tokens": 12, "text": "...", "latency": 0.41, "retries": 0}

`RecordingBackend` appends and flushes a line per completed call, so a crash loses at most the
line being written; readers skip a truncated last line, and a recorder reopening such a file cuts
it off before appending. When a key occurs twice (a resumed run that redid a step) the later line
wins.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from .base import Backend, BackendError, LLMRequest, LLMResponse


def prompt_hash(request: LLMRequest) -> str:
    """sha256 of the request's prompt and messages (canonical JSON), the identity of a question."""
    payload = {
        "prompt": request.prompt,
        "messages": [dict(m) for m in request.messages] if request.messages is not None else None,
    }
    data = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CallRecord:
    """One recorded call: its key, the hash of its question, and the answer."""

    agent: str
    step: int
    index: int
    prompt_hash: str
    input_tokens: int
    output_tokens: int
    text: str
    latency: float = 0.0
    retries: int = 0

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.agent, self.step, self.index)

    @classmethod
    def of(cls, request: LLMRequest, response: LLMResponse) -> "CallRecord":
        return cls(request.agent, request.step, request.index, prompt_hash(request),
                   response.input_tokens, response.output_tokens, response.text,
                   response.latency, response.retries)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))


def iter_records(path: str | os.PathLike) -> Iterator[CallRecord]:
    """The records of a call file in order. A last line cut short by a crash is skipped; a bad
    line anywhere else is an error (the file was edited or two writers interleaved)."""
    with open(path, "r", encoding="utf-8") as f:
        lines = f.read().split("\n")
    # split() leaves "" after a final newline; a non-empty last piece had no newline: in flight.
    complete, tail = lines[:-1], lines[-1]
    for no, line in enumerate(complete, 1):
        if not line.strip():
            continue
        try:
            yield CallRecord(**json.loads(line))
        except (json.JSONDecodeError, TypeError) as exc:
            raise ValueError(f"{path}:{no}: not a call record ({exc}); only the last line may be "
                             f"truncated") from exc
    if tail.strip():
        try:
            yield CallRecord(**json.loads(tail))
        except (json.JSONDecodeError, TypeError):
            pass  # the line in flight when the recorder died


def load_records(path: str | os.PathLike) -> dict[tuple[str, int, int], CallRecord]:
    """{(agent, step, index): record}; the later line wins for a repeated key."""
    return {r.key: r for r in iter_records(path)}


def _cut_partial_line(path: Path) -> None:
    """Drop a trailing line without its newline, so the next append starts a fresh line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return
        f.truncate(data.rfind(b"\n") + 1)


class RecordingBackend(Backend):
    """Wraps a backend and appends every completed call to `path` (JSONL, flushed per line).

    fsync: also fsync each line (survives a machine crash, not only a process crash).
    """

    def __init__(self, inner: Backend, path: str | os.PathLike, *, fsync: bool = False):
        self.inner = inner
        self.path = Path(path)
        self.virtual_time = inner.virtual_time
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _cut_partial_line(self.path)
        self._file = open(self.path, "a", encoding="utf-8")
        self._fsync = fsync
        self.recorded = 0

    async def complete(self, request: LLMRequest) -> LLMResponse:
        response = await self.inner.complete(request)
        if self._file.closed:
            raise BackendError(f"RecordingBackend({self.path}) is closed", request)
        self._file.write(CallRecord.of(request, response).to_json() + "\n")
        self._file.flush()
        if self._fsync:
            os.fsync(self._file.fileno())
        self.recorded += 1
        return response

    async def aclose(self) -> None:
        self._file.close()
        await self.inner.aclose()

    def stats(self) -> dict[str, Any]:
        return dict(self.inner.stats(), recorded=self.recorded)


LatencyHook = Callable[[LLMRequest, CallRecord], float]


class ReplayBackend(Backend):
    """Serves recorded answers by (agent, step, index), checking the prompt hash.

    fallback: a backend for calls not recorded or whose prompt changed (e.g. a
        RecordingBackend around a live server, to resume an interrupted run); without one such a
        call raises BackendError.
    latency: None answers at once; ``"recorded"`` waits the recorded latency; a number waits that
        many seconds; a callable ``(request, record) -> seconds`` decides per call. Waiting is
        `asyncio.sleep` on the running loop, so simulated latencies belong under the virtual
        clock: `virtual_time` is True when a latency is set (or follows the fallback's).
    """

    def __init__(self, path: str | os.PathLike, fallback: Backend | None = None, *,
                 latency: None | str | float | LatencyHook = None):
        self.path = Path(path)
        self.records = load_records(self.path) if self.path.exists() else {}
        self.fallback = fallback
        if isinstance(latency, str) and latency != "recorded":
            raise ValueError(f"latency must be None, 'recorded', seconds or a callable, not "
                             f"{latency!r}")
        self.latency = latency
        self.virtual_time = fallback.virtual_time if fallback is not None else latency is not None
        self.hits = 0
        self.misses = 0
        self.mismatches = 0
        self.fallbacks = 0

    def _delay(self, request: LLMRequest, record: CallRecord) -> float:
        if self.latency is None:
            return 0.0
        if self.latency == "recorded":
            return record.latency
        if callable(self.latency):
            return float(self.latency(request, record))
        return float(self.latency)

    async def complete(self, request: LLMRequest) -> LLMResponse:
        record = self.records.get(request.key)
        where = f"agent {request.agent!r} step {request.step} call {request.index}"
        if record is None:
            self.misses += 1
            problem = f"no recorded call for {where} in {self.path}"
        elif record.prompt_hash != prompt_hash(request):
            self.mismatches += 1
            problem = (f"prompt of {where} differs from the one recorded in {self.path} "
                       f"(sha256 {prompt_hash(request)[:12]} != recorded "
                       f"{record.prompt_hash[:12]}): the run diverged from the recorded one")
        else:
            self.hits += 1
            loop = asyncio.get_running_loop()
            start = loop.time()
            delay = self._delay(request, record)
            if delay > 0:
                await asyncio.sleep(delay)
            return LLMResponse(text=record.text, input_tokens=record.input_tokens,
                               output_tokens=record.output_tokens, start=start, end=loop.time(),
                               retries=0, endpoint=f"replay:{self.path.name}")
        if self.fallback is None:
            raise BackendError(problem, request, retryable=False)
        self.fallbacks += 1
        return await self.fallback.complete(request)

    async def aclose(self) -> None:
        if self.fallback is not None:
            await self.fallback.aclose()

    def stats(self) -> dict[str, Any]:
        out = dict(self.fallback.stats()) if self.fallback is not None else {}
        out["replay"] = {"records": len(self.records), "hits": self.hits, "misses": self.misses,
                         "mismatches": self.mismatches, "fallbacks": self.fallbacks}
        return out
