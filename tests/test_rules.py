"""The dependency rules pinned at their exact boundaries (bound and bound + 1).

First on the pure functions of `metropolis_env.rules` (with box hazard), then through the env on
an open grid, where agents are placed with `make("grid", agents={name: (x, y)})` and some are
driven ahead to open step gaps. Paper rules (distance = Chebyshev):
coupled iff same step and dist <= radius_p + max_vel; A blocked by B iff Step_B < Step_A and
dist <= (Step_A - Step_B + 1) * max_vel + radius_p; valid iff dist > radius_p + (|gap| - 1) * max_vel.
"""

from __future__ import annotations

import itertools

import pytest

import metropolis_env as me
from metropolis_env import rules
from metropolis_env.spaces import move_offsets
from reference import analyse, assert_env_matches

# (radius_p, max_vel): the paper's default and others, a zero radius and a fast walker included.
PARAMS = [(4, 1), (2, 2), (0, 1), (3, 3), (6, 1)]
GAPS = [1, 2, 3]


def hazard(dist: int, radius_p: int) -> int:
    return rules.box_hazard(dist, radius_p)


# -- pure functions ------------------------------------------------------------------------

@pytest.mark.parametrize("radius_p", [0, 1, 4, 7])
def test_box_hazard_is_zero_within_perception_and_counts_tiles_beyond(radius_p):
    for dist in range(radius_p + 1):
        assert rules.box_hazard(dist, radius_p) == 0
    for extra in range(1, 6):
        assert rules.box_hazard(radius_p + extra, radius_p) == extra


@pytest.mark.parametrize("radius_p,max_vel", PARAMS)
def test_coupled_exactly_at_bound(radius_p, max_vel):
    bound = radius_p + max_vel
    assert rules.coupled(hazard(bound, radius_p), max_vel)
    assert not rules.coupled(hazard(bound + 1, radius_p), max_vel)
    assert rules.coupled(hazard(0, radius_p), max_vel)


@pytest.mark.parametrize("radius_p,max_vel", PARAMS)
@pytest.mark.parametrize("gap", GAPS)
def test_blocked_exactly_at_bound(radius_p, max_vel, gap):
    bound = (gap + 1) * max_vel + radius_p
    assert rules.blocks(hazard(bound, radius_p), gap, max_vel)
    assert not rules.blocks(hazard(bound + 1, radius_p), gap, max_vel)


@pytest.mark.parametrize("radius_p,max_vel", PARAMS)
def test_agent_ahead_never_blocks(radius_p, max_vel):
    # gap = Step_A - Step_B <= 0: B is level with or ahead of A, even on A's very tile.
    for gap in range(-4, 1):
        for dist in range(0, radius_p + 6 * max_vel):
            assert not rules.blocks(hazard(dist, radius_p), gap, max_vel)


@pytest.mark.parametrize("radius_p,max_vel", PARAMS)
@pytest.mark.parametrize("gap", GAPS)
def test_validity_exactly_at_bound(radius_p, max_vel, gap):
    bound = radius_p + (gap - 1) * max_vel
    for g in (gap, -gap):  # symmetric in who is ahead
        assert not rules.valid(hazard(bound, radius_p), g, max_vel)
        assert rules.valid(hazard(bound + 1, radius_p), g, max_vel)


def test_same_step_pairs_are_always_valid():
    for dist in range(0, 8):
        assert rules.valid(hazard(dist, 4), 0, 1)


@pytest.mark.parametrize("radius_p,max_vel", PARAMS)
def test_rules_agree_with_paper_formulas_everywhere(radius_p, max_vel):
    for dist, gap in itertools.product(range(0, radius_p + 8 * max_vel + 2), range(-5, 6)):
        h = hazard(dist, radius_p)
        assert rules.blocks(h, gap, max_vel) == (gap >= 1 and dist <= (gap + 1) * max_vel + radius_p)
        assert rules.valid(h, gap, max_vel) == (gap == 0 or dist > radius_p + (abs(gap) - 1) * max_vel)
        if gap == 0:
            assert rules.coupled(h, max_vel) == (dist <= radius_p + max_vel)


