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

- **on its way**: a persona plans its walk to the place of an activity when the activity
  begins (a shortest path, `walking.path4`) and then follows it, one tile per step, until the
  next activity of its day plan begins (made at midnight, so known). A reaction can stop it (a
  conversation: it stands still, then walks on along the same path), never send it elsewhere.
  So from each activity's start it may declare its path as a *route* (`"route"`/`"until"`:
  on these tiles, walking forward or pausing) through the step its next activity is planned.

Route promises are only made where the trace shows the premise: the agent reaches the end of
the leg's tiles and stands there while free to walk (it arrived: the route is its whole planned
path, not a prefix cut short by the next activity), and those tiles form a shortest walk (as a
planned path does). A route ends where a conversation begins, so that the conversation's exact
promise (standing still) can take over, and the rest of the route is declared again when the
conversation ends; ending a promise early only ever promises less than the persona knows. When
a conversation postpones the next activity (reverie starts it when the conversation ends), the
route ends where that conversation begins, a step the planned start cannot precede.

`LOOKAHEADS` also names "clairvoyant": every agent promises its whole remaining trajectory at
its first step. No persona knows that much; it is the upper bound of what lookahead can give
(measurement only).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .walking import distance_field4


#: What trace agents promise: nothing, what a persona knows (persona_promises), or everything.
LOOKAHEADS = ("off", "persona", "clairvoyant")


class Promises(NamedTuple):
    """Per agent and step (int32 arrays): `end[a, t]` > t where agent a makes a promise at step
    t that holds through step end[a, t] (-1 elsewhere). It is a route where `walk_end[a, t]` >= 0:
    the tiles a walks from step t to its destination, which it stands on at step walk_end[a, t]
    (`route_tiles`), else a path: its exact tiles of steps t+1..end[a, t]."""

    end: np.ndarray
    walk_end: np.ndarray


def lookahead_promises(trace, lookahead: str) -> Promises:
    """`persona_promises` for "persona"; for "clairvoyant", every agent's whole remaining
    trajectory as a path from the first step."""
    if lookahead == "persona":
        return persona_promises(trace)
    if lookahead == "clairvoyant":
        out = np.full((trace.positions.shape[0], int(trace.n_steps)), -1, dtype=np.int32)
        out[:, 0] = int(trace.n_steps) - 1
        return Promises(out, np.full(out.shape, -1, dtype=np.int32))
    raise ValueError(f"lookahead must be 'persona' or 'clairvoyant', got {lookahead!r}")


def persona_promises(trace) -> Promises:
    """Paths while asleep, conversing or settled (`promise_ends`), and routes on the way to each
    activity (module doc). Promises never overlap: each starts where the one before ended."""
    end = promise_ends(trace)
    walk_end = np.full(end.shape, -1, dtype=np.int32)
    steps = int(trace.n_steps)
    pos = np.asarray(trace.positions)
    partner = np.asarray(trace.partner)[:, :steps]
    for a in range(end.shape[0]):
        for s0, e0, sleeping in _legs(trace, a):
            if sleeping or not _arrived(trace.world, pos[a], partner[a], s0, e0):
                continue
            for p, q in _route_pieces(partner[a], s0, e0):
                # the route replaces the paths of settled stretches within it (it covers them)
                end[a, p:q] = np.where(partner[a, p:q] >= 0, end[a, p:q], -1)
                end[a, p], walk_end[a, p] = q, e0 + 1
    return Promises(end, walk_end)


def _legs(trace, a: int):
    """(first step, last step, sleeping) of each stretch of one planned activity of agent a:
    sub-task parts and the conversations it holds on the way belong to the activity they
    interrupt; conversations at the trace's start belong to no activity (skipped)."""
    steps = int(trace.n_steps)
    activity = np.asarray(trace.activity)[a, :steps]
    partner = np.asarray(trace.partner)[a, :steps]
    names = trace.activities
    base = [None] * steps
    current = None
    for t in range(steps):
        if partner[t] < 0:
            current = names[int(activity[t])].split(" (part ")[0]
        base[t] = current
    t = 0
    while t < steps:
        u = t
        while u + 1 < steps and base[u + 1] == base[t]:
            u += 1
        if base[t] is not None:
            yield t, u, "sleeping" in base[t]
        t = u + 1


def _arrived(world, pos: np.ndarray, partner: np.ndarray, s0: int, e0: int) -> bool:
    """Whether the leg's tiles are a whole planned walk: the agent stands on the last one at a
    step where it is free to walk (not conversing) and stays, and they form a shortest walk."""
    last = pos[e0 + 1]
    still = (pos[s0:e0 + 1] == last).all(axis=1) & (pos[s0 + 1:e0 + 2] == last).all(axis=1) & (partner[s0:e0 + 1] < 0)
    if not still.any():
        return False
    tiles = _distinct(pos[s0:e0 + 2])
    field = distance_field4(world, (int(last[0]), int(last[1])))
    return int(field[tiles[0][1], tiles[0][0]]) == len(tiles) - 1


def _route_pieces(partner: np.ndarray, s0: int, e0: int):
    """(p, q): a route declared at step p holds through step q, for the stretches of a leg
    between its conversations (a conversation's last step declares the rest of the route)."""
    p = s0
    t = s0
    while t <= e0:
        if partner[t] >= 0:
            c = t
            while t + 1 <= e0 and partner[t + 1] >= 0:
                t += 1
            if c > p:
                yield p, c
            p = t  # the conversation's last step
        t += 1
    if e0 + 1 > p and partner[e0] < 0:
        yield p, e0 + 1


def route_tiles(positions: np.ndarray, t: int, e: int) -> list[tuple[int, int]]:
    """The tiles an agent walks from step t through step e (positions (steps + 1, 2)), each once."""
    return _distinct(positions[t:e + 1])


def _distinct(tiles: np.ndarray) -> list[tuple[int, int]]:
    out = [(int(tiles[0][0]), int(tiles[0][1]))]
    for x, y in tiles[1:]:
        q = (int(x), int(y))
        if q != out[-1]:
            out.append(q)
    return out


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
