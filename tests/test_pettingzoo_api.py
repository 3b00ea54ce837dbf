"""PettingZoo conformance of SyncParallelWrapper, and the spaces as the data contract of both envs.

PettingZoo's own conformance functions are the judge: `parallel_api_test`, `parallel_seed_test`,
and `api_test` on the AEC conversion. Beyond them: every observation either env returns lies in
`observation_space(agent)`, and moves sampled with the observation's `action_mask` are legal
(they never hit a wall or the map edge).
"""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test
from pettingzoo.utils.conversions import parallel_to_aec

import metropolis_env as me
from metropolis_env.spaces import move_offsets
from metropolis_env.wrappers import SyncParallelWrapper


def small_grid(**kw) -> me.AsyncParallelEnv:
    walls = [(4, y) for y in range(1, 7)] + [(x, 5) for x in range(6, 11)]
    return me.make(me.open_grid(12, 9, blocked=walls), agents=kw.pop("agents", 6), **kw)


WORLDS = {
    "grid": lambda **kw: small_grid(max_steps=60, **kw),
    "the_ville": lambda **kw: me.make("the_ville", agents=4, max_steps=120, **kw),
    "grid_fast": lambda **kw: small_grid(max_vel=2, radius_p=2, max_steps=40, **kw),
}


@pytest.fixture(autouse=True)
def _quiet_pettingzoo_advice():
    # The API tests warn that Dict spaces and dict observations are unusual; they are our
    # documented choice (see spaces.py), not a defect.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*should be gymnasium.spaces.box or gymnasium.spaces.discrete")
        warnings.filterwarnings("ignore", message="Observation is not a NumPy array")
        yield


@pytest.mark.parametrize("world", sorted(WORLDS))
def test_parallel_api_test(world):
    parallel_api_test(SyncParallelWrapper(WORLDS[world]()), num_cycles=1000)


@pytest.mark.parametrize("world", sorted(WORLDS))
def test_parallel_seed_test(world):
    parallel_seed_test(lambda: SyncParallelWrapper(WORLDS[world]()))


@pytest.mark.parametrize("world", ["grid", "the_ville"])
def test_aec_conversion_passes_api_test(world):
    api_test(parallel_to_aec(SyncParallelWrapper(WORLDS[world]())), num_cycles=1000)


def test_sync_wrapper_is_a_parallel_env():
    from pettingzoo import ParallelEnv
    sync = SyncParallelWrapper(small_grid())
    assert isinstance(sync, ParallelEnv)
    obs, infos = sync.reset(seed=3)
    assert set(obs) == set(infos) == set(sync.agents) == set(sync.possible_agents)
    out = sync.step({a: 4 for a in sync.agents})
    assert all(set(d) == set(sync.possible_agents) for d in out)
    assert sync.state().shape == (6, 2)


def test_each_agent_has_its_own_action_space_rng():
    # PettingZoo seeds each agent's space; sampling one must not move another's sequence.
    env = small_grid()
    a, b = env.possible_agents[:2]
    assert env.action_space(a) is not env.action_space(b)
    assert env.action_space(a) is env.action_space(a)
    env.action_space(a).seed(1)
    first = [env.action_space(a).sample()["move"] for _ in range(20)]
    env.action_space(a).seed(1)
    env.action_space(b).seed(1)
    interleaved = []
    for _ in range(20):
        env.action_space(b).sample()
        interleaved.append(env.action_space(a).sample()["move"])
    assert interleaved == first


def assert_obs_in_space(env, obs: dict) -> None:
    for agent, o in obs.items():
        space = env.observation_space(agent)
        assert space.contains(o), f"observation of {agent} at step {o['step']} not in its space: {o}"


def assert_legal(env, agent: str, move: int) -> None:
    x, y = env.positions[agent]
    dx, dy = move_offsets(env.max_vel)[move]
    assert env.world.is_walkable((x + dx, y + dy)), f"{agent} sampled move {move} into a wall"


@pytest.mark.parametrize("world", sorted(WORLDS))
def test_async_observations_in_space_and_masked_samples_legal(world):
    env = WORLDS[world](seed=5)
    rng = random.Random(5)
    ready, _ = env.reset(seed=5)
    seen = 0
    for agent in env.possible_agents:
        env.action_space(agent).seed(rng.randrange(2**31))
    while env.ready_agents():
        assert_obs_in_space(env, ready)
        seen += len(ready)
        # An out-of-order driver: a random subset of the ready clusters submits each call.
        clusters = env.clusters()
        chosen = [a for cl in clusters if rng.random() < 0.6 for a in cl] or clusters[0]
        actions = {}
        for a in chosen:
            act = env.action_space(a).sample(mask=env.observe(a)["action_mask"])
            assert env.action_space(a).contains(act)
            assert_legal(env, a, act["move"])
            actions[a] = act
        obs, _, _, truncs, infos = env.step(actions)
        assert all(infos[a]["move_result"] in ("moved", "stayed") for a in obs)
        ready = {a: o for a, o in obs.items() if not truncs[a]}
        assert_obs_in_space(env, {a: o for a, o in obs.items() if truncs[a]})
    # One final observation per agent-step, none lost, none twice.
    assert seen == env.max_steps * len(env.possible_agents)
    assert set(env.steps.values()) == {env.max_steps}


@pytest.mark.parametrize("world", sorted(WORLDS))
def test_sync_observations_in_space_and_masked_samples_legal(world):
    sync = SyncParallelWrapper(WORLDS[world]())
    obs, _ = sync.reset(seed=11)
    for agent in sync.possible_agents:
        sync.action_space(agent).seed(7)
    steps = 0
    while sync.agents:
        assert_obs_in_space(sync, obs)
        actions = {a: sync.action_space(a).sample(mask=obs[a]["action_mask"]) for a in sync.agents}
        for a, act in actions.items():
            assert_legal(sync, a, act["move"])
        obs, _, _, _, infos = sync.step(actions)
        assert all(infos[a]["move_result"] in ("moved", "stayed") for a in obs)
        steps += 1
    assert_obs_in_space(sync, obs)
    assert steps == sync.max_steps


def test_observations_with_texts_and_crowds_stay_in_space():
    # Every agent on a 3x3 patch shouting maximal texts: the largest observations there are
    # (12 agents on 9 tiles: start tiles given explicitly may be shared).
    env = me.make(me.open_grid(3, 3), agents={f"a{k}": (k % 3, k // 3 % 3) for k in range(12)}, max_steps=3)
    ready, _ = env.reset(seed=0)
    text = "".join(me.CHARSET)[:500]
    while ready:
        assert_obs_in_space(env, ready)
        assert all(len(o["perceived"]) == 11 for o in ready.values())
        ready, *_ = env.step({a: {"move": 4, "activity": text[::-1], "utterance": text} for a in ready})
        ready = {a: o for a, o in ready.items() if o["step"] < env.max_steps}


def test_mask_marks_exactly_the_walkable_targets():
    env = small_grid(max_vel=2)
    env.reset(seed=1)
    offsets = move_offsets(2)
    for agent, (x, y) in env.positions.items():
        mask = env.legal_moves(agent)
        assert mask.dtype == np.int8 and mask.shape == (len(offsets),)
        expected = [int(env.world.is_walkable((x + dx, y + dy))) for dx, dy in offsets]
        assert mask.tolist() == expected
        assert mask[len(offsets) // 2] == 1  # staying is always legal
