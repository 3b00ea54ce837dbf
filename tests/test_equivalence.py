"""Equivalence, safety and liveness of out-of-order execution (docs/SEMANTICS.md).

For a deterministic policy, every interleaving the tracker allows must reproduce the sync
execution exactly: every agent's tile at every time and every observation (and info) it receives.
Hypothesis draws the interleavings; after every step() call the env's state is checked against the
brute-force reference (validity invariant, ready set, ready clusters, the laggard never stuck), and
every run must reach max_steps for every agent (no deadlock).

Every observation is compared with the sync one as it arrives. Most out-of-order runs replay the
sync run's actions (`ReplayPolicy`): while an agent's observations equal the sync ones, the
deterministic policy would choose the sync actions again, so this is the same test at a fraction
of the cost. A few runs drive the live policy, to show the premise holds end to end.
"""

from __future__ import annotations

from functools import lru_cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import metropolis_env as me
from policies import (Interleaving, PromisingPolicy, ReactivePolicy, ReplayPolicy, Trajectories, destination_pool,
                      run_async, run_sync)
from reference import assert_env_matches

# Few world seeds, many interleavings: the sync baseline of each seed is computed once.
SEEDS = (0, 1, 2, 3)


def interleavings(clusters_per_call=(1_000_000, 8, 3)):
    """Schedules from a random seed and a few knobs (see `Interleaving`); `clusters_per_call`
    caps how many ready clusters one call may submit (bigger worlds need bigger caps to keep the
    number of calls, each checked against the brute force, affordable)."""
    return st.builds(
        Interleaving,
        seed=st.integers(0, 2**32 - 1),
        share=st.sampled_from([1.0, 0.6, 0.3]),
        order=st.sampled_from(["random", "leaders", "laggards"]),
        max_clusters=st.sampled_from(clusters_per_call),
        partial=st.sampled_from([0.0, 0.3]),
    )


# Each world: how to build it (one env per world, reset for every run) and its policy's knobs.
WORLDS = {
    "the_ville": dict(make=lambda: me.make("the_ville", agents=25, max_steps=300), pool=16),
    "villes": dict(make=lambda: me.make("villes", agents=100, max_steps=300), pool=40),
    "grid_r2_v2": dict(make=lambda: me.make("grid", agents=30, radius_p=2, max_vel=2, max_steps=200,
                                            width=40, height=40), pool=6),
    "grid_r6_v1": dict(make=lambda: me.make("grid", agents=30, radius_p=6, max_vel=1, max_steps=200,
                                            width=50, height=50), pool=6),
    # The versioned rules (per-step state, no coupling), on the same worlds.
    "the_ville_versioned": dict(make=lambda: me.make("the_ville", agents=25, max_steps=300, rules="versioned"),
                                pool=16),
    "villes_versioned": dict(make=lambda: me.make("villes", agents=100, max_steps=300, rules="versioned"), pool=40),
    "grid_r2_v2_versioned": dict(make=lambda: me.make("grid", agents=30, radius_p=2, max_vel=2, max_steps=200,
                                                      width=40, height=40, rules="versioned"), pool=6),
    # Versioned rules with agents that declare paths and routes and keep them (PromisingPolicy).
    "the_ville_paths": dict(make=lambda: me.make("the_ville", agents=25, max_steps=300, rules="versioned"),
                            pool=16, policy=PromisingPolicy),
    "grid_r2_v2_paths": dict(make=lambda: me.make("grid", agents=30, radius_p=2, max_vel=2, max_steps=200,
                                                  width=40, height=40, rules="versioned"), pool=6,
                             policy=PromisingPolicy),
}


@lru_cache(maxsize=None)
def world_env(world: str) -> me.AsyncParallelEnv:
    return WORLDS[world]["make"]()


def policy(world: str, seed: int) -> ReactivePolicy:
    env = world_env(world)
    kind = WORLDS[world].get("policy", ReactivePolicy)
    return kind(env, seed, destination_pool(env.world, WORLDS[world]["pool"]))


@lru_cache(maxsize=None)
def sync_trajectories(world: str, seed: int) -> Trajectories:
    return run_sync(world_env(world), seed, policy(world, seed))


def assert_same_trajectories(got: Trajectories, expected: Trajectories) -> None:
    """Equal, or fail naming the first agent and time where they part."""
    assert got.positions.keys() == expected.positions.keys()
    for a in expected.positions:
        g, e = got.observations[a], expected.observations[a]
        for t, (og, oe) in enumerate(zip(g, e)):
            assert og == oe, f"{a} diverges from sync at step {t}:\n  ooo:  {og}\n  sync: {oe}"
        assert len(g) == len(e), f"{a}: {len(g)} observations out of order, {len(e)} in sync"
        assert got.positions[a] == expected.positions[a], f"{a}: positions differ"


