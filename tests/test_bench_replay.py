"""Trace replay for the benchmark: the env's "position" observations, the precomputed trace
agents, and runs whose results do not depend on either."""

from __future__ import annotations

import asyncio
import dataclasses
import pickle

import numpy as np
import pytest

from metropolis_env.bench.replay import TraceAgent, trace_agents, trace_env
from metropolis_env.bench.runner import BenchConfig, load_trace, run_mode
from metropolis_env.errors import ConfigError, MetropolisError
from metropolis_env.runtime.agent import StepContext


@pytest.fixture(scope="module")
def trace():
    return load_trace(BenchConfig.of(agents=25, window="busy", steps=30))


def _drive(env, seed=0):
    """Every step's (observations, infos), driving all ready agents with the same moves."""
    obs, infos = env.reset(seed=seed)
    out = [(obs, infos)]
    rng = np.random.default_rng(1)
    while obs:
        live = [a for a in obs if a in env.agents and env.is_ready(a)]
        if not live:
            break
        acts = {a: int(rng.integers(0, 9)) for a in live}
        obs, _, _, truncs, infos = env.step(acts)
        out.append((obs, infos))
        obs = {a: o for a, o in obs.items() if not truncs[a]}
    return out


def test_observation_mode_defaults_to_full_and_rejects_unknown_modes(trace):
    env = trace_env(trace)
    assert env.observation_mode == "position"
    env.observation_mode = "full"
    assert env.observation_mode == "full"
    with pytest.raises(ConfigError, match="observation_mode"):
        env.observation_mode = "lazy"
    from metropolis_env import make

    assert make(agents=3, seed=0).observation_mode == "full"


def test_position_observations_are_the_full_observations_tiles(trace):
    full, pos = trace_env(trace), trace_env(trace)
    full.observation_mode = "full"
    a, b = _drive(full), _drive(pos)
    assert len(a) == len(b) > 1
    for (obs_f, info_f), (obs_p, info_p) in zip(a, b):
        assert list(obs_f) == list(obs_p)
        assert info_f == info_p
        for name, o in obs_f.items():
            assert obs_p[name] == tuple(int(x) for x in o["position"])
            assert type(obs_p[name]) is tuple
    # the same world afterwards
    assert full.positions == pos.positions and full.stats == pos.stats


def test_observe_hands_out_what_step_did_in_both_modes_mid_run(trace):
    full, pos = trace_env(trace), trace_env(trace)
    full.observation_mode = "full"
    full.reset(seed=0)
    pos.reset(seed=0)
    rng = np.random.default_rng(2)
    handed, handed_tiles = {}, {}
    for _ in range(4):  # a few calls on a subset of the ready agents, the same in both
        acts = {a: int(rng.integers(0, 9)) for a in full.ready_agents()[:8]}
        got, *_ = full.step(acts)
        tiles, *_ = pos.step(acts)
        handed.update(got)
        handed_tiles.update(tiles)
    ready = pos.ready_agents()
    assert ready == full.ready_agents() and set(ready) & set(handed)
    assert any(pos.agent_step(a) > 0 for a in ready)  # mid-run, not the reset observation
    for a in set(ready) & set(handed):
        np.testing.assert_equal(full.observe(a), handed[a])
        assert pos.observe(a) == handed_tiles[a] == tuple(handed[a]["position"])
        assert pos.observation_space(a).contains(pos.observe(a))


def _act(agent, obs, step):
    class Recorder:
        def __init__(self):
            self.calls = []

        async def complete(self, prompt=None, **kw):
            self.calls.append((kw["input_tokens"], kw["output_tokens"]))

    llm = Recorder()
    action = asyncio.run(agent.act(obs, StepContext(agent.name, step, llm)))
    return action, llm.calls


def test_trace_agent_replays_the_traces_calls_and_moves(trace):
    agents = trace_agents(trace)
    offsets = {(0, -1): 1, (-1, 0): 3, (0, 0): 4, (1, 0): 5, (0, 1): 7}
    for i, name in enumerate(trace.agents[:5]):
        for t in range(trace.n_steps):
            here = tuple(int(v) for v in trace.positions[i, t])
            for obs in (here, {"position": np.array(here)}, {"step": t}, None):
                action, calls = _act(agents[name], obs, t)
                assert calls == trace.calls(i, t)
                nxt = trace.positions[i, t + 1] - trace.positions[i, t]
                assert action == {"move": offsets[(int(nxt[0]), int(nxt[1]))]}


def test_trace_agent_reports_a_diverged_replay(trace):
    agent = trace_agents(trace)[trace.agents[3]]
    x, y = (int(v) for v in trace.positions[3, 5])
    for obs in ((x + 1, y), {"position": np.array([x, y + 1])}):
        with pytest.raises(MetropolisError, match=r"diverged at step 5: env has it at .*, the trace at "
                                                  rf"\({x}, {y}\)"):
            _act(agent, obs, 5)
    _act(TraceAgent(trace, 3, check_position=False), (x + 1, y), 5)  # no check asked


def test_trace_agent_refuses_a_jump_larger_than_max_vel(trace):
    pos = trace.positions.copy()
    pos[2, 4:] += np.array([3, 0], dtype=pos.dtype)
    jumpy = dataclasses.replace(trace, positions=pos)
    with pytest.raises(MetropolisError, match="more than max_vel; the trace is not replayable"):
        _act(TraceAgent(jumpy, 2), None, 3)


