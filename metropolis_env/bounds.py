"""Hazard-distance bounds: how far apart two agents are, in moves, from perceiving each other.

A bound is what the tracker's rules (see `rules.py`) are evaluated with. Contract of a bound:
- `hazard(a, b)` is a lower bound on the number of moves (both agents' together, each at most
  `max_vel` tiles per step) before an agent on tile `a` and one on tile `b` could perceive each
  other; 0 when they may perceive each other now.
- it is never smaller than the box value `max(0, chebyshev(a, b) - radius_p)`, so that
  searching the spatial index with `search_radius(h)` finds every agent whose hazard is <= h;
- it changes by at most `max_vel` when either tile makes one move (the tracker's incremental
  updates rely on it, and so does its walk along a declared route, which skips tiles that
  cannot be within reach yet).
"""

from __future__ import annotations

from .rules import box_hazard
from .world import Tile


class BoxBound:
    """The paper's bound: Chebyshev distance minus the perception radius."""

    name = "box"

    def __init__(self, radius_p: int):
        self.radius_p = int(radius_p)

    def hazard(self, a: Tile, b: Tile) -> int:
        d = abs(a[0] - b[0])
        dy = abs(a[1] - b[1])
        return box_hazard(d if d > dy else dy, self.radius_p)

    def search_radius(self, h: int) -> int:
        """Chebyshev radius that holds every tile whose hazard to the centre is <= h."""
        return self.radius_p + h


def make_bound(bound, world, radius_p: int, max_vel: int, perception: str):
    """The bound an env asks for: "box", "map" (walls and rooms: see docs/MAP_BOUND.md), or an
    object with hazard(a, b) and search_radius(h)."""
    from .errors import ConfigError
    if isinstance(bound, str) and bound == "box":
        return BoxBound(radius_p)
    if isinstance(bound, str) and bound == "map":
        from .map_bound import shared_map_bound
        return shared_map_bound(world, radius_p, max_vel, perception)
    if isinstance(bound, str):
        raise ConfigError(f"unknown bound {bound!r}; available: 'box', 'map'")
    if not (hasattr(bound, "hazard") and hasattr(bound, "search_radius")):
        raise ConfigError("a custom bound needs hazard(a, b) and search_radius(h) methods (see bounds.py)")
    return bound
