"""The tile world: a map of walkable tiles, sectors and arenas (rooms), and the maps we ship.

Coordinates are `(x, y)`: x is the column (west to east), y the row (north to south); grids are
indexed `grid[y, x]`, as in the Generative Agents data.

Perception is a Chebyshev box of `radius_p` tiles, optionally narrowed to the *same zone*: the
same arena (room), or for tiles outside any arena the same sector (the Generative Agents rule,
which compares `world:sector:arena` paths, so all plain street tiles share one zone).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Sequence

import numpy as np

from .errors import ConfigError, MapFormatError

Tile = tuple[int, int]

#: Zone of street tiles (no sector, no arena). Every street tile shares it, as in Generative Agents.
STREET_ZONE = 0
#: Zone ids of sector-without-arena tiles start here; arena ids are below it.
_SECTOR_ZONE_BASE = 1 << 20


@dataclass(frozen=True, eq=False)
class TileMap:
    """An immutable tile map.

    `walkable[y, x]` says whether an agent may stand on a tile; `zone[y, x]` is the perception
    zone (see the module docstring); `sector[y, x]` indexes `sector_names` (-1: none) and
    `arena[y, x]` keys `arena_names` (0: none).
    """

    name: str
    walkable: np.ndarray
    zone: np.ndarray
    sector: np.ndarray
    arena: np.ndarray
    sector_names: tuple[str, ...] = ()
    arena_names: dict[int, str] = field(default_factory=dict)

    @property
    def width(self) -> int:
        return int(self.walkable.shape[1])

    @property
    def height(self) -> int:
        return int(self.walkable.shape[0])

    def in_bounds(self, tile: Tile) -> bool:
        x, y = tile
        return 0 <= x < self.width and 0 <= y < self.height

    def is_walkable(self, tile: Tile) -> bool:
        return self.in_bounds(tile) and bool(self.walkable[tile[1], tile[0]])

    def location(self, tile: Tile) -> str:
        """`"sector:arena"` of a tile (`""` parts where there is none), for observations."""
        x, y = tile
        s = int(self.sector[y, x])
        a = int(self.arena[y, x])
        return f"{self.sector_names[s] if s >= 0 else ''}:{self.arena_names.get(a, '')}"

    def walkable_tiles(self) -> np.ndarray:
        """All walkable tiles as an (n, 2) array of (x, y), in row-major order."""
        ys, xs = np.nonzero(self.walkable)
        return np.stack([xs, ys], axis=1)

    def distance_field(self, target: Tile, max_vel: int = 1) -> np.ndarray:
        """Fewest moves from every tile to `target` (int32 (H, W); -1 where unreachable).

        A move goes to any walkable tile within Chebyshev distance `max_vel` (the env's
        movement model). Cached per (target, max_vel): agents walk to few distinct places.
        """
        key = (int(target[0]), int(target[1]), int(max_vel))
        cache = self._field_cache
        hit = cache.pop(key, None)
        if hit is None:
            hit = _distance_field(self, key[:2], key[2])
            # Keep recent fields within a memory budget: big concatenated maps have big fields.
            budget = max(8, _FIELD_CACHE_BYTES // max(hit.nbytes, 1))
            while len(cache) >= budget:
                cache.pop(next(iter(cache)))
        cache[key] = hit
        return hit

    def __getstate__(self) -> dict:
        # Distance fields are a cache: rebuilt on demand, never pickled into checkpoints.
        return {k: v for k, v in self.__dict__.items() if k != "_fields"}

    @property
    def _field_cache(self) -> dict:
        try:
            return self.__dict__["_fields"]
        except KeyError:
            self.__dict__["_fields"] = {}
            return self.__dict__["_fields"]


_FIELD_CACHE_BYTES = 64 << 20
#: shortest_walks' mark of a blocked tile while it searches (never returned).
_BLOCKED = np.iinfo(np.int32).max


def _distance_field(tmap: TileMap, target: Tile, max_vel: int) -> np.ndarray:
    moves = [(dx, dy) for dy in range(-max_vel, max_vel + 1) for dx in range(-max_vel, max_vel + 1) if dx or dy]
    try:
        return shortest_walks(tmap.walkable, target, moves)
    except ValueError:
        raise ConfigError(f"distance_field: target tile {target} is not walkable") from None


def shortest_walks(walkable: np.ndarray, seeds, moves, limit: int | None = None) -> np.ndarray:
    """Fewest moves from every tile of a (H, W) `walkable` grid to the nearest seed, one move
    being any (dx, dy) of `moves` onto a walkable tile: int32 (H, W), -1 where unreachable (or
    farther than `limit`), read-only. The one shortest-walk kernel of the package: the env's
    moves to a target, the workloads' 4-connected walks, the map bound's windows.

    seeds: a tile (x, y) (distance 0 there), or an int (H, W) array of start values (a walk from
    a seed costs its value plus its moves; -1: not a seed). Raises ValueError if a target tile
    is not walkable.
    """
    # Breadth-first search by whole wavefronts (numpy over the frontier), on a grid padded with
    # blocked tiles so that neighbour indices never wrap around a row. Seeds of value d join the
    # wavefront of distance d. `dist` is -1 on open unreached tiles and `_BLOCKED` on blocked
    # ones, so one read tells whether a tile may still be reached.
    h, w = walkable.shape
    pad = max(max(abs(dx), abs(dy)) for dx, dy in moves)
    pw = w + 2 * pad
    dist2d = np.full((h + 2 * pad, pw), _BLOCKED, dtype=np.int32)
    dist2d[pad:pad + h, pad:pad + w] = np.where(walkable, -1, _BLOCKED)
    dist = dist2d.ravel()
    if isinstance(seeds, np.ndarray):
        ys, xs = np.nonzero((seeds >= 0) & walkable)
        values = seeds[ys, xs].astype(np.int64)
        order = values.argsort(kind="stable")
        seed_at = ((ys + pad) * pw + xs + pad).astype(np.int64)[order]
        values = values[order]
    else:
        tx, ty = int(seeds[0]), int(seeds[1])
        if not (0 <= tx < w and 0 <= ty < h) or not walkable[ty, tx]:
            raise ValueError(f"target tile {(tx, ty)} is not walkable")
        seed_at = np.array([(ty + pad) * pw + tx + pad], dtype=np.int64)
        values = np.zeros(1, dtype=np.int64)
    offsets = np.array([dy * pw + dx for dx, dy in moves], dtype=np.int64)
    top = np.iinfo(np.int32).max if limit is None else int(limit)
    frontier = np.zeros(0, dtype=np.int64)
    k = 0  # seeds before k have joined
    # joined[d - first]: how many seeds have joined by the wavefront of distance d (looked up
    # once, unless the seed values are too sparse for a table)
    first = d = int(values[0]) if values.size else 0
    span = min(int(values[-1]), top) - first + 1 if values.size else 0
    joined = (values.searchsorted(np.arange(first, first + span), side="right").tolist()
              if span <= 4 * values.size + 64 else None)
    while (frontier.size or k < values.size) and d <= top:
        nxt = (frontier[:, None] + offsets).ravel()
        if k < values.size:
            k1 = joined[d - first] if joined is not None else int(values.searchsorted(d, side="right"))
            if k1 > k:
                nxt = np.concatenate((nxt, seed_at[k:k1]))
                k = k1
        nxt = nxt[dist[nxt] == -1]
        # Deduplicate without sorting (tiles reached from two frontier tiles): write each entry's
        # tag (-2 - its position) into `dist`, keep the entries that read their own tag back,
        # then store the real distance.
        tag = np.arange(-2, -2 - nxt.size, -1, dtype=np.int32)
        dist[nxt] = tag
        nxt = nxt[dist[nxt] == tag]
        dist[nxt] = d
        frontier = nxt
        d += 1
        if not frontier.size and k < values.size:
            d = max(d, int(values[k]))  # skip to the next seed's wavefront
    out = np.where(walkable, dist2d[pad:pad + h, pad:pad + w], -1).astype(np.int32, copy=False)
    out.setflags(write=False)
    return out


# ---------------------------------------------------------------------------------------------
# Building maps

def from_dict(data: dict[str, Any], name: str | None = None) -> TileMap:
    """Build a map from the JSON format of `data/the_ville/map.json` (see its README).

    Required keys: `width`, `height`, `blocked` (rows of '#'/'.'). Optional: `sectors`
    (`legend`, `rows` of letters, '.' = none) and `arenas` (`grid` of ids, `table` of
    `{sector, arena}`). Raises MapFormatError naming the first problem found.
    """
    if not isinstance(data, dict):
        raise MapFormatError(f"a map must be a JSON object, got {type(data).__name__}")
    try:
        w, h = int(data["width"]), int(data["height"])
        blocked = data["blocked"]
    except KeyError as e:
        raise MapFormatError(f"map is missing the key {e.args[0]!r} (needs width, height, blocked)") from None
    except (TypeError, ValueError):
        raise MapFormatError("map 'width' and 'height' must be integers") from None
    if w <= 0 or h <= 0:
        raise MapFormatError(f"map size must be positive, got {w} x {h}")
    _check_rows(blocked, "blocked", w, h)
    bad = {c for row in blocked for c in row} - {"#", "."}
    if bad:
        raise MapFormatError(f"'blocked' rows may hold only '#' and '.', found {sorted(bad)!r}")
    walkable = np.array([[c == "." for c in row] for row in blocked], dtype=bool)

    sector = np.full((h, w), -1, dtype=np.int32)
    sector_names: list[str] = []
    if "sectors" in data:
        legend, rows = _section(data, "sectors", "legend", "rows")
        _check_rows(rows, "sectors.rows", w, h)
        letters = sorted(legend)
        index = {k: i for i, k in enumerate(letters)}
        sector_names = [str(legend[k]["name"]) if isinstance(legend[k], dict) else str(legend[k])
                        for k in letters]
        for y, row in enumerate(rows):
            for x, c in enumerate(row):
                if c == ".":
                    continue
                if c not in index:
                    raise MapFormatError(f"sectors.rows[{y}][{x}] = {c!r} is not a key of sectors.legend")
                sector[y, x] = index[c]

    arena = np.zeros((h, w), dtype=np.int32)
    arena_names: dict[int, str] = {}
    if "arenas" in data:
        grid, table = _section(data, "arenas", "grid", "table")
        try:
            arena = np.array(grid, dtype=np.int32)
        except (TypeError, ValueError):
            raise MapFormatError("arenas.grid must be rows of integers") from None
        if arena.shape != (h, w):
            raise MapFormatError(f"arenas.grid must be {h} rows of {w} ints, got shape {arena.shape}")
        if arena.min() < 0 or arena.max() >= _SECTOR_ZONE_BASE:
            raise MapFormatError(f"arena ids must be in 0..{_SECTOR_ZONE_BASE - 1}")
        arena_names = {int(k): (v["arena"] if isinstance(v, dict) else str(v)) for k, v in table.items()}
        missing = set(np.unique(arena).tolist()) - set(arena_names) - {0}
        if missing:
            raise MapFormatError(f"arena ids {sorted(missing)[:5]} in arenas.grid are not in arenas.table")

    return _assemble(name or str(data.get("name", "map")), walkable, sector, arena,
                     tuple(sector_names), arena_names)


def _section(data: dict, key: str, *fields: str) -> tuple:
    """The `fields` of the map's `key` object, or MapFormatError naming what is missing."""
    try:
        return tuple(data[key][f] for f in fields)
    except (KeyError, TypeError):
        raise MapFormatError(f"{key!r} needs {' and '.join(repr(f) for f in fields)}") from None