def test_trace_agents_pickle(trace):
    agents = trace_agents(trace)
    back = pickle.loads(pickle.dumps(agents))
    t = 7
    for name in trace.agents[:3]:
        assert _act(back[name], None, t) == _act(agents[name], None, t)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_bench_results_do_not_depend_on_the_observation_mode(trace, mode, monkeypatch):
    cfg = BenchConfig.of(agents=25, window="busy", steps=30, progress=False, lower_bounds=False)
    fast = run_mode(trace, cfg, mode)
    import metropolis_env.bench.runner as runner

    def full_env(*a, **kw):
        env = trace_env(*a, **kw)
        env.observation_mode = "full"
        return env

    monkeypatch.setattr(runner, "trace_env", full_env)
    slow = run_mode(trace, cfg, mode)
    a, b = fast.to_dict(), slow.to_dict()
    for d in (a, b):
        d.pop("wall_time_s")
        d.pop("controller_us_per_agent_step")
    assert a == b
    assert fast.timeline == slow.timeline


def _comparable(result):
    out = {}
    for mode, m in result.runs.items():
        d = m.to_dict()
        d.pop("wall_time_s")
        d.pop("controller_us_per_agent_step")
        out[mode] = (d, m.timeline, m.calls)
    return out


def test_modes_in_worker_processes_give_the_sequential_results(trace):
    from metropolis_env.bench.runner import run_bench

    cfg = dict(agents=25, window="busy", steps=30, progress=False, lower_bounds=False, record_calls=True,
               modes=("sync", "async", "oracle"))
    seq = run_bench(BenchConfig.of(jobs=1, **cfg), trace=trace)
    par = run_bench(BenchConfig.of(jobs=2, **cfg), trace=trace)
    assert seq.jobs == 1 and par.jobs == 2
    assert list(par.runs) == ["sync", "async", "oracle"]
    assert _comparable(par) == _comparable(seq)


def test_worker_count(monkeypatch):
    assert BenchConfig.of(modes=("sync",), jobs=4).worker_count() == 1
    assert BenchConfig.of(modes=("sync", "async"), jobs=4).worker_count() == 2
    assert BenchConfig.of(modes=("sync", "async", "oracle"), jobs=1).worker_count() == 1
    # by default one per mode, up to the CPUs this process may use
    from metropolis_env.bench import config

    monkeypatch.setattr(config, "_usable_cpus", lambda: 1)
    assert BenchConfig.of(modes=("sync", "async")).worker_count() == 1
    monkeypatch.setattr(config, "_usable_cpus", lambda: 16)
    assert BenchConfig.of(modes=("sync", "async", "oracle")).worker_count() == 3
    # real servers: modes one after another, whatever the default
    assert BenchConfig.of(modes=("sync", "async"), backend="openai", base_urls=("http://x",)).worker_count() == 1
    with pytest.raises(ConfigError, match="only the simulated backend"):
        BenchConfig.of(modes=("sync", "async"), backend="openai", base_urls=("http://x",), jobs=2).validate()
    with pytest.raises(ConfigError, match="jobs must be >= 1"):
        BenchConfig.of(jobs=0).validate()


def test_a_failing_mode_in_a_worker_is_a_clear_error(trace):
    from metropolis_env.bench.runner import run_bench

    pos = trace.positions.copy()
    pos[2, 4:] += np.array([3, 0], dtype=pos.dtype)
    jumpy = dataclasses.replace(trace, positions=pos)
    cfg = BenchConfig.of(agents=25, window="busy", steps=30, progress=False, lower_bounds=False,
                         modes=("sync", "async"), jobs=2)
    with pytest.raises(MetropolisError, match="AgentStepError: .*not replayable"):
        run_bench(cfg, trace=jumpy)


def test_cli_jobs_flag(tmp_path, capsys):
    import json

    from metropolis_env.cli import main

    out = tmp_path / "r.json"
    assert main(["bench", "--steps", "5", "--modes", "sync,async", "--jobs", "2", "--no-progress",
                 "--no-bounds", "--json", str(out)]) == 0
    assert "mode workers run side by side" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["jobs"] == 2 and data["config"]["jobs"] == 2
    assert main(["bench", "--jobs", "0", "--no-progress"]) == 2


def test_move_only_actions_are_checked_as_before():
    from metropolis_env import make
    from metropolis_env.errors import InvalidActionError

    env = make(agents=2, seed=0)
    env.reset(seed=0)
    a = env.ready_agents()[0]
    for bad in ({"move": True}, {"move": 9}, {"move": -1}, {"move": 2.0}, {"mvoe": 1}):
        with pytest.raises(InvalidActionError):
            env.step({a: bad})
    assert env.agent_step(a) == 0
    before = env.positions[a]
    env.step({a: {"move": np.int64(4)}})  # numpy ints still count (4 stays)
    assert env.positions[a] == before


def test_bench_runs_restore_the_garbage_collector(trace):
    import gc

    cfg = BenchConfig.of(agents=25, window="busy", steps=5, progress=False, lower_bounds=False)
    before = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    run_mode(trace, cfg, "async")
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    gc.freeze()  # a caller's frozen objects stay frozen
    try:
        run_mode(trace, cfg, "sync")
        assert gc.get_threshold() == before and gc.get_freeze_count() > 0  # not unfrozen
    finally:
        gc.unfreeze()