@pytest.mark.parametrize("rule_set", ["paper", "versioned"])
@pytest.mark.parametrize("radius_p,max_vel", PARAMS)
def test_one_move_never_breaks_validity_or_creates_blocking(radius_p, max_vel, rule_set):
    """The paper's Appendix A argument, exhaustively, for both rule sets: each move closes at
    most max_vel of hazard.

    If B (gap >= 1 behind A) does not block A, then after A commits (gap + 1) the pair is still
    valid, and after B commits (gap - 1) B still does not block A. With the paper's rules, two
    agents of one step that are not coupled stay valid whichever of them commits first (the
    versioned rules have no coupling: agents one step apart are always valid)."""
    v = max_vel
    blocks, valid = ((rules.blocks, rules.valid) if rule_set == "paper"
                     else (rules.versioned_blocks, rules.versioned_valid))
    for dist, gap in itertools.product(range(0, radius_p + 10 * v), range(1, 5)):
        h = hazard(dist, radius_p)
        if blocks(h, gap, v):
            continue
        for moved in range(max(0, dist - v), dist + v + 1):
            h2 = hazard(moved, radius_p)
            assert valid(h2, gap + 1, v)
            if gap > 1:
                assert not blocks(h2, gap - 1, v)
            elif rule_set == "paper":
                assert not rules.coupled(h2, v)
    if rule_set == "paper":
        for dist in range(0, radius_p + 6 * v):
            if rules.coupled(hazard(dist, radius_p), v):
                continue
            for moved in range(max(0, dist - v), dist + v + 1):
                assert rules.valid(hazard(moved, radius_p), 1, v)


# -- through the env -----------------------------------------------------------------------

def grid_env(agents: dict[str, tuple[int, int]], radius_p: int, max_vel: int, max_steps: int = 50):
    env = me.make("grid", agents=agents, radius_p=radius_p, max_vel=max_vel, max_steps=max_steps,
                  width=80, height=20)
    env.reset(seed=0)
    return env


def move(max_vel: int, dx: int, dy: int = 0) -> int:
    return move_offsets(max_vel).index((dx, dy))


def drive(env, agents: list[str], dx: int, times: int) -> dict:
    """Submit `agents` together `times` times, each moving dx tiles; every submission must be
    allowed. Returns the observations of the last call."""
    obs = {}
    for _ in range(times):
        assert set(agents) <= set(env.ready_agents())
        obs = env.step({a: move(env.max_vel, dx) for a in agents})[0]
        assert_env_matches(env)
    return obs


def blocking_setup(radius_p: int, max_vel: int, gap: int, extra: int):
    """B waits at step 0; A starts (2 gap + 1) max_vel + radius_p + extra tiles east of it and
    walks `gap` steps west at full speed, ending (gap + 1) max_vel + radius_p + extra away at
    step `gap`: exactly at the blocking bound when extra == 0. Each of A's steps is allowed: at
    step k it is (2 gap + 1 - k) max_vel + radius_p + extra > (k + 1) max_vel + radius_p away."""
    start = (2 * gap + 1) * max_vel + radius_p + extra
    env = grid_env({"B": (5, 10), "A": (5 + start, 10)}, radius_p, max_vel)
    last = drive(env, ["A"], -max_vel, gap)
    assert env.agent_step("A") == gap and env.agent_step("B") == 0
    assert env.positions["A"][0] - env.positions["B"][0] == (gap + 1) * max_vel + radius_p + extra
    return env, last


