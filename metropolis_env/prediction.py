"""Predicted observations: what an agent would observe at a future step if no laggard entered its
view. The runtime's speculation computes blocked agents' steps ahead on them; it never changes
env state.

An agent's observation at step s is its own state at s and the public state (tile, activity,
utterance) of the agents it perceives at s. Of the others, those at or ahead of step s are known
exactly (their state at s, under the versioned rules; their current state under the paper's,
which read current state only); laggards (below s) are predicted where they are now, with what
they do now. The agent's own state at a later step comes from the actions it would take on the
way (`own_after`). A prediction is right exactly when no laggard changes what the agent perceives;
the runtime checks that by comparing `observation_key`s before it uses anything computed on one.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np

Tile = tuple[int, int]


class OwnState(NamedTuple):
    """An agent's own part of its observation at `step`."""

    step: int
    position: Tile
    activity: str
    utterance: str


def own_state(env, agent: str) -> OwnState:
    """`agent`'s own state at its current step (final, whether or not it is ready)."""
    i = env._idx(agent)
    tr = env._require_reset()
    return OwnState(tr.step[i], tr.pos[i], env._activity[i], env._utterance[i])


def own_after(env, agent: str, own: OwnState, action: Any) -> OwnState:
    """The own state at `own.step + 1` after `agent` takes `action` at `own.step` (as the env
    would commit it: the move's landing tile, the new activity if given, the utterance). Raises
    the env's InvalidActionError for an action it would reject."""
    i = env._idx(agent)
    move, activity, utterance = env._parse_action(i, action)
    landing = env._landing(own.position, move)[0]
    return OwnState(own.step + 1, landing, own.activity if activity is None else activity, utterance)


def predict_observation(env, agent: str, own: OwnState | None = None) -> dict:
    """The full observation (`env.observe`'s layout) `agent` would get at step `own.step` (default:
    its current step and state) if no laggard entered its view. Reads the env, changes nothing."""
    return predict(env, agent, own)[0]


def predict(env, agent: str, own: OwnState | None = None,
            guess: Callable[[int, int], OwnState | None] | None = None) -> tuple[dict, bool]:
    """(`predict_observation`, whether a laggard is in the predicted view: then the prediction
    holds only if that laggard does nothing visible until the step).

    guess: optional (agent index, step) -> that agent's state at that step as the caller expects
    it (e.g. from the laggard's own speculation), or None; laggards without a guess are taken
    where they are."""
    if own is None:
        own = own_state(env, agent)
    i = env._idx(agent)
    tr = env._require_reset()
    names = env.possible_agents
    p, s, r = own.position, own.step, env.radius_p
    versions = env._versions
    zone = env.world.zone
    zi = zone[p[1], p[0]] if env.perception == "arena" else None
    # agents ahead may be within their lead's worth of moves of where they are now
    reach = r + max(0, tr.max_step - s) * env.max_vel if versions is not None else r
    seen = []
    laggard_seen = False
    for j in sorted(tr._near(p, reach)):
        if j == i:
            continue
        if versions is not None and tr.step[j] >= s:
            q, activity, utterance = versions.at(j, s)
        else:  # a laggard where it is (or, under the paper's rules, everyone's current state)
            g = guess(j, s) if guess is not None and tr.step[j] < s else None
            if g is None:
                q, activity, utterance = tr.pos[j], env._activity[j], env._utterance[j]
            else:
                q, activity, utterance = g.position, g.activity, g.utterance
        if abs(q[0] - p[0]) <= r and abs(q[1] - p[1]) <= r and (zi is None or zone[q[1], q[0]] == zi):
            seen.append((names[j], q, activity, utterance))
            laggard_seen = laggard_seen or tr.step[j] < s
    return {
        "position": np.array(p, dtype=np.int64),
        "step": s,
        "location": env._location(p),
        "activity": own.activity,
        "utterance": own.utterance,
        "perceived": tuple({"name": name, "position": np.array(q, dtype=np.int64),
                            "activity": activity, "utterance": utterance}
                           for name, q, activity, utterance in seen),
        "action_mask": env._mask(p),
    }, laggard_seen


def agent_view(env, observation: dict) -> Any:
    """The observation as the env hands it to the agent (its tile in `observation_mode`
    "position", else the dict itself)."""
    if env.observation_mode == "position":
        x, y = observation["position"]
        return (int(x), int(y))
    return observation


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
