"""The perception rule, the one place it is written down.

An agent on tile p perceives an agent on tile q when q lies within Chebyshev `radius_p` of p and
both tiles carry the same perception zone label. With perception "arena" (Generative Agents:
the box narrowed to the same room) the labels are `world.zone`; with "box" every tile has one
label. The env's observations, the workloads' true dependencies and the map bound all use it.
"""

from __future__ import annotations

import numpy as np

from .errors import ConfigError
from .world import Tile, TileMap

PERCEPTIONS = ("box", "arena")


def check_perception(kind: str) -> str:
    if kind not in PERCEPTIONS:
        raise ConfigError(f"perception must be 'box' or 'arena', got {kind!r}")
    return kind


def zone_labels(world: TileMap, kind: str) -> np.ndarray:
    """The (H, W) int32 perception zone label of every tile under perception `kind`."""
    check_perception(kind)
    if kind == "arena":
        return np.asarray(world.zone, dtype=np.int32)
    return np.zeros((world.height, world.width), dtype=np.int32)


class Perception:
    """Who perceives whom on `world` with box `radius_p`, narrowed to zones with "arena"."""

    def __init__(self, world: TileMap, radius_p: int, kind: str = "box"):
        self.kind = check_perception(kind)
        self.radius_p = int(radius_p)
        #: Whether zones narrow the box (with "box" all tiles share one zone).
        self.zoned = kind == "arena"
        self.zones = zone_labels(world, kind)

    def sees(self, p: Tile, q: Tile) -> bool:
        r = self.radius_p
        return (abs(q[0] - p[0]) <= r and abs(q[1] - p[1]) <= r
                and (not self.zoned or self.zones[q[1], q[0]] == self.zones[p[1], p[0]]))

    def perceived(self, p: Tile, candidates) -> list[int]:
        """The sorted ids of the (id, tile) `candidates` an agent on p perceives."""
        r, px, py = self.radius_p, p[0], p[1]
        zones = self.zones if self.zoned else None
        zp = zones[py, px] if zones is not None else 0
        out = [j for j, q in candidates
               if abs(q[0] - px) <= r and abs(q[1] - py) <= r and (zones is None or zones[q[1], q[0]] == zp)]
        out.sort()
        return out

    def sees_arrays(self, x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray) -> np.ndarray:
        """`sees` over arrays of tile pairs (a boolean mask)."""
        r = self.radius_p
        ok = (np.abs(x1 - x2) <= r) & (np.abs(y1 - y2) <= r)
        if self.zoned:
            ok &= self.zones[y1, x1] == self.zones[y2, x2]
        return ok
