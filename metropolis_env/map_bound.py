"""MapBound: the hazard distance measured on the map (walls, doors, rooms), not in a straight box.

Contract (the one of `bounds.py`, in the tracker's units): for walkable tiles a and b,

    hazard(a, b) = max(box(a, b), max_vel * min(m(a, b), horizon))

where `box(a, b) = max(0, chebyshev(a, b) - radius_p)` is the paper's value and `m(a, b)` is the
fewest moves, both agents' together, before agents on a and b could perceive each other:

    m(a, b) = min over perceivable tile pairs (u, v) of  walk(a, u) + walk(b, v).

`walk` counts moves of the env's movement model (one move reaches any walkable tile within
Chebyshev `max_vel`, corners may be cut) and "perceivable" is the env's perception rule (Chebyshev
box `radius_p`, and the same `world.zone` when perception is "arena"). The derivation, why each
term keeps the tracker exact and why the horizon cap is safe, is in docs/MAP_BOUND.md. In short:

- one move of one agent lowers m by at most 1, so `max_vel * m` closes by at most `max_vel` per
  step, the unit the rules of `rules.py` count in (blocked iff m <= gap + 1, same step coupled iff
  m <= 1, validity m >= |gap|);
- `max_vel * m >= box` (a move spans at most max_vel tiles of Chebyshev distance and a perceivable
  pair is at most radius_p apart), so the tracker's box-radius neighbour search stays complete;
- the cap keeps the computation local: m is only searched up to `horizon` moves, in a window of
  Chebyshev radius `horizon * max_vel + radius_p` around a. Beyond the cap the box value takes
  over. Capping at a *constant* keeps the hazard 1-Lipschitz per move (max and min of such
  functions are such functions), which the tracker's incremental update relies on; capping at the
  box value at a window's edge would not be.

Fields are computed per source tile on demand and cached (agents revisit few tiles) within a
memory budget; after that, `hazard` is one dict lookup and one array read.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from .errors import ConfigError
from .perception import Perception
from .rules import box_hazard
from .world import Tile, TileMap, shortest_walks

#: Default search horizon in moves. Larger gives tighter bounds for agents many steps apart and
#: costs (2 * horizon * max_vel + 2 * radius_p + 1)^2 bytes per cached tile.
DEFAULT_HORIZON = 32
#: Default memory budget of the per-tile cache.
DEFAULT_CACHE_BYTES = 256 << 20


@dataclass(frozen=True)
class CacheStats:
    """What the per-tile cache holds and what filling it cost (seconds of wall time)."""

    tiles: int
    bytes: int
    computed: int
    evicted: int
    compute_s: float


class MapBound:
    """Map-aware hazard distance (see the module docstring for the contract).

    world: the tile map. radius_p, max_vel, perception: as in the env ("box" or "arena").
    horizon: moves searched per tile (1..250); beyond it the box value is used.
    cache_bytes: memory budget of the per-tile field cache (oldest fields are dropped first).
    """

    name = "map"

    def __init__(self, world: TileMap, radius_p: int, max_vel: int = 1, perception: str = "arena",
                 *, horizon: int = DEFAULT_HORIZON, cache_bytes: int = DEFAULT_CACHE_BYTES):
        self._perception = Perception(world, radius_p, perception)
        if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or not 1 <= horizon <= 250:
            raise ConfigError(f"horizon must be an int in 1..250 (moves), got {horizon!r}")
        self.world = world
        self.radius_p = int(radius_p)
        self.max_vel = int(max_vel)
        self.perception = perception
        self.horizon = int(horizon)
        self.cache_bytes = int(cache_bytes)
        # The window holds every tile within `horizon` moves of a perceivable pair: a walk of k
        # moves spans at most k * max_vel tiles, perception bridges radius_p more.
        self.window = self.horizon * self.max_vel + self.radius_p
        R = self.window
        self._size = 2 * R + 1
        # Blocked margin of the flat window layout (see _compute): wide enough for one move
        # and for the perception box.
        self._pad = max(self.max_vel, self.radius_p)
        # Out-of-map tiles read as blocked: a window never wraps or needs bounds checks.
        h, w = world.height, world.width
        self._walk = np.zeros((h + 2 * R, w + 2 * R), dtype=bool)
        self._walk[R:R + h, R:R + w] = world.walkable
        self._zone = np.full((h + 2 * R, w + 2 * R), -1, dtype=np.int32)
        self._zone[R:R + h, R:R + w] = self._perception.zones
        off = np.abs(np.arange(-R, R + 1))
        cheb = np.maximum(off[:, None], off[None, :])
        self._box = np.maximum(cheb - self.radius_p, 0)
        top = max(self.max_vel * self.horizon, R - self.radius_p)
        self._dtype = np.uint8 if top <= 255 else np.uint16
        self._fields: dict[Tile, np.ndarray] = {}
        self._computed = 0
        self._evicted = 0
        self._compute_s = 0.0

    # -- the bound interface -----------------------------------------------------------------

    def hazard(self, a: Tile, b: Tile) -> int:
        """Lower bound on the moves (in tiles of closing, max_vel per move) before agents on
        walkable tiles `a` and `b` could perceive each other; 0 if they may now. Symmetric,
        never below the box value, and changes by at most max_vel when either tile moves.
        The box value when either tile is blocked (no agent can stand there)."""
        R = self.window
        dx, dy = b[0] - a[0], b[1] - a[1]
        if -R <= dx <= R and -R <= dy <= R:
            f = self._fields.get(a)
            if f is not None:
                return int(f[dy + R, dx + R])
            f = self._fields.get(b)
            if f is not None:
                return int(f[R - dy, R - dx])
            return int(self.field(a)[dy + R, dx + R])
        d = abs(dx) if abs(dx) > abs(dy) else abs(dy)
        return box_hazard(d, self.radius_p)

    def search_radius(self, h: int) -> int:
        """Chebyshev radius that holds every tile whose hazard to the centre is <= h (the map
        hazard is never below the box hazard, so the box radius suffices)."""
        return self.radius_p + h

    # -- fields ------------------------------------------------------------------------------

    def field(self, a: Tile) -> np.ndarray:
        """hazard(a, .) on the window of radius `window` centred on `a` (read-only array indexed
        [dy + window, dx + window]); computed on first use and cached."""
        a = (int(a[0]), int(a[1]))
        f = self._fields.get(a)
        if f is None:
            f = self._compute([a])[0]
            self._store(a, f)
        return f

    def precompute(self, tiles: Iterable[Tile] | None = None) -> CacheStats:
        """Compute and cache the fields of `tiles` (default: every walkable tile). The cache
        budget still applies: tiles beyond it evict earlier ones."""
        if tiles is None:
            tiles = self.world.walkable_tiles()
        for t in tiles:
            t = (int(t[0]), int(t[1]))
            if t not in self._fields:
                self._store(t, self._compute([t])[0])
        return self.cache_stats()

    def cache_stats(self) -> CacheStats:
        n = len(self._fields)
        return CacheStats(n, n * self._size * self._size * np.dtype(self._dtype).itemsize,
                          self._computed, self._evicted, self._compute_s)

    def clear(self) -> None:
        """Drop every cached field."""
        self._fields.clear()

    def __getstate__(self) -> dict:
        # The cache is derived data: rebuilt on demand, never pickled into checkpoints.
        state = dict(self.__dict__)
        state["_fields"] = {}
        state.pop("_colors", None)  # derived from the map: rebuilt on demand
        return state

    def _store(self, a: Tile, f: np.ndarray) -> None:
        fields = self._fields
        per = f.nbytes
        while fields and (len(fields) + 1) * per > self.cache_bytes:
            fields.pop(next(iter(fields)))  # oldest first: cheap, and hot tiles come back fast
            self._evicted += 1
        fields[a] = f

    def _compute(self, tiles: list[Tile]) -> list[np.ndarray]:
        """Hazard windows of source tiles.

        Walks are the package's shortest-walk kernel (world.shortest_walks) on the window; the
        perception step is array passes over the window laid out flat (row-major, `pad` blocked
        columns after each row and `pad` blocked rows above and below) so that a shift by
        (dx, dy) is one contiguous slice at offset dy * P + dx.
        """
        t0 = time.perf_counter()
        R, S, K, v, r = self.window, self._size, self.horizon, self.max_vel, self.radius_p
        pad, P = self._pad, self._size + self._pad
        inf = K + 1  # "farther than the horizon"; uint8 arithmetic stays below 256
        # m is capped at K, so a walk of K moves matters no more than none: both searches stop
        # at K - 1 (a seed of G = K could only give H = K, which the cap gives anyway).
        moves = [(dx, dy) for dy in range(-v, v + 1) for dx in range(-v, v + 1) if dx or dy]
        res = []
        for x, y in tiles:
            # Padded map coordinates of a tile are its window's top-left corner.
            walk = self._walk[y:y + S, x:x + S]
            block = np.full((S + 2 * pad, P), inf, dtype=np.uint8)
            block[pad:pad + S, :S][walk] = 0
            block = block.ravel()
            # F: moves from the source (inf beyond the horizon).
            F = np.full((S + 2 * pad, P), inf, dtype=np.uint8)
            if walk[R, R]:
                walks = shortest_walks(walk, (R, R), moves, limit=K - 1)
                F[pad:pad + S, :S] = np.where(walks >= 0, walks, inf)
            F = F.ravel()
            # G(q): fewest moves from the source to a tile from which q is perceivable (the
            # relation is symmetric: a min over q's own perception box, within q's zone).
            if self._perception.zoned:
                G = self._zone_min(F, (y, x), inf)
            else:
                G = _min_filter(F, r, P)
            np.maximum(G, block, out=G)
            # H(b) = min over q of G(q) + walk(q, b) = m(source, b): one multi-source walk.
            G = G.reshape(S + 2 * pad, P)[pad:pad + S, :S]
            H = shortest_walks(walk, np.where(G < inf, G, -1).astype(np.int32), moves, limit=K - 1)
            m = np.where(H >= 0, H, K).astype(self._dtype)
            if v != 1:
                m *= v
            # No agent stands on a blocked tile; should one be asked about, the box answers.
            m[~walk] = 0
            if not walk[R, R]:
                m[...] = 0
            f = np.maximum(self._box, m).astype(self._dtype)
            f.setflags(write=False)
            res.append(f)
        self._computed += len(tiles)
        self._compute_s += time.perf_counter() - t0
        return res

    def _zone_min(self, F: np.ndarray, corner: tuple[int, int], inf: int) -> np.ndarray:
        """min of F over each cell's perception box restricted to its zone (F flat, padded).
        One colour of zones at a time (zones of a colour lie more than radius_p apart, so no
        box holds cells of two of them), on the rows of their bounding boxes."""
        S, r, pad = self._size, self.radius_p, self._pad
        P = S + pad
        y, x = corner
        color_map, color_of = self._zone_colors
        zone = np.full((S + 2 * pad, P), -1, dtype=np.int32)
        zone[pad:pad + S, :S] = self._zone[y:y + S, x:x + S]
        color = np.full((S + 2 * pad, P), -1, dtype=np.int32)
        color[pad:pad + S, :S] = color_map[y:y + S, x:x + S]
        color = color.ravel()
        rows: dict[int, tuple[int, int]] = {}  # colour -> rows of its zones reached here
        boxes = self._zone_boxes
        for z in np.unique(zone.ravel()[F < inf]).tolist():
            c, zy0, zy1 = color_of[z], boxes[z][0], boxes[z][1] + 1
            c0, c1 = rows.get(c, (zy0, zy1))
            rows[c] = (min(c0, zy0), max(c1, zy1))
        G = np.full_like(F, inf)
        n_rows = S + 2 * pad
        for c, (zy0, zy1) in rows.items():
            # rows of these zones' cells, widened by r: the min filter must see all of them
            u0 = max(zy0 - y + pad - r, 0) * P
            u1 = min(zy1 - y + pad + r, n_rows) * P
            in_c = color[u0:u1] == c
            M = _min_filter(np.where(in_c, F[u0:u1], inf).astype(np.uint8, copy=False), r, P)
            np.copyto(G[u0:u1], M, where=in_c)  # each cell has one colour: no min needed
        return G

    @property
    def _zone_boxes(self) -> dict[int, tuple[int, int, int, int]]:
        """First and last row and column (padded map coordinates) of every zone."""
        try:
            return self.__dict__["_boxes"]
        except KeyError:
            pass
        ys, xs = np.nonzero(self._zone >= 0)
        ids, inv = np.unique(self._zone[ys, xs], return_inverse=True)
        lo = np.full((2, len(ids)), np.iinfo(np.int64).max)
        hi = np.full((2, len(ids)), -1)
        for i, v in enumerate((ys, xs)):
            np.minimum.at(lo[i], inv, v)
            np.maximum.at(hi[i], inv, v)
        out = {int(z): (int(a), int(b), int(c), int(d))
               for z, a, b, c, d in zip(ids, lo[0], hi[0], lo[1], hi[1])}
        self.__dict__["_boxes"] = out
        return out

    @property
    def _zone_colors(self) -> tuple[np.ndarray, dict[int, int]]:
        """A colouring of the padded zone map (-1 off the map) and each zone's colour: greedy,
        by bounding box, so that zones of one colour lie more than radius_p apart (Chebyshev)
        and one min filter serves them all. Rooms far apart share a colour."""
        try:
            return self.__dict__["_colors"]
        except KeyError:
            pass
        boxes = self._zone_boxes
        ids = list(boxes)
        y0, y1, x0, x1 = np.array(list(boxes.values()), dtype=np.int64).reshape(-1, 4).T
        colors = np.full(len(ids), -1, dtype=np.int64)
        r = self.radius_p
        for i in range(len(ids)):
            near = (np.maximum(y0 - y1[i], y0[i] - y1) <= r) & (np.maximum(x0 - x1[i], x0[i] - x1) <= r)
            used = set(colors[near].tolist())
            c = 0
            while c in used:
                c += 1
            colors[i] = c
        color_of = dict(zip(ids, colors.tolist()))
        lut = np.full(max(ids, default=0) + 2, -1, dtype=np.int32)
        lut[ids] = colors
        color_map = lut[self._zone]  # zone -1 (off the map) reads lut[-1] = -1
        out = self.__dict__["_colors"] = (color_map, color_of)
        return out


def _min_filter(D: np.ndarray, radius: int, P: int) -> np.ndarray:
    """Min over the Chebyshev box of `radius` around every cell of a flat array of rows of
    width P (separable: a box is a row interval times a column interval). Cells beyond the
    array's ends do not count; the caller's blocked padding keeps rows apart."""
    n = D.size
    out = D.copy()
    for s in range(1, min(radius, n - 1) + 1):
        np.minimum(out[:n - s], D[s:], out=out[:n - s])
        np.minimum(out[s:], D[:n - s], out=out[s:])
    src = out.copy()
    for s in range(1, radius + 1):
        k = s * P
        if k >= n:
            break
        np.minimum(out[:n - k], src[k:], out=out[:n - k])
        np.minimum(out[k:], src[:n - k], out=out[k:])
    return out


_SHARED: OrderedDict[tuple, MapBound] = OrderedDict()


def shared_map_bound(world: TileMap, radius_p: int, max_vel: int = 1, perception: str = "arena") -> MapBound:
    """A MapBound with default settings, shared by every env on an equal map with equal
    parameters: its fields depend on nothing else, so environments made again and again
    (tests, sweeps, sync next to async) do not recompute them. Keeps the last few."""
    digest = hashlib.blake2b(np.ascontiguousarray(world.walkable).tobytes(), digest_size=16)
    digest.update(np.ascontiguousarray(world.zone).tobytes())
    key = (world.walkable.shape, digest.hexdigest(), int(radius_p), int(max_vel), perception)
    bound = _SHARED.pop(key, None)
    if bound is None:
        bound = MapBound(world, radius_p, max_vel, perception)
        while len(_SHARED) >= 2:
            _SHARED.popitem(last=False)
    _SHARED[key] = bound
    return bound
