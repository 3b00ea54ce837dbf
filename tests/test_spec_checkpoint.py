"""Speculation with checkpointing: a speculative run interrupted at any commit and resumed from
its last checkpoint equals the sync run; a checkpoint holds committed state only."""

from __future__ import annotations

import functools
import pickle

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from metropolis_env import clock
from metropolis_env.runtime import Controller
from metropolis_env.runtime.checkpoint import CHECKPOINT, Checkpointer, load, restore
from metropolis_env.runtime.resume import resume
from metropolis_env.runtime import speculation
from metropolis_env.runtime.speculation import Speculation
from test_speculation import JitterBackend, Perceiver, _env


class Crash(BaseException):
    """Stands in for the process dying: nothing after it runs, no checkpoint is written on the
    way out (only AgentStepError saves one)."""


def _final(env, agents) -> tuple:
    return dict(env.positions), dict(env.steps), {a: list(ag.memory) for a, ag in agents.items()}


_SYNC: dict = {}


def _sync(world: str, rules: str) -> tuple:
    if (world, rules) not in _SYNC:
        env = _env(world, rules)
        c = Controller(env, {a: Perceiver(a) for a in env.possible_agents}, JitterBackend(0), "sync")
        clock.run(c.run(), virtual=True)
        _SYNC[world, rules] = _final(env, c.agents)
    return _SYNC[world, rules]


def _interrupted(run_dir, world, rules, seed, depth, every, crash_at):
    """A checkpointed speculative run that dies at its `crash_at`-th commit (or finishes);
    returns the controller (None if it died)."""
    env = _env(world, rules)
    ck = Checkpointer(run_dir, functools.partial(JitterBackend, seed), every=every)
    commits = 0

    def die(agent, step, action):
        nonlocal commits
        commits += 1
        if commits == crash_at:
            raise Crash

    c = Controller(env, {a: Perceiver(a) for a in env.possible_agents}, ck.build_backend(), "async",
                   checkpoint=ck, on_commit=die, speculation=Speculation(depth=depth))
    try:
        clock.run(c.run(), virtual=True)
    except Crash:
        return None
    return c


@pytest.mark.parametrize("world,rules", [("grid", "versioned"), ("the_ville", "paper")])
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), depth=st.sampled_from([1, 2, 4]), every=st.integers(1, 9),
       crash_at=st.integers(10, 80))
def test_interrupted_and_resumed_speculative_run_equals_sync(tmp_path_factory, world, rules, seed, depth, every,
                                                            crash_at):
    run_dir = tmp_path_factory.mktemp("run")
    assert _interrupted(run_dir, world, rules, seed, depth, every, crash_at) is None  # died mid-run
    assume((run_dir / CHECKPOINT).exists())  # it died after its first checkpoint
    saved = load(run_dir)
    assert saved["speculation"] == {"depth": depth, "max_inflight": "auto", "horizon": speculation.HORIZON,
                                    "reuse": True, "settle": speculation.SETTLE, "busy_at": None}
    m = resume(run_dir)
    assert m.spec_hit_rate is None or 0 <= m.spec_hit_rate <= 1  # the resumed part speculates again
    state = load(run_dir)
    assert _final(state["env"], state["agents"]) == _sync(world, rules)


@pytest.mark.parametrize("world,rules", [("grid", "versioned"), ("the_ville", "paper")])
def test_checkpoints_hold_committed_state_only_and_speculation_is_used(tmp_path, world, rules):
    """Every checkpoint taken during a speculative run (one per commit) holds agents exactly as
    the sync run had them after their committed steps: never a held copy ahead of the ledger,
    never an agent halfway through a step. Across seeds, held steps were adopted."""
    env0 = _env(world, rules)
    ref = {a: Perceiver(a) for a in env0.possible_agents}
    clock.run(Controller(env0, ref, JitterBackend(0), "sync").run(), virtual=True)
    hits = 0
    for seed in range(6):
        run_dir = tmp_path / str(seed)
        env = _env(world, rules)
        ck = Checkpointer(run_dir, functools.partial(JitterBackend, seed), every=1)
        checked = 0

        def check(agent, step, action):
            nonlocal checked
            if not (run_dir / CHECKPOINT).exists():
                return  # before the first save
            with open(run_dir / CHECKPOINT, "rb") as f:  # as a resumed run would read it
                state = pickle.load(f)
            agents = dict(state["agents"])
            agents.update({n: restore(data, state["env"]) for n, data in state["snapshots"].items()})
            assert set(agents) == set(ref)
            for name, ag in agents.items():
                assert ag.memory == ref[name].memory[:state["committed"][name]], name
            checked += 1

        c = Controller(env, {a: Perceiver(a) for a in env.possible_agents}, ck.build_backend(), "async",
                       checkpoint=ck, on_commit=check, speculation=Speculation(depth=3))
        m = clock.run(c.run(), virtual=True)
        assert checked > 0
        hits += m.spec_hit_rate is not None and m.spec_hit_rate > 0
    assert hits


def test_speculation_with_the_ray_executor_stays_a_clear_error():
    from metropolis_env.errors import ConfigError

    class FakeExecutor:
        inline = False

    env = _env("grid", "paper")
    with pytest.raises(ConfigError, match="in this process only"):
        Controller(env, {a: Perceiver(a) for a in env.possible_agents}, None, "async",
                   executor=FakeExecutor(), speculation=Speculation())


def test_depth_1_agents_reading_their_tile_from_the_env_equal_sync():
    """The depth-1 contract: an agent may read its own tile from the env (env.move_to). A held
    step adopted while still computing is committed before the chain's next step runs."""
    import ckpt_job

    def final(mode, speculation=None):
        env, agents = ckpt_job.build()  # Walker: env.move_to
        c = Controller(env, agents, ckpt_job.backend_factory(), mode, seed=7, speculation=speculation)
        clock.run(c.run(), virtual=True)
        return dict(env.positions), {a: ag.history for a, ag in c.agents.items()}

    assert final("async", Speculation(depth=1)) == final("sync")
