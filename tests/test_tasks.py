"""Tasks: rewards, terminations and task infos equal in sync and out-of-order runs; each built-in
does what its docstring says; an env without a task hands out 0.0 and never terminates.

The equivalence tests drive a deterministic policy (the scripted task policy, with moves drawn from
a stable hash of the agent's observation now and then, so agents stray and meet) through the sync
wrapper and through hypothesis-drawn interleavings, and compare every agent's sequence of
(observation, info, reward, terminated, truncated). A task that reads the live world instead of the
agent's view (`LiveRendezvous`) fails that comparison: the mutation check that shows the test bites.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import metropolis_env as me
from metropolis_env.agents.task_agents import scripted_action
from metropolis_env.tasks import Goto, GotoEpisode, Outcome, View
from metropolis_env.wrappers import SyncParallelWrapper
from policies import Interleaving, canonical, stable_hash
from test_equivalence import interleavings

SEEDS = (0, 1, 2)


def small_ville(task, **kw):
    personas = me.the_ville_personas()
    names = list(personas)[:10]
    return me.make("the_ville", agents={n: personas[n] for n in names}, max_steps=kw.pop("max_steps", 70),
                   task=task, **kw)


def crowded_grid(task, **kw):
    walls = [(6, y) for y in range(0, 9)] + [(x, 10) for x in range(9, 16)]
    return me.make(me.open_grid(18, 14, blocked=walls), agents=12, radius_p=2, max_steps=50, task=task, **kw)


WORLDS = {"the_ville": small_ville, "grid": crowded_grid}


class TaskPolicy:
    """scripted_action, or (one time in four, by a stable hash of seed, agent and observation) a
    hashed move; a pure function of the agent's observations and task info."""

    def __init__(self, env: me.AsyncParallelEnv, seed: int):
        self.env, self.seed = env, seed

    def act(self, agent: str, obs, info: dict):
        h = stable_hash(self.seed, agent, canonical(obs), canonical(info))
        if h % 4 == 0:
            action = {"move": int((h >> 8) % len(self.env.legal_moves(agent)))}
            if info.get("message"):
                action["utterance"] = info["message"]
            return action
        return scripted_action(self.env, agent, info)


@dataclass
class Record:
    """Per agent, what it was handed, in its step order: (obs, info, reward, terminated, truncated)."""

    seq: dict[str, list]

    def add(self, obs, infos, rewards=None, terms=None, truncs=None):
        for a in obs:
            entry = (canonical(obs[a]), canonical(infos[a]))
            if rewards is not None:
                entry += (rewards[a], terms[a], truncs[a])
            self.seq.setdefault(a, []).append(entry)


def run_sync(env, seed) -> tuple[Record, dict]:
    policy = TaskPolicy(env, seed)
    sync = SyncParallelWrapper(env)
    obs, infos = sync.reset(seed=seed)
    rec = Record({})
    rec.add(obs, infos)
    while sync.agents:
        out = sync.step({a: policy.act(a, obs[a], infos[a]) for a in sync.agents})
        rec.add(*_reorder(out))
        obs, infos = out[0], out[4]
    return rec, env.returns


def run_ooo(env, seed, schedule: Interleaving) -> tuple[Record, dict]:
    policy = TaskPolicy(env, seed)
    rng = random.Random(schedule.seed)
    obs, infos = env.reset(seed=seed)
    rec = Record({})
    rec.add(obs, infos)
    held = {a: (obs[a], infos[a]) for a in obs}
    while env.agents:
        ready = set(env.ready_agents())
        clusters = [[a for a in cl if a in ready] for cl in env.clusters()]
        clusters = [cl for cl in clusters if cl]
        if schedule.order == "random":
            rng.shuffle(clusters)
        else:
            steps = env.steps
            clusters.sort(key=lambda cl: (steps[cl[0]], rng.random()), reverse=schedule.order == "leaders")
        chosen = [cl for cl in clusters if rng.random() < schedule.share][:schedule.max_clusters] or clusters[:1]
        submit = []
        for cl in chosen:
            if len(cl) > 1 and rng.random() < schedule.partial:
                cl = rng.sample(cl, rng.randint(1, len(cl) - 1))
            submit += cl
        rng.shuffle(submit)
        out = env.step({a: policy.act(a, *held.pop(a)) for a in submit})
        rec.add(*_reorder(out))
        for a in out[0]:
            if not (out[2][a] or out[3][a]):
                held[a] = (out[0][a], out[4][a])
    assert not held, f"agents left holding observations: {sorted(held)}"
    return rec, env.returns


