"""Workloads: calibration against the paper's trace statistics, legality, perception, files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from metropolis_env.errors import ConfigError
from metropolis_env.workloads import Trace, load_workload, window_steps
from metropolis_env.workloads.calls import new_perceived_events
from metropolis_env.workloads.genagents_day import genagents_day
from metropolis_env.workloads.real_run import legal_positions, the_ville_morning
from metropolis_env.world import the_ville

# The paper's figures for one simulated day of 25 agents (docs/PAPER.md).
PAPER = {"calls": 56_700, "busy": 5_000, "quiet": 800, "input": 642.6, "output": 21.9, "deps": 1.85}
BUSY, QUIET = (4320, 4680), (2160, 2520)


@pytest.fixture(scope="module")
def day() -> Trace:
    return genagents_day(0)


@pytest.fixture(scope="module")
def morning() -> Trace:
    return the_ville_morning(0)


def _within(ours: float, theirs: float, tol: float) -> bool:
    return abs(ours - theirs) <= tol * theirs


# -- calibration ------------------------------------------------------------------------------

def test_default_day_matches_the_papers_trace_within_5_percent(day):
    st = day.stats()
    ours = {"calls": st.calls, "busy": int(day.n_calls[:, BUSY[0]:BUSY[1]].sum()),
            "quiet": int(day.n_calls[:, QUIET[0]:QUIET[1]].sum()), "input": st.mean_input_tokens,
            "output": st.mean_output_tokens, "deps": st.true_deps_per_agent_step}
    off = {k: round(ours[k] / PAPER[k] - 1, 3) for k in PAPER if not _within(ours[k], PAPER[k], 0.05)}
    assert not off, f"relative deviation from the paper: {off}"


def test_other_seeds_stay_near_the_papers_trace():
    # One seed scatters (busy hour +-9%); it must still be the same kind of day.
    for seed in (1, 2):
        st = genagents_day(seed).stats()
        assert _within(st.calls, PAPER["calls"], 0.1)
        assert _within(st.calls_per_hour[12], PAPER["busy"], 0.25)
        assert _within(st.calls_per_hour[6], PAPER["quiet"], 0.25)
        assert _within(st.true_deps_per_agent_step, PAPER["deps"], 0.1)


def test_nights_are_nearly_idle(day):
    per_hour = day.stats().calls_per_hour
    assert per_hour[1:4].sum() <= 0.001 * per_hour.sum()
    assert per_hour[12] > 5 * per_hour[6] > 0


def test_calls_per_hour_add_up_to_the_total(day):
    st = day.stats()
    assert st.calls_per_hour.sum() == st.calls == len(day.input_tokens)


def test_token_lengths_are_skewed_and_positive(day):
    for tokens in (day.input_tokens, day.output_tokens):
        assert tokens.min() >= 1
        assert np.median(tokens) < tokens.mean()  # a long right tail


def test_conversations_make_the_longest_chains(day):
    kinds = dict(zip(day.call_kinds, range(len(day.call_kinds))))
    k = int(np.argmax(day.n_calls.T.ravel()))
    lo, hi = day.call_offsets[k], day.call_offsets[k + 1]
    assert hi - lo >= 20
    assert (day.call_kind[lo:hi] == kinds["chat"]).sum() > (hi - lo) / 2


def test_conversations_are_mutual_and_partners_perceive_each_other(day):
    a, t = np.nonzero(day.partner >= 0)
    b = day.partner[a, t]
    assert a.size > 0
    assert np.array_equal(day.partner[b, t], a)
    for i in np.random.default_rng(0).choice(a.size, 50, replace=False):
        assert b[i] in day.perceived(int(a[i]), int(t[i]))
    # In a conversation the two agents take turns to speak.
    assert not (day.utterance[a, t] & day.utterance[b, t]).any()


# -- second-order structure (what the schedulers see) ------------------------------------------

def _activity_changes(trace: Trace) -> tuple[np.ndarray, np.ndarray]:
    """(agent, step) of every change to a new waking activity or sub-task (conversations and
    sleep excluded), the events that start Generative Agents' planning chains."""
    texts = np.array([t.startswith(("sleeping", "conversing")) for t in trace.activities])
    act = trace.activity
    changed = np.zeros(act.shape, dtype=bool)
    changed[:, 1:] = act[:, 1:] != act[:, :-1]
    return np.nonzero(changed & ~texts[act])


