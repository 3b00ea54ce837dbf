"""Plans: what each persona of a trace knew of its own next tiles at each step, as planned then.

A trace records what happened; its plans record what each persona *intended* at every step,
as the workload's generator made the plan (genagents-day), never read back from what happened
later. Lookahead promises (`promises.py`) are built from these alone, plus the tile the persona
stands on: a persona promises its plan, and the generator makes the persona keep it.

Per agent a and step t (N agents, T steps):

* `target[a, t]` int16 (x, y): the tile its current activity's walk heads for, along the
  shortest 4-connected walk `walking.path4` from wherever it stands on the way; (-1, -1): no
  plan known;
* `until[a, t]` int32: the step its next activity is planned to begin (its day plan fixes it);
  through that step it is on the walk (or arrived), paused only by conversations;
* `exact[a, t]` bool: it walks without pausing (asleep: nothing makes it react), so its exact
  tiles are known;
* `chat_end[a, t]` int32: the last step of the conversation it is in (known to both partners
  when the conversation starts), -1 when not conversing;
* `next_target[a, t]`, `next_until[a, t]`: its next activity's place and the step the one after
  that is planned to begin; a persona that plans ahead learns them when it arrives (-1: none).

Step values are absolute steps of the trace; a window re-bases them.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from ..errors import ConfigError

FIELDS = ("target", "until", "exact", "chat_end", "next_target", "next_until")
_DTYPES = {"target": np.int16, "until": np.int32, "exact": np.bool_, "chat_end": np.int32,
           "next_target": np.int16, "next_until": np.int32}
_STEPS = ("until", "chat_end", "next_until")  # step-valued fields (-1: none)
_TILES = ("target", "next_target")            # tile-valued fields ((-1, -1): none)


class Plans(NamedTuple):
    """The plans of a trace's personas (module doc)."""

    target: np.ndarray
    until: np.ndarray
    exact: np.ndarray
    chat_end: np.ndarray
    next_target: np.ndarray
    next_until: np.ndarray

    @classmethod
    def empty(cls, n: int, steps: int) -> "Plans":
        """No plan known anywhere (to be filled step by step by a generator)."""
        return cls(*(np.full((n, steps, 2) if k in _TILES else (n, steps), False if k == "exact" else -1,
                             dtype=_DTYPES[k]) for k in FIELDS))

    def check(self, n: int, steps: int, name: str) -> None:
        """ConfigError unless every field has the shape of an (n agents, steps) trace."""
        for k in FIELDS:
            want = (n, steps, 2) if k in _TILES else (n, steps)
            if getattr(self, k).shape != want:
                raise ConfigError(f"trace {name}: plans.{k} has shape {getattr(self, k).shape}, expected {want}")

    def window(self, s: int, e: int) -> "Plans":
        """Steps s..e - 1, step values re-based to s (those before s become -1)."""
        out = {k: getattr(self, k)[:, s:e] for k in FIELDS}
        for k in _STEPS:
            v = out[k].astype(np.int64) - s
            out[k] = np.where((out[k] >= 0) & (v >= 0), v, -1).astype(np.int32)
        return Plans(**out)

    def shifted(self, dx: int, dy: int) -> "Plans":
        """The same plans on a copy of the map offset by (dx, dy)."""
        out = self._asdict()
        for k in _TILES:
            v = out[k]
            out[k] = np.where(v >= 0, v + np.array([dx, dy], dtype=np.int16), v).astype(np.int16)
        return Plans(**out)

    def freeze(self) -> "Plans":
        for k in FIELDS:
            getattr(self, k).setflags(write=False)
        return self


def concat(parts: Sequence[Plans | None]) -> Plans | None:
    """The plans of agents joined in order; None unless every part has plans."""
    if not parts or any(p is None for p in parts):
        return None
    return Plans(*(np.concatenate([getattr(p, k) for p in parts]) for k in FIELDS))


def arrays(plans: Plans | None) -> dict[str, np.ndarray]:
    """The plans as named arrays for a file ("plan_<field>"); empty for None."""
    return {} if plans is None else {f"plan_{k}": getattr(plans, k) for k in FIELDS}


def from_arrays(z) -> Plans | None:
    """Plans read back from `arrays` (a mapping, e.g. an open .npz); None if it holds none."""
    if "plan_target" not in getattr(z, "files", z):
        return None
    return Plans(*(np.asarray(z[f"plan_{k}"], dtype=_DTYPES[k]) for k in FIELDS))