def _check_rows(rows: Any, key: str, w: int, h: int) -> None:
    if not isinstance(rows, list) or len(rows) != h:
        raise MapFormatError(f"'{key}' must be a list of {h} row strings")
    for y, row in enumerate(rows):
        if not isinstance(row, str) or len(row) != w:
            raise MapFormatError(f"'{key}'[{y}] must be a string of {w} characters")


def _assemble(name: str, walkable: np.ndarray, sector: np.ndarray, arena: np.ndarray,
              sector_names: tuple[str, ...], arena_names: dict[int, str]) -> TileMap:
    zone = np.where(arena > 0, arena,
                    np.where(sector >= 0, _SECTOR_ZONE_BASE + sector, STREET_ZONE)).astype(np.int32)
    for a in (walkable, zone, sector, arena):
        a.setflags(write=False)
    return TileMap(name, walkable, zone, sector, arena, sector_names, arena_names)


def load_map(path: str) -> TileMap:
    """Load a map JSON file (format of `from_dict`); MapFormatError if it is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise MapFormatError(f"{path} is not valid JSON: {e}") from None
    except OSError as e:
        raise MapFormatError(f"cannot read map file {path}: {e}") from None
    return from_dict(data)


def data_path(*parts: str):
    """A path inside the package's data folder (`metropolis_env/data`)."""
    path = resources.files("metropolis_env").joinpath("data")
    for part in parts:  # one part per call: Python 3.10's joinpath takes one
        path = path.joinpath(part)
    return path


