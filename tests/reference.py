"""Brute-force reference of the dependency tracker, for tests only.

Everything is recomputed from scratch, for all pairs at once (numpy broadcasting, O(N^2)), from
nothing but positions and steps, straight from the rules as the paper states them (docs/PAPER.md) with the box
bound (distance = Chebyshev tile distance):

- coupled:  Step_A == Step_B and dist <= radius_p + max_vel (clusters: connected components);
- blocked:  A by B iff Step_B < Step_A and dist <= (Step_A - Step_B + 1) * max_vel + radius_p;
- valid:    for Step_A != Step_B, dist > radius_p + (|Step_A - Step_B| - 1) * max_vel;
- ready:    a cluster is ready iff none of its members is blocked (and, in the env, it has not
            finished: agents at `max_steps` are truncated, never ready).

With `rules="versioned"` (the env keeps per-step state versions):
- no coupling (every agent is its own cluster);
- blocked:  A by B iff Step_B < Step_A and dist <= (Step_A - Step_B) * max_vel + radius_p;
- valid:    for |Step_A - Step_B| >= 2, dist > radius_p + (|Step_A - Step_B| - 2) * max_vel.
- declared paths: a laggard B whose path covers steps beyond its own (tile p_k at step k, up to
  step e) blocks A iff dist(A, p_min(Step_A, e)) <= max(0, Step_A - e) * max_vel + radius_p;
  validity is only checked for pairs whose laggard has no path running (while it has, readers
  ahead may stand anywhere its promised tiles are out of sight).
- declared routes: a laggard B on tile k of its route r (held through step e, leaving r_0 after
  step d) blocks A iff some tile r_x, k <= x <= min(k + max(0, min(Step_A, e) - max(Step_B, d)),
  len(r) - 1), has dist(A, r_x) <= max(0, Step_A - e) * max_vel + radius_p (validity: as for
  paths).

It deliberately shares no code with `metropolis_env.rules` / `tracker`, so that a mistake there
cannot hide here.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


class Analysis:
    """The tracker's derived state, recomputed for one configuration (arrays over agents).

    `blocked[a, b]`: a is blocked by b. `coupled[a, b]`: a and b are coupled (never a with
    itself). `label[a]`: a's cluster (coupling component), named by its smallest member.
    `ready_mask[a]`: a's cluster has no blocked member and (with `max_steps`) has not finished.
    `invalid[a, b]`: the pair breaks the validity invariant.
    """

    def __init__(self, positions: Sequence[Sequence[int]], steps: Sequence[int], radius_p: int,
                 max_vel: int, max_steps: int | None = None, rules: str = "paper",
                 paths: Sequence | None = None, routes: Sequence | None = None):
        s = np.asarray(steps, dtype=np.int64)
        self.steps = s
        self.dist = d = chebyshev(positions)
        gap = s[:, None] - s[None, :]  # gap[a, b] = Step_a - Step_b
        behind = gap >= 1  # b is behind a
        versioned = rules == "versioned"
        block_bound = (gap + (0 if versioned else 1)) * max_vel + radius_p
        self.blocked = behind & (d <= block_bound)
        # Validity, for b behind a: d > radius_p + (gap - 1) * max_vel (paper), or for gap >= 2
        # d > radius_p + (gap - 2) * max_vel (versioned).
        if versioned:
            invalid = (gap >= 2) & (d <= radius_p + (gap - 2) * max_vel)
        else:
            invalid = behind & (d <= radius_p + (gap - 1) * max_vel)
        pts = np.asarray(positions, dtype=np.int64).reshape(-1, 2)
        for b, declared in enumerate(paths or ()):
            if declared is None:
                continue
            base, tiles = declared
            end = base + len(tiles) - 1
            if end <= s[b]:
                continue  # walked to its end: judged from where it stands
            invalid[:, b] = False
            for a in np.flatnonzero(behind[:, b]):
                k = min(int(s[a]), end)
                tx, ty = tiles[k - base]
                dist = max(abs(int(pts[a, 0]) - tx), abs(int(pts[a, 1]) - ty))
                self.blocked[a, b] = dist <= max(0, int(s[a]) - end) * max_vel + radius_p
        for b, declared in enumerate(routes or ()):
            if declared is None:
                continue
            end, tiles, at, depart = declared
            if end <= s[b]:
                continue
            invalid[:, b] = False
            for a in np.flatnonzero(behind[:, b]):
                last = min(at + max(0, min(int(s[a]), end) - max(int(s[b]), depart)), len(tiles) - 1)
                near = min(max(abs(int(pts[a, 0]) - tx), abs(int(pts[a, 1]) - ty)) for tx, ty in tiles[at:last + 1])
                self.blocked[a, b] = near <= max(0, int(s[a]) - end) * max_vel + radius_p
        self.invalid = invalid | invalid.T
        coupled = (gap == 0) & (d <= radius_p + max_vel) & (not versioned)
        np.fill_diagonal(coupled, False)
        self.coupled = coupled
        self.label = _components(coupled)
        self.is_blocked = self.blocked.any(axis=1)
        # A cluster is ready iff none of its members is blocked (and it has not finished).
        cluster_blocked = np.bincount(self.label, weights=self.is_blocked, minlength=len(s)) > 0
        self.ready_mask = ~cluster_blocked[self.label]
        if max_steps is not None:
            self.ready_mask &= s < max_steps

    @property
    def violations(self) -> list[tuple[int, int]]:
        """Pairs (a, b), a < b, that break the validity invariant."""
        rows, cols = np.nonzero(np.triu(self.invalid, 1))
        return list(zip(rows.tolist(), cols.tolist()))

    @property
    def clusters(self) -> frozenset[frozenset[int]]:
        groups: dict[int, list[int]] = {}
        for a, lab in enumerate(self.label.tolist()):
            groups.setdefault(lab, []).append(a)
        return frozenset(frozenset(g) for g in groups.values())

    @property
    def ready_clusters(self) -> frozenset[frozenset[int]]:
        return frozenset(cl for cl in self.clusters if self.ready_mask[min(cl)])

    @property
    def ready(self) -> frozenset[int]:
        """Agents in ready clusters."""
        return frozenset(np.flatnonzero(self.ready_mask).tolist())

    def blockers(self, a: int) -> set[int]:
        return set(np.flatnonzero(self.blocked[a]).tolist())

    def coupled_with(self, a: int) -> set[int]:
        return set(np.flatnonzero(self.coupled[a]).tolist())

    def cluster_of(self, a: int) -> list[int]:
        """a's cluster, sorted."""
        return np.flatnonzero(self.label == self.label[a]).tolist()


