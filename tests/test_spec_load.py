"""Speculation and the server's load: an adopted step's queued call is promoted to a real one
(`held.Traffic.adopt`, `Backend.promote`), the `busy_at` limit on speculative steps beside the
real calls in flight (`held.Slots` with a `Traffic` gauge), and the O(1) count of held steps
with calls that `depth` limits (`held.Chain.costly`)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metropolis_env import clock
from metropolis_env.backends.base import Backend, LLMRequest, LLMResponse
from metropolis_env.backends.simulated import make_backend
from metropolis_env.errors import ConfigError
from metropolis_env.prediction import OwnState
from metropolis_env.runtime.held import Chain, HeldCalls, Slots, Traffic, Where
from metropolis_env.runtime.speculation import Speculation

from test_speculation import _run, _sync


def _req(agent, step, n_out=20, speculative=False):
    return LLMRequest(agent, step, input_tokens=50, output_tokens=n_out, speculative=speculative)


def _served_order(promote: bool) -> list[str]:
    """One batch slot, held by a long real call; then a real call of step 5 and a speculative
    one of step 3 queue behind it; the speculative one's step is adopted (or not)."""
    order: list[str] = []

    async def main():
        traffic = Traffic(make_backend(max_batch=1, max_batched_tokens=512))

        async def call(req):
            await traffic.complete(req)
            order.append(req.agent)

        first = asyncio.ensure_future(call(_req("long", 0, n_out=200)))
        await asyncio.sleep(0.5)  # admitted and decoding
        later = [asyncio.ensure_future(call(_req("real", 5))),
                 asyncio.ensure_future(call(_req("spec", 3, speculative=True)))]
        await asyncio.sleep(0)  # both queued
        if promote:
            traffic.adopt("spec", 3)
        await asyncio.gather(first, *later)

    clock.run(main(), virtual=True)
    return order


def test_an_adopted_steps_queued_call_goes_as_a_real_call_of_its_step():
    """Behind a real call of a later step without adoption (speculative class), ahead of it once
    adopted (step 3 before step 5, as async would have sent it)."""
    assert _served_order(promote=False) == ["long", "real", "spec"]
    assert _served_order(promote=True) == ["long", "spec", "real"]


class _Held(Backend):
    """Answers each call when the test says so."""

    def __init__(self):
        self.open: dict[str, asyncio.Future] = {}

    async def complete(self, request):
        fut = self.open[request.agent] = asyncio.get_running_loop().create_future()
        await fut
        return LLMResponse("", 1, 1, 0.0, 0.0)


class _Step:
    """What Slots reads of a held step: its step and its wait."""

    def __init__(self, step):
        self.step, self.wait = step, None


@settings(max_examples=60, deadline=None)
@given(level=st.integers(1, 6), real=st.integers(0, 6), steps=st.lists(st.integers(0, 50), max_size=8),
       ends=st.lists(st.integers(0, 5), max_size=6), limit=st.sampled_from([None, 2, 5]))
def test_busy_at_holds_the_limit_and_lets_in_smallest_step_first(level, real, steps, ends, limit):
    """At any time, speculative steps computing <= min(limit, level - real calls in flight); as
    real calls end, waiting steps are let in smallest step first."""

    async def main():
        backend = _Held()
        traffic = Traffic(backend, level)
        slots = Slots(limit, traffic)
        reals = [asyncio.ensure_future(traffic.complete(_req(f"r{k}", 0))) for k in range(real)]
        await asyncio.sleep(0)
        got: list[int] = []

        async def one(step):
            assert await slots.acquire(_Step(step))
            got.append(step)

        tasks = [asyncio.ensure_future(one(s)) for s in steps]
        await asyncio.sleep(0)
        room = max(0, min(limit or len(steps), level - real))
        assert slots.busy == len(got) == min(len(steps), room)
        assert got == steps[:len(got)]  # the first ones found room at once
        waited = sorted(steps[len(got):])
        left = real
        for k in sorted(set(ends)):
            if k >= real:
                break
            busy, before = slots.busy, len(got)
            backend.open[f"r{k}"].set_result(None)
            await reals[k]
            left -= 1
            let_in = max(0, min(limit or len(steps), level - left)) - busy
            await asyncio.sleep(0)
            assert slots.busy <= max(0, min(limit or len(steps), level - left))
            assert got[before:] == waited[:max(0, let_in)]
            waited = waited[max(0, let_in):]
        for t in tasks:
            t.cancel()
        for k in range(real):
            if not backend.open[f"r{k}"].done():
                backend.open[f"r{k}"].set_result(None)
        await asyncio.gather(*reals, *tasks, return_exceptions=True)

    clock.run(main(), virtual=True)


def test_an_adopted_step_waiting_for_room_is_let_through():
    async def main():
        backend = _Held()
        traffic = Traffic(backend, 1)
        slots = Slots(None, traffic)
        real = asyncio.ensure_future(traffic.complete(_req("r", 0)))
        await asyncio.sleep(0)
        ahead = _Step(7)
        waiting = asyncio.ensure_future(slots.acquire(ahead))
        await asyncio.sleep(0)
        assert not waiting.done()  # no room beside the real call
        slots.let_through(ahead)
        assert await waiting is False  # through, without a slot to release
        assert slots.busy == 0
        backend.open["r"].set_result(None)
        await real

    clock.run(main(), virtual=True)