@pytest.mark.parametrize("which", ["day", "morning"])
def test_activity_changes_bunch_on_whole_minutes(which, request):
    # Reverie's plans are in whole minutes and a conversation ends on one, so most changes
    # (91% in the recording) fall on whole minutes, several agents at once: a global barrier
    # then waits for several planning chains together rather than one at a time.
    trace = request.getfixturevalue(which)
    _, t = _activity_changes(trace)
    on_minute = trace.seconds[t] % 60 == 0
    assert on_minute.mean() >= 0.85
    _, per_step = np.unique(t[on_minute], return_counts=True)
    assert per_step.mean() >= 2.0


def test_days_are_planned_at_midnight(day):
    plan_day = day.call_kinds.index("plan_day")
    kinds = day.call_kind[: day.call_offsets[day.n_agents]]
    assert (kinds == plan_day).sum() >= 20 * day.n_agents  # every agent, step 0
    assert (day.call_kind[day.call_offsets[day.n_agents]:] == plan_day).sum() == 0


def _groups(trace: Trace, t: int) -> np.ndarray:
    """Perception groups at time t: connected components of who perceives whom."""
    label = np.arange(trace.n_agents)
    for _ in range(trace.n_agents):
        before = label.copy()
        for a in range(trace.n_agents):
            for b in trace.perceived(a, t):
                label[a] = label[b] = min(label[a], label[b])
        if np.array_equal(label, before):
            break
    return label


def test_busy_hour_is_many_small_groups(day):
    # Lunch is eaten at many small tables, not in one crowd: the hour's long conversation
    # chains run in separate groups that an out-of-order scheduler can overlap.
    busy = load_workload("genagents-day", window="busy")
    largest = []
    for t in range(0, busy.n_steps, 30):
        label = _groups(busy, t)
        largest.append(np.bincount(label).max())
    assert np.median(largest) <= 5
    # Conversations happen in several places at once.
    starts = (busy.partner >= 0) & np.concatenate(
        [np.ones((busy.n_agents, 1), bool), busy.partner[:, 1:] != busy.partner[:, :-1]], axis=1)
    a, t = np.nonzero(starts)
    zones = {int(busy.world.zone[busy.positions[i, s, 1], busy.positions[i, s, 0]]) for i, s in zip(a, t)}
    assert len(zones) >= 6


# -- reproducibility --------------------------------------------------------------------------

def test_same_seed_same_arrays_different_seed_different():
    from metropolis_env.workloads.genagents_day import _day
    a = _day.__wrapped__(3)  # bypass the cache: two independent generations
    b = _day.__wrapped__(3)
    c = genagents_day(4)
    for key in ("positions", "activity", "partner", "n_calls", "input_tokens", "output_tokens",
                "n_perceived", "perceived_ids"):
        assert np.array_equal(getattr(a, key), getattr(b, key)), key
    assert not np.array_equal(a.positions, c.positions)
    assert a.n_calls.sum() != c.n_calls.sum() or not np.array_equal(a.input_tokens, c.input_tokens)


# -- movement and perception ------------------------------------------------------------------

@pytest.mark.parametrize("which", ["day", "morning"])
def test_moves_are_walkable_4_connected_single_tiles(which, request):
    trace = request.getfixturevalue(which)
    pos = trace.positions.astype(np.int64)
    assert trace.world.walkable[pos[..., 1], pos[..., 0]].all()
    steps = np.abs(np.diff(pos, axis=1))
    assert steps.max() <= 1                      # Chebyshev <= 1
    assert (steps.sum(axis=2) <= 1).all()        # and no diagonal: 4-connected