def chebyshev(positions: Sequence[Sequence[int]]) -> np.ndarray:
    """(n, n) Chebyshev distances between all positions."""
    p = np.asarray(positions, dtype=np.int64).reshape(-1, 2)
    x, y = p[:, 0], p[:, 1]
    return np.maximum(np.abs(x[:, None] - x[None, :]), np.abs(y[:, None] - y[None, :]))


def analyse(positions: Sequence[Sequence[int]], steps: Sequence[int], radius_p: int, max_vel: int,
            max_steps: int | None = None, rules: str = "paper", paths: Sequence | None = None,
            routes: Sequence | None = None) -> Analysis:
    """Blockers, coupling, clusters and ready clusters of a configuration (see module doc)."""
    return Analysis(positions, steps, radius_p, max_vel, max_steps, rules, paths, routes)


def validity_violations(positions: Sequence[Sequence[int]], steps: Sequence[int], radius_p: int,
                        max_vel: int) -> list[tuple[int, int]]:
    """Pairs (a, b), a < b, at different steps that break the validity invariant."""
    return analyse(positions, steps, radius_p, max_vel).violations


_last_analysis: list = []


def assert_env_matches(env, ready: dict | None = None) -> Analysis:
    """Safety and liveness of an AsyncParallelEnv's current state, against the brute force.

    - every pair satisfies the validity invariant;
    - the env's ready agents (not yet submitted, and submitted but waiting for cluster mates:
      `env.ready_agents()` and `env.pending_agents()`) are exactly the members of the reference's ready clusters, and
      `env.clusters()` are exactly those clusters;
    - `ready` (the observations a driving loop holds for agents it has not submitted) covers
      exactly `env.ready_agents()`;
    - every live agent at the smallest step is ready or pending (nothing can hold it back).
    """
    names = env.possible_agents
    n = len(names)
    index = {a: i for i, a in enumerate(names)}
    steps = list(env.steps.values())
    positions = list(env.positions.values())
    # The analysis is a function of positions and steps only: reuse it while they stand still
    # (calls that only submit part of a cluster commit nothing).
    # declared paths and routes are inputs of the rules, like positions and steps
    promises = [env.promise(a) for a in names]
    paths = [(p.base, tuple(p.tiles)) if hasattr(p, "base") else None for p in promises]
    # a route's input is where the agent stands on it, found from its tile (not the promise's index)
    routes = [(p.until, tuple(p.tiles), p.tiles.index(q), p.depart) if hasattr(p, "depart") else None
              for p, q in zip(promises, positions)]
    key = (env.radius_p, env.max_vel, env.max_steps, env.rules.name, tuple(positions), tuple(steps), tuple(paths),
           tuple(routes))
    if _last_analysis and _last_analysis[0] == key:
        ref = _last_analysis[1]
    else:
        ref = analyse(positions, steps, env.radius_p, env.max_vel, env.max_steps, env.rules.name, paths, routes)
        _last_analysis[:] = [key, ref]
    if ref.invalid.any():
        raise AssertionError("validity broken for " + ", ".join(
            f"{names[a]}@{steps[a]} / {names[b]}@{steps[b]} (dist {ref.dist[a, b]})"
            for a, b in ref.violations[:5]))
    # Each env cluster named by its smallest member, like the reference's components.
    labels = [-1] * n
    clusters = env.clusters()
    assert sum(map(len, clusters)) == len({a for cl in clusters for a in cl}), "ready clusters overlap"
    for cl in clusters:
        members = [index[a] for a in cl]
        first = min(members)
        for m in members:
            labels[m] = first
    env_label = np.array(labels)
    env_mask = env_label >= 0
    if (env_mask != ref.ready_mask).any():
        raise AssertionError(
            f"ready set differs: env only {[names[i] for i in np.flatnonzero(env_mask & ~ref.ready_mask)]}, "
            f"reference only {[names[i] for i in np.flatnonzero(ref.ready_mask & ~env_mask)]}")
    assert (env_label[env_mask] == ref.label[env_mask]).all(), "ready clusters differ"
    waiting = {index[a] for a in env.ready_agents() + env.pending_agents()}
    assert waiting == set(np.flatnonzero(env_mask).tolist()), "clusters() and the ready set disagree"
    if ready is not None:
        assert set(ready) == set(env.ready_agents()), "ready_agents() differs from what step() handed out"
    s = ref.steps
    live = s < env.max_steps
    if live.any():
        stuck = np.flatnonzero(live & (s == s[live].min()) & ~env_mask)
        assert not stuck.size, f"agents at the smallest step are not ready: {[names[i] for i in stuck]}"
    return ref


def _components(adjacency: np.ndarray) -> np.ndarray:
    """Connected-component label of each node: the smallest index in its component.

    Min-label propagation: every node takes the smallest label among itself and its neighbours
    until nothing changes (as many rounds as the longest shortest path in a component)."""
    n = len(adjacency)
    label = np.arange(n)
    if not adjacency.any():
        return label
    while True:
        new = np.minimum(np.where(adjacency, label[None, :], n).min(axis=1), label)
        if (new == label).all():
            return label
        label = new
