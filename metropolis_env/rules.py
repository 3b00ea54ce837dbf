"""The dependency rules of AI Metropolis, as small pure functions of the *hazard distance*.

h(A, B) is the fewest moves, both agents' together, before A and B could perceive each other.
With box perception on an open grid, h = max(0, chebyshev(A, B) - radius_p); map-aware bounds
compute it on the map (never smaller than the box value, so box-radius searches stay complete).
`gap` is Step_A - Step_B (the step each will compute next). Each agent moves at most `max_vel`
tiles per step, so one step closes the hazard distance by at most `max_vel`.
"""

from __future__ import annotations


def box_hazard(dist: int, radius_p: int) -> int:
    """Hazard distance of two agents `dist` tiles apart (Chebyshev) with box perception."""
    return dist - radius_p if dist > radius_p else 0


def coupled(h: int, max_vel: int) -> bool:
    """Two agents at the *same* step must advance together.

    If one moved first it could come within perception of the other, which must then read the
    mover's *old* state (sync semantics) but would find only the new one.
    """
    return h <= max_vel


def blocks(h: int, gap: int, max_vel: int) -> bool:
    """B, `gap` >= 1 steps behind A, blocks A.

    B still has `gap` steps to take before it reaches A's step, and A's own next move counts too:
    if the gap+1 moves could close h, A's next observation might have to include a state of B
    that does not exist yet. An agent ahead (gap <= 0) never blocks.
    """
    return gap >= 1 and h <= (gap + 1) * max_vel


def valid(h: int, gap: int, max_vel: int) -> bool:
    """The invariant the tracker keeps for every pair: agents at different steps never perceive
    each other, and are far enough apart that the laggard's remaining moves cannot change that."""
    return gap == 0 or h > (abs(gap) - 1) * max_vel
