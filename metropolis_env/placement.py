"""Where agents start: given start tiles, checked, or distinct random walkable tiles."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .errors import ConfigError
from .world import Tile, TileMap


def check_start_tiles(world: TileMap, names: Sequence[str], tiles: Sequence[Any] | None) -> list[Tile] | None:
    """The start tiles as (x, y) ints, or None to draw them; ConfigError on bad tiles, or when
    the map has fewer walkable tiles than there are agents to spawn on distinct ones."""
    if tiles is None:
        walkable = int(world.walkable.sum())
        if walkable == 0:
            raise ConfigError(f"map {world.name} has no walkable tile to spawn agents on")
        if len(names) > walkable:
            raise ConfigError(f"{len(names)} agents but map {world.name!r} has only {walkable} walkable tiles: "
                              f"agents spawn on distinct tiles; ask for at most {walkable} agents, use a "
                              f"bigger map (e.g. 'villes'), or give start tiles")
        return None
    if len(tiles) != len(names):
        raise ConfigError(f"{len(names)} agents but {len(tiles)} start tiles")
    return [_check_start(world, a, t) for a, t in zip(names, tiles)]


def draw_start_tiles(world: TileMap, n: int, seed: int | None) -> list[Tile]:
    """`n` distinct random walkable tiles drawn from `seed`."""
    tiles = world.walkable_tiles()
    pick = np.random.default_rng(seed).choice(len(tiles), size=n, replace=False)
    return [(int(tiles[k][0]), int(tiles[k][1])) for k in pick]


def _check_start(world: TileMap, agent: str, tile: Any) -> Tile:
    try:
        x, y = int(tile[0]), int(tile[1])
        if len(tile) != 2:
            raise ValueError
    except (TypeError, ValueError, IndexError):
        raise ConfigError(f"start tile of {agent!r} must be (x, y) integers, got {tile!r}") from None
    if not world.in_bounds((x, y)):
        raise ConfigError(f"start tile {(x, y)} of {agent!r} is off the {world.width}x{world.height} map "
                          f"{world.name!r}")
    if not world.walkable[y, x]:
        raise ConfigError(f"start tile {(x, y)} of {agent!r} is blocked on map {world.name!r}; "
                          f"choose a walkable tile (world.walkable[y, x] is True)")
    return (x, y)