def _brute_perceived(trace: Trace, t: int) -> list[list[int]]:
    p = trace.positions[:, t].astype(np.int64)
    zone = trace.world.zone[p[:, 1], p[:, 0]]
    out = []
    for i in range(trace.n_agents):
        out.append([j for j in range(trace.n_agents) if j != i
                    and max(abs(p[i, 0] - p[j, 0]), abs(p[i, 1] - p[j, 1])) <= trace.radius_p
                    and (not trace.same_zone or zone[i] == zone[j])])
    return out


@pytest.mark.parametrize("which", ["day", "morning"])
def test_perceived_equals_brute_force(which, request):
    trace = request.getfixturevalue(which)
    rng = np.random.default_rng(1)
    busy_steps = np.nonzero(trace.n_perceived.sum(axis=0) > trace.n_agents // 2)[0]
    sample = np.concatenate([rng.choice(trace.n_steps, 15, replace=False), rng.choice(busy_steps, 15)])
    for t in sample.tolist():
        brute = _brute_perceived(trace, t)
        assert [trace.perceived(a, t) for a in range(trace.n_agents)] == brute, f"step {t}"


def test_perceived_matches_the_env_rule(day):
    import metropolis_env as me
    t = int(np.argmax(day.n_perceived.sum(axis=0)))
    start = {a: tuple(int(v) for v in day.positions[i, t]) for i, a in enumerate(day.agents)}
    env = me.make("the_ville", agents=start, radius_p=day.radius_p)
    _, infos = env.reset()
    for i, a in enumerate(day.agents):
        assert [day.agents[j] for j in day.perceived(i, t)] == sorted(infos[a]["perceived"],
                                                                       key=day.agents.index)


def test_new_events_count_arrivals_and_activity_changes():
    # Agent 0 perceives 1 from t = 1 (arrival), 1 changes activity at t = 3.
    n_perceived = np.array([[0, 1, 1, 1], [0, 0, 0, 0]], dtype=np.int16)
    ids = np.array([1, 1, 1], dtype=np.int32)
    activity = np.array([[0, 0, 0, 0], [5, 5, 5, 6]])
    news = new_perceived_events(n_perceived, ids, activity)
    assert news.tolist() == [[0, 1, 0, 1], [0, 0, 0, 0]]


# -- the recorded run -------------------------------------------------------------------------

def test_morning_replays_the_recording_except_around_teleports(morning):
    assert morning.n_agents == 25 and morning.n_steps == 3000
    assert len(morning.meta["teleports"]) == 5
    assert 0 < morning.meta["deviating_agent_steps"] < 500
    assert morning.seconds[2156] == 6 * 3600  # the recorded clock jump to 06:00:00
    assert morning.meta["conversations"] == 14
    assert morning.stats().calls > 0


def test_teleport_is_walked_then_caught_up():
    world = the_ville()
    # A street: (20..24, 40) are walkable; the recording jumps 4 tiles east at step 2.
    assert world.walkable[40, 20:25].all()
    rec = np.array([[[20, 40]] * 3 + [[24, 40]] * 7], dtype=np.int16)
    pos, teleports, deviating = legal_positions(rec)
    assert teleports == [{"agent": 0, "step": 2, "manhattan": 4}]
    assert pos[0, :, 0].tolist() == [20, 20, 20, 21, 22, 23, 24, 24, 24, 24]
    assert deviating == 3


# -- windows, scaling, files ------------------------------------------------------------------

def test_windows_cut_the_papers_hours(day):
    assert window_steps(day, "busy") == BUSY
    assert window_steps(day, "quiet") == QUIET
    busy = load_workload("genagents-day", window="busy")
    assert busy.n_steps == 360 and busy.start_time.endswith("12:00:00")
    assert busy.stats().calls == int(day.n_calls[:, BUSY[0]:BUSY[1]].sum())
    assert np.array_equal(busy.positions, day.positions[:, BUSY[0]:BUSY[1] + 1])
    t = 100
    assert busy.calls(7, t) == day.calls(7, BUSY[0] + t)
    assert busy.perceived(7, t) == day.perceived(7, BUSY[0] + t)
    with pytest.raises(ConfigError):
        load_workload("the_ville-morning", window="busy")  # the recording ends at 08:22


def test_concatenated_villes_replay_one_seed_per_copy():
    big = load_workload("genagents-day", agents=75, seed=0)
    assert big.n_agents == 75 and big.world.width == 3 * 140
    for c in range(3):
        seg = genagents_day(c)
        rows = slice(25 * c, 25 * (c + 1))
        assert np.array_equal(big.positions[rows, :, 0], seg.positions[:, :, 0] + 140 * c)
        assert np.array_equal(big.n_calls[rows], seg.n_calls)
        # plans move with their copy: places shift by the copy's offset, steps stay
        mine, theirs = big.plans.dense()[rows], seg.plans.dense()
        xs = [0, 5]  # plans.COLUMNS "tx", "nx"
        assert np.array_equal(mine[..., xs], np.where(theirs[..., xs] >= 0, theirs[..., xs] + 140 * c, -1))
        rest = [k for k in range(8) if k not in xs]
        assert np.array_equal(mine[..., rest], theirs[..., rest])
        for t in (0, 4400, 7000):
            a = 25 * c + 3
            assert big.calls(a, t) == seg.calls(3, t)
            assert big.perceived(a, t) == [j + 25 * c for j in seg.perceived(3, t)]
    assert big.stats().calls == sum(genagents_day(c).stats().calls for c in range(3))


@pytest.mark.parametrize("agents", [0, 30, True])
def test_agent_counts_must_be_multiples_of_25(agents):
    with pytest.raises(ConfigError):
        load_workload("genagents-day", agents=agents)


def test_save_load_round_trip(day, tmp_path):
    small = day.window(4300, 4400)
    path = small.save(tmp_path / "busy")
    back = Trace.load(path)
    for key in ("positions", "activity", "partner", "utterance", "n_calls", "input_tokens",
                "output_tokens", "call_kind", "n_perceived", "perceived_ids", "seconds"):
        assert np.array_equal(getattr(back, key), getattr(small, key)), key
    assert (back.agents, back.activities, back.start_time, back.meta) == \
           (small.agents, small.activities, small.start_time, small.meta)
    assert back.world is the_ville()
    assert np.array_equal(back.plans.dense(), small.plans.dense())  # the plans travel too,
    assert small.plans.at(0, 0).until == day.plans.at(0, 4300).until - 4300  # re-based to the window


def test_save_load_concatenated_map(tmp_path):
    big = load_workload("genagents-day", agents=50).window(0, 50)
    back = Trace.load(big.save(tmp_path / "big.npz"))
    assert np.array_equal(back.world.zone, big.world.zone)
    assert back.perceived(30, 10) == big.perceived(30, 10)


def test_jsonl_export_is_one_record_per_agent_step(day, tmp_path):
    small = day.window(4400, 4403)
    lines = small.to_jsonl(tmp_path / "t.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["format"] == "metropolis-trace"
    assert len(lines) == 1 + 3 * 25
    rec = json.loads(lines[1 + 25 + 4])  # step 1, agent 4
    assert rec["agent"] == small.agents[4] and rec["step"] == 1
    assert [(i, o) for i, o, _ in rec["calls"]] == small.calls(4, 1)
    assert rec["perceived"] == [small.agents[j] for j in small.perceived(4, 1)]


def test_load_rejects_other_files(tmp_path):
    np.savez(tmp_path / "x.npz", a=np.zeros(3))
    with pytest.raises(ConfigError):
        Trace.load(tmp_path / "x.npz")


def test_prompt_has_about_the_calls_input_length(day):
    a, t = np.unravel_index(int(np.argmax(day.n_calls)), day.n_calls.shape)
    (n_in, _), *_ = day.calls(int(a), int(t))
    words = len(day.prompt(int(a), int(t), 0).split())
    assert abs(words - n_in) <= 25
