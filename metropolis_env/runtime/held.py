"""Held speculative steps and their bookkeeping, for `speculation.Speculation`: one held step
(`Ahead`), the calls it makes until it is adopted (`HeldCalls`), an agent's chain of them (`Chain`),
the limit on speculative steps computing at once (`Slots`), the backend as speculation sees it
(`Traffic`: the real load, and the speculative calls to promote when their step is adopted), and
where held steps are on the map (`Where`), so that news of an agent reaches the chains near it in
O(neighbours)."""

from __future__ import annotations

import asyncio
import heapq
from collections import deque
from typing import Any

from ..backends.base import Backend, LLMRequest, LLMResponse
from ..prediction import OwnState
from .agent import LLMClient


class Ahead:
    """One speculative step of an agent: its own state at the step, the key of its predicted
    observation and the agents perceived in it (indices), the agent copy it runs on (after the
    step: the agent's state after it), its action (a future), its LLM client, the calls it made
    and a digest of the agent's state before it (what it was computed from, with the key)."""

    __slots__ = ("own", "key", "seen", "agent", "action", "llm", "calls", "wait", "state")

    def __init__(self, own: OwnState, key: tuple, seen: frozenset, agent: Any, action: asyncio.Future,
                 llm: LLMClient, calls: "HeldCalls", state: bytes | None = None):
        self.own, self.key, self.seen = own, key, seen
        self.agent, self.action, self.llm, self.calls = agent, action, llm, calls
        self.state = state  # digest of the agent's state before the step (None: act() never changes it)
        self.wait: asyncio.Future | None = None  # while waiting for a slot (max_inflight)

    @property
    def step(self) -> int:
        return self.own.step


class HeldCalls:
    """Stands in for the run's metrics in a speculative step: calls count as outstanding at once
    (they load the server), but are recorded only once the step is adopted."""

    __slots__ = ("metrics", "owner", "done", "started", "adopted", "chain")

    def __init__(self, metrics, owner):
        self.metrics, self.owner = metrics, owner
        self.done: list = []
        self.started = 0
        self.adopted = False
        self.chain: Chain | None = None  # the chain holding its step, while it does

    def now(self) -> float:
        return self.metrics.now()

    def call_started(self) -> None:
        if not self.started and self.chain is not None:
            self.chain.costly += 1
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
    """At most `n` speculative steps computing at once (None: no fixed limit), and, with a
    `gauge`, no more than its `room()` (`Traffic`: a level minus the real calls in flight); waiters are let in smallest
    step first (the step most likely to be needed soonest), not in arrival order. A waiting step
    whose result is needed now (adopted) is let through at once, without a slot."""

    def __init__(self, n: int | None, gauge: "Traffic | None" = None):
        self.n, self.gauge = n, gauge
        self.busy = 0
        self.waiting: list[tuple[int, int, asyncio.Future]] = []
        self._seq = 0
        if gauge is not None:
            gauge.listener = self.pump

    def _open(self) -> bool:
        if self.n is not None and self.busy >= self.n:
            return False
        room = None if self.gauge is None else self.gauge.room()
        return room is None or self.busy < room

    async def acquire(self, ahead: "Ahead") -> bool:
        """Wait for a slot; True if one was taken (then `release` it), False if let through."""
        if not self.waiting and self._open():
            self.busy += 1
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
        self.busy -= 1
        self.pump()

    def pump(self) -> None:
        """Let waiting steps in, smallest step first, while there is room."""
        while self.waiting and self._open():
            _, _, fut = heapq.heappop(self.waiting)
            if not fut.done():
                self.busy += 1
                fut.set_result(True)


class Traffic(Backend):
    """The run's backend as speculation sees it: `inner`, counting the real (non-speculative)
    calls in flight, the load the server has from work that is needed, and keeping the
    speculative calls in flight per (agent, step), so that when a held step is adopted its
    call still queued behind every real one is promoted (`adopt`, `Backend.promote`). `room()`:
    how many speculative steps may compute beside the real load (`level` minus the real calls
    in flight; None: no level); `listener` is told when a real call ends."""

    def __init__(self, inner: Backend, level: int | None = None):
        self.inner, self.level = inner, level
        self.virtual_time = inner.virtual_time
        self.real = 0
        self.flying: dict[tuple[str, int], list[LLMRequest]] = {}
        self.listener = None

    def room(self) -> int | None:
        return None if self.level is None else self.level - self.real

    async def complete(self, request: LLMRequest) -> LLMResponse:
        if request.speculative:
            mine = self.flying.setdefault((request.agent, request.step), [])
            mine.append(request)
            try:
                return await self.inner.complete(request)
            finally:
                mine.remove(request)
                if not mine and self.flying.get((request.agent, request.step)) is mine:
                    del self.flying[(request.agent, request.step)]
        self.real += 1
        try:
            return await self.inner.complete(request)
        finally:
            self.real -= 1
            if self.listener is not None:
                self.listener()

    def adopt(self, agent: str, step: int) -> None:
        """The held step of `agent` at `step` was adopted: its calls in flight are needed now."""
        for request in self.flying.get((agent, step), ()):
            self.inner.promote(request)

    def promote(self, request: LLMRequest) -> None:
        self.inner.promote(request)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def stats(self) -> dict:
        return self.inner.stats()


