"""Held speculative steps and their bookkeeping, for `speculation.Speculation`: one held step
(`Ahead`), the calls it makes until it is adopted (`HeldCalls`), an agent's chain of them (`Chain`),
the limit on speculative steps computing at once (`Slots`), and where held steps are on the map
(`Where`), so that news of an agent reaches the chains near it in O(neighbours)."""

from __future__ import annotations

import asyncio
import heapq
from collections import deque
from typing import Any

from ..prediction import OwnState
from .agent import LLMClient


class Ahead:
    """One speculative step of an agent: its own state at the step, the key of its predicted
    observation and the agents perceived in it (indices), the agent copy it runs on (after the
    step: the agent's state after it), its action (a future), its LLM client and the calls it made."""

    __slots__ = ("own", "key", "seen", "agent", "action", "llm", "calls", "wait")

    def __init__(self, own: OwnState, key: tuple, seen: frozenset, agent: Any, action: asyncio.Future,
                 llm: LLMClient, calls: "HeldCalls"):
        self.own, self.key, self.seen = own, key, seen
        self.agent, self.action, self.llm, self.calls = agent, action, llm, calls
        self.wait: asyncio.Future | None = None  # while waiting for a slot (max_inflight)

    @property
    def step(self) -> int:
        return self.own.step


class HeldCalls:
    """Stands in for the run's metrics in a speculative step: calls count as outstanding at once
    (they load the server), but are recorded only once the step is adopted."""

    __slots__ = ("metrics", "owner", "done", "started", "adopted")

    def __init__(self, metrics, owner):
        self.metrics, self.owner = metrics, owner
        self.done: list = []
        self.started = 0
        self.adopted = False

    def now(self) -> float:
        return self.metrics.now()

    def call_started(self) -> None:
        self.started += 1
        self.owner.issued += 1
        self.metrics.call_started()

    def call_finished(self) -> None:
        self.metrics.call_finished()

    def record_call(self, req, resp) -> None:
        self.owner.spec_tokens += resp.input_tokens + resp.output_tokens
        if self.adopted:
            self.metrics.record_call(req, resp)
        else:
            self.done.append((req, resp))

    def step_done(self, latency: float) -> None:
        pass  # an adopted step's latency is measured from its real dispatch

    def adopt(self) -> None:
        self.adopted = True
        for req, resp in self.done:
            self.metrics.record_call(req, resp)
        self.done.clear()


class Slots:
    """At most `n` speculative steps computing at once; waiters are let in smallest step first
    (the step most likely to be needed soonest), not in arrival order. A waiting step whose
    result is needed now (adopted) is let through at once, without a slot."""

    def __init__(self, n: int):
        self.free = n
        self.waiting: list[tuple[int, int, asyncio.Future]] = []
        self._seq = 0

    async def acquire(self, ahead: "Ahead") -> bool:
        """Wait for a slot; True if one was taken (then `release` it), False if let through."""
        if self.free > 0 and not self.waiting:
            self.free -= 1
            return True
        ahead.wait = fut = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self.waiting, (ahead.step, self._seq, fut))
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.result():
                self.release()  # granted just as it was cancelled: pass the slot on
            raise

    def let_through(self, ahead: "Ahead") -> None:
        if ahead.wait is not None and not ahead.wait.done():
            ahead.wait.set_result(False)

    def release(self) -> None:
        while self.waiting:
            _, _, fut = heapq.heappop(self.waiting)
            if not fut.done():
                fut.set_result(True)
                return
        self.free += 1


class Where:
    """Where held steps are: agents with held steps on each cell of a grid as wide as the
    perception radius (+1), so that the chains near a tile are found in O(neighbours)."""

    def __init__(self, radius: int):
        self.size = radius + 1
        self.cells: dict[tuple[int, int], dict[str, int]] = {}

    def add(self, agent: str, tile) -> None:
        cell = self.cells.setdefault((tile[0] // self.size, tile[1] // self.size), {})
        cell[agent] = cell.get(agent, 0) + 1

    def remove(self, agent: str, tile) -> None:
        key = (tile[0] // self.size, tile[1] // self.size)
        cell = self.cells[key]
        cell[agent] -= 1
        if not cell[agent]:
            del cell[agent]
            if not cell:
                del self.cells[key]

    def near(self, tile) -> set[str]:
        """Agents with a held step within the perception radius of `tile` (and a few more)."""
        cx, cy = tile[0] // self.size, tile[1] // self.size
        out: set[str] = set()
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                out.update(self.cells.get((cx + dx, cy + dy), ()))
        return out


class Chain:
    """An agent's held steps, the task computing the next one, and `tip`: its own state at the
    step after the last held one (known once that step's action is), None before the first."""

    __slots__ = ("steps", "task", "room", "tip")

    def __init__(self):
        self.steps: deque[Ahead] = deque()
        self.task: asyncio.Task | None = None
        self.room = asyncio.Event()
        self.tip: OwnState | None = None
