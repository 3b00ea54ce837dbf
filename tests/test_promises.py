"""What trace agents may promise (workloads/promises.py): whole sleeping and conversation runs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from metropolis_env.workloads import load_workload
from metropolis_env.workloads.promises import promise_ends


@pytest.fixture(scope="module")
def day():
    return load_workload("genagents-day", agents=25)


def _key(trace, a: int, t: int):
    """What the step belongs to: a conversation, a sleeping activity, or another activity."""
    p = int(trace.partner[a, t])
    if p >= 0:
        return ("chat", p)
    name = trace.activities[int(trace.activity[a, t])]
    return ("sleep", name) if "sleeping" in name else ("other", name)


def test_promises_cover_whole_sleeping_and_conversation_runs_and_settled_stays(day):
    ends = promise_ends(day)
    assert ends.shape == (25, day.n_steps)
    starts = np.argwhere(ends >= 0)
    rng = np.random.default_rng(0)
    kinds = set()
    for a, t in starts[rng.choice(len(starts), 300, replace=False)]:
        e = int(ends[a, t])
        key = _key(day, a, t)
        kinds.add(key[0])
        assert e >= t and all(_key(day, a, u) == key for u in range(t, e + 1))
        assert e == day.n_steps - 1 or _key(day, a, e + 1) != key  # to the end of the run
        if key[0] == "other":
            # settled: on one tile from t to e, having arrived at t
            tiles = {tuple(day.positions[a, u]) for u in range(t, e + 1)}
            assert len(tiles) == 1
            assert t == 0 or _key(day, a, t - 1) != key or tuple(day.positions[a, t - 1]) != tuple(day.positions[a, t])
        else:
            assert t == 0 or _key(day, a, t - 1) != key  # from the start of the run
    assert kinds == {"chat", "sleep", "other"}
    # every sleeping and conversation step is promised
    covered = np.zeros(ends.shape, dtype=bool)
    for a, t in starts:
        covered[a, t:ends[a, t] + 1] = True
    for a in range(25):
        for t in rng.choice(day.n_steps, 300, replace=False):
            if _key(day, a, int(t))[0] != "other":
                assert covered[a, t]


def test_a_window_starts_runs_in_progress_at_its_first_step(day):
    busy = day.window(12 * 360, 13 * 360)
    ends = promise_ends(busy)
    for a in range(25):
        if _key(busy, a, 0)[0] != "other":
            assert ends[a, 0] >= 0


def test_trace_agents_declare_their_promises_and_replay_faithfully():
    """A bench run with --lookahead: the env accepts every declared path (they are the trace's
    own tiles), the replay stays on the trace (trace agents check their tile every step), and
    the run makes the same calls with fewer tracker dependencies."""
    from metropolis_env.bench.runner import BenchConfig, load_trace, run_mode
    from metropolis_env.env import AsyncParallelEnv

    cfg = BenchConfig(agents=25, window="busy", gpus=8, steps=60, bound="map", rules="versioned",
                      progress=False, lower_bounds=False)
    trace = load_trace(cfg)
    declared = []
    step = AsyncParallelEnv.step

    def counting(self, actions):
        declared.extend(a for a, act in actions.items() if isinstance(act, dict) and "path" in act)
        return step(self, actions)
    AsyncParallelEnv.step = counting
    try:
        plain = run_mode(trace, cfg, "async")
        assert not declared
        ahead = run_mode(trace, replace(cfg, lookahead="persona"), "async")
        ends = promise_ends(trace)
        assert len(declared) == int(((ends >= 0) & (ends > np.arange(trace.n_steps))).sum())
        declared.clear()
        seer = run_mode(trace, replace(cfg, lookahead="clairvoyant"), "async")
    finally:
        AsyncParallelEnv.step = step
    assert sorted(declared) == sorted(trace.agents)  # each its whole future, once
    assert ahead.llm_calls == plain.llm_calls == seer.llm_calls
    assert ahead.deps_per_agent_step < plain.deps_per_agent_step


def test_lookahead_needs_the_versioned_rules():
    from metropolis_env.bench.runner import BenchConfig
    from metropolis_env.errors import ConfigError

    with pytest.raises(ConfigError, match="--rules versioned"):
        BenchConfig(lookahead="persona").validate()
    with pytest.raises(ConfigError, match="unknown lookahead 'psychic'"):
        BenchConfig(lookahead="psychic", rules="versioned").validate()
