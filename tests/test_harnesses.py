"""RL harnesses, judged by their own checkers: PettingZoo's `parallel_api_test` on the vector
observations, RLlib's `check_multiagent_environments` plus random rollouts on the adapter, and
SuperSuit's vectorisation (what SB3 and CleanRL users do) stepping the sync env."""

from __future__ import annotations

import random

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test

import metropolis_env as me
from metropolis_env.spaces import move_offsets
from metropolis_env.wrappers import RLlibMultiAgentEnv, SyncParallelWrapper


def grid(task=None, **kw):
    walls = [(5, y) for y in range(1, 8)] + [(x, 6) for x in range(8, 13)]
    return me.make(me.open_grid(14, 10, blocked=walls), agents=kw.pop("agents", 6), max_steps=kw.pop("max_steps", 40),
                   obs_type="vector", task=task, **kw)


@pytest.mark.parametrize("task", [None, "goto", "relay"])
def test_parallel_api_test_on_vector_observations(task):
    parallel_api_test(SyncParallelWrapper(grid(task)), num_cycles=200)


def test_vector_spaces_are_a_box_and_a_discrete_move():
    from gymnasium.spaces import Box, Discrete, flatten_space

    env = grid("goto", radius_p=3, max_vel=2)
    a = env.possible_agents[0]
    assert isinstance(env.observation_space(a), Box) and env.observation_space(a).dtype == np.float32
    assert env.action_space(a) == Discrete(len(move_offsets(2)))
    assert isinstance(flatten_space(env.observation_space(a)), Box)
    obs, infos = env.reset(seed=0)
    mask = infos[a]["action_mask"]
    assert np.array_equal(mask, env.legal_moves(a)) and np.array_equal(obs[a][:len(mask)], mask)
    moves = {env.action_space(a).sample(mask=mask) for _ in range(50)}
    assert all(mask[m] for m in moves)


# -- RLlib ------------------------------------------------------------------------------------

def test_rllib_checker_passes():
    from ray.rllib.utils.pre_checks.env import check_multiagent_environments

    check_multiagent_environments(RLlibMultiAgentEnv(grid("goto")))
    check_multiagent_environments(RLlibMultiAgentEnv({"world": "grid", "agents": 5, "width": 12, "height": 9,
                                                      "max_steps": 20, "obs_type": "vector", "task": "rendezvous"}))


@pytest.mark.parametrize("task", [None, "goto", "rendezvous"])
def test_rllib_random_rollout(task):
    """Random masked actions for exactly the agents RLlib holds observations of, as its env runner
    does: only ready agents are handed out, rewards add up to the env's returns, `__all__` ends
    the episode once every agent is done."""
    env = RLlibMultiAgentEnv(grid(task, agents=8, max_steps=30))
    rng = random.Random(0)
    for seed in (0, 1):
        obs, infos = env.reset(seed=seed)
        total = dict.fromkeys(env.possible_agents, 0.0)
        finished: list[str] = []
        while True:
            actions = {a: env.get_action_space(a).sample(mask=infos[a]["action_mask"]) for a in obs}
            if rng.random() < 0.3 and len(actions) > 1:  # RLlib may also hold some back
                actions = dict(list(actions.items())[:1])
            obs_rest = {a: (o, infos[a]) for a, o in obs.items() if a not in actions}
            obs, rewards, terms, truncs, new_infos = env.step(actions)
            assert set(obs) <= set(env.agents) and set(rewards) == set(obs)
            assert not set(obs) & set(finished), "an agent handed out after it was done"
            finished += [a for a in obs if terms[a] or truncs[a]]
            for a, o in obs.items():
                assert env.get_observation_space(a).contains(o)
                total[a] += rewards[a]
                if not (terms[a] or truncs[a]):
                    assert env.env.is_ready(a)
            infos = {**new_infos, **{a: i for a, (_, i) in obs_rest.items()}}
            obs = {**obs, **{a: o for a, (o, _) in obs_rest.items()}}
            obs = {a: o for a, o in obs.items() if not (terms.get(a) or truncs.get(a))}
            if terms["__all__"] or truncs["__all__"]:
                break
            assert obs, "nobody to act but the episode is not over"
        assert not obs and not env.env.agents and sorted(finished) == sorted(env.possible_agents)
        assert total == env.env.returns
        if task is not None:
            assert terms["__all__"] == all(env.env.terminated(a) for a in env.possible_agents)


# -- SuperSuit --------------------------------------------------------------------------------

@pytest.mark.parametrize("task", [None, "relay"])
def test_supersuit_vectorises_the_sync_env(task):
    import supersuit as ss

    max_steps = 12
    vec = ss.pettingzoo_env_to_vec_env_v1(SyncParallelWrapper(grid(task, max_steps=max_steps)))
    venv = ss.concat_vec_envs_v1(vec, 2, num_cpus=0, base_class="gymnasium")
    n = venv.num_envs
    assert n == 2 * 6
    obs, infos = venv.reset(seed=0)
    assert obs.shape == (n,) + venv.observation_space.shape and obs.dtype == np.float32
    rng = np.random.default_rng(0)
    ends = 0
    for t in range(2 * max_steps + 3):
        obs, rewards, terms, truncs, infos = venv.step(rng.integers(0, venv.action_space.n, size=n))
        assert obs.shape[0] == rewards.shape[0] == n
        assert all(venv.observation_space.contains(o) for o in obs)
        ends += int(truncs.all())
    assert ends == 2  # every max_steps steps the whole batch truncates and starts over


def test_supersuit_black_death_keeps_task_terminated_agents_in_the_batch():
    """goto terminates agents one by one; black_death_v3 keeps their rows (zero observations)
    so the batch keeps its shape, and every agent's arrival reward comes through."""
    import supersuit as ss

    env = grid("goto", max_steps=40)
    vec = ss.pettingzoo_env_to_vec_env_v1(ss.black_death_v3(SyncParallelWrapper(env)))
    vec.reset(seed=1)
    names = env.possible_agents
    total, rows_zeroed = 0.0, 0
    for _ in range(40):
        live = set(env.agents)
        actions = [env.move_to(a, env.task_info(a)["goal"])["move"] if a in live else 4 for a in names]
        obs, rewards, terms, truncs, _ = vec.step(np.array(actions))
        total += rewards.sum()
        if terms.all():
            break
        rows_zeroed = max(rows_zeroed, sum(not obs[k].any() for k, a in enumerate(names) if a not in env.agents))
    assert total == len(names) and rows_zeroed > 0
