"""Agent-steps on Ray actors: same trajectories as the local runtime, and no step lost or
committed twice when an actor dies mid-run.

Agents here make real-time LLM calls (EchoBackend(virtual=False), a few ms each) whose answers and
what the agent perceives decide its moves, so any wrong observation, lost state or repeated step
shows up in the trajectories.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

import metropolis_env as me
from metropolis_env.backends.echo import EchoBackend
from metropolis_env.runtime import AgentStepError, Controller
from metropolis_env.runtime.executors import RayExecutor

from extras import import_or_skip

AGENTS, STEPS = 8, 12
BACKEND = functools.partial(EchoBackend, base_s=0.002, per_token_s=0.0005, virtual=False)


def _canon(x):
    if isinstance(x, dict):
        return tuple(sorted((k, _canon(v)) for k, v in x.items()))
    if isinstance(x, (list, tuple)):
        return tuple(_canon(v) for v in x)
    if isinstance(x, np.ndarray):
        return tuple(x.ravel().tolist())
    if isinstance(x, np.generic):
        return x.item()
    return x


def _hash(*parts) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little")


class Walker:
    """Deterministic in (name, observations, LLM answers): asks the LLM 0-2 times about what it
    sees, picks a legal move and an utterance from the answers, and keeps every observation."""

    def __init__(self, name: str):
        self.name = name
        self.history: list[tuple] = []  # (step, canonical observation) per step acted

    async def act(self, obs, ctx):
        seen = _canon(obs)
        h = _hash(self.name, seen, len(self.history))
        text = ""
        for _ in range(h % 3):  # some steps make no call: the eager path
            text += (await ctx.llm.complete(f"{self.name} {h} {text}", max_tokens=6)).text
        self.history.append((ctx.step, seen))
        legal = np.flatnonzero(obs["action_mask"])
        g = _hash(h, text)
        return {"move": int(legal[g % len(legal)]), "utterance": f"{text[:12]} {g % 97}",
                "activity": "walking"}


class DictWalker(Walker):
    """The same walker, snapshotted through state_dict() instead of a pickle of itself."""

    def state_dict(self):
        return list(self.history)

    def load_state_dict(self, state):
        self.history = list(state)


class CrashingWalker(Walker):
    """Agent `crash_agent` kills its worker process in the middle of step `crash_step` (after an
    LLM call), the first time only: the marker file outlives the process."""

    def __init__(self, name, crash_agent, crash_step, marker):
        super().__init__(name)
        self.crash = (crash_agent, crash_step)
        self.marker = marker

    async def act(self, obs, ctx):
        if (ctx.agent, ctx.step) == self.crash and not os.path.exists(self.marker):
            await ctx.llm.complete("about to die", max_tokens=2)
            open(self.marker, "w").close()
            os._exit(1)
        return await super().act(obs, ctx)


class Failing(Walker):
    async def act(self, obs, ctx):
        if ctx.step == 4:
            raise ValueError("the model answered nonsense")
        return await super().act(obs, ctx)


@pytest.fixture(scope="module")
def ray():
    ray = import_or_skip("ray", "Ray is an optional extra: pip install 'metropolis-env[ray]'")
    # The agent classes live in this test module, which the workers cannot import.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _env():
    # A small open map: agents meet, form clusters and block each other.
    return me.make("grid", agents=AGENTS, width=20, height=20, max_steps=STEPS, seed=0)


def _run(agent_cls=Walker, mode="async", executor=None, on_commit=None, **agent_kw):
    env = _env()
    agents = {a: agent_cls(a, **agent_kw) for a in env.possible_agents}
    ledger: list[tuple[str, int, object]] = []

    def commit(a, s, act):
        ledger.append((a, s, _canon(act)))
        if on_commit is not None:
            on_commit(a, s, act)

    c = Controller(env, agents, None if executor else BACKEND(), mode, executor=executor,
                   on_commit=commit, record_calls=True)
    m = asyncio.run(c.run())
    return {"metrics": m, "ledger": ledger, "positions": env.positions, "committed": c.committed,
            "history": {a: ag.history for a, ag in c.agents.items()},
            "actions": {(a, s): act for a, s, act in ledger}}


@pytest.fixture(scope="module")
def local():
    return _run()


def _assert_same_run(got, want):
    keys = collections.Counter((a, s) for a, s, _ in got["ledger"])
    assert set(keys) == {(a, s) for a in want["committed"] for s in range(STEPS)}
    assert set(keys.values()) == {1}, "a step was committed twice"
    assert got["committed"] == {a: STEPS for a in want["committed"]}
    assert got["actions"] == want["actions"]
    assert got["history"] == want["history"]
    assert got["positions"] == want["positions"]


def test_ray_run_equals_local_run(ray, local):
    ex = RayExecutor(num_actors=2, backend_factory=BACKEND)
    got = _run(executor=ex)
    _assert_same_run(got, local)
    m, lm = got["metrics"], local["metrics"]
    assert (m.agent_steps, m.llm_calls, m.tokens_in, m.tokens_out) == (lm.agent_steps, lm.llm_calls,
                                                                      lm.tokens_in, lm.tokens_out)
    assert m.backend["calls"] == lm.llm_calls  # the calls were made inside the actors
    assert m.backend["actors"] == 2 and ex.restarts == 0
    assert len(m.calls) == m.llm_calls and m.parallelism > 0
    assert ex.actors == []  # stopped


def test_sync_mode_on_ray_equals_local_async(ray, local):
    got = _run(mode="sync", executor=RayExecutor(num_actors=2, backend_factory=BACKEND))
    _assert_same_run(got, local)


def test_actor_killed_mid_run_loses_and_repeats_no_step(ray, local):
    ex = RayExecutor(num_actors=2, backend_factory=BACKEND)
    killed = []

    def kill_busy_actor(agent, step, action):
        # After some commits, kill an actor while it has agent-steps in flight.
        if not killed and len(ledger_len) >= 20:
            busy = [k for k in range(2) if ex.inflight(k) > 0]
            if busy:
                killed.append(busy[0])
                ray.kill(ex.actors[busy[0]], no_restart=True)
        ledger_len.append(1)

    ledger_len: list[int] = []
    got = _run(executor=ex, on_commit=kill_busy_actor)
    assert killed and ex.restarts == 1
    _assert_same_run(got, local)


def test_worker_dying_inside_a_step_reruns_it_from_committed_state(ray, local, tmp_path):
    ex = RayExecutor(num_actors=2, backend_factory=BACKEND)
    got = _run(CrashingWalker, executor=ex, crash_agent="agent_003", crash_step=5,
               marker=str(tmp_path / "crashed"))
    assert (tmp_path / "crashed").exists()
    assert ex.restarts == 1 and ex.reruns >= 1  # the crashing step ran again, on the replacement
    _assert_same_run(got, local)


def test_state_dict_agents_survive_actor_death(ray, local, tmp_path):
    ex = RayExecutor(num_actors=2, backend_factory=BACKEND)
    state = {"n": 0}

    def kill_once(agent, step, action):
        state["n"] += 1
        if state["n"] == 30:
            ray.kill(ex.actors[ex.slot_of(agent)], no_restart=True)

    got = _run(DictWalker, executor=ex, on_commit=kill_once)
    assert ex.restarts == 1
    _assert_same_run(got, local)


def test_failing_agent_on_ray_names_agent_and_step(ray):
    ex = RayExecutor(num_actors=2, backend_factory=BACKEND)
    with pytest.raises(AgentStepError, match=r"failed at step 4.*nonsense"):
        _run(Failing, executor=ex)
    assert ex.actors == []


def test_executor_configuration_errors_are_clear(tmp_path):
    from metropolis_env.runtime.checkpoint import Checkpointer

    with pytest.raises(me.ConfigError, match="backend_factory"):
        RayExecutor(num_actors=2)
    with pytest.raises(me.ConfigError, match="num_actors"):
        RayExecutor(num_actors=0, backend_factory=BACKEND)
    env = _env()
    agents = {a: Walker(a) for a in env.possible_agents}
    with pytest.raises(me.ConfigError, match="backend"):
        Controller(env, agents, None)
    with pytest.raises(me.ConfigError, match="checkpoint"):
        Controller(env, agents, None, executor=RayExecutor(backend_factory=BACKEND),
                   checkpoint=Checkpointer(tmp_path, BACKEND))


def test_bench_refuses_ray_with_the_virtual_clock_simulator():
    from metropolis_env.bench.runner import BenchConfig
    from metropolis_env.cli import main

    with pytest.raises(me.ConfigError, match="--executor ray"):
        BenchConfig.of(executor="ray", backend="sim").validate()
    assert main(["bench", "--executor", "ray", "--backend", "sim", "--no-progress"]) == 2


def test_package_import_does_not_import_ray():
    code = ("import sys, metropolis_env, metropolis_env.runtime, metropolis_env.runtime.executors; "
            "sys.exit(1 if 'ray' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_stop_reports_one_entry_per_actor_when_close_times_out():
    """stats answers and close times out: still one per-actor entry (was two for that actor)."""

    class Timeout:
        def remote(self):
            async def never():
                raise asyncio.TimeoutError
            return never()

    class Answer:
        def __init__(self, value):
            self.value = value

        def remote(self):
            async def answer():
                return self.value
            return answer()

    class Handle:
        def __init__(self, served, close):
            self.stats, self.close = Answer({"served": served}), close

    class FakeRay:
        class exceptions:
            RayTaskError = RuntimeError

        killed: list = []

        def kill(self, handle, no_restart):
            self.killed.append(handle)

    ex = RayExecutor(backend_factory=BACKEND)
    ex._ray, ex._died = FakeRay(), (ConnectionError,)
    ex._handles = [Handle(3, Timeout()), Handle(4, Answer(None))]
    stats = asyncio.run(ex.stop())
    assert stats["per_actor"] == [{"served": 3}, {"served": 4}]
    assert stats["served"] == 7 and stats["actors"] == 2