@pytest.mark.parametrize("radius_p,max_vel", PARAMS)
def test_env_couples_exactly_at_bound(radius_p, max_vel):
    d = radius_p + max_vel
    # Rows 2 and 17 are farther apart than any radius_p + max_vel here: two independent pairs.
    env = grid_env({"A": (5, 2), "B": (5 + d, 2), "C": (5, 17), "D": (5 + d + 1, 17)}, radius_p, max_vel)
    assert sorted(sorted(cl) for cl in env.clusters()) == [["A", "B"], ["C"], ["D"]]
    assert env.cluster("A") == ["A", "B"] and env.cluster("D") == ["D"]


@pytest.mark.parametrize("radius_p,max_vel", PARAMS)
def test_coupled_agents_advance_together(radius_p, max_vel):
    d = radius_p + max_vel
    env = grid_env({"A": (5, 10), "B": (5 + d, 10)}, radius_p, max_vel)
    out = env.step({"A": move(max_vel, 0)})[0]
    assert out == {}
    assert env.steps == {"A": 0, "B": 0}
    assert env.ready_agents() == ["B"]
    assert [(b["agent"], b["rule"]) for b in env.blocked_by("A")] == [("B", "submission")]
    assert_env_matches(env)
    out = env.step({"B": move(max_vel, 0)})[0]
    assert set(out) == {"A", "B"}
    assert env.steps == {"A": 1, "B": 1}


@pytest.mark.parametrize("radius_p,max_vel", PARAMS)
def test_coupling_is_transitive(radius_p, max_vel):
    d = radius_p + max_vel
    env = grid_env({"A": (5, 10), "B": (5 + d, 10), "C": (5 + 2 * d, 10), "D": (5 + 3 * d + 1, 10)},
                   radius_p, max_vel)
    assert sorted(sorted(cl) for cl in env.clusters()) == [["A", "B", "C"], ["D"]]


@pytest.mark.parametrize("radius_p,max_vel", PARAMS)
@pytest.mark.parametrize("gap", GAPS)
def test_env_blocks_exactly_at_bound(radius_p, max_vel, gap):
    env, last = blocking_setup(radius_p, max_vel, gap, extra=0)
    assert "A" not in last, "a committed agent that is still blocked gets no observation yet"
    assert "A" not in env.ready_agents() and not env.is_ready("A")
    assert env.blocked_by("A") == [{"agent": "B", "rule": "blocked", "gap": gap, "hazard": (gap + 1) * max_vel}]


@pytest.mark.parametrize("radius_p,max_vel", PARAMS)
@pytest.mark.parametrize("gap", GAPS)
def test_env_does_not_block_one_tile_past_bound(radius_p, max_vel, gap):
    env, last = blocking_setup(radius_p, max_vel, gap, extra=1)
    assert "A" in last
    assert env.blocked_by("A") == []
    assert env.ready_agents() == ["B", "A"]  # smallest step first


@pytest.mark.parametrize("radius_p,max_vel", PARAMS)
@pytest.mark.parametrize("gap", GAPS)
def test_env_agent_ahead_never_blocks(radius_p, max_vel, gap):
    env, _ = blocking_setup(radius_p, max_vel, gap, extra=0)
    assert env.ready_agents() == ["B"]
    assert env.blocked_by("B") == []


@pytest.mark.parametrize("radius_p,max_vel", PARAMS)
@pytest.mark.parametrize("gap", GAPS)
def test_laggard_step_releases_blocked_agent_in_the_same_call(radius_p, max_vel, gap):
    # B staying put closes the gap by one: (gap + 1) v + r > gap v + r, so A is free again.
    env, _ = blocking_setup(radius_p, max_vel, gap, extra=0)
    out = env.step({"B": move(max_vel, 0)})[0]
    assert set(out) == {"A", "B"}
    assert out["A"]["step"] == gap
    assert env.blocked_by("A") == []
    assert_env_matches(env)


