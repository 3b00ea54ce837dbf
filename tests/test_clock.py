"""The virtual clock: exact, ordered, deterministic virtual time with the usual asyncio API."""

from __future__ import annotations

import asyncio
import socket
import sys

import pytest

from metropolis_env import clock


def _now() -> float:
    return asyncio.get_running_loop().time()


def test_time_starts_at_zero_and_sleeps_add_up_exactly():
    durations = [0.1, 0.2, 0.3, 1e-7, 12.5, 0.035]

    async def main():
        seen = [_now()]
        for d in durations:
            await asyncio.sleep(d)
            seen.append(_now())
        return seen

    expected = [0.0]
    for d in durations:
        expected.append(expected[-1] + d)  # the same float additions, in the same order
    assert clock.run(main()) == expected


def test_long_sleeps_cost_no_wall_time_and_stay_exact():
    # Two simulated years, beyond asyncio's one-day cap on a single selector wait.
    async def main():
        await asyncio.sleep(2 * 365 * 86400.0)
        return _now()

    assert clock.run(main()) == 2 * 365 * 86400.0


def test_concurrent_sleepers_wake_in_time_order_at_their_own_times():
    async def sleeper(d, log):
        await asyncio.sleep(d)
        log.append((d, _now()))

    async def main():
        log: list = []
        await asyncio.gather(*(sleeper(d, log) for d in (3.0, 1.0, 2.0, 0.5)))
        return log

    assert clock.run(main()) == [(0.5, 0.5), (1.0, 1.0), (2.0, 2.0), (3.0, 3.0)]


def test_call_at_and_call_later_fire_in_time_order_at_their_times():
    async def main():
        loop = asyncio.get_running_loop()
        log: list = []
        done = loop.create_future()
        loop.call_at(2.0, lambda: log.append(("b", loop.time())))
        loop.call_later(1.0, lambda: log.append(("a", loop.time())))
        loop.call_at(2.0, lambda: log.append(("c", loop.time())))
        loop.call_later(5.0, done.set_result, "end")
        return await done, log, loop.time()

    result, log, end = clock.run(main())
    assert result == "end" and end == 5.0
    # asyncio does not order timers due at the same instant; both run at exactly 2.0.
    assert log[0] == ("a", 1.0) and sorted(log[1:]) == [("b", 2.0), ("c", 2.0)]


def test_wait_for_times_out_at_exactly_its_timeout():
    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.sleep(10.0), timeout=2.5)
        t_timeout = _now()
        value = await asyncio.wait_for(asyncio.sleep(1.0, result="ok"), timeout=2.0)
        return t_timeout, value, _now()

    assert clock.run(main()) == (2.5, "ok", 3.5)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is Python 3.11+")
def test_asyncio_timeout_context_uses_virtual_time():
    async def main():
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(4.0):
                await asyncio.sleep(100.0)
        return _now()

    assert clock.run(main()) == 4.0


def test_futures_resolved_by_timers_wake_their_waiters():
    async def main():
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        loop.call_later(7.0, fut.set_result, 42)
        return await fut, loop.time()

    assert clock.run(main()) == (42, 7.0)


def test_threads_take_no_virtual_time():
    async def main():
        t0 = _now()
        value = await asyncio.to_thread(sum, range(1000))
        t1 = _now()
        await asyncio.sleep(1.0)
        return value, t0, t1, _now()

    assert clock.run(main()) == (sum(range(1000)), 0.0, 0.0, 1.0)


def test_real_io_is_refused_with_a_clear_error():
    a, b = socket.socketpair()

    async def main():
        asyncio.get_running_loop().add_reader(a.fileno(), lambda: None)

    try:
        with pytest.raises(clock.VirtualClockError, match="real I/O"):
            clock.run(main())
    finally:
        a.close()
        b.close()


def test_waiting_for_nothing_raises_instead_of_hanging():
    async def main():
        await asyncio.get_running_loop().create_future()  # nobody will ever set it

    with pytest.raises(clock.VirtualClockError, match="deadlock"):
        clock.run(main())


def test_many_timers_are_exact_and_deterministic():
    def once():
        async def worker(i, log):
            for k in range(20):
                await asyncio.sleep(0.001 * (1 + (i * 7 + k) % 5))
            log.append((i, _now()))

        async def main():
            log: list = []
            await asyncio.gather(*(worker(i, log) for i in range(500)))
            return log

        return clock.run(main())

    first = once()
    assert first == once()
    for i, t in first:  # each worker's clock is its own sum of sleeps, in float order
        expected = 0.0
        for k in range(20):
            expected += 0.001 * (1 + (i * 7 + k) % 5)
        assert t == expected


def test_virtual_false_runs_on_a_plain_loop():
    async def main():
        return type(asyncio.get_running_loop())

    assert not issubclass(clock.run(main(), virtual=False), clock.VirtualEventLoop)
    assert issubclass(clock.run(main(), virtual=True), clock.VirtualEventLoop)
