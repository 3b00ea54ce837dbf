"""VersionStore and the versioned env's memory: versions are kept exactly as long as a reader may need them."""

from __future__ import annotations

import random

import pytest

import metropolis_env as me
from metropolis_env.versions import PRUNE_CHUNK, VersionStore


def test_store_returns_each_step_and_drops_only_below_the_smallest_step():
    store = VersionStore(["a0", "b0"])
    for t in range(1, 200):
        store.append(0, f"a{t}", min_step=0)  # agent 1 stays at step 0: nothing may go
    assert store.at(0, 0) == "a0" and store.at(0, 137) == "a137" and store.at(1, 0) == "b0"
    store.append(1, "b1", min_step=1)
    store.append(0, "a200", min_step=1)  # fewer than PRUNE_CHUNK droppable: kept
    assert store.at(0, 0) == "a0"
    for t in range(2, PRUNE_CHUNK + 2):
        store.append(1, f"b{t}", min_step=t)
    store.append(0, "a201", min_step=PRUNE_CHUNK + 1)
    with pytest.raises(LookupError, match="dropped"):
        store.at(0, PRUNE_CHUNK)
    assert store.at(0, PRUNE_CHUNK + 1) == f"a{PRUNE_CHUNK + 1}" and store.at(0, 201) == "a201"
    assert store.at(1, PRUNE_CHUNK + 1) == f"b{PRUNE_CHUNK + 1}"


def test_versioned_env_keeps_versions_bounded_by_the_step_spread():
    """A long out-of-order run keeps per agent about its lead over the slowest agent, not its
    whole history."""
    env = me.make("the_ville", agents=25, max_steps=400, rules="versioned")
    obs, _ = env.reset(seed=0)
    rng = random.Random(0)
    widest = 0
    while env.agents:
        ready = env.ready_agents()
        # Leaders first: agents run far ahead wherever nobody holds them back.
        pick = sorted(ready, key=env.agent_step, reverse=True)[:max(1, len(ready) // 2)]
        env.step({a: {"move": rng.randrange(9)} for a in pick})
        lo, hi = env.step_range
        widest = max(widest, hi - lo)
        # An agent prunes when it appends: it holds at most the widest spread seen, plus a chunk.
        assert env._versions.kept() <= 25 * (widest + PRUNE_CHUNK + 1)
    assert widest > 5  # the schedule did spread the agents out
    assert env._versions.kept() < 25 * 400 // 4


def test_unknown_rules_are_rejected_with_the_choices():
    with pytest.raises(me.errors.ConfigError, match="'paper'.*'versioned'"):
        me.make("the_ville", agents=3, rules="optimistic")


def test_bad_action_changes_nothing_in_a_versioned_env():
    env = me.make("grid", agents={"A": (5, 5), "B": (6, 5)}, width=20, height=20, rules="versioned")
    env.reset(seed=0)
    env.step({"A": {"move": 4, "utterance": "hello"}})
    before = env.snapshot()
    with pytest.raises(me.errors.InvalidActionError):
        env.step({"B": {"move": 4, "utterance": 7}})
    with pytest.raises(me.errors.AgentNotReadyError):
        env.step({"A": 4})
    assert env.snapshot() == before