class Where:
    """Where held steps are: agents with held steps on each cell of a grid as wide as the
    perception radius (+1), so that the chains near a tile are found in O(neighbours)."""

    def __init__(self, radius: int):
        self.size = radius + 1
        self.cells: dict[tuple[int, int], dict[str, int]] = {}
        self.of: dict[str, dict[tuple[int, int], int]] = {}  # the same counts, by agent
        self.version = 0  # changes with every add and remove: what `near` found is still so while equal

    def add(self, agent: str, tile) -> None:
        self.version += 1
        key = (tile[0] // self.size, tile[1] // self.size)
        cell = self.cells.setdefault(key, {})
        cell[agent] = cell.get(agent, 0) + 1
        mine = self.of.setdefault(agent, {})
        mine[key] = mine.get(key, 0) + 1

    def remove(self, agent: str, tile) -> None:
        self.version += 1
        key = (tile[0] // self.size, tile[1] // self.size)
        cell = self.cells[key]
        cell[agent] -= 1
        if not cell[agent]:
            del cell[agent]
            if not cell:
                del self.cells[key]
            mine = self.of[agent]
            del mine[key]
            if not mine:
                del self.of[agent]
        else:
            self.of[agent][key] -= 1

    def cell(self, tile) -> tuple[int, int]:
        return tile[0] // self.size, tile[1] // self.size

    def cells_of(self, agent: str):
        """The cells where `agent` has entries."""
        return self.of.get(agent, {}).keys()

    def near(self, tile) -> set[str]:
        """Agents with a held step within the perception radius of `tile` (and a few more)."""
        cx, cy = tile[0] // self.size, tile[1] // self.size
        out: set[str] = set()
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                out.update(self.cells.get((cx + dx, cy + dy), ()))
        return out


class Chain:
    """An agent's held steps, the task computing the next one, `tip`: its own state at the
    step after the last held one (known once that step's action is), None before the first,
    and `ghost`: after a cut, the states its dropped steps had reached, by step (the likeliest
    outcome of computing them again), until the chain computes past them or differs.
    `costly`: how many of its held steps have started an LLM call (what `depth` limits), kept
    as steps are added, make their first call and leave (`push`, `popleft`, `pop`).

    The tiles of its held steps are kept in `held`, those of its tip and ghost in `ends` (both
    `Where`s shared by all chains): what others guess of the agent is on one of them, so a
    prediction finds the agent near a tile in O(neighbours) however far it is now."""

    __slots__ = ("name", "held", "ends", "steps", "task", "room", "tip", "ghost", "costly")

    def __init__(self, name: str, held: Where, ends: Where):
        self.name, self.held, self.ends = name, held, ends
        self.steps: deque[Ahead] = deque()
        self.task: asyncio.Task | None = None
        self.room = asyncio.Event()
        self.tip: OwnState | None = None
        self.ghost: dict[int, OwnState] = {}
        self.costly = 0

    def push(self, ahead: Ahead) -> None:
        self.steps.append(ahead)
        self.held.add(self.name, ahead.own.position)
        ahead.calls.chain = self
        self.costly += ahead.calls.started > 0

    def popleft(self) -> Ahead:
        return self._leave(self.steps.popleft())

    def pop(self) -> Ahead:
        return self._leave(self.steps.pop())

    def _leave(self, ahead: Ahead) -> Ahead:
        self.held.remove(self.name, ahead.own.position)
        ahead.calls.chain = None
        self.costly -= ahead.calls.started > 0
        return ahead

    def set_tip(self, tip: OwnState) -> None:
        if self.tip is not None:
            self.ends.remove(self.name, self.tip.position)
        self.tip = tip
        self.ends.add(self.name, tip.position)

    def haunt(self, dropped: list[Ahead]) -> None:
        """Steps `dropped` (the chain's last ones) are being cut: keep the states they reached
        (and the tip after them, and any older ghost beyond) as the ghost."""
        ghost = {a.step: a.own for a in dropped}
        if self.tip is not None:
            ghost.setdefault(self.tip.step, self.tip)
        for step, state in self.ghost.items():
            ghost.setdefault(step, state)
        self.clear_ghost()
        self.ghost = ghost
        for state in ghost.values():
            self.ends.add(self.name, state.position)

    def ghost_at(self, step: int) -> OwnState | None:
        """The ghost's state at `step` (its last one beyond its end), or None if no ghost
        covers `step`."""
        if not self.ghost or step < min(self.ghost):
            return None
        state = self.ghost.get(step)
        return state if state is not None else self.ghost[max(self.ghost)] if step > max(self.ghost) else None

    def pass_ghost(self, step: int) -> None:
        """The chain has computed up to `step`: the ghost before it is no longer a guess."""
        for s in [s for s in self.ghost if s < step]:
            self.ends.remove(self.name, self.ghost.pop(s).position)

    def clear_ghost(self) -> None:
        for state in self.ghost.values():
            self.ends.remove(self.name, state.position)
        self.ghost = {}

    def close(self) -> None:
        """The chain is gone: its held steps (left in `steps`, for the caller to account for),
        tip and ghost are no guesses any more."""
        for ahead in self.steps:
            self.held.remove(self.name, ahead.own.position)
        self.clear_ghost()
        if self.tip is not None:
            self.ends.remove(self.name, self.tip.position)
            self.tip = None
