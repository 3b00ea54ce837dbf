"""Walking on the map as Generative Agents do: 4-connected moves along shortest paths.

The recorded runs only ever move one tile along one axis per step, so the synthetic workloads
walk the same way (every such move is also legal for an env with max_vel >= 1).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..world import Tile, TileMap, shortest_walks

#: (dx, dy) of the four moves, in the order paths prefer them (ties are broken by this order).
MOVES4 = ((1, 0), (-1, 0), (0, 1), (0, -1))


def distance_field4(world: TileMap, target: Tile) -> np.ndarray:
    """Fewest 4-connected moves from every tile to `target` (int32 (H, W); -1: unreachable).

    Cached per (map, target): agents walk to few distinct places. Raises ValueError if the
    target is not walkable.
    """
    return _field(_Key(world), int(target[0]), int(target[1]))


class _Key:
    # Hashable by identity so lru_cache keys fields by the (immutable) map object.
    __slots__ = ("world",)

    def __init__(self, world: TileMap):
        self.world = world

    def __hash__(self) -> int:
        return id(self.world)

    def __eq__(self, other) -> bool:
        return isinstance(other, _Key) and other.world is self.world


@lru_cache(maxsize=4096)
def _field(key: _Key, tx: int, ty: int) -> np.ndarray:
    try:
        return shortest_walks(key.world.walkable, (tx, ty), MOVES4)
    except ValueError:
        raise ValueError(f"distance_field4: target tile {(tx, ty)} is not walkable") from None


def path4(world: TileMap, start: Tile, target: Tile) -> np.ndarray:
    """The tiles of a shortest 4-connected walk from `start` to `target`, both included.

    Returns an int16 array (n, 2) of (x, y); `[start]` when start == target. Deterministic:
    ties go to the first move of MOVES4. Raises ValueError if target is unreachable.
    """
    field = distance_field4(world, target)
    x, y = int(start[0]), int(start[1])
    d = int(field[y, x])
    if d < 0:
        raise ValueError(f"path4: {target} is not reachable from {start}")
    out = np.empty((d + 1, 2), dtype=np.int16)
    out[0] = (x, y)
    h, w = field.shape
    for k in range(1, d + 1):
        for dx, dy in MOVES4:
            nx, ny = x + dx, y + dy
            if 0 <= nx < w and 0 <= ny < h and field[ny, nx] == d - k:
                x, y = nx, ny
                break
        out[k] = (x, y)
    return out
