"""Bigger populations the paper's way: copies of the_ville side by side, one trace per copy.

Copy c of `villes(k, cols)` (row c // cols, column c % cols) replays the 25-agent trace of
seed `seed + c`, shifted into its copy; all copies share one clock and one map. Agents are
named "<persona> #<c>" for c > 0 (copy 0 keeps the personas' names).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from ..errors import ConfigError
from . import plans as P
from .perception import perceived_csr
from .trace import Trace, villes_map


def default_cols(copies: int) -> int:
    """Copies per row: one row up to 40 copies (1,000 agents), else a near-square grid."""
    return copies if copies <= 40 else math.ceil(math.sqrt(copies))


def concatenate(segments: Sequence[Trace], cols: int | None = None, name: str | None = None) -> Trace:
    """One trace of all `segments` (each on the_ville, all with the same steps and clock), copy
    c placed in copy c of `villes(len(segments), cols)`. Perception stays exact: it is taken
    from the segments when no two copies' agents ever come within radius_p of each other
    (checked), else recomputed on the big map."""
    k = len(segments)
    if k == 0:
        raise ConfigError("concatenate needs at least one trace")
    first = segments[0]
    for s in segments:
        if s.n_steps != first.n_steps or not np.array_equal(s.seconds, first.seconds):
            raise ConfigError("concatenated traces must share their steps and clock")
        if (s.world.width, s.world.height) != (first.world.width, first.world.height):
            raise ConfigError("concatenated traces must be on maps of one size")
        if (s.radius_p, s.same_zone) != (first.radius_p, first.same_zone):
            raise ConfigError("concatenated traces must share their perception rule")
    cols = default_cols(k) if cols is None else int(cols)
    world = villes_map(k, cols)
    w, h = first.world.width, first.world.height
    n_seg = [s.n_agents for s in segments]
    base = np.concatenate([[0], np.cumsum(n_seg)])
    steps = first.n_steps

    positions = np.concatenate([
        s.positions + np.array([(c % cols) * w, (c // cols) * h], dtype=np.int16)
        for c, s in enumerate(segments)])
    agents = tuple(a if c == 0 else f"{a} #{c}" for c, s in enumerate(segments) for a in s.agents)

    # One activity table: segment c's ids shift by the tables before it, deduplicated.
    table: dict[str, int] = {}
    activity = np.concatenate([
        np.array([table.setdefault(t, len(table)) for t in s.activities], dtype=np.int32)[s.activity]
        for s in segments])
    partner = np.concatenate([np.where(s.partner >= 0, s.partner + base[c], -1)
                              for c, s in enumerate(segments)]).astype(np.int32)
    utterance = np.concatenate([s.utterance for s in segments])
    if any(s.call_kinds != first.call_kinds for s in segments):
        raise ConfigError("concatenated traces must share their call kinds")
    n_calls = np.concatenate([s.n_calls for s in segments])
    flat = _interleave(segments, lambda s: s.n_calls, lambda s: s.call_offsets,
                       [lambda s: s.input_tokens, lambda s: s.output_tokens, lambda s: s.call_kind], n_calls)
    if _separated(segments, w, h, cols, first.radius_p):
        n_perceived = np.concatenate([s.n_perceived for s in segments])
        (perceived_ids,) = _interleave(segments, lambda s: s.n_perceived, lambda s: s.perceived_offsets,
                                       [lambda s: s.perceived_ids], n_perceived, shift=base)
    else:
        n_perceived, perceived_ids = perceived_csr(world, positions, steps, first.radius_p, first.same_zone)
    meta = {"workload": first.meta.get("workload", first.name), "copies": k, "cols": cols,
            "seeds": [s.meta.get("seed") for s in segments],
            "world": {"map": "villes", "k": k, "cols": cols}}
    return Trace(
        name=name or f"{first.name}x{k}", agents=agents, world=world, positions=positions,
        activity=activity, activities=tuple(sorted(table, key=table.get)), partner=partner,
        utterance=utterance, n_calls=n_calls, input_tokens=flat[0], output_tokens=flat[1],
        call_kind=flat[2], call_kinds=first.call_kinds, n_perceived=n_perceived,
        perceived_ids=perceived_ids, seconds=first.seconds, radius_p=first.radius_p,
        same_zone=first.same_zone, start_time=first.start_time,
        seconds_per_step=first.seconds_per_step, meta=meta,
        plans=P.concat([None if s.plans is None else s.plans.shifted((c % cols) * w, (c // cols) * h)
                        for c, s in enumerate(segments)]))


def _separated(segments: Sequence[Trace], w: int, h: int, cols: int, r: int) -> bool:
    # Agents of two copies are at least (w - max x + min x) apart across a vertical border,
    # (h - max y + min y) across a horizontal one, taken over all copies.
    xs = np.concatenate([s.positions[:, :-1, 0].ravel() for s in segments])
    ys = np.concatenate([s.positions[:, :-1, 1].ravel() for s in segments])
    gap_x = w - int(xs.max()) + int(xs.min())
    gap_y = h - int(ys.max()) + int(ys.min())
    return gap_x > r and gap_y > r


def _interleave(segments: Sequence[Trace], counts_of: Callable, offsets_of: Callable,
                arrays_of: list[Callable], counts: np.ndarray, shift: np.ndarray | None = None) -> list[np.ndarray]:
    """Merge the segments' step-major flat arrays into the step-major order of all agents."""
    steps = segments[0].n_steps
    total_offsets = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts.T.ravel(), out=total_offsets[1:])
    n_all = counts.shape[0]
    out = [np.empty(int(total_offsets[-1]), dtype=f(segments[0]).dtype) for f in arrays_of]
    row = 0
    for c, s in enumerate(segments):
        n = s.n_agents
        seg_counts = counts_of(s).T.ravel().astype(np.int64)          # (t, a) step-major
        seg_start = offsets_of(s)[:-1]
        cells = (np.arange(steps)[:, None] * n_all + row + np.arange(n)[None, :]).ravel()
        dest_start = total_offsets[cells]
        # Each entry moves by the difference between its cell's start here and there.
        delta = np.repeat(dest_start - seg_start, seg_counts)
        dest = np.arange(delta.size, dtype=np.int64) + delta
        for o, f in zip(out, arrays_of):
            vals = f(s)
            o[dest] = vals + shift[c] if shift is not None else vals  # numpy casts to o's dtype
        row += n
    return out
