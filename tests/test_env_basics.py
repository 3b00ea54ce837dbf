"""The AsyncParallelEnv contract: reset, step results keyed by the agents that became ready,
truncation, the out-of-order queries (steps, positions, observe, blocked_by, clusters) and the
ansi rendering.

The small scenes use an open grid with radius_p = 4 and max_vel = 1, where two agents at one
step are coupled iff they are at most 5 tiles apart, and an agent one step ahead is blocked by
one at most 6 tiles away.
"""

from __future__ import annotations

import numpy as np
import pytest

import metropolis_env as me
from metropolis_env.render import agent_char
from metropolis_env.spaces import move_offsets, stay_index
from metropolis_env.wrappers import SyncParallelWrapper

STAY = stay_index(1)
EAST = move_offsets(1).index((1, 0))
WEST = move_offsets(1).index((-1, 0))


def grid_env(agents: dict, width: int = 16, height: int = 6, **kw) -> me.AsyncParallelEnv:
    return me.make(me.open_grid(width, height), agents=agents, **kw)


def same_obs(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for k in a:
        if k == "perceived":
            if len(a[k]) != len(b[k]) or not all(same_obs(x, y) for x, y in zip(a[k], b[k])):
                return False
        elif not np.array_equal(a[k], b[k]):
            return False
    return True


# -- reset -------------------------------------------------------------------------------------------

def test_reset_makes_every_agent_ready_at_step_zero():
    env = me.make("the_ville", agents=8, seed=1)
    assert env.agents == [] and env.max_num_agents == 8
    obs, infos = env.reset(seed=3)
    assert list(obs) == list(infos) == env.possible_agents == env.agents
    assert env.num_agents == 8
    assert set(env.steps.values()) == {0} and env.step_range == (0, 0)
    assert sorted(env.ready_agents()) == env.possible_agents
    for a, o in obs.items():
        assert o["step"] == 0 and tuple(o["position"]) == env.positions[a]
        assert infos[a]["step"] == 0 and infos[a]["move_result"] == "reset"
        assert same_obs(env.observe(a), o)
    tiles = list(env.positions.values())
    assert len(set(tiles)) == 8 and all(env.world.is_walkable(t) for t in tiles)


def test_reset_seed_decides_the_spawn_tiles():
    env = me.make("the_ville", agents=10, seed=0)
    env.reset(seed=5)
    first = env.positions
    env.reset(seed=6)
    assert env.positions != first
    env.reset(seed=5)
    assert env.positions == first
    other = me.make("the_ville", agents=10, seed=5)
    other.reset()
    assert other.positions == first  # no reset seed: the make() seed


def test_reset_restores_the_start_after_a_run():
    env = grid_env({"a": (0, 0), "b": (15, 5)})
    env.reset()
    fresh = env.snapshot()
    for _ in range(3):
        env.step({"a": EAST})
    env.reset()
    assert env.snapshot() == fresh


# -- step results ------------------------------------------------------------------------------------

def test_step_returns_the_agents_that_became_ready():
    env = grid_env({"a": (0, 0), "b": (6, 0), "far": (15, 5)})
    env.reset()
    # a commits step 0 but b (6 tiles away, step 0) could still come within perception: a waits.
    out = env.step({"a": STAY})
    assert all(d == {} for d in out)
    assert env.agent_step("a") == 1 and not env.is_ready("a")
    assert env.ready_agents() == ["b", "far"]
    # far is alone: it goes on at once and nobody else is released.
    obs, rew, term, trunc, infos = env.step({"far": STAY})
    assert list(obs) == ["far"] and obs["far"]["step"] == 1
    # b commits: b goes on, and a, blocked by b until now, is released in the same call.
    obs, rew, term, trunc, infos = env.step({"b": STAY})
    assert sorted(obs) == ["a", "b"]
    assert rew == {"a": 0.0, "b": 0.0} and term == trunc == {"a": False, "b": False}
    assert {a: o["step"] for a, o in obs.items()} == {"a": 1, "b": 1}
    assert sorted(infos) == ["a", "b"] and infos["a"]["move_result"] == "stayed"


def test_empty_step_changes_nothing():
    env = grid_env({"a": (0, 0), "b": (6, 0)})
    env.reset()
    before = env.snapshot()
    assert env.step({}) == ({}, {}, {}, {}, {})
    assert env.snapshot() == before


def test_observation_is_final_when_returned():
    # a is returned ready at step 1 while b lags; whatever b does next cannot change what a sees.
    env = grid_env({"a": (0, 0), "b": (12, 0)})
    env.reset()
    obs = env.step({"a": EAST})[0]
    assert env.agent_step("b") == 0 and obs["a"]["perceived"] == ()
    env.step({"b": move_offsets(1).index((-1, 0))})
    assert same_obs(env.observe("a"), obs["a"])


def test_coupled_agents_wait_for_their_whole_cluster():
    env = grid_env({"a": (0, 0), "b": (5, 0), "c": (10, 0), "d": (23, 5)}, width=24)
    env.reset()
    assert env.clusters() == [["a", "b", "c"], ["d"]]  # coupling is transitive
    assert env.cluster("a") == ["a", "b", "c"] and env.ready_cluster("c") == ("a", "b", "c")
    assert env.step({"a": EAST, "b": STAY})[0] == {}
    assert env.steps == {"a": 0, "b": 0, "c": 0, "d": 0} and env.positions["a"] == (0, 0)
    assert env.ready_agents() == ["c", "d"]  # submitted ones are not offered again
    assert [(r["agent"], r["rule"]) for r in env.blocked_by("a")] == [("c", "submission")]
    obs = env.step({"c": STAY})[0]
    assert sorted(obs) == ["a", "b", "c"] and env.positions["a"] == (1, 0)
    assert env.steps == {"a": 1, "b": 1, "c": 1, "d": 0}


def test_blocked_by_names_the_agent_and_the_rule():
    # a and b coupled; after they step, b is blocked by the laggard l, and a through b.
    env = grid_env({"a": (0, 0), "b": (5, 0), "l": (11, 0)})
    env.reset()
    assert env.blocked_by("a") == []
    assert env.step({"a": STAY, "b": STAY})[0] == {}
    assert env.blocked_by("b") == [{"agent": "l", "rule": "blocked", "gap": 1, "hazard": 2}]
    assert env.blocked_by("a") == [{"agent": "b", "rule": "cluster", "gap": 0, "hazard": 1}]
    assert env.clusters() == [["l"]] and env.ready_agents() == ["l"]
    obs = env.step({"l": WEST})[0]
    assert sorted(obs) == ["a", "b", "l"]
    assert env.clusters() == [["a", "b", "l"]]  # l caught up to within coupling distance


def test_the_laggard_is_always_ready():
    env = me.make("the_ville", agents=20, seed=2, max_steps=40)
    ready, _ = env.reset()
    rng = np.random.default_rng(0)
    while env.agents:
        lo = env.step_range[0]
        assert any(env.agent_step(a) == lo for a in env.ready_agents() if a in env.agents)
        clusters = env.clusters()
        pick = [a for k, cl in enumerate(clusters) if k == 0 or rng.random() < 0.3 for a in cl]
        env.step({a: env.move_to(a, (72, 14)) for a in pick})


# -- truncation --------------------------------------------------------------------------------------

def test_truncation_at_max_steps_with_final_observation():
    env = grid_env({"a": (0, 0), "b": (15, 5)}, max_steps=3)
    env.reset()
    for t in range(1, 3):
        obs, _, _, trunc, _ = env.step({"a": EAST})
        assert trunc == {"a": False} and obs["a"]["step"] == t
    obs, _, term, trunc, infos = env.step({"a": EAST})
    assert trunc == {"a": True} and term == {"a": False}
    assert obs["a"]["step"] == 3 and tuple(obs["a"]["position"]) == (3, 0)
    assert infos["a"]["move_result"] == "moved"
    assert env.agents == ["b"] and env.num_agents == 1
    assert env.ready_agents() == ["b"]
    assert env.observe("a")["step"] == 3  # its final observation stays readable
    for _ in range(3):
        env.step({"b": STAY})
    assert env.agents == [] and env.ready_agents() == []


def test_readme_driving_loop_runs_everyone_to_max_steps():
    env = me.make("the_ville", agents=25, max_steps=30, seed=4)
    ready, infos = env.reset(seed=0)
    calls = 0
    while ready:
        ready, rewards, terms, truncs, infos = env.step({a: env.move_to(a, (72, 14)) for a in ready})
        ready = {a: o for a, o in ready.items() if not truncs[a]}
        calls += 1
    assert set(env.steps.values()) == {30} and env.agents == []
    assert env.stats.agent_steps == 25 * 30
    assert calls >= 30


def test_sync_wrapper_advances_everyone_together_and_truncates():
    # six villagers within a few tiles of each other, so that they perceive one another
    starts = {f"p{i}": xy for i, xy in enumerate([(66, 10), (67, 10), (67, 18), (68, 16), (69, 14), (70, 13)])}
    sync = SyncParallelWrapper(me.make("the_ville", agents=starts, max_steps=5, seed=1))
    obs, infos = sync.reset(seed=1)
    for t in range(1, 6):
        obs, rew, term, trunc, infos = sync.step({a: sync.move_to(a, (72, 14)) for a in sync.agents})
        assert set(obs) == set(sync.possible_agents)
        assert {o["step"] for o in obs.values()} == {t}
        assert all(trunc[a] == (t == 5) for a in sync.possible_agents)
    assert sync.agents == []
    stats = sync.env.stats
    assert stats.agent_steps == 6 * 5
    # the barrier waits for all six at every step, while each really perceived itself and some of
    # the others: they met, but not everyone saw everyone
    assert stats.tracker_per_step == 6
    assert 1 < stats.true_per_step < 6


# -- queries -----------------------------------------------------------------------------------------

def test_positions_and_steps_are_copies():
    env = grid_env({"a": (0, 0), "b": (9, 0)})
    env.reset()
    env.positions["a"] = (5, 5)
    env.steps["a"] = 99
    assert env.positions["a"] == (0, 0) and env.steps["a"] == 0


def test_observation_content():
    env = grid_env({"a": (2, 2), "b": (5, 2), "c": (12, 2)})
    env.reset()
    obs, _, _, _, infos = env.step({"a": {"move": STAY, "activity": "reading", "utterance": "hi b"},
                                    "b": {"move": EAST, "activity": "walking"}, "c": STAY})
    o = obs["b"]
    assert tuple(o["position"]) == (6, 2) and o["step"] == 1
    assert o["activity"] == "walking" and o["utterance"] == ""
    assert [p["name"] for p in o["perceived"]] == ["a"] == infos["b"]["perceived"]
    assert o["perceived"][0]["utterance"] == "hi b" and o["perceived"][0]["activity"] == "reading"
    assert o["location"] == ":"
    # activity is kept until changed, an utterance lasts one step
    obs = env.step({"a": STAY, "b": STAY, "c": STAY})[0]
    assert obs["a"]["activity"] == "reading" and obs["a"]["utterance"] == ""


def test_stats_count_dependencies_per_agent_step():
    env = grid_env({"a": (0, 0), "b": (2, 0), "far": (15, 5)})
    env.reset()
    env.step({"a": STAY, "b": STAY, "far": STAY})
    s = env.stats
    assert s.agent_steps == 3
    assert s.true_deps == 2 + 2 + 1  # a and b saw each other; far saw only itself
    assert s.tracker_deps == 2 + 2 + 1  # a and b were one cluster
    assert s.free_share == 1.0 and s.true_per_step == pytest.approx(5 / 3)


# -- render ------------------------------------------------------------------------------------------

def test_render_ansi_shows_every_agent():
    env = me.make("the_ville", agents=me.the_ville_personas(), render_mode="ansi")
    env.reset()
    env.step({a: env.move_to(a, (72, 14)) for a in env.ready_agents()[:6]})
    text = env.render()
    lines = text.splitlines()
    assert lines[0].startswith("the_ville 140x100: 25 agents, steps 0..1")
    grid = lines[1:101]
    assert all(len(row) == 140 for row in grid)
    for i, (a, (x, y)) in enumerate(env.positions.items()):
        assert grid[y][x] in (agent_char(i), "*")
        row = next(line for line in lines[101:] if line.startswith(a))
        assert f"({x},{y})" in row and f" {env.agent_step(a)} " in row
        state = "ready" if env.is_ready(a) else "blocked"
        assert state in row
    assert sum(c == "#" for row in grid for c in row) == 2064


def test_render_states_pending_and_done():
    env = grid_env({"a": (0, 0), "b": (5, 0), "c": (15, 5)}, max_steps=1, render_mode="ansi")
    env.reset()
    env.step({"a": STAY, "c": STAY})
    rows = {line.split()[0]: line for line in env.render().splitlines()[7:] if line[:1] in "abc"}
    assert "pending" in rows["a"] and "ready" in rows["b"] and "done" in rows["c"]
    assert rows["a"].split()[-1] == rows["b"].split()[-1] != rows["c"].split()[-1]  # cluster ids


def test_render_crops_wide_maps_around_the_agents():
    env = me.make("villes", agents={"a": (300, 40), "b": (310, 49)}, k=4, render_mode="ansi")
    env.reset()
    lines = env.render().splitlines()
    assert "window x 295..315, y 35..54 of the 560x100 map" in lines[1]
    assert all(len(row) == 21 for row in lines[2:22])
    assert lines[2 + 5][5] == "a" and lines[2 + 14][15] == "b"


def test_render_is_none_without_ansi_mode():
    env = grid_env({"a": (0, 0)})
    env.reset()
    assert env.render() is None


def test_an_observation_type_is_one_class(monkeypatch):
    """A new observation type registered in observer.OBSERVATIONS is selectable by name and is
    handed each ready agent's perception: here, the names it perceives, which must match the
    infos and what `observe` hands out."""
    from metropolis_env import observer

    class Names(observer.ObservationType):
        name = "names"

        def observe(self, obs, i, perceived):
            return [obs.names[j] for j in perceived]

    monkeypatch.setitem(observer.OBSERVATIONS, "names", Names)
    env = me.make("grid", agents=12, width=8, height=8, max_steps=5)
    env.observation_mode = "names"
    ready, infos = env.reset(seed=2)
    seen = 0
    while ready:
        for a, names in ready.items():
            assert names == infos[a]["perceived"]
            assert names == env.observe(a)  # observe hands out the same type as step
            seen += len(names)
        ready, _, _, truncs, infos = env.step({a: {"move": 4} for a in ready})
        ready = {a: o for a, o in ready.items() if not truncs[a]}
    assert seen > 0
    with pytest.raises(me.ConfigError, match="observation_mode must be one of"):
        env.observation_mode = "pixels"
