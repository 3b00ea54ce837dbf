"""VersionStore and the versioned env's memory: versions are kept exactly as long as a reader may need them."""

from __future__ import annotations

import random

import pytest

import metropolis_env as me
from metropolis_env.versions import PRUNE_CHUNK, VersionStore
from metropolis_env.promises import PathPromise


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
        assert env._public.versions.kept() <= 25 * (widest + PRUNE_CHUNK + 1)
    assert widest > 5  # the schedule did spread the agents out
    assert env._public.versions.kept() < 25 * 400 // 4


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


# -- declared paths ---------------------------------------------------------------------------

def path_env(rules: str = "versioned", b=(12, 5)):
    """A on (5, 5), B on `b` of an open 30 x 12 grid (radius 4, max_vel 1); max_steps 20."""
    env = me.make("grid", agents={"A": (5, 5), "B": b}, width=30, height=12, max_steps=20, rules=rules)
    env.reset(seed=0)
    return env


STAY, EAST, WEST = 4, 5, 3  # move_offsets(1): row-major 3 x 3, (0, 0) in the middle


@pytest.mark.parametrize("action,match", [
    ({"move": STAY, "path": 5}, "non-empty list"),
    ({"move": STAY, "path": "55"}, "non-empty list"),
    ({"move": STAY, "path": []}, "non-empty list"),
    ({"move": STAY, "path": [(5, 5), (5.5, 5)]}, r"path\[1\] must be an \(x, y\) pair of ints"),
    ({"move": STAY, "path": [(5, 5), (True, 5)]}, r"path\[1\] must be an \(x, y\) pair"),
    ({"move": STAY, "path": [(6, 5)]}, r"path\[0\] must be the tile this move lands on, \(5, 5\)"),
    ({"move": STAY, "path": [(5, 5), (7, 5)]}, "more than max_vel=1"),
    ({"move": STAY, "path": [(5, 5), (-1, 5)]}, "blocked or off the map"),
    ({"move": STAY, "path": [(5, 5)] * 21}, "only 20 steps left"),
])
def test_bad_paths_are_rejected_and_change_nothing(action, match):
    env = path_env()
    before = env.snapshot()
    with pytest.raises(me.errors.InvalidActionError, match=match):
        env.step({"A": action})
    assert env.snapshot() == before


def test_paths_need_the_versioned_rules():
    env = path_env("paper")
    before = env.snapshot()
    with pytest.raises(me.errors.InvalidActionError, match="rules='versioned'"):
        env.step({"A": {"move": STAY, "path": [(5, 5)]}})
    assert env.snapshot() == before


def test_a_declared_path_is_a_promise_the_env_enforces():
    env = path_env(b=(28, 11))  # B far away: nothing holds A back
    env.step({"A": {"move": EAST, "path": [(6, 5), (7, 5), (7, 5)]}})
    assert env.agent_step("A") == 1 and "A" in env.ready_agents()
    before = env.snapshot()
    with pytest.raises(me.errors.InvalidActionError, match=r"puts it on \(7, 5\) at step 2.*lands on \(6, 5\)"):
        env.step({"A": STAY})
    with pytest.raises(me.errors.InvalidActionError, match="may only extend it"):
        env.step({"A": {"move": EAST, "path": [(7, 5), (8, 5)]}})
    assert env.snapshot() == before
    # Extending agrees with the promise; a shorter restatement keeps the rest of it.
    env.step({"A": {"move": EAST, "path": [(7, 5)]}})
    assert env.promise("A").tile_at(3) == (7, 5)
    with pytest.raises(me.errors.InvalidActionError, match="at step 3"):
        env.step({"A": WEST})
    env.step({"A": {"move": STAY, "path": [(7, 5), (8, 5)]}})
    assert env.positions["A"] == (7, 5) and env.promise("A").tile_at(4) == (8, 5)


def test_a_path_releases_an_agent_the_distance_alone_would_hold_back():
    """B, far ahead, waits for A only while A could walk into its view; A promising to stay
    put releases B at once, and B is held again when the promise runs out."""
    env = path_env()
    for _ in range(3):
        env.step({"B": STAY})  # B 7 tiles from A: h = 3 moves; at 3 steps ahead it must wait
    assert not env.is_ready("B") and [b["agent"] for b in env.blocked_by("B")] == ["A"]
    out = env.step({"A": {"move": STAY, "path": [(5, 5)] * 6}})[0]
    assert "B" in out and env.is_ready("B")  # A at step 1 of 6 promised steps on (5, 5)
    for _ in range(6):
        env.step({"B": STAY})
    # The promise covers A's steps up to 6; from there A has free moves toward B's step: at
    # step 9, three of them, enough to close the 3 moves between them.
    assert env.agent_step("B") == 9 and env.agent_step("A") == 1
    assert not env.is_ready("B")


