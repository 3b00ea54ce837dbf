"""What a persona promises about its own next tiles: only what it knew when it declared it.

With the versioned rules an agent may declare the tiles it will stand on next (`"path"`) or a
route it will keep to (`"route"`, docs/RULES.md); the env then holds it to that promise. A
promise may use only what the persona knew at the step it declared it: its plan as made then
(the trace's `plans`, see plans.py) and the tile it stands on. It never looks at what the trace
did later, and the workload's generator makes each persona keep what it planned.

From its plans, at step t, with no promise running, a persona declares:

- **awake, with an activity planned to go on**: a *route*, the shortest walk from its tile to
  its activity's place (`walking.path4`, the walk it is on), through the step its next activity
  is planned to begin (its day plan fixes that step). A conversation can stop it on the way but
  never send it elsewhere, and postpones its next activity (it stays put meanwhile), so it
  keeps the route;
- **asleep**: a *path*, its walk to bed and its stay there, through its planned wake-up:
  sleeping personas do not react, so nothing stops or delays them;
- **in a conversation that outlasts its route** (the conversation postponed its next activity):
  a *path* standing still through the conversation's end, which both partners know from its
  start.

"plan-ahead" personas also make the `plan_action` calls of their next activity as soon as they
arrive at the current one (`plan_ahead` moves those calls in the trace, for every mode): on
arriving (standing on its route's last tile, which it sees) such a persona declares its next
walk as a route that departs when its next activity is planned to begin, through the start
planned for the one after. It changes when calls happen, so it is a variant of the workload,
measured against its own sync and oracle.

Recorded runs carry no plans (their format records what happened, not what was planned), so
their personas declare nothing: any promise would be read from the future.

`LOOKAHEADS` also names "clairvoyant": every agent promises its whole remaining trajectory at
its first step, read from the trace. No persona knows that much; it is the upper bound of what
lookahead can give (measurement only).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterator, NamedTuple

import numpy as np

from .walking import path4

#: What trace agents promise: nothing, what a persona knows from its plans (persona_promises),
#: the same for personas that plan their next activity on arrival (on the `plan_ahead` trace),
#: or everything (an upper bound).
LOOKAHEADS = ("off", "persona", "plan-ahead", "clairvoyant")

#: Kinds of promise: a route to `target`; a path walking to `target` without pausing, then
#: staying; a path of the trace's own tiles (clairvoyant only).
ROUTE, WALK, TRAJECTORY = 1, 2, 3
_PACK = 1 << 16


class Promises(NamedTuple):
    """Per agent and step (int32 (N, T) arrays): `end[a, t]` > t where agent a makes a promise at
    step t that holds through step end[a, t] (-1 elsewhere); `kind[a, t]` is ROUTE, WALK or
    TRAJECTORY; `target[a, t]` the packed tile (x * 65536 + y) its route or walk heads for;
    `depart[a, t]` the last step a route keeps its first tile. `declaration` turns one into
    the action's fields."""

    end: np.ndarray
    kind: np.ndarray
    target: np.ndarray
    depart: np.ndarray


class Declared(NamedTuple):
    """One promise: made at `step`, holding through `end`; `follow_on` for a plan-ahead route
    declared on arrival."""

    step: int
    end: int
    kind: int
    target: tuple[int, int]
    depart: int
    follow_on: bool = False


def lookahead_promises(trace, lookahead: str) -> Promises:
    """`persona_promises` for "persona" and "plan-ahead" (for the latter, `trace` is the
    `plan_ahead` trace); for "clairvoyant", every agent's whole remaining trajectory as a path
    from the first step."""
    if lookahead in ("persona", "plan-ahead"):
        return persona_promises(trace, plan_ahead=lookahead == "plan-ahead")
    if lookahead == "clairvoyant":
        out = _empty(trace)
        out.end[:, 0] = int(trace.n_steps) - 1
        out.kind[:, 0] = TRAJECTORY
        return out
    raise ValueError(f"lookahead must be one of {LOOKAHEADS[1:]}, got {lookahead!r}")


def persona_promises(trace, plan_ahead: bool = False) -> Promises:
    """The promises of `declared`, as arrays (module doc); none for a trace without plans."""
    out = _empty(trace)
    for a in range(trace.n_agents):
        for d in declared(trace, a, plan_ahead):
            out.end[a, d.step], out.kind[a, d.step] = d.end, d.kind
            out.target[a, d.step] = d.target[0] * _PACK + d.target[1]
            out.depart[a, d.step] = d.depart
    return out


