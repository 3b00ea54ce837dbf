"""Spaces always hold what is handed out: for every observation type (`obs_type` "full" and
"vector"), `observation_mode = "position"`, rule set, task, map and crowd hypothesis draws, every
observation from reset, step and observe lies in `observation_space(agent)`, and sampled actions
in `action_space(agent)` are accepted by the env."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import metropolis_env as me
from metropolis_env.wrappers import SyncParallelWrapper


@st.composite
def configs(draw):
    w, h = draw(st.integers(3, 14)), draw(st.integers(3, 12))
    cells = [(x, y) for x in range(w) for y in range(h)]
    blocked = draw(st.lists(st.sampled_from(cells), max_size=len(cells) // 3, unique=True))
    world = me.open_grid(w, h, blocked=blocked)
    walkable = int(world.walkable.sum())
    agents = draw(st.integers(2, max(2, min(10, walkable))))
    return dict(world=world, agents=agents, radius_p=draw(st.integers(0, 3)), max_vel=draw(st.integers(1, 2)),
                max_steps=draw(st.integers(1, 12)), rules=draw(st.sampled_from(["paper", "versioned"])),
                obs_type=draw(st.sampled_from(["full", "vector"])),
                task=draw(st.sampled_from([None, "goto", "rendezvous", "relay"])))


def check(env, obs: dict, where: str) -> None:
    for a, o in obs.items():
        assert env.observation_space(a).contains(o), f"{where}: observation of {a} not in its space: {o!r}"


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(cfg=configs(), position=st.booleans(), sync=st.booleans(), seed=st.integers(0, 2**16))
def test_every_observation_lies_in_its_space(cfg, position, sync, seed):
    world = cfg.pop("world")
    if cfg["task"] == "goto" and (world.walkable.sum() < 2 or cfg["max_steps"] < 1):
        cfg["task"] = None
    try:
        env = me.make(world, **cfg, seed=seed)
        if position:
            env.observation_mode = "position"
        obs, infos = env.reset(seed=seed)
    except me.ConfigError as e:  # goto with an agent boxed in by walls: said so, nothing else
        assert "goto" in str(e)
        return
    check(env, obs, "reset")
    rng = random.Random(seed)
    for a in env.possible_agents:
        env.action_space(a).seed(rng.randrange(2**31))
    driver = SyncParallelWrapper(env) if sync else env
    if sync:
        driver.agents = list(env.agents)
    while env.agents:
        ready = env.ready_agents()
        check(env, {a: env.observe(a) for a in ready}, "observe")
        chosen = ready if sync else [a for a in ready if rng.random() < 0.6] or ready[:1]
        actions = {}
        for a in chosen:
            act = env.action_space(a).sample(mask=env.legal_moves(a))
            assert env.action_space(a).contains(act)
            actions[a] = act
        obs, rewards, terms, truncs, infos = driver.step(actions)
        check(env, obs, "step")
        assert set(obs) == set(rewards) == set(terms) == set(truncs) == set(infos)
