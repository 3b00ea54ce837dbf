"""A two-level spatial hash of agents on tiles: who is near a tile, in O(agents near it).

Fine cells answer the common small queries (perception, coupling, a laggard a few steps behind).
When the search box grows large - the tracker searches as far as the furthest possible blocker,
which a far laggard pushes out - scanning its many mostly empty fine cells would cost more than the
agents in it, so the same query is answered from coarse cells of `COARSE` x `COARSE` fine cells.
"""

from __future__ import annotations

from .world import Tile

#: Fine cells per coarse cell along each axis.
COARSE = 8
#: Above this many fine cells in a query box, use the coarse level.
_FINE_LIMIT = 64


class SpatialHash:
    """Agents (dense ints) bucketed by tile, for box queries.

    `near(p, r)` returns every agent whose tile may be within Chebyshev distance r of p (a
    superset: whole cells); callers filter exactly.
    """

    def __init__(self, cell_size: int):
        self.cs = max(1, int(cell_size))
        self.ccs = self.cs * COARSE
        self._fine: dict[tuple[int, int], set[int]] = {}
        self._coarse: dict[tuple[int, int], set[int]] = {}

    def add(self, i: int, p: Tile) -> None:
        self._fine.setdefault((p[0] // self.cs, p[1] // self.cs), set()).add(i)
        self._coarse.setdefault((p[0] // self.ccs, p[1] // self.ccs), set()).add(i)

    def move(self, i: int, old: Tile, new: Tile) -> None:
        for grid, size in ((self._fine, self.cs), (self._coarse, self.ccs)):
            a = (old[0] // size, old[1] // size)
            b = (new[0] // size, new[1] // size)
            if a != b:
                cell = grid[a]
                cell.discard(i)
                if not cell:
                    del grid[a]
                grid.setdefault(b, set()).add(i)

    def near(self, p: Tile, radius: int) -> list[int]:
        cs = self.cs
        x0, x1 = (p[0] - radius) // cs, (p[0] + radius) // cs
        y0, y1 = (p[1] - radius) // cs, (p[1] + radius) // cs
        if (x1 - x0 + 1) * (y1 - y0 + 1) > _FINE_LIMIT:
            cs = self.ccs
            x0, x1 = (p[0] - radius) // cs, (p[0] + radius) // cs
            y0, y1 = (p[1] - radius) // cs, (p[1] + radius) // cs
            grid = self._coarse
        else:
            grid = self._fine
        out: list[int] = []
        if (x1 - x0 + 1) * (y1 - y0 + 1) > len(grid):
            # A box larger than the occupied area: walking the occupied cells is cheaper.
            for (cx, cy), cell in grid.items():
                if x0 <= cx <= x1 and y0 <= cy <= y1:
                    out.extend(cell)
            return out
        get = grid.get
        for cx in range(x0, x1 + 1):
            for cy in range(y0, y1 + 1):
                cell = get((cx, cy))
                if cell:
                    out.extend(cell)
        return out
