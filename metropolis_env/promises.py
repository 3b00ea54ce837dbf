"""Promises an agent declares about its next tiles (versioned rules only, docs/RULES.md).

A promise only ever shrinks where a laggard could be at a reader's step (its *reach*), so it
can release readers, never block new ones. Two kinds, each a small frozen value the tracker holds
one per agent (None: no promise running), replaced as the agent walks:

- `PathPromise`: the tile it stands on at each of its next steps;
- `RoutePromise`: tiles it walks along, at most one route tile per step, pausing as it likes,
  not leaving the first before a departure step, until a given step.

`declare` validates an action against the running promise and parses the one it declares.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidActionError
from .world import Tile, TileMap


@dataclass(frozen=True)
class PathPromise:
    """The agent stands on tiles[k] at step base + k, through step `end`."""

    tiles: tuple[Tile, ...]
    base: int

    @property
    def end(self) -> int:
        return self.base + len(self.tiles) - 1

    def tile_at(self, step: int) -> Tile | None:
        """The promised tile at `step`, or None if the path does not cover it."""
        k = step - self.base
        return self.tiles[k] if 0 <= k < len(self.tiles) else None

    def allowed(self, step: int, tile: Tile) -> bool:
        """Whether standing on `tile` at `step` keeps the promise."""
        promised = self.tile_at(step)
        return promised is None or promised == tile

    def reach(self, agent_step: int, step: int) -> tuple[Tile, int]:
        """(tile, free steps): where the agent, now at `agent_step`, is known to be on its way
        to `step`, and how many of its steps to `step` are still unconstrained."""
        e = self.end
        if step <= e:
            return self.tiles[step - self.base], 0
        return self.tiles[e - self.base], step - e

    def may_reach(self, hazard, reader: Tile, agent_step: int, step: int, max_vel: int) -> bool:
        """Whether the agent could stand within perception of `reader` at `step`."""
        q, free = self.reach(agent_step, step)
        return hazard(reader, q) <= free * max_vel

    def advance(self, step: int, tile: Tile) -> "PathPromise":
        """The promise after the agent moved to `tile` at `step` (a path fixes every tile)."""
        return self

    def expired(self, step: int) -> bool:
        """Whether an agent at `step` is no longer bound (it is judged from where it stands)."""
        return self.end <= step


@dataclass(frozen=True)
class RoutePromise:
    """Through step `until` the agent stands on route tiles, at tiles[at] now, walking forward
    at most one tile per step, and on tiles[0] through step `depart`."""

    tiles: tuple[Tile, ...]
    until: int
    depart: int
    at: int = 0

    @property
    def end(self) -> int:
        return self.until

    def next_tiles(self, step: int) -> tuple[Tile, ...]:
        """The tiles the agent may stand on at `step`, the step after its current one."""
        k = self.at
        return self.tiles[k:k + 1] if step <= self.depart else self.tiles[k:k + 2]

    def allowed(self, step: int, tile: Tile) -> bool:
        return tile in self.next_tiles(step)

    def reach(self, agent_step: int, step: int) -> tuple[int, int, int]:
        """(first, last, free steps): at `step` the agent stands on one of route tiles
        first..last or, past the promise's end, within `free steps` of moves of one of them."""
        k, e = self.at, self.until
        walk = min(step, e) - max(agent_step, self.depart)  # steps it may walk on before `step`
        return k, min(k + max(0, walk), len(self.tiles) - 1), max(0, step - e)

    def may_reach(self, hazard, reader: Tile, agent_step: int, step: int, max_vel: int) -> bool:
        x, last, free = self.reach(agent_step, step)
        budget, route = free * max_vel, self.tiles
        while x <= last:
            h = hazard(reader, route[x])
            if h <= budget:
                return True
            # the hazard changes by at most max_vel per move (bounds.py): the next tiles along
            # the route cannot come within budget sooner
            x += -(-(h - budget) // max_vel)
        return False

    def advance(self, step: int, tile: Tile) -> "RoutePromise":
        if step <= self.until and tile != self.tiles[self.at]:
            # the env holds a routed agent to its tile or the next one
            return RoutePromise(self.tiles, self.until, self.depart, self.at + 1)
        return self

    def expired(self, step: int) -> bool:
        return self.until <= step


Promise = PathPromise | RoutePromise
#: The action keys that declare a promise.
_KEYS = ("path", "route", "until", "depart")


def declare(running: Promise | None, action: Any, *, agent: str, pos: Tile, step: int, landing: Tile,
            world: TileMap, max_vel: int, max_steps: int) -> Promise | None:
    """Check that `agent` at `pos` and `step` whose move lands on `landing` keeps its `running`
    promise, and parse the promise `action` declares: the new promise to hold, or None to keep
    the running one. Raises InvalidActionError and changes nothing.

    A path lists the tiles the agent promises to stand on after this move and each of its next
    ones: path[0] is where this move lands; a new path may extend a running one (the result is
    merged with the part of the running path it does not cover). A route lists tiles starting
    with the one the agent stands on: through step `until` it stands on route tiles only, walking
    forward at most one route tile per step and pausing as it likes, and it stays on route[0]
    through step `depart` (default: now). It may be declared when no promise runs past this
    step, or while a route runs if the agent stands on that route's last tile and departs no
    earlier than that route's end (it only narrows the promise).
    """
    if running is None and not (isinstance(action, Mapping) and any(action.get(k) is not None for k in _KEYS)):
        return None  # the common case, decided without building an error context
    s = step
    where = f"action of agent {agent!r} at step {s}"
    running_route = running if isinstance(running, RoutePromise) else None
    running_path = running if isinstance(running, PathPromise) else None
    if running_route is not None and not running_route.allowed(s + 1, landing):
        r = running_route
        k, nxt = r.at, r.next_tiles(s + 1)[-1]
        raise InvalidActionError(
            f"{where}: it declared a route through step {r.until} (departing after step "
            f"{r.depart}) and stands on its tile {k}, {r.tiles[k]}; this move lands on {landing}, "
            f"off the route or past where it may be at step {s + 1}; a declared route is a promise others "
            f"already relied on: stay or move to {nxt} (env.move_to(agent, {nxt}))")
    promised = running_path.tile_at(s + 1) if running_path is not None else None
    if promised is not None and landing != promised:
        raise InvalidActionError(
            f"{where}: it declared a path through step {running_path.end} that puts it on {promised} at "
            f"step {s + 1}, but this move lands on {landing}; a declared path is a promise others "
            f"already relied on: follow it (env.move_to(agent, {promised}))")
    if not isinstance(action, Mapping):
        return None
    raw_path, raw_route = action.get("path"), action.get("route")
    until, depart = action.get("until"), action.get("depart")
    if raw_route is None:
        if until is not None or depart is not None:
            raise InvalidActionError(f"{where}: 'until' and 'depart' belong to a declared 'route'; add the "
                                     f"route or drop them")
        if raw_path is None:
            return None
        return _path(running, raw_path, where, s, landing, world, max_vel, max_steps)
    if raw_path is not None:
        raise InvalidActionError(f"{where}: declare a 'path' or a 'route', not both")
    if not _is_int(until) or not s < until <= max_steps:
        raise InvalidActionError(f"{where}: a 'route' needs 'until', the last step it holds, an int in "
                                 f"{s + 1}..{max_steps}; got {until!r}")
    if depart is None:
        depart = s
    elif not _is_int(depart) or not s <= depart <= until:
        raise InvalidActionError(f"{where}: 'depart', the last step on route[0], must be an int in "
                                 f"{s}..{until} (until); got {depart!r}")
    if running_route is not None:
        last = running_route.tiles[-1]
        if pos != last or depart < running_route.until:
            raise InvalidActionError(
                f"{where}: its route runs through step {running_route.until}; a new route may replace it only "
                f"from that route's last tile, {last}, departing at step {running_route.until} or later "
                f"(it stands on {pos}, departs after step {depart})")
    elif running is not None:
        raise InvalidActionError(f"{where}: its promise of step {running.end} still runs; a new route "
                                 f"may be declared from that step on")
    tiles = tile_list(where, "route", raw_route, world, max_vel)
    if tiles[0] != pos:
        raise InvalidActionError(f"{where}: route[0] must be the tile the agent stands on, {pos}, "
                                 f"got {tiles[0]}")
    if len(set(tiles)) != len(tiles):
        raise InvalidActionError(f"{where}: a route visits each tile once; it repeats one of {tiles}")
    route = RoutePromise(tuple(tiles), int(until), int(depart))
    if not route.allowed(s + 1, landing):
        raise InvalidActionError(f"{where}: this move lands on {landing}, but the route it declares "
                                 f"allows only {list(route.next_tiles(s + 1))} at step {s + 1}")
    return route


def _path(running: Promise | None, raw: Any, where: str, s: int, landing: Tile, world: TileMap,
          max_vel: int, max_steps: int) -> PathPromise:
    if isinstance(running, RoutePromise):
        raise InvalidActionError(f"{where}: its route runs through step {running.until}; a path may be "
                                 f"declared from that step on")
    if isinstance(raw, Sequence) and not isinstance(raw, (str, bytes)) and len(raw) > max_steps - s:
        raise InvalidActionError(f"{where}: 'path' has {len(raw)} tiles but the agent has only "
                                 f"{max_steps - s} steps left (max_steps={max_steps})")
    tiles = tile_list(where, "path", raw, world, max_vel)
    if tiles[0] != landing:
        raise InvalidActionError(f"{where}: path[0] must be the tile this move lands on, {landing}, "
                                 f"got {tiles[0]}")
    if running is not None:
        for k, q in enumerate(tiles):
            old = running.tile_at(s + 1 + k)
            if old is not None and old != q:
                raise InvalidActionError(f"{where}: path[{k}] = {q} breaks the path declared earlier, which "
                                         f"puts it on {old} at step {s + 1 + k}; a new path may only extend it")
        # The earlier promise still holds beyond the new path's end.
        if running.end > s + len(tiles):
            tiles += running.tiles[s + 1 + len(tiles) - running.base:]
    return PathPromise(tuple(tiles), s + 1)


def tile_list(where: str, key: str, raw: Any, world: TileMap, max_vel: int) -> list[Tile]:
    """A non-empty list of walkable (x, y) tiles, each at most max_vel from the one before."""
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Sequence) or not raw:
        raise InvalidActionError(f"{where}: {key!r} must be a non-empty list of (x, y) tiles, got {raw!r}")
    tiles: list[Tile] = []
    for k, tile in enumerate(raw):
        try:
            x, y = tile
            if isinstance(x, bool) or isinstance(y, bool):
                raise TypeError
            q = (int(x), int(y))
            if q != (x, y):
                raise TypeError
        except (TypeError, ValueError):
            raise InvalidActionError(f"{where}: {key}[{k}] must be an (x, y) pair of ints, got {tile!r}") from None
        if not world.is_walkable(q):
            raise InvalidActionError(f"{where}: {key}[{k}] = {q} is blocked or off the map; a {key} "
                                     f"holds walkable tiles only")
        if tiles and max(abs(q[0] - tiles[-1][0]), abs(q[1] - tiles[-1][1])) > max_vel:
            raise InvalidActionError(f"{where}: {key}[{k - 1}] -> {key}[{k}] ({tiles[-1]} -> {q}) is more "
                                     f"than max_vel={max_vel} tiles: one move per step")
        tiles.append(q)
    return tiles


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
