"""Moving on the map: where a move lands, which moves are legal, and moves along shortest walks.

A move is an index into `spaces.move_offsets(max_vel)`: any offset within Chebyshev `max_vel`,
row-major, the stay in the middle. Everything here is a function of the map and a tile.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from . import spaces as msp
from .errors import InvalidActionError
from .world import Tile, TileMap


def landing(world: TileMap, p: Tile, offset: tuple[int, int]) -> tuple[Tile, str]:
    """(tile, move result) of the move by `offset` from tile p: a move off the map or onto a
    blocked tile leaves the agent in place."""
    x, y = p
    dx, dy = offset
    target = (x + dx, y + dy)
    if dx == 0 and dy == 0:
        return target, "stayed"
    if not world.in_bounds(target):
        return (x, y), "off_map"
    if not world.walkable[target[1], target[0]]:
        return (x, y), "blocked_tile"
    return target, "moved"


def move_mask(world: TileMap, p: Tile, max_vel: int) -> np.ndarray:
    """The int8 action mask at tile p: 1 for each move onto a walkable tile."""
    # The moves of `move_offsets` are the (2v+1) x (2v+1) square around p, row-major: exactly
    # the slice of the walkable grid padded with v rows and columns of wall on every side.
    x, y = p
    return _padded_walkable(world, max_vel)[y:y + 2 * max_vel + 1, x:x + 2 * max_vel + 1].flatten()


_offsets = lru_cache(maxsize=8)(msp.move_offsets)


@lru_cache(maxsize=16)
def _padded_walkable(world: TileMap, max_vel: int) -> np.ndarray:
    """int8 walkable grid of `world` with a border of `max_vel` blocked tiles (map edges)."""
    v = max_vel
    out = np.zeros((world.height + 2 * v, world.width + 2 * v), dtype=np.int8)
    out[v:v + world.height, v:v + world.width] = world.walkable
    out.setflags(write=False)
    return out


def walk_field(world: TileMap, p: Tile, tile, max_vel: int, what: str) -> np.ndarray:
    """The distance field to `tile` after checking that it can be reached from p; `what` (e.g.
    "move_to('a', (3, 4))") names the request in errors."""
    try:
        target = (int(tile[0]), int(tile[1]))
    except (TypeError, ValueError, IndexError):
        raise InvalidActionError(f"{what}: the tile must be (x, y) integers") from None
    if not world.is_walkable(target):
        raise InvalidActionError(f"{what}: that tile, {target}, is blocked or off the "
                                 f"{world.width}x{world.height} map; pick a walkable tile")
    field = world.distance_field(target, max_vel)
    x, y = p
    if field[y, x] < 0:
        raise InvalidActionError(f"{what}: no walkable path from {(x, y)} to {target}; pick a reachable tile")
    return field


def next_move(world: TileMap, field: np.ndarray, p: Tile, max_vel: int) -> tuple[int, Tile]:
    """(move index, tile) of the first move, in offset order, that gets closest to the field's
    target from p; the stay on the target. Memoryless, so a walk resumed from any tile along it
    goes on along the same tiles (what makes route_to's route keepable)."""
    x, y = p
    offsets = _offsets(max_vel)
    best, best_d, to = len(offsets) // 2, int(field[y, x]), p
    w, h = world.width, world.height
    for k, (dx, dy) in enumerate(offsets):
        nx, ny = x + dx, y + dy
        if 0 <= nx < w and 0 <= ny < h:
            d = int(field[ny, nx])
            if 0 <= d < best_d:
                best, best_d, to = k, d, (nx, ny)
    return best, to


def move_to(world: TileMap, p: Tile, tile, max_vel: int, what: str = "move_to") -> dict:
    """An action taking an agent on p one step along a shortest walk to `tile` (stay if there)."""
    return {"move": next_move(world, walk_field(world, p, tile, max_vel, what), p, max_vel)[0]}


def route_to(world: TileMap, p: Tile, step: int, tile, until: int, depart: int | None, max_vel: int,
             what: str = "route_to") -> dict:
    """An action of an agent on p at `step` that declares the walk `move_to` takes to `tile` as a
    route held through step `until`: the route's tiles, and this step's move along it, or a stay
    when `depart` (the last step on the first tile) is later than `step`."""
    field = walk_field(world, p, tile, max_vel, what)
    tiles = [p]
    move = None
    while field[p[1], p[0]] > 0:
        k, p = next_move(world, field, p, max_vel)
        move = k if move is None else move
        tiles.append(p)
    if move is None or (depart is not None and depart > step):
        move = msp.stay_index(max_vel)
    action = {"move": move, "route": tiles, "until": until}
    if depart is not None:
        action["depart"] = depart
    return action
