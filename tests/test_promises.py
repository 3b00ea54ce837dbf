"""What trace agents may promise (workloads/promises.py): whole sleeping and conversation runs,
settled stretches, and the routes of their walks."""

from __future__ import annotations


import numpy as np
import pytest

from metropolis_env.workloads import load_workload
from metropolis_env.workloads.promises import persona_promises, plan_ahead, promise_ends, route_tiles
from metropolis_env.workloads.walking import distance_field4


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


def _promises_in_order(trace, promises, a):
    """(step, end, route tiles or None, depart) of agent a's promises, in step order."""
    out = []
    for t in np.flatnonzero(promises.end[a] > np.arange(trace.n_steps)):
        t = int(t)
        w = int(promises.walk_end[a, t])
        tiles = route_tiles(trace.positions[a], t, w) if w >= 0 else None
        out.append((t, int(promises.end[a, t]), tiles, int(promises.depart[a, t])))
    return out


@pytest.mark.parametrize("window,ahead", [("full", False), ("busy", False), ("full", True)])
def test_persona_routes_hold_in_the_trace_and_never_overlap(day, window, ahead):
    """Every route a persona declares is kept by the trace (on its tiles, forward at most one
    tile a step, not before its departure), is a whole shortest walk that the agent completes,
    and each promise starts where the one before ended or narrows a route it has completed."""
    trace = day if window == "full" else day.window(12 * 360, 13 * 360)
    got = persona_promises(plan_ahead(trace) if ahead else trace, plan_ahead=ahead)
    pos = trace.positions
    routes = 0
    for a in range(25):
        running = None  # (end, tiles)
        for t, e, tiles, depart in _promises_in_order(trace, got, a):
            if running is not None and running[0] > t:
                # only a route completed at its last tile may be narrowed by the next route
                assert running[1] is not None and tiles is not None, (a, t)
                assert tuple(pos[a, t]) == running[1][-1] and depart >= running[0], (a, t)
            running = (e, tiles)
            if tiles is None:
                continue
            routes += 1
            assert tiles[0] == tuple(pos[a, t]) and len(set(tiles)) == len(tiles)
            field = distance_field4(trace.world, tiles[-1])
            assert field[tiles[0][1], tiles[0][0]] == len(tiles) - 1  # a shortest walk
            k = 0
            for u in range(t + 1, e + 1):
                q = tuple(pos[a, u])
                assert q in tiles[k:k + 2], (a, t, u)  # forward, one route tile a step at most
                k = tiles.index(q)
                assert u > depart or k == 0
    assert routes > (200 if window == "full" else 25)


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


def test_persona_promises_cover_nearly_every_agent_step(day):
    got = persona_promises(day)
    covered = np.zeros(got.end.shape, dtype=bool)
    for a, t in np.argwhere(got.end > np.arange(day.n_steps)):
        covered[a, t + 1:got.end[a, t] + 1] = True
    moving = (day.positions[:, 1:day.n_steps + 1] != day.positions[:, :day.n_steps]).any(axis=2)
    assert covered.mean() > 0.98 and covered[moving].mean() > 0.95


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
