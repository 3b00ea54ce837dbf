"""Incremental bookkeeping of who blocks whom, who is coupled with whom, and which clusters are ready.

The rules themselves are the pure functions of `rules.py`; this module only keeps their results
up to date as agents commit steps. Everything is O(neighbours) per committed agent:

- A spatial hash (fine cells of `search_radius(2 * max_vel)` tiles) finds the agents that a
  committed agent may now be coupled with or blocked by.
- Relations only change in ways the validity invariant predicts (see `commit`), so a commit
  re-examines the committed agents' new neighbourhood and the agents they used to block, nothing
  else.

The rules come as a rule set object (rules.py: `PaperRules`, `VersionedRules`); the bookkeeping
is the same for both. Under rules that allow promises an agent may hold one (promises.py: a
declared path or route) about its next tiles; a laggard under a promise is judged from its reach,
which the promise shrinks from a ball to one tile or a stretch of the route.

Agents are dense indices 0..n-1; names live in the env.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from .bounds import BoxBound
from .promises import Promise, RoutePromise
from .rules import PaperRules, rule_set
from .spatial import SpatialHash
from .steps import StepRange
from .world import Tile


@dataclass(frozen=True)
class Blocker:
    """Why an agent cannot act now: `other` holds it back by `rule`.

    rule: "blocked" (other is `gap` steps behind and within the blocking bound), "cluster" (other
    is coupled with it at the same step and is itself held back), or "submission" (other is in
    its cluster and has not submitted its action yet).
    """

    other: int
    rule: str
    gap: int
    hazard: int


class DependencyTracker:
    """Blocked-by sets, coupling edges and readiness for agents at per-agent steps."""

    def __init__(self, positions: Sequence[Tile], max_vel: int, bound, steps: Sequence[int] | None = None,
                 rules: PaperRules | str = "paper"):
        self.max_vel = int(max_vel)
        self.rules = rules = rule_set(rules)
        self._blocks_rule = rules.blocks
        # Blocking reach in moves is (gap + margin) * max_vel (see rules.py).
        self._margin = rules.margin
        self.bound = bound if bound is not None else BoxBound(4)
        n = len(positions)
        self.pos: list[Tile] = [(int(x), int(y)) for x, y in positions]
        self.step: list[int] = list(steps) if steps is not None else [0] * n
        self.blockers: list[set[int]] = [set() for _ in range(n)]
        self.blocks: list[set[int]] = [set() for _ in range(n)]
        self.coupled: list[set[int]] = [set() for _ in range(n)]
        # The promise each agent holds (promises.py), None when none runs past its step.
        self.promise: list[Promise | None] = [None] * n
        # blockers found when the agent started its current step: its tracker dependencies.
        self.initial_blockers: list[int] = [0] * n
        self._cell_size = max(1, self.bound.search_radius(2 * self.max_vel))
        # The box bound's radius, when the hazard can be computed inline (see _link).
        self._box_radius = self.bound.radius_p if type(self.bound) is BoxBound else None
        self.index = SpatialHash(self._cell_size)
        for i, p in enumerate(self.pos):
            self.index.add(i, p)
        self.steps = StepRange(self.step)
        for i in range(n):
            self._link(i)

    # -- queries ---------------------------------------------------------------------------

    @property
    def min_step(self) -> int:
        return self.steps.lo

    @property
    def max_step(self) -> int:
        return self.steps.hi

    def is_free(self, i: int) -> bool:
        """No agent outside its cluster blocks it."""
        return not self.blockers[i]

    def cluster_of(self, i: int) -> list[int]:
        """The connected component of `i` under coupling (sorted; itself included)."""
        seen = {i}
        todo = [i]
        coupled = self.coupled
        while todo:
            for j in coupled[todo.pop()]:
                if j not in seen:
                    seen.add(j)
                    todo.append(j)
        return sorted(seen)

    def ready_cluster(self, i: int) -> list[int] | None:
        """`i`'s cluster if no member is blocked from outside, else None."""
        members = self.cluster_of(i)
        blockers = self.blockers
        return members if all(not blockers[m] for m in members) else None

    def blocked_by(self, i: int) -> list[Blocker]:
        """Direct blockers of `i`, then its held-back cluster mates, most urgent first."""
        out = [self._blocker(i, b, "blocked") for b in self.blockers[i]]
        out += [self._blocker(i, m, "cluster") for m in self.cluster_of(i) if m != i and self.blockers[m]]
        return sorted(out, key=lambda b: (b.rule != "blocked", -b.gap, b.hazard, b.other))

    def snapshot(self) -> dict:
        """A plain-data copy of the mutable state (env.snapshot's part): tiles, steps, the
        dependency sets and the promises."""
        return {"pos": list(self.pos), "step": list(self.step),
                "blockers": [frozenset(s) for s in self.blockers], "blocks": [frozenset(s) for s in self.blocks],
                "coupled": [frozenset(s) for s in self.coupled], "promises": list(self.promise)}

    def _blocker(self, i: int, j: int, rule: str) -> Blocker:
        return Blocker(j, rule, self.step[i] - self.step[j], self.bound.hazard(self.pos[i], self.pos[j]))

    def near(self, p: Tile, radius: int) -> list[int]:
        """Agents that may be within Chebyshev `radius` of tile `p` (a superset; see
        SpatialHash.near)."""
        return self.index.near(p, radius)

    def _blocks_pair(self, reader: int, j: int, h: int | None = None) -> bool:
        """Whether laggard j blocks `reader` (one pair, any rules; used on re-checks). `h`: their
        hazard, when the caller has it."""
        sr = self.step[reader]
        gap = sr - self.step[j]
        hazard, pr, v = self.bound.hazard, self.pos[reader], self.max_vel
        promise = self.promise[j]
        if promise is not None:
            if gap < 1 or (hazard(pr, self.pos[j]) if h is None else h) > gap * v:
                return False  # out of reach even without the promise, whose reach lies within
            return promise.may_reach(hazard, pr, self.step[j], sr, v)
        return self._blocks_rule(hazard(pr, self.pos[j]), gap, v)

    # -- updates ---------------------------------------------------------------------------

    def declare(self, i: int, promise: Promise) -> None:
        """Hold `i` to `promise` (promises.py) from its next step on (rules with promises only).

        The env validates the promise (legal moves, consistent with any promise still running)
        and enforces it; declare it before committing the step it starts at, so the commit's
        re-check of whom `i` blocks already uses it. A promise only ever shrinks `i`'s reach (or
        the running promise's reach it replaces), so it can release agents, never block new
        ones: the incremental argument of `commit` holds.
        """
        if not self.rules.promises:
            raise ValueError(f"declared paths and routes need rules that allow them, not {self.rules.name!r}")
        if promise.expired(self.step[i]):
            raise ValueError(f"a promise declared at step {self.step[i]} must run past it, got {promise}")
        if isinstance(promise, RoutePromise) and promise.tiles[promise.at] != self.pos[i]:
            raise ValueError(f"a route starts on the agent's tile {self.pos[i]}, got {promise.tiles[:1]}")
        self.promise[i] = promise

    def commit(self, members: Iterable[int], new_positions: Sequence[Tile]) -> set[int]:
        """Advance a ready cluster by one step, moving its members to `new_positions`.

        Returns the agents whose readiness may have changed: the members themselves and every
        agent a member used to block that is now free of blockers.

        Why re-examining so little is complete (each agent moves at most max_vel per step):
        - an agent can only gain blockers when it commits itself: a laggard B that did not block
          A (h > (gap+1)v) still does not after one move (h' >= h - v > gap*v, gap' = gap - 1);
        - a committed agent cannot start blocking an agent ahead by the same argument, so only
          its old `blocks` set needs re-checking, and that is where releases come from;
        - it is coupled afterwards only with agents at its new step within v of hazard, which
          its neighbourhood search finds; its old coupling partners were all in its cluster;
        - a laggard walking its declared path keeps the same promised tile and free steps for
          every reader, and at the path's end its reach is the same either way (PathPromise.reach);
        - a laggard on a declared route that waits or walks one route tile keeps or loses tiles of
          the stretch it is judged by (RoutePromise.reach), never gains one.
        """
        members = list(members)
        for m, p in zip(members, new_positions):
            self._move(m, (int(p[0]), int(p[1])))
        released: set[int] = set()
        hazard = self.bound.hazard
        blocks = self._blocks_rule
        v = self.max_vel
        for m in members:
            for partner in self.coupled[m]:
                self.coupled[partner].discard(m)
            self.coupled[m] = set()
            self.blockers[m] = set()  # a committing cluster had none; kept safe for tests
            pm, sm = self.pos[m], self.step[m]
            promise = self.promise[m]
            if promise is not None and promise.expired(sm):
                promise = self.promise[m] = None  # walked to its end: judged from where it stands
            if promise is not None:
                still = self._blocks_pair
                gone = [x for x in self.blocks[m] if not still(x, m)]
            else:
                gone = [x for x in self.blocks[m] if not blocks(hazard(self.pos[x], pm), self.step[x] - sm, v)]
            for x in gone:
                self.blocks[m].discard(x)
                bx = self.blockers[x]
                bx.discard(m)
                if not bx:
                    released.add(x)
        for m in members:
            self._link(m)
        released.update(members)
        return released

    def _move(self, m: int, p: Tile) -> None:
        old = self.step[m]
        self.step[m] = old + 1
        self.steps.advance(old)
        self.index.move(m, self.pos[m], p)
        self.pos[m] = p
        promise = self.promise[m]
        if promise is not None:
            self.promise[m] = promise.advance(old + 1, p)

    def _link(self, i: int) -> None:
        """Find `i`'s coupling partners and blockers among agents at or behind its step."""
        si, pi = self.step[i], self.pos[i]
        v = self.max_vel
        coupled_i, blockers_i = self.coupled[i], self.blockers[i]
        step, pos, coupled, blocks = self.step, self.pos, self.coupled, self.blocks
        # The farthest possible blocker is the laggard at min_step.
        margin = self._margin
        radius = self.bound.search_radius((si - self.min_step + margin) * v)
        couples = self.rules.couples_at_all
        couples_rule = self.rules.couples
        blocks_rule = self._blocks_rule
        promise = self.promise
        box_r = self._box_radius
        hazard = self.bound.hazard
        px, py = pi
        for j in self.index.near(pi, radius):
            sj = step[j]
            if sj > si or j == i:
                continue
            if box_r is not None:
                # rules.box_hazard inlined: this loop is the tracker's hot path
                qx, qy = pos[j]
                dx = px - qx if px > qx else qx - px
                dy = py - qy if py > qy else qy - py
                h = (dx if dx > dy else dy) - box_r
                if h < 0:
                    h = 0
            else:
                h = hazard(pi, pos[j])
            if sj == si:
                if couples and couples_rule(h, v):
                    coupled_i.add(j)
                    coupled[j].add(i)
            elif blocks_rule(h, si - sj, v) and (promise[j] is None or self._blocks_pair(i, j, h)):
                # a laggard under a declared promise is judged by it (_blocks_pair), but only if
                # it could block without: the promise's reach lies within that
                blockers_i.add(j)
                blocks[j].add(i)
        self.initial_blockers[i] = len(blockers_i)
