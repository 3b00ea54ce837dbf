"""Per-step versions of every agent's public state, for the "versioned" dependency rules.

The paper's world holds each agent's current state only, so an agent may not move on while
someone who still has to read its old state is near (coupling, and a move of margin when
blocking). Keeping the recent versions removes that write-after-read hazard: a reader at step t
reads each agent's step-t state, wherever that agent has got to since (see rules.py).

Memory stays small: no agent reads below the slowest agent's step, so older versions are
dropped as the slowest agent advances (amortised, in chunks, on append).
"""

from __future__ import annotations

from typing import Any, Sequence

#: Versions below the smallest step are dropped in chunks of at least this many (amortised O(1)).
PRUNE_CHUNK = 32


class VersionStore:
    """`at(i, s)`: agent i's public state at step s, for any s from the slowest agent's step to
    i's current step. States are opaque tuples (the env stores (tile, activity, utterance))."""

    __slots__ = ("_states", "_base")

    def __init__(self, initial: Sequence[Any]):
        self._states: list[list[Any]] = [[state] for state in initial]
        self._base: list[int] = [0] * len(initial)

    def at(self, i: int, step: int) -> Any:
        k = step - self._base[i]
        if k < 0:
            raise LookupError(f"agent {i}'s state at step {step} was dropped (oldest kept: {self._base[i]})")
        return self._states[i][k]

    def append(self, i: int, state: Any, min_step: int) -> None:
        """Record i's state for its next step; drop versions below `min_step`, the smallest step
        any agent is at (nobody reads them any more)."""
        states = self._states[i]
        states.append(state)
        drop = min_step - self._base[i]
        if drop >= PRUNE_CHUNK:
            del states[:drop]
            self._base[i] = min_step

    def kept(self) -> int:
        """Number of versions held (memory check)."""
        return sum(map(len, self._states))

    def snapshot(self) -> tuple:
        return tuple((b, tuple(s)) for b, s in zip(self._base, self._states))
