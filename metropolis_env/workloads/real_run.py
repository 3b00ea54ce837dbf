"""Recorded runs as traces: `recorded:PATH` and the_ville-morning, the shipped run.

A run folder (`recorded.read_run`: the shipped format or reverie's storage folder) gives the
positions, activities and conversations; the_ville-morning is the folder
`data/the_ville/runs/skip-morning-s-14` (25 personas, 3,000 steps from midnight to 08:22)
through the same code. Runs record no LLM calls, so call chains are synthesised from their
events by the calibrated call model (`calls.py`). Runs record no plans either (`Trace.plans` is
None): what personas intended is not in the recording.

Time: trace position t + 1 is the recorded tile after step t (the data's row for step t);
position 0, the tile before step 0, was not recorded and is taken to be the row-0 tile.

Teleports: a recording may jump an agent several tiles in one step (the shipped run: at the
segment joins of its recorded chain, steps 2425 and 2878, five agents jump 2 to 13 tiles). An env with max_vel = 1 cannot replay that, so `positions` walks
each jump along a 4-connected shortest path instead and then catches up with the recording by
skipping the recording's pauses (agents mostly stand still); once caught up it follows the
recording again. `meta["teleports"]` lists the jumps and `meta["deviating_agent_steps"]`
counts the times whose tile differs from the recording.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..errors import ConfigError
from ..world import data_path, the_ville
from . import calls as C
from .perception import perceived_csr
from .recorded import RecordedRun, read_run
from .trace import Trace
from .walking import path4

RUN = "skip-morning-s-14"
RADIUS_P = 4


def the_ville_morning(seed: int = 0) -> Trace:
    """The shipped recorded run as a trace; `seed` only drives the synthesised call chains."""
    return recorded_trace(data_path("the_ville", "runs", RUN), seed, name="the_ville-morning")


def recorded_trace(path, seed: int = 0, name: str | None = None) -> Trace:
    """The recorded run in folder `path` (`recorded.read_run`: the shipped format or reverie's
    storage folder) as a trace; `seed` only drives the synthesised call chains (cached).
    ConfigError naming the file and row for a malformed folder."""
    run = read_run(str(path))
    return _trace(run, int(seed), name or f"recorded:{run.name}")


def legal_positions(recorded: np.ndarray) -> tuple[np.ndarray, list[dict], int]:
    """Make every move 4-connected: walk over teleports, then catch up (see module docstring).

    recorded: int (N, T + 1, 2). Returns (positions, teleports, deviating agent-steps).
    """
    world = the_ville()
    out = recorded.copy()
    teleports: list[dict] = []
    steps = recorded.shape[1]
    for a in range(recorded.shape[0]):
        moves = np.abs(np.diff(recorded[a].astype(np.int64), axis=0)).sum(axis=1)
        if not (moves > 1).any():
            continue
        # Waypoints: the recorded tiles with every jump filled by a walk; `due[t]` is the
        # waypoint the recording has reached at time t.
        waypoints = [tuple(recorded[a, 0])]
        due = np.zeros(steps, dtype=np.int64)
        for t in range(1, steps):
            cur = tuple(recorded[a, t])
            if moves[t - 1] > 1:
                teleports.append({"agent": a, "step": t - 1, "manhattan": int(moves[t - 1])})
                try:
                    waypoints.extend(map(tuple, path4(world, waypoints[-1], cur)[1:].tolist()))
                except ValueError:
                    raise ConfigError(f"agent {a} jumps at step {t - 1} from {tuple(map(int, recorded[a, t - 1]))} "
                                      f"to {tuple(map(int, cur))}, which no walk on the_ville reaches") from None
            elif cur != waypoints[-1]:
                waypoints.append(cur)
            due[t] = len(waypoints) - 1
        w = 0
        for t in range(1, steps):
            if w < due[t]:
                w += 1  # one tile per step: behind the recording, walk on (its pauses are skipped)
            out[a, t] = waypoints[w]
    deviating = int(np.count_nonzero((out != recorded).any(axis=2)))
    return out, teleports, deviating


@lru_cache(maxsize=8)
def _trace(run: RecordedRun, seed: int, name: str) -> Trace:
    names = run.names
    steps = run.xy.shape[1]
    recorded = np.concatenate([run.xy[:, :1], run.xy], axis=1)
    try:
        positions, teleports, deviating = legal_positions(recorded)
    except ConfigError as e:
        raise ConfigError(f"recorded run {run.name!r}: {e}; every move must be a walk on the_ville "
                          f"(agents: {', '.join(f'{i} = {a}' for i, a in enumerate(names))})") from None
    world = the_ville()
    counts, ids = perceived_csr(world, positions, steps, RADIUS_P, True)
    events = _events(run, counts, ids)
    chains = C.sample_chains(events, np.random.default_rng([seed, 0x7669]))
    meta = {"workload": name, "seed": seed, "run": run.name, "recorded": run.source,
            "world": {"map": "the_ville"}, "teleports": teleports, "deviating_agent_steps": deviating,
            "conversations": int(np.count_nonzero(events.chat_initiator))}
    trace = Trace(
        name=name, agents=names, world=world, positions=positions,
        activity=run.activity, activities=run.activities, partner=run.partner,
        utterance=_utterances(run.partner), n_calls=chains.n_calls,
        input_tokens=chains.input_tokens, output_tokens=chains.output_tokens,
        call_kind=chains.call_kind, call_kinds=C.CALL_KINDS, n_perceived=counts, perceived_ids=ids,
        seconds=run.seconds, radius_p=RADIUS_P, same_zone=True,
        start_time=run.start_time, seconds_per_step=run.seconds_per_step, meta=meta)
    for key in ("positions", "activity", "partner", "n_calls", "input_tokens", "output_tokens",
                "call_kind", "n_perceived", "perceived_ids", "seconds"):
        getattr(trace, key).setflags(write=False)
    return trace


def _events(run: RecordedRun, counts: np.ndarray, ids: np.ndarray) -> C.StepEvents:
    texts = run.activities
    activity, partner = run.activity, run.partner
    n, steps = activity.shape
    asleep_id = np.array([t.startswith("sleeping") for t in texts])
    awake = ~asleep_id[activity]
    # "task (sub-task) @ place": a new task is a new activity, a new sub-task only a sub-task.
    task = np.array([t.split(" @ ")[0].split(" (")[0] for t in texts])
    task_id = np.unique(task, return_inverse=True)[1].reshape(-1)[activity]
    changed = np.zeros((n, steps), dtype=bool)
    changed[:, 1:] = activity[:, 1:] != activity[:, :-1]
    new_task = np.zeros((n, steps), dtype=bool)
    new_task[:, 1:] = task_id[:, 1:] != task_id[:, :-1]
    chatting = partner >= 0
    prev = np.full((n, steps), -1, dtype=np.int32)
    prev[:, 1:] = partner[:, :-1]
    nxt = np.full((n, steps), -1, dtype=np.int32)
    nxt[:, :-1] = partner[:, 1:]
    start = chatting & (prev != partner)
    # The recording does not say who spoke first: the lower index starts (generates) the chat.
    initiator = start & (np.arange(n)[:, None] < partner)
    turns = np.zeros((n, steps), dtype=np.int32)
    for a, t in zip(*np.nonzero(initiator)):
        b = partner[a, t]
        end = t
        while end + 1 < steps and partner[a, end + 1] == b:
            end += 1
        # One utterance per two steps of conversation, within Generative Agents' usual range.
        turns[a, t] = int(np.clip((end - t + 1) // 2, 4, 16))
    start_time = run.start_time
    return C.StepEvents(
        awake=awake, new_day=C.new_days(start_time, run.seconds, n), new_activity=new_task & ~chatting & awake,
        new_subtask=changed & ~new_task & ~chatting & awake, n_perceived=counts,
        new_events=C.new_perceived_events(counts, ids, activity), chat_initiator=initiator,
        chat_turns=turns, chat_partner_start=start & ~initiator, chat_end=chatting & (nxt != partner),
        whole_minute=C.whole_minutes(start_time, run.seconds))


def _utterances(partner: np.ndarray) -> np.ndarray:
    # Speakers alternate within each conversation, its lower-index agent first.
    n, steps = partner.shape
    out = np.zeros((n, steps), dtype=bool)
    for a in range(n):
        t = 0
        while t < steps:
            b = partner[a, t]
            if b < 0:
                t += 1
                continue
            s = t
            while t < steps and partner[a, t] == b:
                out[a, t] = ((t - s) % 2 == 0) == (a < b)
                t += 1
    return out