def _reorder(out):
    obs, rewards, terms, truncs, infos = out
    return obs, infos, rewards, terms, truncs


@lru_cache(maxsize=None)
def world_env(world: str, task: str, obs_type: str = "full"):
    return WORLDS[world](task, obs_type=obs_type)


@lru_cache(maxsize=None)
def sync_run(world: str, task: str, seed: int, obs_type: str = "full"):
    return run_sync(world_env(world, task, obs_type), seed)


@pytest.mark.parametrize("task", ["goto", "rendezvous", "relay"])
@pytest.mark.parametrize("world", sorted(WORLDS))
@settings(max_examples=10, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(SEEDS), schedule=interleavings())
def test_task_returns_equal_in_sync_and_out_of_order(world, task, seed, schedule):
    expected, expected_returns = sync_run(world, task, seed)
    got, returns = run_ooo(world_env(world, task), seed, schedule)
    for a, seq in expected.seq.items():
        for t, (g, e) in enumerate(zip(got.seq[a], seq)):
            assert g == e, f"{a} differs from sync at its {t}-th hand-out:\n  ooo:  {g}\n  sync: {e}"
        assert len(got.seq[a]) == len(seq), f"{a}: {len(got.seq[a])} hand-outs out of order, {len(seq)} in sync"
    assert returns == expected_returns


@settings(max_examples=6, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(SEEDS), schedule=interleavings())
def test_vector_observations_equal_in_sync_and_out_of_order(seed, schedule):
    expected, _ = sync_run("grid", "rendezvous", seed, "vector")
    got, _ = run_ooo(world_env("grid", "rendezvous", "vector"), seed, schedule)
    assert got.seq == expected.seq


@pytest.mark.parametrize("task", ["goto", "rendezvous", "relay"])
def test_the_premise_tasks_are_won_and_lost_on_the_way(task):
    """Without rewards to compare the equivalence tests would be empty: the runs earn rewards,
    and (goto, rendezvous) terminate agents before max_steps while others go on."""
    env = world_env("grid", task)
    for seed in SEEDS:
        rec, returns = sync_run("grid", task, seed)
        assert sum(returns.values()) > 0
        if task != "relay":
            early = [a for a, seq in rec.seq.items() if seq[-1][3] and len(seq) <= env.max_steps]
            assert early, "no agent terminated before max_steps"


def test_goto_goals_are_reachable_and_rewarded_on_arrival():
    env = small_ville("goto", max_steps=200)
    _, infos = env.reset(seed=4)
    start = env.positions
    for a, info in infos.items():
        goal = info["goal"]
        d = env.world.distance_field(goal, env.max_vel)[start[a][1], start[a][0]]
        assert env.world.is_walkable(goal) and 1 <= d <= env.max_steps
    arrived = {}
    while env.agents:
        obs, rewards, terms, truncs, infos = env.step({a: env.move_to(a, env.task_info(a)["goal"])
                                                       for a in env.ready_agents()})
        for a in obs:
            at_goal = env.positions[a] == env.task_info(a)["goal"]
            assert rewards[a] == (1.0 if at_goal else 0.0) and terms[a] == at_goal
            if terms[a]:
                arrived[a] = env.agent_step(a)
    assert set(arrived) == set(env.possible_agents)
    assert all(env.task_info(a)["success"] for a in arrived) and env.returns == dict.fromkeys(arrived, 1.0)


def test_terminated_agents_stand_still_and_stay_perceivable():
    env = crowded_grid("goto")
    env.reset(seed=1)
    where = {}
    seen_after = 0
    while env.agents:
        obs, _, terms, _, infos = env.step({a: env.move_to(a, env.task_info(a)["goal"]) for a in env.ready_agents()})
        for a, t in terms.items():
            if t:
                where[a] = env.positions[a]
                with pytest.raises(me.AgentDoneError, match="terminated by the task"):
                    env.step({a: 4})
        assert all(env.positions[a] == p for a, p in where.items())
        seen_after += sum(b in where for a in obs for b in infos[a]["perceived"])
    assert where and seen_after > 0
    assert set(env.steps.values()) == {env.max_steps}  # the env stepped them to the end


