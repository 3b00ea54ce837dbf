"""What trace agents may promise (workloads/promises.py): only what their plans said when they
declared it, and only what they keep."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from metropolis_env.workloads import apply_window, load_workload
from metropolis_env.workloads.plans import Plans
from metropolis_env.workloads.promises import ROUTE, declaration, declared, persona_promises, plan_ahead


@pytest.fixture(scope="module")
def day():
    return load_workload("genagents-day", agents=25)


def kept(trace, a: int, promises) -> int:
    """Check agent a's promises (Declared, in order) against what the trace did, as the env
    enforces them (docs/RULES.md): a path's tiles exactly; a route's tiles, visited each once,
    forward at most one a step, on its first tile through `depart`; a new promise only once the
    one before has ended, or a route from the running route's last tile departing after its end.
    Returns the number of promises checked."""
    pos = trace.positions[a]
    running, count = None, 0
    for d in promises:
        act = declaration(trace, a, d.step, d.end, d.kind, d.target[0] * 65536 + d.target[1], d.depart)
        if running is not None and running[0] > d.step:
            assert running[1] is not None and "route" in act, (a, d)
            assert tuple(pos[d.step]) == running[1][-1] and d.depart >= running[0], (a, d)
        if "route" in act:
            tiles = act["route"]
            assert tiles[0] == tuple(pos[d.step]) and len(set(tiles)) == len(tiles), (a, d)
            k = 0
            for u in range(d.step + 1, d.end + 1):
                q = tuple(pos[u])
                assert q in (tiles[k:k + 1] if u <= d.depart else tiles[k:k + 2]), (a, d, u)
                k = tiles.index(q)
            running = (d.end, tiles)
        else:
            assert act["path"] == [tuple(map(int, p)) for p in pos[d.step + 1:d.end + 1]], (a, d)
            running = (d.end, None)
        count += 1
    return count


@pytest.mark.parametrize("window", ["full", "busy", "quiet"])
@pytest.mark.parametrize("ahead", [False, True])
def test_every_promise_a_persona_declares_is_kept(day, window, ahead):
    """Every promise made from the plans is one the persona keeps (the env would reject the
    first broken one), and together they cover nearly every step, moving ones included."""
    trace = apply_window(day, window)
    trace = plan_ahead(trace) if ahead else trace
    covered = np.zeros((25, trace.n_steps + 1), dtype=bool)
    routes = follow_ons = 0
    for a in range(25):
        got = list(declared(trace, a, plan_ahead=ahead))
        assert kept(trace, a, got) == len(got)
        for d in got:
            covered[a, d.step + 1:d.end + 1] = True
            routes += d.kind == ROUTE
            follow_ons += d.follow_on
    moving = (trace.positions[:, 1:] != trace.positions[:, :-1]).any(axis=2)
    assert covered[:, 1:].mean() > 0.99 and covered[:, 1:][moving].mean() > 0.99
    assert routes > {"full": 200, "busy": 20, "quiet": 8}[window]
    assert (follow_ons > 0) == ahead


def _with_future_of(trace, other, t: int):
    """`trace` with every tile after time t and every plan after step t taken from `other`."""
    pos = np.array(trace.positions)
    pos[:, t + 1:] = other.positions[:, t + 1:]
    rows = np.concatenate([trace.plans.dense()[:, :t + 1], other.plans.dense()[:, t + 1:]], axis=1)
    return replace(trace, positions=pos, plans=Plans.from_dense(rows))


@pytest.mark.parametrize("ahead", [False, True])
def test_a_promise_depends_only_on_what_was_known_when_it_was_made(day, ahead):
    """Replace everything after step t (tiles and plans) by another day's: every promise made
    at or before t is the same."""
    other = load_workload("genagents-day", agents=25, seed=1)
    rng = np.random.default_rng(0)
    for t in sorted(rng.choice(np.arange(100, day.n_steps - 100), 6, replace=False)):
        mixed = _with_future_of(day, other, int(t))
        for a in range(25):
            before = [d for d in declared(day, a, ahead) if d.step <= t]
            assert before and before == [d for d in declared(mixed, a, ahead) if d.step <= t], (a, t)


def test_the_generator_records_plans_before_it_knows_the_future():
    """Plans are written as the day is simulated: simulating only the first steps gives the
    same plans (and tiles) for them."""
    from metropolis_env.workloads.genagents_day import _places, _simulate

    places = _places()
    names = list(places.personas)
    full = load_workload("genagents-day", agents=25)
    cut = 4500
    short = _simulate(names, places, np.random.default_rng([0, 0x6A6E]), cut)
    assert np.array_equal(short.positions, full.positions[:, :cut + 1])
    assert np.array_equal(short.plans.dense(), full.plans.dense()[:, :cut])


def test_recorded_runs_carry_no_plans_and_declare_nothing():
    morning = load_workload("the_ville-morning")
    assert morning.plans is None
    assert (persona_promises(morning).end < 0).all()
    assert plan_ahead(morning) is morning


def test_plan_ahead_moves_planning_calls_to_the_arrival_before_them(day):
    ahead = plan_ahead(day)
    kinds = list(day.call_kinds)
    plan = kinds.index("plan_action")
    moved = ahead.meta["plan_ahead_calls_moved"]
    assert moved > 25 * 6 * 8  # most of the ~10 activities a day per agent, 8-9 calls each
    assert ahead.n_calls.sum() == day.n_calls.sum()
    assert not np.array_equal(ahead.n_calls, day.n_calls)
    for a in range(25):
        def chains(trace):
            return [(t, [(trace.call_kinds[int(k)], int(i), int(o)) for k, i, o in
                         zip(*(x[trace.call_offsets[t * 25 + a]:trace.call_offsets[t * 25 + a + 1]]
                               for x in (trace.call_kind, trace.input_tokens, trace.output_tokens)))])
                    for t in range(trace.n_steps)]
        before, after = chains(day), chains(ahead)
        # other calls stay where they were, in order; the planning calls only ever move earlier
        assert [[c for c in ch if c[0] != "plan_action"] for _, ch in before] == \
               [[c for c in ch if c[0] != "plan_action"] for _, ch in after]
        flat = lambda cs: [c for _, ch in cs for c in ch if c[0] == "plan_action"]  # noqa: E731
        assert flat(before) == flat(after)
        seen_before = np.cumsum([sum(c[0] == "plan_action" for c in ch) for _, ch in before])
        seen_after = np.cumsum([sum(c[0] == "plan_action" for c in ch) for _, ch in after])
        assert (seen_after >= seen_before).all()
    assert plan in set(ahead.call_kind.tolist())


def test_trace_agents_declare_their_promises_and_replay_faithfully():
    """A bench run with --lookahead: the env accepts every declared path and route (the env
    checks each move against them), the replay stays on the trace (trace agents check their
    tile every step), and the run makes the same calls with fewer tracker dependencies."""
    from metropolis_env.bench.runner import BenchConfig, load_trace, run_mode
    from metropolis_env.env import AsyncParallelEnv

    cfg = BenchConfig.of(agents=25, window="busy", gpus=8, steps=60, bound="map", rules="versioned",
                         progress=False, lower_bounds=False)
    trace = load_trace(cfg)
    declared = []
    step = AsyncParallelEnv.step

    def counting(self, actions):
        declared.extend(a for a, act in actions.items() if isinstance(act, dict) and ({"path", "route"} & set(act)))
        return step(self, actions)
    AsyncParallelEnv.step = counting
    try:
        plain = run_mode(trace, cfg, "async")
        assert not declared
        ahead = run_mode(trace, cfg.replace(lookahead="persona"), "async")
        ends = persona_promises(trace).end
        assert len(declared) == int((ends > np.arange(trace.n_steps)).sum())
        declared.clear()
        seer = run_mode(trace, cfg.replace(lookahead="clairvoyant"), "async")
    finally:
        AsyncParallelEnv.step = step
    assert sorted(declared) == sorted(trace.agents)  # each its whole future, once
    assert ahead.llm_calls == plain.llm_calls == seer.llm_calls
    assert ahead.deps_per_agent_step < plain.deps_per_agent_step


def test_lookahead_needs_the_versioned_rules():
    from metropolis_env.bench.runner import BenchConfig
    from metropolis_env.errors import ConfigError

    with pytest.raises(ConfigError, match="--rules versioned"):
        BenchConfig.of(lookahead="persona").validate()
    with pytest.raises(ConfigError, match="unknown lookahead 'psychic'"):
        BenchConfig.of(lookahead="psychic", rules="versioned").validate()