# -- declared routes --------------------------------------------------------------------------

ROUTE = [(5, 5), (6, 5), (7, 5), (8, 5)]


@pytest.mark.parametrize("action,match", [
    ({"move": STAY, "route": ROUTE}, "needs 'until'"),
    ({"move": STAY, "route": ROUTE, "until": 0}, r"an int in 1\.\.20"),
    ({"move": STAY, "route": ROUTE, "until": 21}, r"an int in 1\.\.20"),
    ({"move": STAY, "route": ROUTE, "until": 3.0}, "needs 'until'"),
    ({"move": STAY, "route": ROUTE, "until": True}, "needs 'until'"),
    ({"move": STAY, "until": 3}, "belong to a declared 'route'"),
    ({"move": STAY, "depart": 3}, "belong to a declared 'route'"),
    ({"move": STAY, "route": ROUTE, "until": 3, "depart": 4}, r"an int in 0\.\.3"),
    ({"move": STAY, "route": ROUTE, "until": 3, "depart": "1"}, r"'depart'"),
    ({"move": EAST, "route": ROUTE, "until": 3, "depart": 1}, r"allows only \[\(5, 5\)\] at step 1"),
    ({"move": STAY, "route": ROUTE, "until": 3, "path": [(5, 5)]}, "not both"),
    ({"move": STAY, "route": [], "until": 3}, "non-empty list"),
    ({"move": STAY, "route": [(6, 5), (7, 5)], "until": 3}, r"route\[0\] must be the tile the agent stands on"),
    ({"move": STAY, "route": [(5, 5), (6, 5), (5, 5)], "until": 3}, "visits each tile once"),
    ({"move": STAY, "route": [(5, 5), (7, 5)], "until": 3}, "more than max_vel=1"),
    ({"move": STAY, "route": [(5, 5), (5, -1)], "until": 3}, "blocked or off the map"),
    ({"move": WEST, "route": ROUTE, "until": 3}, r"lands on \(4, 5\)"),
])
def test_bad_routes_are_rejected_and_change_nothing(action, match):
    env = path_env()
    before = env.snapshot()
    with pytest.raises(me.errors.InvalidActionError, match=match):
        env.step({"A": action})
    assert env.snapshot() == before


def test_routes_need_the_versioned_rules():
    env = path_env("paper")
    with pytest.raises(me.errors.InvalidActionError, match="rules='versioned'"):
        env.step({"A": {"move": STAY, "route": ROUTE, "until": 3}})


def test_a_declared_route_is_a_promise_the_env_enforces():
    env = path_env(b=(28, 11))  # B far away: nothing holds A back
    env.step({"A": {"move": STAY, "route": ROUTE, "until": 4}})  # pausing on the route is fine
    before = env.snapshot()
    for bad, match in [(WEST, r"lands on \(4, 5\), off the route"),
                       ({"move": STAY, "route": [(5, 5)], "until": 6}, "may replace it only from that route.s last tile"),
                       ({"move": STAY, "route": [(5, 5)], "until": 6, "depart": 4}, r"last tile, \(8, 5\)"),
                       ({"move": STAY, "path": [(5, 5)]}, "route runs through step 4")]:
        with pytest.raises(me.errors.InvalidActionError, match=match):
            env.step({"A": bad})
        assert env.snapshot() == before
    env.step({"A": EAST})
    env.step({"A": EAST})  # step 3: on (7, 5), the route's tile 2
    with pytest.raises(me.errors.InvalidActionError, match="past its next tile|off the route"):
        env.step({"A": {"move": 7}})  # (7, 6): off the route
    env.step({"A": STAY})  # step 4: the promise is over, A is free again
    assert env.promise("A") is None
    env.step({"A": {"move": 7, "route": [(7, 5), (7, 6)], "until": 6}})
    assert env.positions["A"] == (7, 6) and env.promise("A").at == 1