@pytest.mark.parametrize("radius_p,max_vel", PARAMS)
@pytest.mark.parametrize("gap", [2, 3])
def test_laggard_approaching_keeps_blocking(radius_p, max_vel, gap):
    # B walking max_vel toward A keeps A exactly at the bound of the smaller gap.
    env, _ = blocking_setup(radius_p, max_vel, gap, extra=0)
    out = env.step({"B": move(max_vel, max_vel)})[0]
    assert set(out) == {"B"}
    assert env.blocked_by("A") == [{"agent": "B", "rule": "blocked", "gap": gap - 1, "hazard": gap * max_vel}]
    assert_env_matches(env)


@pytest.mark.parametrize("radius_p,max_vel", PARAMS)
@pytest.mark.parametrize("gap", GAPS)
def test_blocked_member_holds_back_its_whole_cluster(radius_p, max_vel, gap):
    # C walks with A one tile behind it (coupled); A ends at the blocking bound, C one past it.
    start = (2 * gap + 1) * max_vel + radius_p
    env = grid_env({"B": (5, 10), "A": (5 + start, 10), "C": (6 + start, 10)}, radius_p, max_vel)
    last = drive(env, ["A", "C"], -max_vel, gap)
    assert last == {}
    assert env.cluster("C") == ["A", "C"]
    assert env.blocked_by("C") == [{"agent": "A", "rule": "cluster", "gap": 0, "hazard": max(0, 1 - radius_p)}]
    assert env.ready_agents() == ["B"]
    ref = analyse(list(env.positions.values()), list(env.steps.values()), radius_p, max_vel)
    assert not ref.blocked[2].any(), "C itself is one tile past the bound"


@pytest.mark.parametrize("radius_p,max_vel", PARAMS)
def test_laggard_catching_up_couples(radius_p, max_vel):
    # gap 1: B walking max_vel toward A arrives at A's step exactly at the coupling bound.
    env, _ = blocking_setup(radius_p, max_vel, 1, extra=0)
    out = env.step({"B": move(max_vel, max_vel)})[0]
    assert set(out) == {"A", "B"}
    assert env.positions["A"][0] - env.positions["B"][0] == radius_p + max_vel
    assert sorted(map(sorted, env.clusters())) == [["A", "B"]]
    assert_env_matches(env)


