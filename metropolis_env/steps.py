"""StepRange: the smallest and largest step of agents that advance one step at a time."""

from __future__ import annotations

from collections import Counter
from typing import Iterable


class StepRange:
    """Counts of agents per step, with the smallest (`lo`) and largest (`hi`) kept in O(1).

    `advance(old)` records one agent moving from step `old` to `old + 1`.
    """

    def __init__(self, steps: Iterable[int]):
        self._count = Counter(steps)
        self.lo = min(self._count, default=0)
        self.hi = max(self._count, default=0)

    def advance(self, old: int) -> None:
        cnt = self._count
        cnt[old] -= 1
        cnt[old + 1] += 1
        if old + 1 > self.hi:
            self.hi = old + 1
        if cnt[old] == 0:
            del cnt[old]
            if old == self.lo:
                self.lo = old + 1  # the mover itself is there

    def range(self) -> tuple[int, int]:
        return self.lo, self.hi
