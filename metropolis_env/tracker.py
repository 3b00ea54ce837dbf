"""Incremental bookkeeping of who blocks whom, who is coupled with whom, and which clusters are ready.

The rules themselves are the pure functions of `rules.py`; this module only keeps their results
up to date as agents commit steps. Everything is O(neighbours) per committed agent:

- A spatial hash (fine cells of `search_radius(2 * max_vel)` tiles) finds the agents that a
  committed agent may now be coupled with or blocked by.
- Relations only change in ways the validity invariant predicts (see `commit`), so a commit
  re-examines the committed agents' new neighbourhood and the agents they used to block, nothing
  else.

With `versioned=True` (the env keeps each agent's state per step, see rules.py) there is no
coupling and the blocking rule is `rules.versioned_blocks`; the bookkeeping is the same.
Versioned agents may also hold a promise about their next tiles, one at a time:
- a *declared path* (`set_path`): the tile it will stand on at each of its next steps. A laggard
  with a path is judged from its promised tile at the reader's step (or at the path's end, with
  the remaining steps as free moves): its reach shrinks to one tile;
- a *declared route* (`set_route`): tiles it will walk along, one route tile per step at most,
  pausing as it likes, not leaving the first before a departure step, until a given step. A
  laggard k route tiles along with d steps to walk before the reader's step is judged from the
  route tiles k..k+d (then free moves past the promise's end): its reach shrinks from a ball to
  a stretch of the route.

Agents are dense indices 0..n-1; names live in the env.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from . import rules
from .bounds import BoxBound
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
                 versioned: bool = False):
        self.max_vel = int(max_vel)
        self.versioned = bool(versioned)
        self._blocks_rule = rules.versioned_blocks if versioned else rules.blocks
        # Blocking reach in moves is (gap + margin) * max_vel: the paper's rule keeps one extra
        # move of margin for the blocked agent's own next move (see rules.py).
        self._margin = 0 if versioned else 1
        self.bound = bound if bound is not None else BoxBound(4)
        n = len(positions)
        self.pos: list[Tile] = [(int(x), int(y)) for x, y in positions]
        self.step: list[int] = list(steps) if steps is not None else [0] * n
        self.blockers: list[set[int]] = [set() for _ in range(n)]
        self.blocks: list[set[int]] = [set() for _ in range(n)]
        self.coupled: list[set[int]] = [set() for _ in range(n)]
        # The running promise ends at step path_end[i] (> step[i] while it runs), path or route.
        # Declared paths: path[i][k] is i's tile at step path_base[i] + k.
        self.path: list[list[Tile] | None] = [None] * n
        self.path_base: list[int] = [0] * n
        self.path_end: list[int] = [-1] * n
        # Declared routes: i stands on route[i][route_at[i]] and only walks forward along it.
        self.route: list[list[Tile] | None] = [None] * n
        self.route_at: list[int] = [0] * n
        self.route_depart: list[int] = [0] * n  # it stands on route[i][0] through this step
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

    def _blocker(self, i: int, j: int, rule: str) -> Blocker:
        return Blocker(j, rule, self.step[i] - self.step[j], self.bound.hazard(self.pos[i], self.pos[j]))

    def path_tile(self, i: int, step: int) -> Tile | None:
        """The tile `i` promised for `step`, or None if its declared path does not cover it."""
        k = step - self.path_base[i]
        path = self.path[i]
        return path[k] if path is not None and 0 <= k < len(path) else None

    def reach(self, j: int, step: int) -> tuple[Tile, int]:
        """(tile, free steps): where laggard j is known to be on its way to `step`, and how many
        of its steps to `step` are still unconstrained (versioned rules, see set_path)."""
        e = self.path_end[j]
        if e > self.step[j]:
            if step <= e:
                return self.path[j][step - self.path_base[j]], 0
            return self.path[j][e - self.path_base[j]], step - e
        return self.pos[j], step - self.step[j]

    def route_window(self, j: int, step: int) -> tuple[int, int, int]:
        """(first, last, free steps) for a laggard j on a declared route: at `step` it stands on
        one of route tiles first..last or, past the promise's end, within `free steps` of moves
        of one of them."""
        k, e, sj = self.route_at[j], self.path_end[j], self.step[j]
        walk = min(step, e) - max(sj, self.route_depart[j])  # steps it may walk on before `step`
        return k, min(k + max(0, walk), len(self.route[j]) - 1), max(0, step - e)

    def _blocks_pair(self, reader: int, j: int, h: int | None = None) -> bool:
        """Whether laggard j blocks `reader` (one pair, any rules; used on re-checks). `h`: their
        hazard, when the caller has it."""
        sr = self.step[reader]
        gap = sr - self.step[j]
        if self.versioned and self.path_end[j] > self.step[j]:
            hazard, pr, v = self.bound.hazard, self.pos[reader], self.max_vel
            if gap < 1 or (hazard(pr, self.pos[j]) if h is None else h) > gap * v:
                return False  # out of reach even without the promise, whose reach lies within
            route = self.route[j]
            if route is not None:
                x, last, free = self.route_window(j, sr)
                budget = free * v
                while x <= last:
                    h = hazard(pr, route[x])
                    if h <= budget:
                        return True
                    # the hazard changes by at most v per move (bounds.py): the next tiles
                    # along the route cannot come within budget sooner
                    x += -(-(h - budget) // v)
                return False
            q, free = self.reach(j, sr)
            return hazard(pr, q) <= free * v
        return self._blocks_rule(self.bound.hazard(self.pos[reader], self.pos[j]), gap, self.max_vel)

    # -- updates ---------------------------------------------------------------------------

    def set_path(self, i: int, first_step: int, tiles: Sequence[Tile]) -> None:
        """Record that `i` will stand on tiles[k] at step first_step + k (versioned rules only).

        The env validates the path (legal moves, consistent with any path still running) and
        enforces it; set it before committing the step that reaches first_step, so the commit's
        re-check of whom `i` blocks already uses it. A path only ever shrinks `i`'s reach, so it
        can release agents, never block new ones: the incremental argument of `commit` holds.
        """
        if not self.versioned:
            raise ValueError("declared paths need the versioned rules")
        self._drop_route(i)
        self.path[i] = [(int(x), int(y)) for x, y in tiles]
        self.path_base[i] = first_step
        self.path_end[i] = first_step + len(self.path[i]) - 1

    def set_route(self, i: int, tiles: Sequence[Tile], until: int, depart: int | None = None) -> None:
        """Record that from its next step through step `until`, `i` stands on `tiles`, which
        start with the tile it stands on now, moving at most one route tile forward per step
        and not before step `depart` (it stands on tiles[0] through that step; default: its
        current step) (versioned rules only).

        The env validates the route (distinct walkable tiles, legal moves between neighbours, no
        other promise running, or a running route it only narrows) and enforces it; set it
        before committing `i`'s step, like a path. Its reach at any later step is a stretch of
        the route inside the ball it would have without it (or inside the running route's reach
        it replaces), and the stretch only shrinks as `i` walks or waits: the incremental
        argument of `commit` holds.
        """
        if not self.versioned:
            raise ValueError("declared routes need the versioned rules")
        route = [(int(x), int(y)) for x, y in tiles]
        if not route or route[0] != self.pos[i]:
            raise ValueError(f"a route starts on the agent's tile {self.pos[i]}, got {route[:1]}")
        self.path[i] = None
        self.route[i] = route
        self.route_at[i] = 0
        self.route_depart[i] = self.step[i] if depart is None else int(depart)
        self.path_end[i] = int(until)

    def _drop_route(self, i: int) -> None:
        self.route[i] = None
        self.route_at[i] = 0

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
          every reader, and at the path's end its reach is the same either way (see reach);
        - a laggard on a declared route that waits or walks one route tile keeps or loses tiles of
          the stretch it is judged by (route_window), never gains one.
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
            if self.path_end[m] > sm:
                still = self._blocks_pair
                gone = [x for x in self.blocks[m] if not still(x, m)]
            else:
                if self.path[m] is not None:
                    self.path[m] = None  # walked to its end: m is judged from where it stands
                if self.route[m] is not None:
                    self._drop_route(m)
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
        route = self.route[m]
        if route is not None and old + 1 <= self.path_end[m] and p != route[self.route_at[m]]:
            self.route_at[m] += 1  # the env holds a routed agent to its tile or the next one

    def _link(self, i: int) -> None:
        """Find `i`'s coupling partners and blockers among agents at or behind its step."""
        si, pi = self.step[i], self.pos[i]
        v = self.max_vel
        coupled_i, blockers_i = self.coupled[i], self.blockers[i]
        step, pos, coupled, blocks = self.step, self.pos, self.coupled, self.blocks
        # The farthest possible blocker is the laggard at min_step.
        margin = self._margin
        radius = self.bound.search_radius((si - self.min_step + margin) * v)
        couples = not self.versioned
        blocks_rule = self._blocks_rule
        path_end = self.path_end
        box_r = self._box_radius
        hazard = self.bound.hazard
        px, py = pi
        for j in self._near(pi, radius):
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
                if couples and rules.coupled(h, v):
                    coupled_i.add(j)
                    coupled[j].add(i)
            elif blocks_rule(h, si - sj, v) and (path_end[j] <= sj or self._blocks_pair(i, j, h)):
                # a laggard under a declared promise is judged by it (_blocks_pair), but only if
                # it could block without: the promise's reach lies within that
                blockers_i.add(j)
                blocks[j].add(i)
        self.initial_blockers[i] = len(blockers_i)

    def _near(self, p: Tile, radius: int) -> list[int]:
        """Agents that may be within Chebyshev `radius` of tile `p` (see SpatialHash.near)."""
        return self.index.near(p, radius)