class _Metrics:
    def call_started(self):
        pass


class _Owner:
    issued = 0


class _Ahead:
    def __init__(self, tile=(0, 0)):
        self.calls = HeldCalls(_Metrics(), _Owner())
        self.own = OwnState(0, tile, "", "")


@settings(max_examples=100, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["push", "pop", "popleft", "call", "call_gone"]),
                              st.integers(0, 10)), max_size=40))
def test_chain_counts_held_steps_with_calls_as_a_scan_would(ops):
    held = Where(1)
    chain, gone = Chain("a", held, Where(1)), []
    for op, k in ops:
        if op == "push":
            ahead = _Ahead((k, 2 * k))
            for _ in range(k % 2):  # a step may have made a call before it is held (a recomputed one)
                ahead.calls.call_started()
            chain.push(ahead)
        elif op in ("pop", "popleft") and chain.steps:
            gone.append(getattr(chain, op)())
        elif op == "call" and chain.steps:
            chain.steps[k % len(chain.steps)].calls.call_started()
        elif op == "call_gone" and gone:  # an adopted step's later calls
            gone[k % len(gone)].calls.call_started()
        assert chain.costly == sum(1 for a in chain.steps if a.calls.started)
        assert sum(held.of.get("a", {}).values()) == len(chain.steps)  # its held tiles, one each


@pytest.mark.parametrize("world", ["grid", "the_ville"])
@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), busy_at=st.sampled_from([1, 2, 4]), depth=st.sampled_from([1, 3]))
def test_speculative_run_with_busy_at_equals_sync(world, seed, busy_at, depth):
    trail, memories, _ = _run(world, "paper", "async", seed, Speculation(depth=depth, busy_at=busy_at))
    assert (trail, memories) == _sync(world, "paper")


@pytest.mark.parametrize("bad", [0, -1, 1.5, "auto"])
def test_bad_busy_at_is_a_clear_error(bad):
    with pytest.raises(ConfigError, match="busy_at"):
        Speculation(busy_at=bad)


def test_busy_at_is_a_setting_a_checkpoint_saves():
    made = Speculation(depth=2, busy_at=3)
    assert made.settings()["busy_at"] == 3
    assert Speculation(**made.settings()).settings() == made.settings()


def _endpoints(first: list[LLMRequest], then: LLMRequest, promote: LLMRequest | None = None) -> list[str]:
    """Endpoints of `first` (sent one after another, all kept in flight) and of `then`, on two
    replicas; `promote`: one of `first` promoted before `then` is sent."""
    async def main():
        backend = make_backend(gpus=2)
        tasks = []
        for req in first:
            tasks.append(asyncio.ensure_future(backend.complete(req)))
            await asyncio.sleep(0)
        if promote is not None:
            backend.promote(promote)
        tasks.append(asyncio.ensure_future(backend.complete(then)))
        return [r.endpoint for r in await asyncio.gather(*tasks)]

    return clock.run(main(), virtual=True)


def test_real_calls_go_to_the_replica_with_fewest_real_calls():
    """Two speculative calls on replica 0 and a real one on 1: a real call goes to 0 (its real
    load is 0; speculative calls run behind it), a speculative one too; without speculation,
    least outstanding as before; a promoted call counts as real."""
    spec = [_req("s1", 9, speculative=True), _req("r1", 1), _req("s2", 9, speculative=True)]
    assert _endpoints(spec, _req("r2", 2))[:3] == ["sim-replica-0", "sim-replica-1", "sim-replica-0"]
    assert _endpoints(spec, _req("r2", 2))[3] == "sim-replica-0"
    assert _endpoints(spec, _req("s3", 9, speculative=True))[3] == "sim-replica-0"
    real = [_req("a", 1), _req("b", 1), _req("c", 1)]
    assert _endpoints(real, _req("d", 2)) == ["sim-replica-0", "sim-replica-1", "sim-replica-0", "sim-replica-1"]
    # promoted, s1 is real load: one real call each, and replica 1 has fewer in flight
    assert _endpoints(spec, _req("r2", 2), promote=spec[0])[3] == "sim-replica-1"


def test_openai_router_counts_speculative_calls_after_real_ones():
    from metropolis_env.backends.openai_backend import OpenAIBackend
    from test_openai_backend import A, B, Recorder

    backend = OpenAIBackend([A, B], model="m", http_client=Recorder().factory)
    a, b = backend.endpoints
    a.outstanding = a.speculative = 3  # A: three speculative calls
    b.outstanding = 1  # B: one real call
    assert backend._pick(0.0) is a
    a.speculative = 1  # A: two real calls, one speculative
    assert backend._pick(0.0) is b
    a.outstanding = a.speculative = b.speculative = 0  # no speculation: least outstanding, as before
    assert backend._pick(0.0) is a