def check_ooo_equals_sync(world: str, seed: int, schedule: Interleaving, live: bool = False) -> None:
    env = world_env(world)
    expected = sync_trajectories(world, seed)
    agent_policy = policy(world, seed) if live else ReplayPolicy(expected)
    got = run_async(env, seed, agent_policy, schedule, check=assert_env_matches, expected=expected)
    assert_same_trajectories(got, expected)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(SEEDS), schedule=interleavings())
def test_ooo_equals_sync_on_the_ville(seed, schedule):
    check_ooo_equals_sync("the_ville", seed, schedule)


@settings(max_examples=8, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(SEEDS[:2]), schedule=interleavings((1_000_000, 24, 8)))
def test_ooo_equals_sync_on_100_agents_in_four_villes(seed, schedule):
    check_ooo_equals_sync("villes", seed, schedule)


@pytest.mark.parametrize("world", ["grid_r2_v2", "grid_r6_v1", "grid_r2_v2_versioned", "grid_r2_v2_paths"])
@settings(max_examples=12, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(SEEDS[:2]), schedule=interleavings())
def test_ooo_equals_sync_with_other_radius_and_speed(world, seed, schedule):
    check_ooo_equals_sync(world, seed, schedule)


@pytest.mark.parametrize("world", ["the_ville", "the_ville_versioned", "the_ville_paths"])
@settings(max_examples=4, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(SEEDS), schedule=interleavings())
def test_ooo_equals_sync_with_the_live_policy(world, seed, schedule):
    check_ooo_equals_sync(world, seed, schedule, live=True)


# The versioned rules, and the same with agents that declare paths and keep them.
@pytest.mark.parametrize("world", ["the_ville_versioned", "the_ville_paths"])
@settings(max_examples=30, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(SEEDS), schedule=interleavings())
def test_versioned_rules_equal_sync_on_the_ville(world, seed, schedule):
    check_ooo_equals_sync(world, seed, schedule)


@settings(max_examples=3, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(SEEDS[:2]), schedule=interleavings((1_000_000, 24, 8)))
def test_versioned_rules_equal_sync_on_100_agents_in_four_villes(seed, schedule):
    check_ooo_equals_sync("villes_versioned", seed, schedule)


@pytest.mark.parametrize("key", ["path", "route"])
def test_declared_promises_are_used_and_release_agents(key):
    """The premise of the promise tests: agents do declare paths and routes, and the promises
    let agents run that the distance alone would hold back."""
    expected = sync_trajectories("the_ville_paths", 0)
    declared = sum(1 for acts in expected.actions.values() for a in acts if isinstance(a, dict) and key in a)
    assert declared > 100
    env = world_env("the_ville_paths")
    schedule = Interleaving(seed=3, share=0.6, order="leaders", max_clusters=8)
    run_async(env, 0, ReplayPolicy(expected), schedule, check=assert_env_matches, expected=expected)
    with_promises = env.stats.tracker_per_step
    # The same actions without these declarations: the same run, more waiting.
    dropped = {"path"} if key == "path" else {"route", "until", "depart"}
    bare = Trajectories(expected.positions, expected.observations,
                        {a: [{k: v for k, v in act.items() if k not in dropped} for act in acts]
                         for a, acts in expected.actions.items()})
    run_async(env, 0, ReplayPolicy(bare), schedule, check=assert_env_matches, expected=expected)
    assert with_promises < env.stats.tracker_per_step


def test_sync_baseline_is_reproducible_and_interactive():
    """The premise the equivalence tests rest on: the policy is deterministic, and the workload
    actually makes agents perceive and address each other (otherwise equivalence is trivial)."""
    first = sync_trajectories("the_ville", 0)
    again = run_sync(world_env("the_ville"), 0, policy("the_ville", 0))
    assert again == first
    assert all(len(seq) == 301 for seq in first.observations.values())
    infos = [dict(info) for seq in first.observations.values() for _, info in seq]
    perceiving = sum(1 for info in infos if info["perceived"])
    moved = sum(1 for info in infos if info["move_result"] == "moved")
    assert perceiving > len(infos) // 10
    assert moved > len(infos) // 10
    other_seed = sync_trajectories("the_ville", 1)
    assert other_seed.positions != first.positions
