"""Walking on the map as Generative Agents do: 4-connected moves along shortest paths.

The recorded runs only ever move one tile along one axis per step, so the synthetic workloads
walk the same way (every such move is also legal for an env with max_vel >= 1).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..world import Tile, TileMap

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
    world = key.world
    h, w = world.height, world.width
    pw = w + 2
    # Pad with blocked tiles so neighbour indices never wrap around a row.
    open_ = np.zeros((h + 2, pw), dtype=bool)
    open_[1:h + 1, 1:w + 1] = world.walkable
    open_flat = open_.ravel()
    start = (ty + 1) * pw + tx + 1
    if not open_flat[start]:
        raise ValueError(f"distance_field4: target tile {(tx, ty)} is not walkable")
    dist = np.full(open_flat.shape, -1, dtype=np.int32)
    offsets = np.array([1, -1, pw, -pw], dtype=np.int64)
    dist[start] = 0
    frontier = np.array([start], dtype=np.int64)
    d = 0
    while frontier.size:
        d += 1
        nxt = (frontier[:, None] + offsets).ravel()
        nxt = nxt[open_flat[nxt] & (dist[nxt] < 0)]
        # Deduplicate without sorting (tiles reached from two frontier tiles): write each entry's
        # position into `dist`, keep the entries that read their own position back, then
        # store the real distance.
        order = np.arange(nxt.size, dtype=np.int32)
        dist[nxt] = -2 - order
        nxt = nxt[dist[nxt] == -2 - order]
        dist[nxt] = d
        frontier = nxt
    out = dist.reshape(open_.shape)[1:h + 1, 1:w + 1].copy()
    out.setflags(write=False)
    return out


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
