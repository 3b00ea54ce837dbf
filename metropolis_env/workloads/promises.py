"""What a Generative Agents persona knows of its own next tiles, for declared paths.

With the versioned rules an agent may declare the tiles it will stand on next (`"path"` in its
action, see docs/RULES.md); the env then holds it to that promise. A trace agent may only
promise what the persona it replays could have known and would not have revised:

- **sleeping**: reverie's personas do not react while asleep, and the wake-up time is part of
  the day plan made at midnight, so a sleeper knows its tiles until its sleep ends;
- **conversing**: the conversation is generated when it starts and sets both partners'
  `chatting_end_time`; neither reacts to anything else meanwhile and both stand still;
- **settled at its activity**: once a persona has walked to the object of its current sub-task,
  it stays on that tile until the sub-task's planned end (the decomposition fixes its duration).
  A reaction can cut the sub-task short, but the reactions that can reach a settled persona
  (a conversation) keep it standing where it is; so it may promise its tile up to the step the
  sub-task ends in the trace, which is never later than the planned end.

Walking is not promised: a persona on its way can react to someone it meets and stop.

`LOOKAHEADS` also names "clairvoyant": every agent promises its whole remaining trajectory at
its first step. No persona knows that much; it is the upper bound of what lookahead can give
(measurement only).
"""

from __future__ import annotations

import numpy as np


#: What trace agents promise: nothing, what a persona knows (promise_ends), or everything.
LOOKAHEADS = ("off", "persona", "clairvoyant")


def lookahead_ends(trace, lookahead: str) -> np.ndarray:
    """`promise_ends` for "persona"; for "clairvoyant", every agent's whole remaining trajectory
    from the first step."""
    if lookahead == "persona":
        return promise_ends(trace)
    if lookahead == "clairvoyant":
        out = np.full((trace.positions.shape[0], int(trace.n_steps)), -1, dtype=np.int32)
        out[:, 0] = int(trace.n_steps) - 1
        return out
    raise ValueError(f"lookahead must be 'persona' or 'clairvoyant', got {lookahead!r}")


def promise_ends(trace) -> np.ndarray:
    """int32 (agents, steps): at the first step t of a promisable run (see module doc), the last
    step e of that run, so that the agent may declare its tiles for steps t+1..e; -1 elsewhere.

    A run is a maximal stretch of steps with one sleeping activity, or with one conversation
    partner, or the stationary end of a stretch with one other activity (from the step the
    agent reached the tile it keeps to the end). Runs in progress when the trace starts (a
    window) begin at its first step.
    """
    n, steps = trace.positions.shape[0], int(trace.n_steps)
    activity = np.asarray(trace.activity)[:, :steps]
    partner = np.asarray(trace.partner)[:, :steps]
    sleeping = np.array(["sleeping" in a for a in trace.activities], dtype=bool)
    # A run key per agent-step: the partner (offset past the activities) while conversing,
    # else the activity. Runs are maximal stretches of one key.
    key = np.where(partner >= 0, len(trace.activities) + partner, activity).astype(np.int64)
    whole = (partner >= 0) | sleeping[activity]  # promised from the run's first step
    pos = np.asarray(trace.positions)[:, :steps]
    moved = np.zeros((n, steps), dtype=bool)
    moved[:, 1:] = (pos[:, 1:] != pos[:, :-1]).any(axis=2)
    out = np.full((n, steps), -1, dtype=np.int32)
    for a in range(n):
        k = key[a]
        change = np.flatnonzero(np.diff(k)) + 1
        starts = np.concatenate(([0], change))
        ends = np.concatenate((change - 1, [steps - 1]))
        full = whole[a, starts]
        out[a, starts[full]] = ends[full]
        for s0, e0 in zip(starts[~full], ends[~full]):
            # another activity: from its last arrival on, the agent keeps its tile (a move at
            # step u means the tile of step u differs from that of step u - 1)
            arrivals = np.flatnonzero(moved[a, s0 + 1:e0 + 1])
            settled = s0 if not arrivals.size else s0 + 1 + int(arrivals[-1])
            if e0 > settled:
                out[a, settled] = e0
    return out
