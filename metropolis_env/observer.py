"""What an agent observes when it becomes ready: whom it perceives, its observation, its info.

Observation types are small classes registered in OBSERVATIONS; `AsyncParallelEnv.
observation_mode` picks one by name. Adding a type is one new class here: it turns the
observer's view of a ready agent (`Observer.full`, `Observer.position`, `Observer.public`, ...)
into whatever the agents read.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .navigation import move_mask
from .perception import Perception
from .world import Tile, TileMap


class Observer:
    """Perception, observations and infos over the env's tracker and public state.

    `start` binds it to a fresh episode; `perceived(i)` is exact only for a ready agent i (nobody
    behind it can be in its view, see rules.py).
    """

    def __init__(self, world: TileMap, names: Sequence[str], radius_p: int, max_vel: int, perception: str):
        self.world = world
        self.names = names
        self.max_vel = max_vel
        self.perception = Perception(world, radius_p, perception)
        self._locations: dict[Tile, str] = {}

    def start(self, tracker, public) -> None:
        n = len(self.names)
        self.tracker = tracker
        self.public_state = public
        #: How the last move of each agent went (navigation.landing), shown in its info.
        self.move_result = ["reset"] * n
        #: How many agents each agent perceived when it last became ready (statistics).
        self.n_perceived = [0] * n

    def perceived(self, i: int) -> list[int]:
        """Agents in ready agent `i`'s perception at its step, sorted."""
        tr = self.tracker
        return self.perception.perceived(tr.pos[i], self.public_state.candidates(tr, i, self.perception.radius_p))

    def emit(self, agents: list[int], kind: "ObservationType") -> tuple[dict, dict]:
        """Observations (of type `kind`) and infos of agents that just became ready."""
        names = self.names
        obs, infos = {}, {}
        for i in agents:
            perceived = self.perceived(i)
            self.n_perceived[i] = len(perceived)
            obs[names[i]] = kind.observe(self, i, perceived)
            infos[names[i]] = self.info(i, perceived)
        return obs, infos

    def position(self, i: int) -> Tile:
        return self.tracker.pos[i]

    def location(self, p: Tile) -> str:
        # Agents revisit few tiles; formatting the name every observation was a visible cost.
        loc = self._locations.get(p)
        if loc is None:
            loc = self._locations[p] = self.world.location(p)
        return loc

    def full(self, i: int, perceived: list[int] | None = None) -> dict:
        """The observation dict of the env's observation space."""
        tr, names, public = self.tracker, self.names, self.public_state
        p, step = tr.pos[i], tr.step[i]
        if perceived is None:
            perceived = self.perceived(i)
        seen = [(names[j],) + public.at(tr, j, step) for j in perceived]
        return {
            "position": np.array(p, dtype=np.int64),
            "step": step,
            "location": self.location(p),
            "activity": public.activity[i],
            "utterance": public.utterance[i],
            "perceived": tuple({"name": name, "position": np.array(q, dtype=np.int64),
                                "activity": activity, "utterance": utterance}
                               for name, q, activity, utterance in seen),
            "action_mask": move_mask(self.world, p, self.max_vel),
        }

    def predict(self, i: int, step: int, own: tuple[Tile, str, str],
                guess: Callable[[int, int], tuple[Tile, str, str] | None] | None = None) -> tuple[dict, bool]:
        """The observation (`full`'s layout) agent i would get at `step`, being then in state `own`
        = (tile, activity, utterance), if no laggard entered its view; and whether a laggard is in
        that predicted view. Agents at or ahead of `step` are read as the rules read them then;
        laggards where they are now, or as `guess(j, step)` has them when it answers. Reads only.
        """
        tr, public, names = self.tracker, self.public_state, self.names
        p = own[0]
        reach = self.perception.radius_p + max(0, tr.max_step - step) * self.max_vel
        states = {}
        for j in tr.near(p, reach):
            if j == i:
                continue
            if tr.step[j] >= step:
                states[j] = public.at(tr, j, step)
            else:
                g = guess(j, step) if guess is not None else None
                states[j] = g if g is not None else (tr.pos[j], public.activity[j], public.utterance[j])
        seen = self.perception.perceived(p, [(j, s[0]) for j, s in states.items()])
        lagging = any(tr.step[j] < step for j in seen)
        return {
            "position": np.array(p, dtype=np.int64),
            "step": step,
            "location": self.location(p),
            "activity": own[1],
            "utterance": own[2],
            "perceived": tuple({"name": names[j], "position": np.array(states[j][0], dtype=np.int64),
                                "activity": states[j][1], "utterance": states[j][2]} for j in seen),
            "action_mask": move_mask(self.world, p, self.max_vel),
        }, lagging

    def info(self, i: int, perceived: list[int]) -> dict:
        names = self.names
        return {
            "step": self.tracker.step[i],
            "perceived": [names[j] for j in perceived],
            "move_result": self.move_result[i],
        }


class ObservationType:
    """What `reset`/`step` hand an agent as its observation; `name` is its observation_mode."""

    name = ""

    def observe(self, observer: Observer, i: int, perceived: list[int]) -> Any:
        raise NotImplementedError


class FullObservation(ObservationType):
    """The observation dict of the observation space (spaces.observation_space)."""

    name = "full"

    def observe(self, observer: Observer, i: int, perceived: list[int]) -> dict:
        return observer.full(i, perceived)


class PositionObservation(ObservationType):
    """Only the agent's (x, y) tile: an opt-in for agents that read nothing else (trace replay),
    which saves building the dicts on large runs."""

    name = "position"

    def observe(self, observer: Observer, i: int, perceived: list[int]) -> Tile:
        return observer.position(i)


#: Observation types by name.
OBSERVATIONS: dict[str, type[ObservationType]] = {t.name: t for t in (FullObservation, PositionObservation)}
