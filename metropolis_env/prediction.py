"""Predicted observations, for the runtime's speculation: what an agent would observe at a later
step if no laggard entered its view. Nothing here changes env state.

An agent's observation at step s is its own state at s and the public state (tile, activity,
utterance) of the agents it perceives at s. Those at or ahead of s are read as the rules read
them (`Observer.predict`); laggards (below s) are taken where they are now, doing what they do
now, unless the caller guesses better (e.g. from the laggard's own speculation). The agent's own
state at a later step comes from the actions it would take on the way (`own_after`). A prediction
is right exactly when the real observation has the same `observation_key`; the runtime checks
that before it uses anything computed on one.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, NamedTuple, Sequence

from .navigation import landing
from .world import Tile


class OwnState(NamedTuple):
    """An agent's own part of its observation at `step` (also what others perceive of it)."""

    step: int
    position: Tile
    activity: str
    utterance: str

    @property
    def public(self) -> tuple[Tile, str, str]:
        return self.position, self.activity, self.utterance


def own_state(env, agent: str) -> OwnState:
    """`agent`'s own state at its current step (final, whether or not it is ready)."""
    i = env._idx(agent)
    tr, public = env._require_reset(), env._public
    return OwnState(tr.step[i], tr.pos[i], public.activity[i], public.utterance[i])


def own_after(env, agent: str, own: OwnState, action: Any) -> OwnState:
    """The own state at `own.step + 1` after `agent` takes `action` at `own.step`, as the env
    would commit it (the move's landing tile, the new activity if given, the utterance). Raises
    the env's InvalidActionError for an action it would reject."""
    act = env._parser.parse(action, agent, own.step)
    tile = landing(env.world, own.position, env._offsets[act.move])[0]
    return OwnState(own.step + 1, tile, own.activity if act.activity is None else act.activity, act.utterance)


def predict_observation(env, agent: str, actions: Sequence[Any] = ()) -> dict:
    """The observation dict `agent` would get after taking `actions` (its next actions, in
    order; none: at its current step) if no agent behind it entered its view meanwhile: agents at
    or ahead of that step as the rules will read them, laggards where they are now. Exact for a
    ready agent and no actions. Never changes env state."""
    own = own_state(env, agent)
    for action in actions:
        own = own_after(env, agent, own, action)
    return predict(env, agent, own)[0]


def predict(env, agent: str, own: OwnState | None = None,
            guess: Callable[[int, int], OwnState | None] | None = None,
            nearby: Iterable[int] = ()) -> tuple[dict, bool]:
    """(the full observation `agent` would get at step `own.step` in state `own` (default: its
    current step and state) if no laggard entered its view, whether a laggard is in that view).

    guess: optional (agent index, step) -> that agent's OwnState at that step as the caller
    expects it, or None; laggards without a guess are taken where they are. nearby: indices of
    agents whose guessed tile may be near `own`'s though they are far now (a guess can put a
    laggard many steps ahead of where it is): it must hold every laggard guessed within the
    perception radius of `own`'s tile; agents near it now are always looked at."""
    own = own_state(env, agent) if own is None else own
    g = None
    if guess is not None:
        def g(j: int, step: int):
            state = guess(j, step)
            return None if state is None else state.public
    return env._observer.predict(env._idx(agent), own.step, own.public, g, nearby)


def predict_plain(env, agent: str, own: OwnState, guess: Callable[[int, int], tuple | None],
                  nearby: Iterable[int] = ()) -> dict:
    """`predict`'s observation without arrays or action mask (tiles as tuples, the same
    `observation_key`; `agent_view` hands it out), `guess` answering a laggard's public state
    (`OwnState.public`) rather than its OwnState: what speculation predicts with, cheaply."""
    return env._observer.predict_plain(env._idx(agent), own.step, own.public, guess, nearby)[0]


def full_observation(env, agent: str) -> dict:
    """The full observation (the observation dict, whatever the env's observation_mode) of a
    ready agent: what a prediction is compared with."""
    return env._observer.full(env._idx(agent))


def plain_observation(env, agent: str) -> dict:
    """`full_observation` without arrays or action mask (tiles as tuples): built faster, with
    the same `observation_key`."""
    return env._observer.plain(env._idx(agent))


#: observation_modes `agent_view` can hand out a predicted observation in
VIEWS = ("full", "position")


def agent_view(env, observation: dict) -> Any:
    """The observation as the env hands it to the agent (its `observation_mode`: the tile in
    "position", else the dict of the observation space; `observation` may be plain)."""
    if env.observation_mode == "position":
        x, y = observation["position"]
        return (int(x), int(y))
    return observation if "action_mask" in observation else env._observer.dress(observation)


def observation_key(observation: dict) -> tuple:
    """An exact, hashable digest of a full observation: equal keys <=> equal observations (the
    action mask is a function of the position)."""
    pos = observation["position"]
    return ((int(pos[0]), int(pos[1])), int(observation["step"]), observation["location"],
            observation["activity"], observation["utterance"],
            tuple((p["name"], int(p["position"][0]), int(p["position"][1]), p["activity"], p["utterance"])
                  for p in observation["perceived"]))


def watchers(env, agent: str) -> list[str]:
    """Agents `agent` now holds back: the blocked agents whose prediction may change when it moves
    (O(neighbours))."""
    tr = env._require_reset()
    names = env.possible_agents
    return [names[j] for j in tr.blocks[env._idx(agent)]]