def test_rendezvous_pairs_and_reward_on_meeting():
    env = crowded_grid("rendezvous")
    _, infos = env.reset(seed=2)
    partner = {a: i["partner"] for a, i in infos.items()}
    assert all(partner[partner[a]] == a for a in partner)  # 12 agents: proper pairs
    assert all(i["partner_start"] == env.positions[i["partner"]] for i in infos.values())
    while env.agents:
        obs, rewards, terms, _, infos = env.step({a: scripted_action(env, a, env.task_info(a))
                                                  for a in env.ready_agents()})
        for a in obs:
            assert terms[a] == (partner[a] in infos[a]["perceived"]) == (rewards[a] == 1.0)


def test_relay_spreads_by_utterances_heard():
    env = crowded_grid("relay")
    _, infos = env.reset(seed=0)
    source = infos[env.possible_agents[0]]["source"]
    assert [a for a, i in infos.items() if i["message"]] == [source]
    message = infos[source]["message"]
    knew = {source}
    while env.agents:
        ready = env.ready_agents()
        speakers = {a for a in env.possible_agents if env.task_info(a)["message"]}
        obs, rewards, terms, _, infos = env.step({a: scripted_action(env, a, env.task_info(a)) for a in ready})
        for a in obs:
            assert not terms[a]
            heard = any(o["utterance"] and message in o["utterance"] for o in obs[a]["perceived"])
            assert rewards[a] == (1.0 if heard and a not in knew else 0.0)
            if heard:
                knew.add(a)
            assert (infos[a]["message"] is not None) == (a in knew)
        assert speakers <= knew
    assert len(knew) > 1


def test_no_task_means_zero_rewards_and_no_terminations():
    env = crowded_grid(None)
    _, infos = env.reset(seed=0)
    assert "goal" not in infos[env.possible_agents[0]]
    while env.agents:
        _, rewards, terms, _, _ = env.step({a: 4 for a in env.ready_agents()})
        assert set(rewards.values()) <= {0.0} and not any(terms.values())
    assert set(env.returns.values()) == {0.0}


def test_bad_tasks_are_config_errors():
    with pytest.raises(me.ConfigError, match="unknown task 'fetch'"):
        crowded_grid("fetch")
    with pytest.raises(me.ConfigError, match="n_features"):
        crowded_grid(object())
    with pytest.raises(me.ConfigError, match="obs_type"):
        me.make("grid", agents=2, obs_type="pixels")
    with pytest.raises(me.ConfigError, match="rendezvous needs at least 2"):
        me.make("grid", agents=1, task="rendezvous").reset(seed=0)


# -- the mutation check ------------------------------------------------------------------------

class RaceEpisode(GotoEpisode):
    """Goto where the first agent to arrive gets 2.0: it reads other agents' outcomes, which is
    not a function of the agent's own view (the mistake the View contract exists to prevent)."""

    def evaluate(self, view: View) -> Outcome:
        out = super().evaluate(view)
        if out.terminated and len(self.arrived) == 1:
            return Outcome(2.0, True)
        return out


@dataclass(frozen=True)
class Race(Goto):
    name: str = "goto"

    def start(self, setup):
        ep = super().start(setup)
        return RaceEpisode(ep.world, ep.goals)


def test_a_task_reading_other_agents_outcomes_is_caught():
    # a roomy map, where agents far apart run many steps apart
    env = me.make(me.open_grid(60, 40), agents=12, radius_p=2, max_steps=60, task=Race())
    expected, _ = run_sync(env, 0)
    caught = sum(run_ooo(env, 0, Interleaving(seed=k, share=0.6, order="leaders", max_clusters=3))[0].seq
                 != expected.seq for k in range(6))
    assert caught > 0, "no interleaving exposed a task that reads other agents' outcomes"


def test_the_runtime_drives_task_agents_and_skips_terminated_ones():
    """The controller acts only for agents still in the episode (a terminated agent's stays are
    the env's), in every env-driven mode, with the same returns."""
    from metropolis_env.agents import ScriptedTaskAgent
    from metropolis_env.backends import EchoBackend
    from metropolis_env.runtime import run

    got = {}
    for mode in ("async", "sync", "single"):
        env = small_ville("goto", max_steps=120)
        agents = {a: ScriptedTaskAgent(env, a) for a in env.possible_agents}
        m = run(env, agents, EchoBackend(), mode, seed=3)
        assert all(env.terminated(a) for a in env.possible_agents)
        assert m.agent_steps < len(env.possible_agents) * env.max_steps  # nobody acted once terminated
        got[mode] = env.returns
    assert got["async"] == got["sync"] == got["single"] == dict.fromkeys(got["sync"], 1.0)
