"""What a Generative Agents persona knows of its own next tiles, for declared paths.

With the versioned rules an agent may declare the tiles it will stand on next (`"path"` in its
action, see docs/RULES.md); the env then holds it to that promise. A trace agent may only
promise what the persona it replays could have known and would not have revised:

- **sleeping**: reverie's personas do not react while asleep, and the wake-up time is part of
  the day plan made at midnight, so a sleeper knows its tiles until its sleep ends;
- **conversing**: the conversation is generated when it starts and sets both partners'
  `chatting_end_time`; neither reacts to anything else meanwhile and both stand still.

Everything else (walking to an activity, working at a desk) can be interrupted by a reaction to
someone perceived, so nothing is promised there.
"""

from __future__ import annotations

import numpy as np


def promise_ends(trace) -> np.ndarray:
    """int32 (agents, steps): at the first step t of a promisable run (see module doc), the last
    step e of that run, so that the agent may declare its tiles for steps t+1..e; -1 elsewhere.

    A run is a maximal stretch of steps with one sleeping activity, or with one conversation
    partner. Runs in progress when the trace starts (a window) begin at its first step.
    """
    n, steps = trace.positions.shape[0], int(trace.n_steps)
    activity = np.asarray(trace.activity)[:, :steps]
    partner = np.asarray(trace.partner)[:, :steps]
    sleeping = np.array(["sleeping" in a for a in trace.activities], dtype=bool)
    # A run key per agent-step: the activity while sleeping, the partner (offset) while
    # conversing, -1 otherwise. Runs are maximal stretches of one key >= 0.
    key = np.where(partner >= 0, len(trace.activities) + partner,
                   np.where(sleeping[activity], activity, -1)).astype(np.int64)
    out = np.full((n, steps), -1, dtype=np.int32)
    for a in range(n):
        k = key[a]
        change = np.flatnonzero(np.diff(k)) + 1
        starts = np.concatenate(([0], change))
        ends = np.concatenate((change - 1, [steps - 1]))
        keep = k[starts] >= 0
        out[a, starts[keep]] = ends[keep]
    return out