def test_a_route_that_departs_later_holds_the_agent_and_may_follow_a_route_it_completes():
    env = path_env(b=(28, 11))
    env.step({"A": {"move": EAST, "route": [(5, 5), (6, 5)], "until": 3}})
    env.step({"A": STAY})  # step 2, on the route's last tile
    before = env.snapshot()
    nxt = [(6, 5), (6, 6), (6, 7)]
    for bad, match in [({"move": STAY, "route": nxt, "until": 6, "depart": 2}, "departing at step 3 or later"),
                       ({"move": STAY, "route": nxt, "until": 6}, "departing at step 3 or later"),
                       ({"move": STAY, "path": [(6, 5)]}, "route runs through step 3")]:
        with pytest.raises(me.errors.InvalidActionError, match=match):
            env.step({"A": bad})
        assert env.snapshot() == before
    env.step({"A": {"move": STAY, "route": nxt, "until": 6, "depart": 4}})  # narrows the running route
    assert list(env.promise("A").tiles) == nxt and env.promise("A").end == 6
    with pytest.raises(me.errors.InvalidActionError, match=r"past where it may be at step 4"):
        env.step({"A": {"move": 7}})  # (6, 6) before its departure
    env.step({"A": STAY})
    env.step({"A": {"move": 7}})  # step 4 -> 5 on (6, 6)
    assert env.positions["A"] == (6, 6) and env.promise("A").at == 1


def test_a_route_releases_an_agent_the_distance_alone_would_hold_back():
    """B, far ahead, waits for A only while A could walk into its view; a route that leads away
    from B releases it until A's promise ends, a route toward B only while A cannot walk along
    it into B's view."""
    env = path_env()
    for _ in range(3):
        env.step({"B": STAY})  # B 7 tiles from A: h = 3 moves; at 3 steps ahead it must wait
    assert not env.is_ready("B")
    away = [(5, 5), (4, 5), (3, 5), (2, 5)]
    out = env.step({"A": {"move": STAY, "route": away, "until": 7}})[0]
    assert "B" in out
    for _ in range(6):
        env.step({"B": STAY})
    # A's promise covers its steps up to 7; at B's step 9 A has 2 free moves, from (5, 5) at
    # best: 7 tiles away, it cannot get into view yet; one step later it could.
    assert env.agent_step("B") == 9 and env.is_ready("B")
    env.step({"B": STAY})
    assert not env.is_ready("B")

    toward = path_env()
    for _ in range(3):
        toward.step({"B": STAY})
    toward.step({"A": {"move": STAY, "route": ROUTE, "until": 7}})
    toward.step({"B": STAY})  # at B's step 3, A can be on (7, 5) at best: 5 tiles, out of view
    assert toward.agent_step("B") == 4 and not toward.is_ready("B")  # (8, 5) is in view


def test_a_versioned_env_with_paths_survives_a_pickle_round_trip():
    """Checkpoints pickle the env: versions and declared paths must come back and the run go on
    exactly as if uninterrupted."""
    import pickle

    from policies import PromisingPolicy

    def drive(env, policy, obs, calls):
        for _ in range(calls):
            ready = env.ready_agents()
            if not ready:
                break
            pick = sorted(ready, key=env.agent_step, reverse=True)[:max(1, len(ready) // 2)]
            out = env.step({a: policy.act(a, obs.pop(a)) for a in pick})[0]
            obs.update(out)
        return obs

    env = me.make("the_ville", agents=25, max_steps=80, rules="versioned")
    policy = PromisingPolicy(env, 0)
    obs, _ = env.reset(seed=0)
    obs = drive(env, policy, dict(obs), 120)
    assert any(isinstance(env.promise(a), PathPromise) for a in env.possible_agents)
    saved = pickle.dumps((env, policy, obs))
    drive(env, policy, obs, 10_000)
    env2, policy2, obs2 = pickle.loads(saved)  # one pickle: the policy's env is env2
    assert policy2.env is env2
    drive(env2, policy2, obs2, 10_000)
    assert env2.snapshot() == env.snapshot()
    assert not env.agents


def test_route_to_declares_the_walk_move_to_takes():
    env = path_env(b=(28, 11))
    goal = (9, 8)
    action = env.route_to("A", goal, until=12)
    tiles = action["route"]
    assert tiles[0] == (5, 5) and tiles[-1] == goal and action["until"] == 12
    assert len(tiles) - 1 == env.world.distance_field(goal, 1)[5, 5]
    env.step({"A": action})
    for k in range(2, len(tiles)):
        env.step({"A": env.move_to("A", goal)})  # following move_to keeps the route
        assert env.positions["A"] == tiles[k]
    held = env.route_to("A", (5, 5), until=20, depart=15)  # from the route's end, leaving later
    assert held["move"] == STAY and held["depart"] == 15
    env.step({"A": held})
    assert env.promise("A").tiles[0] == goal and env.promise("A").depart == 15
    with pytest.raises(me.errors.InvalidActionError, match=r"route_to\('A', \(-1, 0\)\)"):
        env.route_to("A", (-1, 0), until=20)
