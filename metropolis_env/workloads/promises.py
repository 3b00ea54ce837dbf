"""What a Generative Agents persona knows of its own next tiles, for declared paths and routes.

With the versioned rules an agent may declare the tiles it will stand on next (`"path"` in its
action) or a route it will keep to (`"route"`, see docs/RULES.md); the env then holds it to that
promise. A trace agent may only promise what the persona it replays could have known and would
not have revised:

- **on its way**: a persona plans its walk to the place of an activity when the activity
  begins (the `plan_action` calls of that step choose the place; a shortest path,
  `walking.path4`) and then follows it, one tile per step, until the next activity of its day
  plan begins (the plan is made at midnight, so that step is known). A reaction can stop it (a
  conversation: it stands still, then walks on along the same path), never send it elsewhere.
  So at each activity's start it may declare its path as a *route* (on these tiles, walking
  forward or pausing) through the step its next activity is planned; once arrived it stays on
  the route's last tile, so the route covers its stay and its conversations too;
- **sleeping**: reverie's personas do not react while asleep, and the wake-up time is part of
  the day plan, so a sleeper knows its tiles until its sleep ends (a path);
- **conversing**, where no route covers it: the conversation is generated when it starts and
  sets both partners' `chatting_end_time`; neither reacts to anything else meanwhile and both
  stand still (a path);
- **settled at its activity**, where no route covers it: once a persona has walked to the object
  of its current sub-task, it stays on that tile until the sub-task's planned end (a path).

Route promises are only made where the trace shows the premise: the agent reaches the end of
the leg's tiles and stands there while free to walk (it arrived: the route is its whole planned
path, not a prefix cut short by the next activity). In recorded reverie runs a persona plans a
new path after a conversation, which it could not know before: there, a leg with a
conversation before the arrival gets no route. When a conversation postpones the next activity
(reverie starts it when the conversation ends), the route ends where that conversation begins,
a step the planned start cannot precede; ending a promise early only ever promises less than
the persona knows.

"plan-ahead" is the same for personas that make the `plan_action` calls of their next activity
as soon as they arrive at the current one (`plan_ahead` moves those calls in the trace, for
every mode): they then know their next walk early, and declare it on arrival as a route that
departs when the next activity is planned to begin. It changes when calls happen, so it is a
variant of the workload, measured against its own sync and oracle.

`LOOKAHEADS` also names "clairvoyant": every agent promises its whole remaining trajectory at
its first step. No persona knows that much; it is the upper bound of what lookahead can give
(measurement only).
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import numpy as np


#: What trace agents promise: nothing, what a persona knows (persona_promises), the same for
#: personas that plan their next activity on arrival (on the `plan_ahead` trace), or everything.
LOOKAHEADS = ("off", "persona", "plan-ahead", "clairvoyant")


class Promises(NamedTuple):
    """Per agent and step (int32 arrays): `end[a, t]` > t where agent a makes a promise at step
    t that holds through step end[a, t] (-1 elsewhere). It is a route where `walk_end[a, t]` >= 0:
    the tiles a walks from step t to its destination, which it stands on at step walk_end[a, t]
    (`route_tiles`), leaving its first tile after step `depart[a, t]`; else a path: its exact
    tiles of steps t+1..end[a, t]."""

    end: np.ndarray
    walk_end: np.ndarray
    depart: np.ndarray


def lookahead_promises(trace, lookahead: str) -> Promises:
    """`persona_promises` for "persona" and "plan-ahead" (for the latter, `trace` is the
    `plan_ahead` trace); for "clairvoyant", every agent's whole remaining trajectory as a path
    from the first step."""
    if lookahead in ("persona", "plan-ahead"):
        return persona_promises(trace, plan_ahead=lookahead == "plan-ahead")
    if lookahead == "clairvoyant":
        out = np.full((trace.positions.shape[0], int(trace.n_steps)), -1, dtype=np.int32)
        out[:, 0] = int(trace.n_steps) - 1
        return Promises(out, np.full(out.shape, -1, dtype=np.int32), np.full(out.shape, -1, dtype=np.int32))
    raise ValueError(f"lookahead must be one of {LOOKAHEADS[1:]}, got {lookahead!r}")


class _Leg(NamedTuple):
    first: int     # its first step
    last: int      # its last step
    sleeping: bool
    arrived: int   # the step it stood still on its destination while free to walk, or -1
    until: int     # the last step it surely stays on its route: its next activity's planned start or before


def persona_promises(trace, plan_ahead: bool = False) -> Promises:
    """Routes on the way to each activity; paths while asleep, and while conversing or settled
    where no route covers it (module doc). With `plan_ahead` (a trace made by `plan_ahead`),
    also, from each arrival, the route on to the next activity. Promises never overlap: each
    starts where the one before ended, or narrows a route it has completed."""
    end = promise_ends(trace)
    walk_end = np.full(end.shape, -1, dtype=np.int32)
    depart = np.full(end.shape, -1, dtype=np.int32)
    for a, legs in enumerate(_all_legs(trace)):
        covered = -1  # the last step of the route promise running into the next leg
        for i, leg in enumerate(legs):
            if leg.sleeping or leg.arrived < 0:
                continue
            nxt = _planned_ahead(legs, i) if plan_ahead else None
            go_on = nxt is not None and nxt.arrived >= 0  # its whole walk is in the trace
            # the routes replace the paths of settled and conversing stretches they cover
            end[a, leg.first:(leg.last + 1 if go_on else leg.until)] = -1
            if covered <= leg.first and not (go_on and leg.arrived == leg.first):
                # on its way (or already there): its walk, through its next activity's start
                end[a, leg.first], walk_end[a, leg.first], depart[a, leg.first] = leg.until, leg.last + 1, leg.first
            covered = -1
            if go_on:
                # arrived, and planned its next activity: it stays until that activity's start,
                # then walks there
                t = leg.arrived
                end[a, t], walk_end[a, t], depart[a, t] = nxt.until, nxt.last + 1, leg.until
                covered = nxt.until
    return Promises(end, walk_end, depart)


def _planned_ahead(legs: list, i: int):
    """The leg after legs[i] if a plan-ahead persona plans it on arriving at legs[i]'s place:
    the next activity follows at once and the persona is awake for it; else None."""
    leg = legs[i]
    nxt = legs[i + 1] if i + 1 < len(legs) else None
    if leg.sleeping or leg.arrived < 0 or nxt is None or nxt.first != leg.last + 1 or nxt.sleeping:
        return None
    return nxt


def plan_ahead(trace):
    """The trace as played by personas that plan ahead: on arriving at an activity's place, a
    persona makes the `plan_action` calls of its next activity (its decomposition and the
    choice of its place, reverie's `_determine_action`) at once, instead of when that activity
    begins. Same calls, tokens, tiles and conversations; only when the planning calls happen
    changes (they join the chain of the arrival step, after its own calls). Personas then know
    their next walk early (`persona_promises(..., plan_ahead=True)`).
    """
    kinds = list(trace.call_kinds)
    if "plan_action" not in kinds:
        return trace
    plan = kinds.index("plan_action")
    n = trace.n_agents
    offsets = trace.call_offsets
    cell = np.repeat(np.arange(n * trace.n_steps, dtype=np.int64), trace.n_calls.T.ravel())
    moved = np.zeros(cell.shape, dtype=bool)
    for a, legs in enumerate(_all_legs(trace)):
        for i, leg in enumerate(legs):
            nxt = _planned_ahead(legs, i)
            if nxt is None:
                continue
            k = nxt.first * n + a
            lo, hi = offsets[k], offsets[k + 1]
            calls = np.arange(lo, hi)[trace.call_kind[lo:hi] == plan]
            cell[calls] = leg.arrived * n + a
            moved[calls] = True
    order = np.lexsort((np.arange(cell.size), moved, cell))  # by cell, moved calls last, stable
    counts = np.bincount(cell, minlength=n * trace.n_steps).reshape(trace.n_steps, n).T
    meta = dict(trace.meta, plan_ahead_calls_moved=int(moved.sum()))
    return replace(trace, name=f"{trace.name}+plan-ahead", n_calls=counts.astype(trace.n_calls.dtype),
                   input_tokens=trace.input_tokens[order], output_tokens=trace.output_tokens[order],
                   call_kind=trace.call_kind[order], meta=meta)


def _all_legs(trace) -> list[list["_Leg"]]:
    steps = int(trace.n_steps)
    pos = np.asarray(trace.positions)
    partner = np.asarray(trace.partner)[:, :steps]
    # genagents-day's personas walk on along the same path after a conversation; reverie's
    # (recorded runs) plan a new one, which they did not know before
    replans = trace.meta.get("workload") != "genagents-day"
    return [[_leg(pos[a], partner[a], *leg, replans) for leg in _legs(trace, a)] for a in range(trace.n_agents)]


def _leg(pos: np.ndarray, partner: np.ndarray, first: int, last: int, sleeping: bool, replans: bool) -> _Leg:
    arrived = -1 if sleeping else _arrival(pos, partner, first, last, replans)
    if partner[last] < 0:
        until = last + 1
    else:
        # a conversation postponed the next activity: it was planned no earlier than its start
        until = last
        while until > first and partner[until - 1] >= 0:
            until -= 1
    return _Leg(first, last, sleeping, arrived, until)


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


def _arrival(pos: np.ndarray, partner: np.ndarray, s0: int, e0: int, replans: bool) -> int:
    """The first step the agent stands on the leg's last tile while free to walk (not
    conversing) and stays: it arrived, so the leg's tiles are its whole planned walk, not a
    prefix cut short by the next activity; else -1. With `replans` (personas that plan a new
    path after a conversation), also -1 if a conversation came before the arrival."""
    last = pos[e0 + 1]
    still = (pos[s0:e0 + 1] == last).all(axis=1) & (pos[s0 + 1:e0 + 2] == last).all(axis=1) & (partner[s0:e0 + 1] < 0)
    if not still.any():
        return -1
    arrived = s0 + int(np.argmax(still))
    if replans and (partner[s0:arrived] >= 0).any():
        return -1
    return arrived


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