@lru_cache(maxsize=1)
def the_ville() -> TileMap:
    """The Generative Agents "the_ville" map (140 x 100), shipped with the package."""
    with data_path("the_ville", "map.json").open(encoding="utf-8") as f:
        return from_dict(json.load(f), name="the_ville")


def open_grid(width: int, height: int, blocked: Sequence[Tile] = ()) -> TileMap:
    """A plain grid with no rooms: every tile walkable except `blocked`; perception is the box."""
    if width < 1 or height < 1:
        raise ConfigError(f"grid size must be positive, got {width} x {height}")
    walkable = np.ones((height, width), dtype=bool)
    for x, y in blocked:
        walkable[y, x] = False
    return _assemble(f"grid{width}x{height}", walkable, np.full((height, width), -1, np.int32),
                     np.zeros((height, width), np.int32), (), {})


def concat(maps: Sequence[TileMap], cols: int | None = None, name: str | None = None) -> TileMap:
    """Place maps side by side, `cols` per row (default: all in one row), as one large map.

    How the paper scales the village: each copy keeps its own rooms (arena and sector ids are
    renumbered per copy) while streets stay one shared zone. All maps must have one size.
    """
    if not maps:
        raise ConfigError("concat needs at least one map")
    h, w = maps[0].height, maps[0].width
    if any(m.height != h or m.width != w for m in maps):
        raise ConfigError("concat needs maps of one size")
    k = len(maps)
    cols = k if cols is None else int(cols)
    if cols < 1:
        raise ConfigError(f"cols must be >= 1, got {cols}")
    rows = math.ceil(k / cols)
    walkable = np.zeros((rows * h, cols * w), dtype=bool)
    sector = np.full((rows * h, cols * w), -1, dtype=np.int32)
    arena = np.zeros((rows * h, cols * w), dtype=np.int32)
    sector_names: list[str] = []
    arena_names: dict[int, str] = {}
    arena_base = 0
    for i, m in enumerate(maps):
        r, c = divmod(i, cols)
        sl = (slice(r * h, (r + 1) * h), slice(c * w, (c + 1) * w))
        walkable[sl] = m.walkable
        sector[sl] = np.where(m.sector >= 0, m.sector + len(sector_names), -1)
        sector_names.extend(m.sector_names)
        arena[sl] = np.where(m.arena > 0, m.arena + arena_base, 0)
        arena_names.update({a + arena_base: n for a, n in m.arena_names.items()})
        arena_base += max(m.arena_names, default=0)
    if arena_base >= _SECTOR_ZONE_BASE:
        raise ConfigError(f"too many arenas to concatenate ({arena_base})")
    return _assemble(name or f"{maps[0].name}x{k}", walkable, sector, arena,
                     tuple(sector_names), arena_names)


def villes(k: int, cols: int | None = None) -> TileMap:
    """`k` copies of the_ville side by side (`cols` per row; default one row)."""
    if k < 1:
        raise ConfigError(f"villes needs k >= 1, got {k}")
    return concat([the_ville()] * k, cols=cols, name=f"villes{k}")
