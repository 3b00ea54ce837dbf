"""Plans: what each persona of a trace knew of its own next tiles at each step, as planned then.

A trace records what happened; its plans record what each persona *intended* at every step,
as the workload's generator made the plan (genagents-day), never read back from what happened
later. Lookahead promises (`promises.py`) are built from these alone, plus the tile the persona
stands on: a persona promises its plan, and the generator makes the persona keep it.

The plan of agent a at step t (`Plans.at(a, t)`, a `Plan`):

* `target` (x, y): the tile its current activity's walk heads for, along the shortest
  4-connected walk `walking.path4` from wherever it stands on the way; (-1, -1): no plan known;
* `until`: the step its next activity is planned to begin (its day plan fixes it); through that
  step it is on the walk (or arrived), paused only by conversations;
* `exact`: it walks without pausing (asleep: nothing makes it react), so its tiles are known;
* `chat_end`: the last step of the conversation it is in (known to both partners when the
  conversation starts), -1 when not conversing;
* `next_target`, `next_until`: its next activity's place and the step the one after that is
  planned to begin; a persona that plans ahead learns them when it arrives (-1: none).

Steps are absolute steps of the trace; a window re-bases them. Plans change only when an
activity or a conversation starts, so they are stored as a table of distinct plans and, per
agent-step, the row in force (int32 (N, T)): 4 bytes an agent-step, like `activity`.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from ..errors import ConfigError

#: Columns of the plan table.
COLUMNS = ("tx", "ty", "until", "exact", "chat_end", "nx", "ny", "next_until")
_STEPS = [COLUMNS.index(c) for c in ("until", "chat_end", "next_until")]
_XS, _YS = [COLUMNS.index(c) for c in ("tx", "nx")], [COLUMNS.index(c) for c in ("ty", "ny")]


class Plan(NamedTuple):
    """One persona's plan at one step (module doc)."""

    target: tuple[int, int]
    until: int
    exact: bool
    chat_end: int
    next_target: tuple[int, int]
    next_until: int


class Plans:
    """The plans of a trace's N agents over T steps: `index` int32 (N, T), the row of `table`
    (int32 (P, len(COLUMNS))) in force for each agent and step."""

    __slots__ = ("index", "table")

    def __init__(self, index: np.ndarray, table: np.ndarray):
        self.index = index
        self.table = table

    @classmethod
    def from_dense(cls, rows: np.ndarray) -> "Plans":
        """Plans from one row of COLUMNS per agent and step (int (N, T, len(COLUMNS)))."""
        n, steps, k = rows.shape
        table, inverse = np.unique(rows.reshape(-1, k).astype(np.int32), axis=0, return_inverse=True)
        return cls(inverse.reshape(n, steps).astype(np.int32), table)

    def dense(self) -> np.ndarray:
        """The plan row of every agent and step (int32 (N, T, len(COLUMNS)))."""
        return self.table[self.index]

    def column(self, name: str, a: int) -> np.ndarray:
        """Column `name` of agent a's plans, step by step (int32 (T,))."""
        return self.table[self.index[a], COLUMNS.index(name)]

    def at(self, a: int, t: int) -> Plan:
        tx, ty, until, exact, chat_end, nx, ny, next_until = (int(v) for v in self.table[self.index[a, t]])
        return Plan((tx, ty), until, bool(exact), chat_end, (nx, ny), next_until)

    def check(self, n: int, steps: int, name: str) -> None:
        """ConfigError unless the plans fit an (n agents, steps) trace."""
        if self.index.shape != (n, steps):
            raise ConfigError(f"trace {name}: plans.index has shape {self.index.shape}, expected {(n, steps)}")
        if self.table.ndim != 2 or self.table.shape[1] != len(COLUMNS):
            raise ConfigError(f"trace {name}: plans.table must have {len(COLUMNS)} columns {COLUMNS}")
        if self.index.size and not 0 <= int(self.index.min()) <= int(self.index.max()) < len(self.table):
            raise ConfigError(f"trace {name}: plans.index must point into plans.table")

    def window(self, s: int, e: int) -> "Plans":
        """Steps s..e - 1, steps re-based to s (those before s become -1)."""
        table = self.table.copy()
        steps = table[:, _STEPS].astype(np.int64)
        table[:, _STEPS] = np.where((steps >= 0) & (steps >= s), steps - s, -1)
        return Plans(self.index[:, s:e], table)

    def shifted(self, dx: int, dy: int) -> "Plans":
        """The same plans on a copy of the map offset by (dx, dy)."""
        table = self.table.copy()
        for cols, d in ((_XS, dx), (_YS, dy)):
            v = table[:, cols]
            table[:, cols] = np.where(v >= 0, v + d, v)
        return Plans(self.index, table)

    def freeze(self) -> "Plans":
        self.index.setflags(write=False)
        self.table.setflags(write=False)
        return self


def concat(parts: Sequence[Plans | None]) -> Plans | None:
    """The plans of agents joined in order; None unless every part has plans."""
    if not parts or any(p is None for p in parts):
        return None
    base = np.cumsum([0] + [len(p.table) for p in parts[:-1]])
    return Plans(np.concatenate([p.index + b for p, b in zip(parts, base)]).astype(np.int32),
                 np.concatenate([p.table for p in parts]))


def arrays(plans: Plans | None) -> dict[str, np.ndarray]:
    """The plans as named arrays for a file (`plan_index`, `plan_table`); empty for None."""
    return {} if plans is None else {"plan_index": plans.index, "plan_table": plans.table}


def from_arrays(z) -> Plans | None:
    """Plans read back from `arrays` (a mapping, e.g. an open .npz); None if it holds none."""
    if "plan_index" not in getattr(z, "files", z):
        return None
    return Plans(np.asarray(z["plan_index"], dtype=np.int32), np.asarray(z["plan_table"], dtype=np.int32))
