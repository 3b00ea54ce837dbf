"""What other agents perceive of an agent: its tile, activity and last utterance, at a step.

A rule set (rules.py) picks the store: the paper's world holds each agent's current state only
(`CurrentState`), the versioned rules keep every state since the slowest agent's step
(`VersionedState`). Both answer `at(j, step)` for the steps the rules let a reader read, and
`candidates` finds the agents whose state at a reader's step may lie near a tile.
"""

from __future__ import annotations

from typing import Sequence

from .versions import VersionStore
from .world import Tile


class CurrentState:
    """Current public state only: tiles live in the tracker, activity and utterance here."""

    def __init__(self, n: int):
        self.activity: list[str] = [""] * n
        self.utterance: list[str] = [""] * n

    def at(self, tracker, j: int, step: int) -> tuple[Tile, str, str]:
        """(tile, activity, last utterance) of j as a reader at `step` perceives it."""
        return tracker.pos[j], self.activity[j], self.utterance[j]

    def reach(self, tracker, step: int, radius: int) -> int:
        """How far from a tile (Chebyshev) an agent at or ahead of `step` may be now if its tile
        as read at `step` (`at`) lies within `radius` of it: here it is read where it is now."""
        return radius

    def candidates(self, tracker, i: int, radius: int) -> list[tuple[int, Tile]]:
        """(j, tile at i's step) of every other agent that may be within Chebyshev `radius` of
        i then, a superset (i ready: nobody behind can be in its view, see rules.py)."""
        pos = tracker.pos
        return [(j, pos[j]) for j in tracker.near(pos[i], radius) if j != i]

    def record(self, tracker, members: Sequence[int]) -> None:
        """Called after `members` committed a step (their new state is in place)."""

    def snapshot(self) -> dict:
        """A plain-data copy (env.snapshot's part): activities, utterances, kept versions."""
        return {"activity": list(self.activity), "utterance": list(self.utterance), "versions": None}


class VersionedState(CurrentState):
    """Each agent's public state at every step from the slowest agent's to its own."""

    def __init__(self, start: Sequence[Tile]):
        super().__init__(len(start))
        self.versions = VersionStore([(p, "", "") for p in start])

    def at(self, tracker, j: int, step: int) -> tuple[Tile, str, str]:
        return self.versions.at(j, step)

    def reach(self, tracker, step: int, radius: int) -> int:
        # Agents ahead are read at `step`: their tile then is within their lead's worth of moves
        # of where they are now.
        return radius + max(0, tracker.max_step - step) * tracker.max_vel

    def candidates(self, tracker, i: int, radius: int) -> list[tuple[int, Tile]]:
        # Agents behind cannot be perceived: i is ready.
        t, step, at = tracker.step[i], tracker.step, self.versions.at
        reach = self.reach(tracker, t, radius)
        return [(j, at(j, t)[0]) for j in tracker.near(tracker.pos[i], reach) if j != i and step[j] >= t]

    def record(self, tracker, members: Sequence[int]) -> None:
        lo, pos, append = tracker.min_step, tracker.pos, self.versions.append
        for m in members:
            append(m, (pos[m], self.activity[m], self.utterance[m]), lo)

    def snapshot(self) -> dict:
        return {**super().snapshot(), "versions": self.versions.snapshot()}
