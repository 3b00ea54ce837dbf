"""The DependencyTracker against the brute-force reference (tests/reference.py).

Random valid configurations come two ways: random out-of-order runs on small crowded grids
(every state the env reaches), and direct construction of a tracker from positions and steps
(then random ready clusters committed with random moves). In every state each agent's blockers,
the agents it blocks, its coupling partners, its cluster and whether that cluster is ready must
equal the reference, and commit() must report every agent it released.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import metropolis_env as me
from metropolis_env.bounds import BoxBound
from metropolis_env.tracker import DependencyTracker
from policies import Interleaving, RandomWalk, run_async, run_sync
from reference import analyse, assert_env_matches


def assert_tracker_matches(tr: DependencyTracker, radius_p: int, max_vel: int):
    ref = analyse(tr.pos, tr.step, radius_p, max_vel)
    assert not ref.violations, f"validity broken for {ref.violations[:5]}"
    for i in range(len(tr.pos)):
        assert tr.blockers[i] == ref.blockers(i), f"blockers of {i}"
        assert tr.blocks[i] == set(np.flatnonzero(ref.blocked[:, i]).tolist()), f"agents {i} blocks"
        assert tr.coupled[i] == ref.coupled_with(i), f"coupling partners of {i}"
        cluster = ref.cluster_of(i)
        assert tr.cluster_of(i) == cluster
        assert tr.ready_cluster(i) == (None if ref.is_blocked[cluster].any() else cluster)
        assert tr.is_free(i) == (not ref.is_blocked[i])
        expected_rows = {(j, "blocked", tr.step[i] - tr.step[j]) for j in ref.blockers(i)}
        expected_rows |= {(j, "cluster", 0) for j in cluster if j != i and ref.is_blocked[j]}
        assert {(b.other, b.rule, b.gap) for b in tr.blocked_by(i)} == expected_rows
    assert (tr.min_step, tr.max_step) == (min(tr.step), max(tr.step))
    return ref


# -- through random runs on small grids ------------------------------------------------------

small_runs = dict(
    agents=st.integers(2, 14),
    size=st.integers(5, 24),
    radius_p=st.integers(0, 4),
    max_vel=st.integers(1, 3),
    seed=st.integers(0, 2**16),
    schedule=st.builds(Interleaving, seed=st.integers(0, 2**32 - 1),
                       share=st.sampled_from([0.1, 0.5, 1.0]),
                       order=st.sampled_from(["random", "leaders", "laggards"]),
                       max_clusters=st.sampled_from([1, 3, 1_000_000]),
                       partial=st.sampled_from([0.0, 0.5])),
)


@settings(max_examples=120, suppress_health_check=[HealthCheck.too_slow])
@given(**small_runs)
def test_tracker_matches_reference_on_crowded_grids(agents, size, radius_p, max_vel, seed, schedule):
    env = me.make("grid", agents=agents, radius_p=radius_p, max_vel=max_vel, max_steps=20,
                  width=size, height=size, seed=seed)

    def check(env, ready):
        assert_env_matches(env, ready)
        assert_tracker_matches(env._tracker, radius_p, max_vel)

    got = run_async(env, seed, RandomWalk(seed), schedule, check)
    expected = run_sync(env, seed, RandomWalk(seed))
    assert got.observations == expected.observations


# -- direct construction ---------------------------------------------------------------------

@st.composite
def configurations(draw):
    """(radius_p, max_vel, positions, steps) satisfying the validity invariant: random
    (x, y, step) candidates, each kept if it is valid with all those kept before it."""
    radius_p = draw(st.integers(0, 4))
    max_vel = draw(st.integers(1, 3))
    size = draw(st.integers(3, 40))
    candidates = draw(st.lists(st.tuples(st.integers(0, size - 1), st.integers(0, size - 1),
                                         st.integers(0, 8)), min_size=1, max_size=24))
    positions, steps = [], []
    for x, y, s in candidates:
        if all(s == t or max(abs(x - p[0]), abs(y - p[1])) > radius_p + (abs(s - t) - 1) * max_vel
               for p, t in zip(positions, steps)):
            positions.append((x, y))
            steps.append(s)
    return radius_p, max_vel, positions, steps


@settings(max_examples=300)
@given(configurations())
def test_constructed_tracker_matches_reference(config):
    radius_p, max_vel, positions, steps = config
    tr = DependencyTracker(positions, max_vel, BoxBound(radius_p), steps)
    ref = assert_tracker_matches(tr, radius_p, max_vel)
    low = min(steps)
    assert all(not ref.is_blocked[i] for i, s in enumerate(steps) if s == low), \
        "agents at the smallest step are never blocked"


@settings(max_examples=150)
@given(configurations(), st.integers(0, 2**32 - 1))
def test_commits_keep_tracker_equal_to_reference(config, seed):
    """Commit random ready clusters with random moves (each member at most max_vel, any
    direction): the tracker stays equal to the reference, the configuration stays valid, and
    commit() returns its members and every agent it freed."""
    radius_p, max_vel, positions, steps = config
    rng = random.Random(seed)
    tr = DependencyTracker(positions, max_vel, BoxBound(radius_p), steps)
    for _ in range(30):
        ready = {tuple(c) for i in range(len(positions)) if (c := tr.ready_cluster(i)) is not None}
        assert ready, "some cluster is always ready"
        members = list(rng.choice(sorted(ready)))
        moved = [(x + rng.randint(-max_vel, max_vel), y + rng.randint(-max_vel, max_vel))
                 for x, y in (tr.pos[m] for m in members)]
        was_blocked = {i for i in range(len(positions)) if not tr.is_free(i)}
        released = tr.commit(members, moved)
        assert set(members) <= released
        freed = {i for i in was_blocked if tr.is_free(i)}
        assert freed <= released, f"commit did not report agents it freed: {sorted(freed - released)}"
        assert_tracker_matches(tr, radius_p, max_vel)


@pytest.mark.parametrize("radius_p,max_vel", [(4, 1), (2, 2), (0, 3)])
@pytest.mark.parametrize("gap", [1, 5, 20])
def test_far_laggard_blocks_exactly_at_bound(radius_p, max_vel, gap):
    """The spatial search reaches a laggard `gap` steps behind, however far that is."""
    bound = (gap + 1) * max_vel + radius_p
    tr = DependencyTracker([(0, 0), (bound, 0), (bound + 1, 200)], max_vel, BoxBound(radius_p),
                           [0, gap, gap])
    assert tr.blockers[1] == {0} and tr.blocks[0] == {1}
    assert tr.blockers[2] == set()
    tr2 = DependencyTracker([(0, 0), (bound + 1, 0)], max_vel, BoxBound(radius_p), [0, gap])
    assert tr2.blockers[1] == set()
    assert_tracker_matches(tr, radius_p, max_vel)
    assert_tracker_matches(tr2, radius_p, max_vel)


def _trust_path_one_step_more(honest):
    def trusting(self, agent_step, step):
        tile, free = honest(self, agent_step, step)
        return tile, max(0, free - 1)
    return trusting


def _trust_route_one_tile_less(honest):
    def trusting(self, agent_step, step):
        first, last, free = honest(self, agent_step, step)
        return first, max(first, last - 1), free
    return trusting


@pytest.mark.parametrize("promise,loosen", [("PathPromise", _trust_path_one_step_more),
                                            ("RoutePromise", _trust_route_one_tile_less)])
def test_checks_catch_a_promise_trusted_one_step_too_far(monkeypatch, promise, loosen):
    """A tracker that lets a laggard's declared path count for one step more than it covers, or
    that judges a laggard on a declared route as if it could not reach the farthest tile of its
    stretch, breaks equivalence with sync (the promise tests are not vacuous)."""
    from metropolis_env import promises

    cls = getattr(promises, promise)
    monkeypatch.setattr(cls, "reach", loosen(cls.reach))
    from policies import PromisingPolicy
    failures = 0
    for seed in range(16):
        env = me.make("grid", agents=12, max_steps=30, width=14, height=14, seed=seed, rules="versioned")
        schedule = Interleaving(seed=seed, share=0.5, order="leaders", max_clusters=2)
        try:
            expected = run_sync(env, seed, PromisingPolicy(env, seed))
            got = run_async(env, seed, PromisingPolicy(env, seed), schedule)
            assert got.observations == expected.observations
        except AssertionError:
            failures += 1
            break
    assert failures > 0


@pytest.mark.parametrize("rule_set,rule,loosened", [
    ("paper", "blocks", lambda h, gap, v: gap >= 1 and h <= gap * v),  # one step of hazard too few
    ("paper", "coupled", lambda h, v: h < v),                           # one tile too few
    ("versioned", "versioned_blocks", lambda h, gap, v: gap >= 1 and h < gap * v),  # one tile too few
])
def test_checks_catch_a_rule_loosened_by_one(monkeypatch, rule_set, rule, loosened):
    """The safety and equivalence checks are not vacuous: a tracker whose rule lets one more
    tile through breaks them on a crowded grid."""
    from metropolis_env import rules

    monkeypatch.setattr(rules, rule, loosened)
    schedule = Interleaving(seed=1, share=0.5, order="leaders", max_clusters=2)
    failures = 0
    for seed in range(8):
        env = me.make("grid", agents=12, max_steps=20, width=14, height=14, seed=seed, rules=rule_set)
        try:
            got = run_async(env, seed, RandomWalk(seed), schedule, assert_env_matches)
            assert got.observations == run_sync(env, seed, RandomWalk(seed)).observations
        except AssertionError:
            failures += 1
    assert failures > 0
