"""The shelf (runtime/shelf.py): dropped speculative steps, taken again only from equal inputs."""

from __future__ import annotations

import asyncio

import pytest

from metropolis_env.prediction import OwnState
from metropolis_env.runtime.held import Ahead
from metropolis_env.runtime.shelf import Shelf, state_digest


class _Calls:
    def __init__(self, started: int):
        self.started = started


def _ahead(loop, step: int, key=("k",), state=None, calls: int = 1, outcome="ok") -> Ahead:
    action = loop.create_future()
    if outcome == "ok":
        action.set_result({"move": step})
    elif outcome == "error":
        action.set_exception(RuntimeError("boom"))
    elif outcome == "cancelled":
        action.cancel()
    return Ahead(OwnState(step, (0, 0), "", ""), key, frozenset(), object(), action, None, _Calls(calls), state)


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_a_step_is_taken_back_only_for_the_same_step_observation_and_state(loop):
    shelf = Shelf()
    s1, s2 = state_digest(b"one"), state_digest(b"two")
    a = _ahead(loop, 5, key=("seen", 1), state=s1, calls=3)
    assert shelf.keep("x", a) == []
    assert shelf.take("x", 5, ("seen", 2), s1) is None      # another observation
    assert shelf.take("x", 5, ("seen", 1), s2) is None      # another agent state
    assert shelf.take("x", 6, ("seen", 1), s1) is None      # another step
    assert shelf.take("y", 5, ("seen", 1), s1) is None      # another agent
    assert shelf.take("x", 5, ("seen", 1), s1) is a
    assert shelf.take("x", 5, ("seen", 1), s1) is None      # once
    assert (shelf.taken, shelf.taken_calls) == (1, 3)


@pytest.mark.parametrize("outcome,calls", [("running", 1), ("error", 1), ("cancelled", 1), ("ok", 0)])
def test_unfinished_failed_or_free_steps_are_wasted_at_once(loop, outcome, calls):
    shelf = Shelf()
    a = _ahead(loop, 1, calls=calls, outcome=outcome)
    assert shelf.keep("x", a) == [a]
    assert shelf.take("x", 1, ("k",), None) is None


def test_commit_and_the_end_of_the_run_release_what_can_no_longer_be_taken(loop):
    shelf = Shelf()
    steps = [_ahead(loop, s, key=(s,)) for s in (3, 4, 5, 7)]
    for a in steps:
        shelf.keep("x", a)
    assert list(shelf.forget("x", 4)) == steps[:2]
    assert shelf.take("x", 4, (4,), None) is None
    assert list(shelf.forget("nobody", 9)) == []
    assert list(shelf.clear()) == steps[2:]
    assert not shelf.kept


def test_the_oldest_shelved_goes_first_and_equal_inputs_replace(loop):
    shelf = Shelf(per_agent=2)
    a, b, c = (_ahead(loop, s, key=(s,)) for s in (1, 2, 3))
    assert shelf.keep("x", a) == [] and shelf.keep("x", b) == []
    assert shelf.keep("x", c) == [a]               # over the limit: the oldest is wasted
    b2 = _ahead(loop, 2, key=(2,))
    assert shelf.keep("x", b2) == [b]              # same inputs: the newer one stays
    assert shelf.take("x", 2, (2,), None) is b2
    with pytest.raises(ValueError):
        Shelf(per_agent=0)


def test_state_digest_tells_states_apart():
    assert state_digest(b"abc") == state_digest(b"abc")
    assert state_digest(b"abc") != state_digest(b"abd")
