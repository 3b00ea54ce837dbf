"""Bad input: every kind raises from the MetropolisError hierarchy, says who, when and what to do,
and leaves the environment exactly as it was (compared through a full `env.snapshot()`).

A move onto a blocked tile or off the map is *not* bad input: it is in the action space (so that
mask-free samplers such as PettingZoo's seed test stay legal), leaves the agent in place and says
so in its info.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import metropolis_env as me
from metropolis_env import world as W
from metropolis_env.spaces import TEXT_MAX, move_offsets, stay_index
from metropolis_env.wrappers import SyncParallelWrapper

STAY = stay_index(1)


def move(dx: int, dy: int, max_vel: int = 1) -> int:
    return move_offsets(max_vel).index((dx, dy))


def grid_env(agents: dict, *, width: int = 12, height: int = 8, blocked=(), **kw) -> me.AsyncParallelEnv:
    env = me.make(me.open_grid(width, height, blocked=blocked), agents=agents, **kw)
    env.reset(seed=0)
    return env


@pytest.fixture
def pair():
    """Two agents 6 tiles apart: not coupled (hazard 2 > max_vel 1), both ready at step 0."""
    return grid_env({"ann": (0, 0), "bob": (6, 0)})


@pytest.fixture
def blocked_pair(pair):
    """`ann` stepped to 1 and is blocked by `bob`, still at step 0 (hazard 2 <= 2 * max_vel)."""
    pair.step({"ann": STAY})
    assert pair.ready_agents() == ["bob"]
    return pair


@pytest.fixture
def coupled_pair():
    """Two coupled agents (5 tiles apart: hazard 1 <= max_vel); `ann` has submitted alone."""
    env = grid_env({"ann": (0, 0), "bob": (5, 0)})
    assert env.clusters() == [["ann", "bob"]]
    out = env.step({"ann": STAY})
    assert out[0] == {}
    return env


def assert_rejected(env, error, call, *must_mention):
    """`call()` raises `error` (a MetropolisError) mentioning each string; the state is intact."""
    before = env.snapshot()
    with pytest.raises(error) as info:
        call()
    assert isinstance(info.value, me.MetropolisError)
    message = str(info.value)
    for text in must_mention:
        assert text in message, f"{text!r} not in {message!r}"
    assert env.snapshot() == before
    return message


# -- who may act -------------------------------------------------------------------------------

@pytest.mark.parametrize("agent", ["carl", "", ("ann",), 0, None])
def test_unknown_agent(pair, agent):
    assert_rejected(pair, me.UnknownAgentError, lambda: pair.step({agent: STAY}), repr(agent),
                    "env.possible_agents")


def test_unknown_agent_in_queries(pair):
    for call in (pair.agent_step, pair.blocked_by, pair.observe, pair.observation_space,
                 pair.action_space, lambda a: pair.move_to(a, (1, 1))):
        assert_rejected(pair, me.UnknownAgentError, lambda: call("carl"), "'carl'")


def test_blocked_agent_may_not_act(blocked_pair):
    msg = assert_rejected(blocked_pair, me.AgentNotReadyError, lambda: blocked_pair.step({"ann": STAY}),
                          "'ann'", "step 1", "'bob'", "env.ready_agents()")
    assert "blocked" in msg
    assert blocked_pair.blocked_by("ann")[0]["agent"] == "bob"


def test_blocked_agent_has_no_observation_yet(blocked_pair):
    assert_rejected(blocked_pair, me.AgentNotReadyError, lambda: blocked_pair.observe("ann"),
                    "'ann'", "step 1")
    assert_rejected(blocked_pair, me.AgentNotReadyError, lambda: blocked_pair.ready_cluster("ann"),
                    "'ann'", "step 1")


def test_agent_that_already_submitted_may_not_submit_again(coupled_pair):
    msg = assert_rejected(coupled_pair, me.AgentNotReadyError, lambda: coupled_pair.step({"ann": STAY}),
                          "'ann'", "step 0", "already submitted", "'bob'")
    assert "cluster mates" in msg


def test_truncated_agent_may_not_act():
    env = grid_env({"ann": (0, 0), "bob": (9, 0)}, max_steps=2)
    for _ in range(2):
        env.step({"ann": STAY})
    assert env.agent_step("ann") == 2 and "ann" not in env.agents
    assert_rejected(env, me.AgentDoneError, lambda: env.step({"ann": STAY}),
                    "'ann'", "step 2", "truncated", "drop it")
    assert issubclass(me.AgentDoneError, me.AgentNotReadyError)


# -- the actions argument ------------------------------------------------------------------------

@pytest.mark.parametrize("actions", [[("ann", STAY)], ("ann", STAY), None, STAY, "ann", {"ann"}])
def test_actions_must_be_a_dict(pair, actions):
    assert_rejected(pair, me.InvalidActionsError, lambda: pair.step(actions), "dict", "env.ready_agents()")


def test_step_before_reset():
    env = me.make(me.open_grid(6, 6), agents=2)
    for call in (lambda: env.step({"agent_000": STAY}), env.ready_agents, env.clusters,
                 lambda: env.observe("agent_000"), lambda: env.agent_step("agent_000"),
                 lambda: env.positions, env.snapshot):
        with pytest.raises(me.ResetNeededError, match=r"env\.reset\("):
            call()
    assert env.agents == []
    env.reset(seed=0)  # and the env is usable afterwards
    assert env.ready_agents() == ["agent_000", "agent_001"]


def test_sync_wrapper_before_reset_and_with_missing_agents():
    sync = SyncParallelWrapper(me.make(me.open_grid(6, 6), agents=2))
    with pytest.raises(me.ResetNeededError):
        sync.step({"agent_000": STAY, "agent_001": STAY})
    sync.reset(seed=0)
    msg = assert_rejected(sync.env, me.InvalidActionError, lambda: sync.step({"agent_000": STAY}),
                          "'agent_001'", "step 0", "one action per agent")
    assert msg
    assert_rejected(sync.env, me.InvalidActionsError, lambda: sync.step([STAY, STAY]), "dict")


# -- actions outside the action space --------------------------------------------------------------

@pytest.mark.parametrize("action", ["up", 1.0, None, True, np.float32(4), np.array([4]), [4], (0, 1)])
def test_move_of_wrong_type(pair, action):
    assert_rejected(pair, me.InvalidActionError, lambda: pair.step({"ann": action}),
                    "'ann'", "step 0", "'move' must be an int", "env.move_to")


@pytest.mark.parametrize("action", [-1, 9, 10_000, np.int64(9), {"move": -1}, {"move": 9}])
def test_move_out_of_range(pair, action):
    assert_rejected(pair, me.InvalidActionError, lambda: pair.step({"ann": action}),
                    "'ann'", "step 0", "out of range 0..8", "stays put")


def test_move_range_follows_max_vel():
    env = grid_env({"ann": (0, 0)}, max_vel=2)
    assert_rejected(env, me.InvalidActionError, lambda: env.step({"ann": 25}), "out of range 0..24")
    env.step({"ann": 24})  # the last offset of the 5x5 square is in range
    assert env.positions["ann"] == (2, 2)


@pytest.mark.parametrize("key", ["activity", "utterance"])
@pytest.mark.parametrize("text, complaint", [
    (123, "must be a str"),
    (b"bytes", "must be a str"),
    ("x" * (TEXT_MAX + 1), f"at most {TEXT_MAX}"),
    ("tab\there", "outside the text charset"),
    ("nul\x00", "outside the text charset"),
    ("emoji \U0001F600", "outside the text charset"),
])
def test_malformed_text(pair, key, text, complaint):
    msg = assert_rejected(pair, me.InvalidActionError, lambda: pair.step({"ann": {"move": STAY, key: text}}),
                          "'ann'", "step 0", repr(key), complaint)
    if "charset" in complaint or "at most" in complaint:
        assert "sanitize_text" in msg


def test_text_at_the_length_limit_is_accepted_and_sanitize_text_repairs_the_rest(pair):
    obs = pair.step({"ann": {"move": STAY, "utterance": "y" * TEXT_MAX,
                             "activity": me.sanitize_text("tab\there \U0001F600" + "z" * 900)},
                     "bob": STAY})[0]["ann"]
    assert obs["utterance"] == "y" * TEXT_MAX
    assert obs["activity"].startswith("tab here ?") and len(obs["activity"]) == TEXT_MAX


@pytest.mark.parametrize("action, complaint", [
    ({"move": STAY, "speed": 3}, "unknown keys ['speed']"),
    ({"move": STAY, 7: "x"}, "unknown keys ['7']"),
    ({"activity": "walking"}, "needs a 'move'"),
    ({}, "needs a 'move'"),
])
def test_malformed_action_dict(pair, action, complaint):
    assert_rejected(pair, me.InvalidActionError, lambda: pair.step({"ann": action}), "'ann'", "step 0", complaint)


def test_one_bad_action_in_a_batch_changes_nothing():
    env = grid_env({"ann": (0, 0), "bob": (6, 0), "cy": (11, 7)})
    good = {"ann": move(1, 0), "cy": move(-1, 0)}
    for bad in ({"bob": 42}, {"bob": {"move": STAY, "utterance": 5}}, {"dan": STAY}):
        for order in (dict(good, **bad), dict(bad, **good)):  # bad one first and last
            assert_rejected(env, me.MetropolisError, lambda: env.step(order))
    assert env.steps == {"ann": 0, "bob": 0, "cy": 0}
    env.step(good)  # the good part alone goes through
    assert env.positions == {"ann": (1, 0), "bob": (6, 0), "cy": (10, 7)}


def test_bad_move_to_target(pair):
    assert_rejected(pair, me.InvalidActionError, lambda: pair.move_to("ann", (12, 0)), "'ann'",
                    "off the 12x8 map", "pick a walkable tile")
    assert_rejected(pair, me.InvalidActionError, lambda: pair.move_to("ann", "here"), "'ann'", "(x, y)")
    walled = grid_env({"ann": (0, 0)}, blocked=[(5, y) for y in range(8)])
    assert_rejected(walled, me.InvalidActionError, lambda: walled.move_to("ann", (5, 3)), "blocked")
    assert_rejected(walled, me.InvalidActionError, lambda: walled.move_to("ann", (9, 3)), "'ann'",
                    "step 0", "no walkable path")


# -- moves the world refuses are still actions -------------------------------------------------------

def test_move_into_a_wall_or_off_the_map_is_accepted_and_reported():
    env = grid_env({"ann": (0, 0), "bob": (11, 7)}, blocked=[(1, 0)])
    obs = env.observe("ann")
    assert obs["action_mask"][move(1, 0)] == 0 and obs["action_mask"][move(-1, 0)] == 0
    obs, _, _, _, infos = env.step({"ann": move(1, 0), "bob": move(1, 1)})
    assert env.positions == {"ann": (0, 0), "bob": (11, 7)}
    assert env.steps == {"ann": 1, "bob": 1}
    assert infos["ann"]["move_result"] == "blocked_tile"
    assert infos["bob"]["move_result"] == "off_map"
    _, _, _, _, infos = env.step({"ann": move(-1, 0), "bob": move(-1, 0)})
    assert infos["ann"]["move_result"] == "off_map" and infos["bob"]["move_result"] == "moved"


# -- construction ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, complaint", [
    (dict(radius_p=-1), "radius_p must be an int >= 0"),
    (dict(radius_p=2.5), "radius_p must be an int >= 0"),
    (dict(max_vel=0), "max_vel must be an int >= 1"),
    (dict(max_vel=True), "max_vel must be an int >= 1"),
    (dict(max_steps=0), "max_steps must be an int >= 1"),
    (dict(perception="circle"), "perception must be 'box' or 'arena'"),
    (dict(render_mode="video"), "render_mode must be None or one of"),
    (dict(bound="oracle"), "unknown bound 'oracle'"),
    (dict(agents=0), "agents must be >= 1"),
    (dict(agents=True), "agents must be a count"),
    (dict(agents=2.0), "agents must be a count"),
    (dict(agents="ann"), "agents must be a count"),
    (dict(agents=[]), "at least one agent"),
    (dict(agents=["ann", "bob", "ann"]), "duplicate agent names ['ann']"),
    (dict(agents=["ann", 7]), "agent names must be non-empty strings"),
    (dict(agents=["ann", "b\x00b"]), "agent names must be non-empty strings"),
    (dict(agents={"ann": (0, 0), "bob": (70, 14)}), "of 'bob' is off the 12x8 map"),
    (dict(agents={"ann": (0, 0), "bob": (-1, 3)}), "of 'bob' is off the 12x8 map"),
    (dict(agents={"ann": (3, 3)}), "(3, 3) of 'ann' is blocked"),
    (dict(agents={"ann": "corner"}), "start tile of 'ann' must be (x, y) integers"),
    (dict(agents={"ann": (1, 2, 3)}), "start tile of 'ann' must be (x, y) integers"),
])
def test_invalid_construction(kwargs, complaint):
    kwargs = dict(dict(agents=2), **kwargs)
    with pytest.raises(me.ConfigError) as info:
        me.make(me.open_grid(12, 8, blocked=[(3, 3)]), **kwargs)
    assert complaint in str(info.value)


def test_more_agents_than_walkable_tiles_is_refused():
    """Agents spawn on distinct tiles: a map with fewer walkable tiles than agents is refused
    (it used to stack them silently), while filling every walkable tile is fine."""
    grid = me.open_grid(4, 3, blocked=[(0, 0), (3, 2)])  # 10 walkable tiles
    with pytest.raises(me.ConfigError, match="11 agents but map .* has only 10 walkable tiles"):
        me.make(grid, agents=11)
    env = me.make(grid, agents=10)
    env.reset(seed=3)
    tiles = set(env.positions.values())
    assert len(tiles) == 10 and all(grid.is_walkable(t) for t in tiles)
    with pytest.raises(me.ConfigError, match="has only 11936 walkable tiles"):
        me.make("the_ville", agents=20000)


def test_rules_by_name_or_object():
    from metropolis_env.rules import PaperRules, VersionedRules
    assert me.make("grid", agents=2, rules=VersionedRules()).rules == VersionedRules()
    assert me.make("grid", agents=2, rules="paper").rules == PaperRules()
    with pytest.raises(me.ConfigError, match="rules must be one of"):
        me.make("grid", agents=2, rules=object())


def test_unknown_world_and_bad_world_sizes():
    with pytest.raises(me.ConfigError, match="unknown world 'atlantis'.*the_ville"):
        me.make("atlantis")
    for call in (lambda: me.make("grid", width=0), lambda: me.villes(0), lambda: me.concat([]),
                 lambda: me.concat([me.open_grid(3, 3), me.open_grid(4, 3)]),
                 lambda: me.villes(2, cols=0)):
        with pytest.raises(me.ConfigError):
            call()


def test_bad_reset_seed_changes_nothing(pair):
    assert_rejected(pair, me.ConfigError, lambda: pair.reset(seed=-1), "seed")
    assert_rejected(pair, me.ConfigError, lambda: pair.reset(seed="zero"), "seed")


def test_sync_wrapper_needs_an_async_env():
    with pytest.raises(TypeError, match="AsyncParallelEnv"):
        SyncParallelWrapper(me.open_grid(3, 3))


# -- map files -----------------------------------------------------------------------------------------

def small_map() -> dict:
    return {
        "width": 4, "height": 3,
        "blocked": ["#...", "....", "...#"],
        "sectors": {"legend": {"A": {"name": "house"}}, "rows": ["AA..", "AA..", "...."]},
        "arenas": {"grid": [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]],
                   "table": {"1": {"sector": "house", "arena": "kitchen"}}},
    }


def test_small_map_is_valid():
    m = W.from_dict(small_map())
    assert (m.width, m.height, int((~m.walkable).sum())) == (4, 3, 2)
    assert m.location((1, 1)) == "house:kitchen" and m.location((3, 1)) == ":"


def broken(change) -> dict:
    data = small_map()
    change(data)
    return data


@pytest.mark.parametrize("data, complaint", [
    ([], "must be a JSON object"),
    (broken(lambda d: d.pop("blocked")), "missing the key 'blocked'"),
    (broken(lambda d: d.pop("width")), "missing the key 'width'"),
    (broken(lambda d: d.update(width="wide")), "must be integers"),
    (broken(lambda d: d.update(height=0)), "must be positive"),
    (broken(lambda d: d.update(height=4)), "list of 4 row strings"),
    (broken(lambda d: d["blocked"].__setitem__(1, "...")), "'blocked'[1] must be a string of 4"),
    (broken(lambda d: d["blocked"].__setitem__(2, ".....")), "'blocked'[2] must be a string of 4"),
    (broken(lambda d: d["blocked"].__setitem__(0, "#.x.")), "only '#' and '.'"),
    (broken(lambda d: d["sectors"].pop("legend")), "'sectors' needs 'legend' and 'rows'"),
    (broken(lambda d: d["sectors"]["rows"].__setitem__(0, "AB..")), "'B' is not a key of sectors.legend"),
    (broken(lambda d: d["sectors"]["rows"].pop()), "'sectors.rows' must be a list of 3"),
    (broken(lambda d: d["arenas"].pop("table")), "'arenas' needs 'grid' and 'table'"),
    (broken(lambda d: d["arenas"]["grid"].pop()), "arenas.grid must be 3 rows of 4 ints"),
    (broken(lambda d: d["arenas"]["grid"][0].__setitem__(0, "one")), "rows of integers"),
    (broken(lambda d: d["arenas"]["grid"][0].__setitem__(0, 2)), "arena ids [2]"),
    (broken(lambda d: d["arenas"]["grid"][0].__setitem__(0, -1)), "arena ids must be in"),
])
def test_malformed_map_dict(data, complaint):
    with pytest.raises(me.MapFormatError) as info:
        W.from_dict(data)
    assert complaint in str(info.value)


def test_malformed_map_file(tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"width": 4, "height": 3, "blocked": ["#...",', encoding="utf-8")
    with pytest.raises(me.MapFormatError, match="bad.json is not valid JSON"):
        me.load_map(str(bad_json))
    with pytest.raises(me.MapFormatError, match="cannot read map file"):
        me.load_map(str(tmp_path / "missing.json"))
    wrong_rows = tmp_path / "rows.json"
    wrong_rows.write_text(json.dumps(broken(lambda d: d["blocked"].__setitem__(1, "."))), encoding="utf-8")
    with pytest.raises(me.MapFormatError, match=r"'blocked'\[1\]"):
        me.load_map(str(wrong_rows))
    good = tmp_path / "good.json"
    good.write_text(json.dumps(small_map()), encoding="utf-8")
    assert me.load_map(str(good)).location((0, 1)) == "house:kitchen"


def test_every_error_class_is_a_metropolis_error():
    for cls in (me.ConfigError, me.MapFormatError, me.ResetNeededError, me.UnknownAgentError,
                me.AgentNotReadyError, me.AgentDoneError, me.InvalidActionError, me.InvalidActionsError):
        assert issubclass(cls, me.MetropolisError)
