"""The dependency rules of AI Metropolis, as small pure functions of the *hazard distance*.

h(A, B) is the fewest moves, both agents' together, before A and B could perceive each other.
With box perception on an open grid, h = max(0, chebyshev(A, B) - radius_p); map-aware bounds
compute it on the map (never smaller than the box value, so box-radius searches stay complete).
`gap` is Step_A - Step_B (the step each will compute next). Each agent moves at most `max_vel`
tiles per step, so one step closes the hazard distance by at most `max_vel`.

Two rule sets share these forms:
- "paper": the world holds each agent's current state only (docs/PAPER.md). An agent must not move
  on while someone who will still read its old state could be near, hence coupling at the same
  step and one extra move of margin in the blocking rule.
- "versioned": the world keeps every agent's state at each step since the slowest agent's
  (`env.py`), so a reader at step t reads everyone's step-t state even after they moved on.
  Then only read-after-write hazards remain: an agent waits just for laggards that could still
  walk into its perception before reaching its step. No coupling, no extra move.
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


def versioned_blocks(h: int, gap: int, max_vel: int) -> bool:
    """With versioned state: B, `gap` >= 1 steps behind A, blocks A's read of its step.

    A's step-t observation needs every agent's state at t. A has already moved to its step-t
    tile; B still takes `gap` moves to reach step t, and only if those could close h could B's
    step-t state be in A's perception. Agents at A's step or ahead have their step-t state
    stored, so they never block.
    """
    return gap >= 1 and h <= gap * max_vel


def versioned_valid(h: int, gap: int, max_vel: int) -> bool:
    """The invariant the tracker keeps for every pair with versioned state.

    An agent commits only after a read no laggard could change (h > gap * v), and its move
    closes h by at most v, while a laggard's own commit closes one step of gap and at most v of h.
    So a pair `gap` steps apart always has h > (gap - 2) * v: agents two or more steps apart
    never perceive each other; agents one step apart may (the stored versions are for that).
    """
    g = abs(gap)
    return g <= 1 or h > (g - 2) * max_vel


# -- rule sets ---------------------------------------------------------------------------------
# The env and the tracker are handed one of these objects and ask it, instead of testing a
# name. The formulas above stay module functions (looked up at call time, so a test that loosens
# one of them reaches every rule set that uses it).


class PaperRules:
    """The paper's rules: the world holds current state only, agents at the same step within
    `max_vel` of hazard are coupled, and blocking keeps one extra move of margin."""

    name = "paper"
    #: Blocking reach in moves is (gap + margin) * max_vel (see `blocks`).
    margin = 1
    #: Whether agents may declare paths and routes (promises.py).
    promises = False
    #: Whether two agents at the same step can be coupled.
    couples_at_all = True

    def blocks(self, h: int, gap: int, max_vel: int) -> bool:
        return blocks(h, gap, max_vel)

    def couples(self, h: int, max_vel: int) -> bool:
        return coupled(h, max_vel)

    def valid(self, h: int, gap: int, max_vel: int) -> bool:
        return valid(h, gap, max_vel)

    def public_state(self, start):
        """The store of what others perceive of each agent (public_state.py): current only."""
        from .public_state import CurrentState
        return CurrentState(len(start))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))


class VersionedRules(PaperRules):
    """Per-step state versions: no coupling, no margin, and agents may declare promises."""

    name = "versioned"
    margin = 0
    promises = True
    couples_at_all = False

    def blocks(self, h: int, gap: int, max_vel: int) -> bool:
        return versioned_blocks(h, gap, max_vel)

    def couples(self, h: int, max_vel: int) -> bool:
        return False

    def valid(self, h: int, gap: int, max_vel: int) -> bool:
        return versioned_valid(h, gap, max_vel)

    def public_state(self, start):
        """Every agent's public state at each step since the slowest agent's."""
        from .public_state import VersionedState
        return VersionedState(start)


#: The rule sets by name (what `make(..., rules=...)` and the bench accept).
RULE_SETS = {"paper": PaperRules, "versioned": VersionedRules}
RULES = tuple(RULE_SETS)


def rule_set(rules) -> PaperRules:
    """The rule set object for a name in RULES or an instance; ValueError otherwise."""
    if isinstance(rules, PaperRules):
        return rules
    if isinstance(rules, str) and rules in RULE_SETS:
        return RULE_SETS[rules]()
    raise ValueError(f"rules must be one of {RULES} or a rule set object, got {rules!r}: 'paper' (current "
                     f"state only, coupled clusters) or 'versioned' (per-step state, no coupling)")
