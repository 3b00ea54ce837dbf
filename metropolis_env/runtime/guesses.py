"""What a run's speculation takes laggards to be at later steps, and the predictions made from it.

A laggard's state at a step beyond the one it is at is guessed from its own speculation: its
held step there, else its ghost (what its dropped steps had reached, `held.Chain.haunt`), else
its chain's tip (the latest state it knows: unchanged from there on); an agent without a chain
is taken where it is now. A guess can put a laggard many tiles from where it is, so the tiles of
every held step (`held`) and of every tip and ghost (`ends`) are kept in grids, and a prediction
looks at the agents guessed near the tile as well as those near it now: O(neighbours).
Guesses only choose what to compute ahead; a held step is used only if its predicted
observation equals the real one.
"""

from __future__ import annotations

from typing import Any

from ..prediction import OwnState, observation_key, predict_plain
from .held import Ahead, Chain, Where


class Guesses:
    """The guesses over `chains` (agent -> Chain, the speculation's own dict) in `env`."""

    def __init__(self, env: Any, chains: dict[str, Chain]):
        self.env, self.chains = env, chains
        radius = env._observer.perception.radius_p
        # Both kept up to date by the chains themselves (`Chain.push`/`pop`, tips, ghosts).
        self.held = Where(radius)  # held steps' tiles
        self.ends = Where(radius)  # chains' tips and ghosts, on the same cells
        self.index = {a: j for j, a in enumerate(env.possible_agents)}
        # The agents found near each cell, while neither grid changes (the news re-predicts
        # runs of held steps on one tile, chain after chain, between changes).
        self._near: dict[tuple[int, int], list[int]] = {}
        self._near_at = (-1, -1)

    def state(self, j: int, step: int) -> OwnState | None:
        """Laggard j's state at `step` as its speculation has it (held step, ghost, tip), or
        None (then: where it is now)."""
        chain = self.chains.get(self.env.possible_agents[j])
        if chain is None or chain.tip is None:
            return None
        steps = chain.steps
        k = step - (steps[0].step if steps else chain.tip.step)
        if k < 0:
            return None
        if k < len(steps):
            return steps[k].own
        return chain.ghost_at(step) or chain.tip

    def public(self, j: int, step: int):
        """Laggard j's public state (tile, activity, utterance) at `step` as guessed, or None."""
        there = self.state(j, step)
        return None if there is None else there.public

    def tile(self, j: int, step: int):
        """Agent j's tile at `step` as predictions take it: guessed, else where it is."""
        there = self.state(j, step)
        return self.env._tracker.pos[j] if there is None else there.position

    def predict(self, agent: str, own: OwnState) -> dict:
        """`agent`'s observation at `own.step` in state `own`, laggards as guessed (plain:
        `prediction.predict_plain`)."""
        held, ends, p = self.held, self.ends, own.position
        if self._near_at != (held.version, ends.version):
            self._near.clear()
            self._near_at = (held.version, ends.version)
        cell = held.cell(p)
        nearby = self._near.get(cell)
        if nearby is None:
            index = self.index
            nearby = self._near[cell] = [index[a] for a in held.near(p) | ends.near(p)]
        return predict_plain(self.env, agent, own, self.public, nearby)

    def reach(self, j: int) -> set[tuple[int, int]]:
        """The cells of `held`'s grid from which agent j may be perceived at some step, wherever it
        is guessed (held steps, tip, ghost, or where it is): O(cells it is guessed in)."""
        name = self.env.possible_agents[j]
        mine = {self.held.cell(self.env._tracker.pos[j]), *self.held.cells_of(name), *self.ends.cells_of(name)}
        return {(x + dx, y + dy) for x, y in mine for dx in (-1, 0, 1) for dy in (-1, 0, 1)}

    def holds(self, agent: str, ahead: Ahead) -> bool:
        """Whether `ahead`'s prediction still holds under the guesses of now."""
        return observation_key(self.predict(agent, ahead.own)) == ahead.key

    def empty(self) -> bool:
        """Nothing held or guessed (after a run)."""
        return not self.held.cells and not self.ends.cells and not self.held.of and not self.ends.of