def declared(trace, a: int, plan_ahead: bool = False) -> Iterator[Declared]:
    """Agent a's promises in step order. Each one is made from its plans at that step and the
    tile it stands on then (module doc), and starts when the one before has ended, or is a
    plan-ahead route declared from the last tile of the running route."""
    plans = trace.plans
    if plans is None:
        return
    steps = int(trace.n_steps)
    pos = trace.positions[a]
    t = 0
    while t < steps:
        d = _declare(plans, pos, a, t, steps)
        if d is None:
            t += 1
            continue
        yield d
        end = d.end
        while plan_ahead and d.kind == ROUTE:
            # the first later step it stands on its route's last tile (it sees that it arrived)
            on = np.flatnonzero((pos[d.step + 1:end] == d.target).all(axis=1))
            if not on.size:
                break
            d = _follow_on(plans, a, d.step + 1 + int(on[0]), end, steps)
            if d is None:
                break
            yield d
            end = d.end
        t = max(end, t + 1)


def _declare(plans, pos: np.ndarray, a: int, t: int, steps: int) -> Declared | None:
    plan = plans.at(a, t)
    until, chat_end = min(plan.until, steps), min(plan.chat_end, steps)
    if plan.target[0] >= 0 and until > t:
        if plan.exact:
            return Declared(t, until, WALK, plan.target, -1)
        if chat_end <= until:
            return Declared(t, until, ROUTE, plan.target, t)
    if chat_end > t:
        return Declared(t, chat_end, WALK, (int(pos[t, 0]), int(pos[t, 1])), -1)
    return None


def _follow_on(plans, a: int, r: int, running_end: int, steps: int) -> Declared | None:
    """Arrived at step r on its route running through `running_end`: the route to its next
    activity's place, departing when that activity is planned to begin; None if it knows none
    that goes on past the running route."""
    plan = plans.at(a, r)
    until = min(plan.next_until, steps)
    if plan.next_target[0] < 0 or until <= running_end:
        return None
    return Declared(r, until, ROUTE, plan.next_target, running_end, follow_on=True)


def declaration(trace, a: int, t: int, end: int, kind: int, target: int, depart: int) -> dict:
    """The action fields that declare agent a's promise made at step t (a row of `Promises`):
    {"route", "until", "depart"} or {"path"}. Routes and walks are computed from the tile it
    stands on at t and the target; only TRAJECTORY (clairvoyant) reads the trace's future."""
    x, y = (int(v) for v in trace.positions[a, t])
    if kind == TRAJECTORY:
        return {"path": [(int(p[0]), int(p[1])) for p in trace.positions[a, t + 1:end + 1]]}
    walk = [(int(p[0]), int(p[1])) for p in path4(trace.world, (x, y), (target // _PACK, target % _PACK))]
    if kind == ROUTE:
        return {"route": walk, "until": int(end), "depart": int(depart)}
    return {"path": [walk[min(k, len(walk) - 1)] for k in range(1, end - t + 1)]}


def plan_ahead(trace):
    """The trace as played by personas that plan ahead: on arriving at an activity's place, a
    persona makes the `plan_action` calls of its next activity (its decomposition and the
    choice of its place, reverie's `_determine_action`) at once, instead of when that activity
    begins. Same calls, tokens, tiles and conversations; only when the planning calls happen
    changes (they join the chain of the arrival step, after its own calls). The arrivals are
    those where `declared(..., plan_ahead=True)` makes a follow-on route. A trace without plans
    is returned as it is."""
    kinds = list(trace.call_kinds)
    if "plan_action" not in kinds or trace.plans is None:
        return trace
    plan = kinds.index("plan_action")
    n, steps = trace.n_agents, int(trace.n_steps)
    offsets = trace.call_offsets
    cell = np.repeat(np.arange(n * steps, dtype=np.int64), trace.n_calls.T.ravel())
    moved = np.zeros(cell.shape, dtype=bool)
    for a in range(n):
        until = trace.plans.column("until", a)
        for d in declared(trace, a, plan_ahead=True):
            if not d.follow_on:
                continue
            # the next activity begins where its planned start changes
            later = np.flatnonzero(until[d.step + 1:] != until[d.step])
            if not later.size:
                continue
            k = (d.step + 1 + int(later[0])) * n + a
            lo, hi = offsets[k], offsets[k + 1]
            calls = np.arange(lo, hi)[trace.call_kind[lo:hi] == plan]
            cell[calls] = d.step * n + a
            moved[calls] = True
    order = np.lexsort((np.arange(cell.size), moved, cell))  # by cell, moved calls last, stable
    counts = np.bincount(cell, minlength=n * steps).reshape(steps, n).T
    meta = dict(trace.meta, plan_ahead_calls_moved=int(moved.sum()))
    return replace(trace, name=f"{trace.name}+plan-ahead", n_calls=counts.astype(trace.n_calls.dtype),
                   input_tokens=trace.input_tokens[order], output_tokens=trace.output_tokens[order],
                   call_kind=trace.call_kind[order], meta=meta)


def _empty(trace) -> Promises:
    shape = (int(trace.n_agents), int(trace.n_steps))
    return Promises(*(np.full(shape, -1, dtype=np.int32) for _ in range(4)))
