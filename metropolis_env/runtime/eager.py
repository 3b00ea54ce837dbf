"""Start a coroutine eagerly: run it up to its first real suspension without creating a Task.

Most agent-steps of a simulated day make no LLM call at all (agents sleep, walk, sit): such a
step finishes in one `send()`, and wrapping it in an asyncio Task would cost more than the step.
Python 3.12 has `asyncio.eager_task_factory`; this is the same idea for 3.10+.
"""

from __future__ import annotations

import asyncio
import sys
import types
from typing import Any, Coroutine


class Done:
    """The result of a coroutine that completed without suspending."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


def start(coro: Coroutine, manual: bool = True) -> Done | asyncio.Task:
    """Run `coro` until it first suspends. Returns Done(result) if it finished (an exception it
    raised propagates), else a Task that continues it from where it stopped.

    On Python >= 3.12 this is a real eager Task. Before 3.12 the first part runs in the *caller's*
    task (`manual=True`), which code that binds to the current task across an await (anyio
    cancel scopes, as in httpx; asyncio.timeout) does not survive: pass manual=False there to get
    a plain Task instead.
    """
    if _EAGER_TASKS:
        task = asyncio.Task(coro, loop=asyncio.get_running_loop(), eager_start=True)
        if task.done():
            return Done(task.result())
        return task
    if not manual:
        return asyncio.ensure_future(coro)
    try:
        yielded = coro.send(None)
    except StopIteration as stop:
        return Done(stop.value)
    return asyncio.ensure_future(_resume(coro, yielded))


_EAGER_TASKS = sys.version_info >= (3, 12)


@types.coroutine
def _resume(coro: Coroutine, yielded: Any):
    # Hand the future the coroutine is waiting on to the Task that drives us, then relay every
    # value and exception between the Task and the coroutine: `yield from` cannot be used, as it
    # would send the coroutine a first None it has already had.
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # noqa: BLE001 - relayed, including CancelledError
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as stop:
                return stop.value
