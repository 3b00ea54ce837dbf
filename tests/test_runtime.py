"""The controller under the virtual clock: analytic timings, modes, ledger, errors."""

from __future__ import annotations

import asyncio

import pytest

import metropolis_env as me
from metropolis_env import clock
from metropolis_env.backends.base import Backend, LLMResponse
from metropolis_env.backends.echo import EchoBackend
from metropolis_env.runtime import AgentStepError, Controller, run


class LatencyBackend(Backend):
    """Test double: each call takes latency[agent](step) virtual seconds."""

    virtual_time = True

    def __init__(self, latency):
        self.latency = latency

    async def complete(self, request):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.sleep(self.latency[request.agent](request.step))
        return LLMResponse("", 1, 1, t0, loop.time())


class OneCall:
    """Makes one LLM call per step, then stays (or walks toward `target`, reading what it
    perceives: it waits a step whenever it sees an odd number of others, so an observation
    from the wrong time changes its walk)."""

    def __init__(self, env=None, name=None, target=None):
        self.env, self.name, self.target = env, name, target
        self.starts: list[tuple[int, float]] = []
        self.waits = 0

    async def act(self, obs, ctx):
        self.starts.append((ctx.step, asyncio.get_running_loop().time()))
        await ctx.llm.complete("x")
        if self.target is None:
            return 4  # stay (max_vel=1: 3x3 offsets, the middle)
        if len(obs["perceived"]) % 2:
            self.waits += 1
            return 4
        return self.env.move_to(self.name, self.target)


def _grid_env(agents, max_steps, **kw):
    return me.make("grid", agents=agents, width=120, height=12, max_steps=max_steps, **kw)


def _run(env, agents, backend, mode, **kw):
    c = Controller(env, agents, backend, mode, **kw)
    return clock.run(c.run(), virtual=True), c


LA = [1.0, 2.0, 1.0, 3.0]
LB = [3.0, 1.0, 2.0, 1.0]


def _far_pair():
    env = _grid_env({"A": (0, 0), "B": (100, 0)}, max_steps=4)
    lat = {"A": lambda t: LA[t], "B": lambda t: LB[t]}
    return env, lat


def test_sync_time_is_sum_of_per_step_maxima():
    env, lat = _far_pair()
    m, _ = _run(env, {"A": OneCall(), "B": OneCall()}, LatencyBackend(lat), "sync")
    assert m.completion_time_s == pytest.approx(sum(max(a, b) for a, b in zip(LA, LB)))


def test_async_time_of_independent_agents_is_max_of_sums():
    env, lat = _far_pair()
    m, _ = _run(env, {"A": OneCall(), "B": OneCall()}, LatencyBackend(lat), "async")
    assert m.completion_time_s == pytest.approx(max(sum(LA), sum(LB)))
    assert m.deps_per_agent_step == pytest.approx(1.0)


def test_single_time_is_sum_of_all_latencies():
    env, lat = _far_pair()
    m, _ = _run(env, {"A": OneCall(), "B": OneCall()}, LatencyBackend(lat), "single")
    assert m.completion_time_s == pytest.approx(sum(LA) + sum(LB))
    assert m.parallelism == pytest.approx(1.0)


def test_parallelism_is_time_weighted_outstanding_requests():
    env, lat = _far_pair()
    m, _ = _run(env, {"A": OneCall(), "B": OneCall()}, LatencyBackend(lat), "async")
    # both agents' calls run back to back: total busy request-seconds over completion time
    assert m.parallelism == pytest.approx((sum(LA) + sum(LB)) / max(sum(LA), sum(LB)))


def test_blocked_agent_starts_exactly_when_its_blocker_commits():
    # 6 tiles apart, radius_p 4, max_vel 1: not coupled (6 > 5), but one step ahead is blocked (6 <= 6).
    env = _grid_env({"A": (10, 5), "B": (16, 5)}, max_steps=2)
    lat = {"A": lambda t: 1.0, "B": lambda t: 5.0}
    agents = {"A": OneCall(), "B": OneCall()}
    _run(env, agents, LatencyBackend(lat), "async")
    assert agents["A"].starts == [(0, 0.0), (1, 5.0)]


def test_coupled_pair_never_drifts_apart():
    env = _grid_env({"A": (10, 5), "B": (14, 5)}, max_steps=6)
    lat = {"A": lambda t: 1.0, "B": lambda t: 4.0 if t % 2 else 0.5}
    gaps = []
    _run(env, {"A": OneCall(), "B": OneCall()}, LatencyBackend(lat), "async",
         on_commit=lambda a, s, act: gaps.append(abs(env.agent_step("A") - env.agent_step("B"))))
    assert gaps and max(gaps) == 0


def test_every_step_committed_exactly_once_in_every_mode():
    for mode in ("async", "sync", "single"):
        env = me.make("the_ville", agents=12, max_steps=15, seed=3)
        seen: dict[tuple[str, int], int] = {}
        agents = {a: OneCall(env, a, (72, 14)) for a in env.possible_agents}

        def count(a, s, act):
            seen[(a, s)] = seen.get((a, s), 0) + 1

        m, c = _run(env, agents, EchoBackend(), mode, on_commit=count)
        assert set(seen) == {(a, s) for a in env.possible_agents for s in range(15)}
        assert set(seen.values()) == {1}
        assert m.agent_steps == 12 * 15 and m.llm_calls == 12 * 15
        assert c.committed == {a: 15 for a in env.possible_agents}


