"""Who perceived whom: the env's perception rule evaluated over a whole recorded trajectory.

Agent i perceives j at time t when j != i and the env's perception rule (`metropolis_env.
perception.Perception`: perception "arena" with `same_zone`, else "box") says i's tile sees j's. These are the *true* dependencies of the
step an agent computes at time t: what it does may depend on exactly these agents.
"""

from __future__ import annotations

import numpy as np

from ..perception import Perception
from ..world import TileMap

# Agent-steps handled per chunk: bounds the temporary pair arrays (~ 100 bytes per agent-step).
_CHUNK_AGENT_STEPS = 1 << 21


def perceived_csr(world: TileMap, positions: np.ndarray, n_steps: int, radius_p: int,
                  same_zone: bool) -> tuple[np.ndarray, np.ndarray]:
    """Perceived agents of every agent at every time 0..n_steps-1, in CSR form.

    positions: int array (N, >= n_steps, 2) of (x, y) tiles on `world`.
    Returns (counts, ids): counts int16 (N, n_steps), the number of agents agent a perceives at
    time t; ids int32, the perceived agents' indices, ordered step-major (t, then a, then the
    perceived index ascending), so that the ids of (a, t) start at the cumulative sum of
    `counts.T.ravel()` before position t * N + a.
    """
    n = positions.shape[0]
    if radius_p < 0:
        raise ValueError(f"radius_p must be >= 0, got {radius_p}")
    counts = np.zeros((n_steps, n), dtype=np.int64)
    ids_parts: list[np.ndarray] = []
    chunk = max(1, _CHUNK_AGENT_STEPS // max(n, 1))
    perception = Perception(world, radius_p, "arena" if same_zone else "box")
    for s0 in range(0, n_steps, chunk):
        s1 = min(n_steps, s0 + chunk)
        c, ids = _chunk(positions[:, s0:s1], perception, world)
        counts[s0:s1] = c
        ids_parts.append(ids)
    ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, np.int32)
    if counts.size and counts.max() > np.iinfo(np.int16).max:
        raise ValueError("more than 32767 agents perceived by one agent")
    return np.ascontiguousarray(counts.T.astype(np.int16)), ids.astype(np.int32)


def _chunk(pos: np.ndarray, perception: Perception, world: TileMap) -> tuple[np.ndarray, np.ndarray]:
    r = perception.radius_p
    n, steps = pos.shape[0], pos.shape[1]
    # Agent-steps in step-major order: row k = t * n + a.
    x = pos[:, :, 0].T.ravel().astype(np.int64)
    y = pos[:, :, 1].T.ravel().astype(np.int64)
    t = np.repeat(np.arange(steps, dtype=np.int64), n)
    a = np.tile(np.arange(n, dtype=np.int64), steps)
    # Cells of side >= r: two agents within Chebyshev r lie in the same or adjacent cells.
    side = max(r, 1)
    cx = x // side + 1  # + 1: a border cell on each side so neighbour keys never wrap
    cy = y // side + 1
    ncx = world.width // side + 3
    ncy = world.height // side + 3
    key = (t * ncy + cy) * ncx + cx
    order = np.argsort(key, kind="stable")
    skey = key[order]
    src_parts, dst_parts = [], []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            nkey = key + dy * ncx + dx
            lo = np.searchsorted(skey, nkey, side="left")
            hi = np.searchsorted(skey, nkey, side="right")
            cnt = hi - lo
            total = int(cnt.sum())
            if total == 0:
                continue
            src = np.repeat(np.arange(key.size, dtype=np.int64), cnt)
            # Position within each [lo, hi) run: global index minus the run's start offset.
            run_start = np.repeat(np.cumsum(cnt) - cnt, cnt)
            dst = order[np.repeat(lo, cnt) + (np.arange(total, dtype=np.int64) - run_start)]
            src_parts.append(src)
            dst_parts.append(dst)
    if not src_parts:
        return np.zeros((steps, n), np.int64), np.zeros(0, np.int32)
    src = np.concatenate(src_parts)
    dst = np.concatenate(dst_parts)
    ok = (src != dst) & perception.sees_arrays(x[src], y[src], x[dst], y[dst])
    src, dst = src[ok], dst[ok]
    # dst shares src's step, so sorting by (src, perceived agent) gives step-major CSR order.
    o = np.lexsort((a[dst], src))
    src, dst = src[o], dst[o]
    counts = np.bincount(src, minlength=key.size).reshape(steps, n)
    return counts, a[dst].astype(np.int32)
