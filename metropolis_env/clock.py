"""Run a coroutine on a virtual clock: simulated seconds cost no wall time.

`run(coro, virtual=True)` runs `coro` on a `VirtualEventLoop`, an asyncio event loop whose
`time()` starts at 0.0 and, whenever no callback is runnable, jumps straight to the earliest
scheduled timer instead of sleeping. Everything built on the loop's clock - `asyncio.sleep`,
`loop.call_at` / `call_later`, `asyncio.wait_for`, `asyncio.timeout`, Futures - behaves as usual,
in virtual seconds. Time is exact (a timer fires at exactly the `when` it was scheduled for, so
sleeps add up as the same float additions would) and deterministic (no wall clock is read).

Contract of the virtual loop:
- No real I/O: registering a socket or pipe raises `VirtualClockError` (its readiness would depend
  on wall time, which this loop never waits for).
- Threads (`loop.run_in_executor`, `asyncio.to_thread`) are allowed and take zero virtual time:
  while one is running the loop waits for it in wall time and the virtual clock stands still.
- A coroutine that waits for nothing that can ever happen (no timer, no thread, nothing
  runnable) raises `VirtualClockError` instead of hanging forever.

Why not the `looptime` package: it is built for tests of I/O code. It keeps time as integer
microseconds (latencies such as 8.03 ms * 22 come back rounded, so analytic results cannot be
asserted exactly) and, before every jump of the clock, spins 42 no-op loop cycles: measured side
by side (looptime 0.9, Python 3.11), ~5,000 sequential timer jumps per second against ~100,000 for
the ~60 lines below, and a simulated day of a village jumps the clock hundreds of thousands of times.
"""

from __future__ import annotations

import asyncio
import math
import selectors
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["VirtualClockError", "VirtualEventLoop", "run"]


class VirtualClockError(RuntimeError):
    """Something that cannot work on a virtual clock: real I/O, or a wait for nothing (deadlock)."""


class _VirtualSelector(selectors.DefaultSelector):
    """A selector that never waits: `select(timeout)` advances the loop's virtual time instead.

    Only the loop's own self-pipe (registered while the loop is built, used to wake it from
    threads) may be registered; the loop seals the selector after its construction.
    """

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualEventLoop | None = None
        self.sealed = False

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        if self.sealed:
            raise VirtualClockError(
                f"real I/O on the virtual clock (file object {fileobj!r}): a simulated run cannot wait "
                "for sockets or pipes; run with metropolis_env.clock.run(..., virtual=False), or use a "
                "backend whose latencies are simulated (virtual_time=True)")
        return super().register(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        loop = self.loop
        assert loop is not None
        ready: list[tuple[selectors.SelectorKey, int]] = []
        if timeout == 0:
            # Callbacks are runnable. Only the self-pipe is registered and a callback queued from a
            # thread is already in the ready queue, so polling the pipe here would only cost a syscall.
            pass
        elif loop._threads:
            # A thread's result arrives through the self-pipe; waiting for it in wall time keeps the
            # virtual clock still, so the run stays deterministic whatever the thread's speed.
            ready = super().select(None)
        elif timeout is None:
            raise VirtualClockError(
                "virtual clock: nothing is runnable and nothing is scheduled - the coroutine waits for "
                "an event that can never happen (deadlock)")
        else:
            # Jump to the earliest timer itself rather than now + timeout: the float sum could miss
            # `when` by one ulp and then the timer would not fire on this iteration.
            scheduled = loop._scheduled  # the base loop's heap of timers, earliest first
            if scheduled and scheduled[0]._when - loop._now <= timeout:
                loop._now = max(loop._now, scheduled[0]._when)
            else:  # the base loop caps one wait at a day; honour the cap
                loop._now += timeout
        # The base loop runs the timers with `when < time() + _clock_resolution`. One ulp of the
        # current time runs exactly the timers due now: a fixed nanosecond would merge timers a
        # nanosecond apart (so a callback would see a time before its own `when`), and past ~1e7 s
        # it is below a float's spacing, so a timer due now would never run.
        loop._clock_resolution = math.ulp(loop._now)
        return ready


class VirtualEventLoop(asyncio.SelectorEventLoop):
    """An asyncio event loop on virtual time starting at 0.0 (see the module docstring)."""

    def __init__(self) -> None:
        selector = _VirtualSelector()
        self._now = 0.0
        self._threads: set[asyncio.Future] = set()
        super().__init__(selector)
        selector.loop = self
        selector.sealed = True

    def time(self) -> float:
        return self._now

    def run_in_executor(self, executor: Any, func: Any, *args: Any) -> asyncio.Future:
        fut = super().run_in_executor(executor, func, *args)
        self._threads.add(fut)
        fut.add_done_callback(self._threads.discard)
        return fut

    async def shutdown_default_executor(self, *args: Any, **kwargs: Any) -> None:
        # asyncio's own shutdown joins the executor from a helper thread it does not pass through
        # run_in_executor; a placeholder future keeps the selector waiting for it in wall time.
        guard = self.create_future()
        self._threads.add(guard)
        try:
            await super().shutdown_default_executor(*args, **kwargs)
        finally:
            self._threads.discard(guard)


def run(coro: Coroutine[Any, Any, T], virtual: bool = True) -> T:
    """Run `coro` to completion and return its result, like `asyncio.run`.

    virtual=True: on a fresh `VirtualEventLoop` (time starts at 0.0, never sleeps); False: plain
    `asyncio.run` on the wall clock. Must not be called from a running event loop.
    """
    if not virtual:
        return asyncio.run(coro)
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=VirtualEventLoop) as runner:
            return runner.run(coro)
    return _run_310(coro)


def _run_310(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run with a loop factory, for Python 3.10 (3.11 has asyncio.Runner)."""
    loop = VirtualEventLoop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(coro)
    finally:
        try:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