def test_modes_give_identical_trajectories():
    finals = {}
    for mode in ("async", "sync", "single"):
        env = me.make("the_ville", agents=15, max_steps=25, seed=1)
        agents = {a: OneCall(env, a, (50 + i, 60)) for i, a in enumerate(env.possible_agents)}
        traj = []
        m, _ = _run(env, agents, EchoBackend(), mode,
                    on_commit=lambda a, s, act: traj.append((a, s, env.positions[a])))
        finals[mode] = sorted(traj)
        # the agents met (what they perceived steered them) and async really ran out of order
        assert sum(agent.waits for agent in agents.values()) > 0
        if mode == "async":
            assert m.step_spread_max > 0
    assert finals["async"] == finals["sync"] == finals["single"]


def test_max_clusters_caps_calls_in_flight():
    env = me.make("grid", agents=8, width=200, height=200, max_steps=5, seed=0)
    m, _ = _run(env, {a: OneCall() for a in env.possible_agents}, EchoBackend(), "async", max_clusters=2)
    assert 0 < m.parallelism <= 2.0 + 1e-9


class Failing:
    async def act(self, obs, ctx):
        if ctx.step == 3:
            raise ValueError("model said something unparseable")
        await ctx.llm.complete("x")
        return 4


def test_failing_agent_step_names_agent_and_step():
    env = _grid_env({"A": (0, 0), "B": (100, 0)}, max_steps=6)
    with pytest.raises(AgentStepError, match=r"'A' failed at step 3.*unparseable"):
        _run(env, {"A": Failing(), "B": OneCall()}, EchoBackend(), "async")


def test_oracle_and_nodep_run_every_step():
    env = _grid_env({"A": (0, 0), "B": (2, 0), "C": (100, 0)}, max_steps=4)
    lat = {"A": lambda t: [1.0, 1.0, 1.0, 5.0][t], "B": lambda t: 3.0, "C": lambda t: 2.0}
    agents = {a: OneCall() for a in "ABC"}
    # A reads B every step: A's step t waits for B's step t-1 (B commits at 3, 6, 9, 12).
    m, c = _run(env, agents, LatencyBackend(lat), "oracle", dependencies=lambda i, t: [1] if i == 0 else [])
    assert c.committed == {"A": 4, "B": 4, "C": 4}
    assert agents["A"].starts == [(0, 0.0), (1, 3.0), (2, 6.0), (3, 9.0)]
    assert m.completion_time_s == pytest.approx(14.0)
    m2, _ = _run(env, {a: OneCall() for a in "ABC"}, LatencyBackend(lat), "nodep")
    assert m2.completion_time_s == pytest.approx(12.0)  # B alone: 4 x 3 s


def test_ready_queue_pops_smallest_step_or_first_ready():
    from metropolis_env.runtime.scheduling import ready_queue

    entries = [(5, 0, "a"), (2, 1, "b"), (7, 2, "c"), (2, 0, "d")]
    by_step, by_arrival = ready_queue("step"), ready_queue("arrival")
    for e in entries:
        by_step.push(e)
        by_arrival.push(e)
    assert [by_step.pop() for _ in entries] == sorted(entries)
    assert [by_arrival.pop() for _ in entries] == entries
    assert not by_step and not by_arrival
    with pytest.raises(me.ConfigError, match="unknown ready-queue order 'lifo'"):
        ready_queue("lifo")


def test_ready_order_changes_the_dispatch_under_a_cap_and_never_the_trajectories():
    lat = {f"agent_{i:03d}": (lambda t, i=i: 1.0 + ((i * 7 + t * 3) % 5)) for i in range(15)}
    finals, dispatched = {}, {}
    for mode, order in (("sync", "step"), ("async", "step"), ("async", "arrival")):
        env = me.make("the_ville", agents=15, max_steps=25, seed=1)
        agents = {a: OneCall(env, a, (50 + i, 60)) for i, a in enumerate(env.possible_agents)}
        traj = []
        _, c = _run(env, agents, LatencyBackend(lat), mode, max_clusters=3, ready_order=order,
                    on_commit=lambda a, s, act: traj.append((a, s, env.positions[a])))
        assert c.policy.ready.order == order
        finals[(mode, order)] = sorted(traj)
        dispatched[(mode, order)] = sorted((t, s, a) for a, ag in agents.items() for s, t in ag.starts)
    assert finals[("async", "arrival")] == finals[("async", "step")] == finals[("sync", "step")]
    assert dispatched[("async", "arrival")] != dispatched[("async", "step")]


def test_unknown_mode_and_missing_agents_are_clear_errors():
    env = _grid_env({"A": (0, 0)}, max_steps=2)
    with pytest.raises(me.ConfigError, match="unknown mode"):
        Controller(env, {"A": OneCall()}, EchoBackend(), "turbo")
    with pytest.raises(me.ConfigError, match="no Agent given"):
        Controller(env, {}, EchoBackend(), "async")
    with pytest.raises(me.ConfigError, match="oracle"):
        Controller(env, {"A": OneCall()}, EchoBackend(), "oracle")


def test_run_helper_uses_virtual_clock_for_simulated_backends():
    env = _grid_env({"A": (0, 0)}, max_steps=3)
    m = run(env, {"A": OneCall()}, EchoBackend(base_s=100.0, per_token_s=0.0), "async")
    assert m.completion_time_s == pytest.approx(300.0)
    assert m.wall_time_s < m.completion_time_s