@pytest.mark.parametrize("radius_p,max_vel", PARAMS)
def test_walking_toward_a_laggard_stops_at_the_first_blocking_step(radius_p, max_vel):
    """An agent that keeps walking at full speed at a waiting laggard D0 tiles away is blocked
    after the first step k with D0 - k * max_vel <= (k + 1) * max_vel + radius_p, and every state
    on the way is valid (it never comes within perception of the laggard)."""
    d0 = 65
    env = grid_env({"B": (5, 10), "A": (5 + d0, 10)}, radius_p, max_vel)
    while env.is_ready("A"):
        env.step({"A": move(max_vel, -max_vel)})
        assert_env_matches(env)
    expected_gap = -(-(d0 - radius_p - max_vel) // (2 * max_vel))  # ceil
    assert env.agent_step("A") == expected_gap
    assert env.positions["A"][0] - env.positions["B"][0] == d0 - expected_gap * max_vel


# -- the versioned rules (per-step state versions, see rules.py) ---------------------------

@pytest.mark.parametrize("radius_p,max_vel", PARAMS)
def test_versioned_rules_agree_with_their_formulas_everywhere(radius_p, max_vel):
    for dist, gap in itertools.product(range(0, radius_p + 8 * max_vel + 2), range(-5, 6)):
        h = hazard(dist, radius_p)
        assert rules.versioned_blocks(h, gap, max_vel) == (gap >= 1 and dist <= gap * max_vel + radius_p)
        assert rules.versioned_valid(h, gap, max_vel) == (
            abs(gap) <= 1 or dist > radius_p + (abs(gap) - 2) * max_vel)


@pytest.mark.parametrize("radius_p,max_vel", PARAMS)
@pytest.mark.parametrize("gap", GAPS)
def test_versioned_blocking_exactly_at_bound(radius_p, max_vel, gap):
    bound = gap * max_vel + radius_p
    assert rules.versioned_blocks(hazard(bound, radius_p), gap, max_vel)
    assert not rules.versioned_blocks(hazard(bound + 1, radius_p), gap, max_vel)


def versioned_grid(agents: dict[str, tuple[int, int]], radius_p: int, max_vel: int):
    env = me.make("grid", agents=agents, radius_p=radius_p, max_vel=max_vel, max_steps=50,
                  width=80, height=20, rules="versioned")
    env.reset(seed=0)
    return env


@pytest.mark.parametrize("radius_p,max_vel", PARAMS)
@pytest.mark.parametrize("gap", GAPS)
def test_versioned_env_blocks_exactly_at_bound(radius_p, max_vel, gap):
    for extra in (0, 1):
        start = 2 * gap * max_vel + radius_p + extra
        env = versioned_grid({"B": (5, 10), "A": (5 + start, 10)}, radius_p, max_vel)
        for _ in range(gap):
            assert "A" in env.ready_agents()
            env.step({"A": move(max_vel, -max_vel)})
            assert_env_matches(env)
        assert env.positions["A"][0] - 5 == gap * max_vel + radius_p + extra
        if extra == 0:
            assert not env.is_ready("A")
            assert env.blocked_by("A") == [{"agent": "B", "rule": "blocked", "gap": gap, "hazard": gap * max_vel}]
        else:
            assert env.is_ready("A") and env.blocked_by("A") == []


@pytest.mark.parametrize("radius_p,max_vel", PARAMS)
def test_versioned_env_has_no_coupling(radius_p, max_vel):
    env = versioned_grid({"A": (5, 10), "B": (5, 10), "C": (5 + radius_p + max_vel, 10)}, radius_p, max_vel)
    assert sorted(env.clusters()) == [["A"], ["B"], ["C"]]
    out = env.step({"A": move(max_vel, 0)})[0]
    assert env.steps == {"A": 1, "B": 0, "C": 0}
    # B (same tile) and C (one move from A's view) are one step behind: either could be seen.
    assert "A" not in out and not env.is_ready("A")
    assert [(b["agent"], b["hazard"]) for b in env.blocked_by("A")] == [("B", 0), ("C", max_vel)]
    assert_env_matches(env)


def test_versioned_env_reads_the_state_an_agent_had_at_the_readers_step():
    """B reads A as A was at B's step, although A has moved on since: A at x=9 perceived at
    step 1 (distance 4), while A is now at x=10 (distance 5, out of view) and at step 2."""
    env = versioned_grid({"C": (0, 10), "B": (5, 10), "A": (9, 10)}, 4, 1)
    stay = move(1, 0)
    env.step({"B": stay, "A": {"move": stay, "activity": "reading", "utterance": "hi B"}})
    assert not env.is_ready("B") and env.is_ready("A")  # C, one step behind, could reach B's view
    env.step({"A": {"move": move(1, 1), "activity": "walking"}})
    assert env.steps == {"C": 0, "B": 1, "A": 2} and env.positions["A"] == (10, 10)
    obs = env.step({"C": stay})[0]
    seen = {p["name"]: p for p in obs["B"]["perceived"]}
    assert set(seen) == {"A"}
    assert tuple(seen["A"]["position"]) == (9, 10)
    assert seen["A"]["activity"] == "reading" and seen["A"]["utterance"] == "hi B"
    # The same world in global steps gives B exactly that observation at step 1.
    sync = versioned_grid({"C": (0, 10), "B": (5, 10), "A": (9, 10)}, 4, 1)
    obs = sync.step({"C": stay, "B": stay, "A": {"move": stay, "activity": "reading", "utterance": "hi B"}})[0]
    expected = {p["name"]: p for p in obs["B"]["perceived"]}
    assert tuple(expected["A"]["position"]) == (9, 10) and expected["A"]["utterance"] == "hi B"
    assert set(expected) == {"A"}
