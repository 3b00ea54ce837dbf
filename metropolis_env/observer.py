"""What an agent observes when it becomes ready: whom it perceives, its observation, its info.

Observation types are small classes registered in OBSERVATIONS; `AsyncParallelEnv.
observation_mode` picks one by name. Adding a type is one new class here: it turns the
observer's view of a ready agent (`Observer.full`, `Observer.position`, `Observer.view`, ...)
into whatever the agents read, and states its gymnasium space.

The observer also asks the episode's task (tasks.py) for each ready agent's outcome, from the
same view, before it builds the observation and info: the task's verdict on a step is due when
the step is final.
"""

from __future__ import annotations

from itertools import chain
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from . import spaces as msp
from .navigation import move_mask
from .perception import Perception
from .tasks import Outcome, Seen, TaskRun, View
from .vector import VectorEncoder
from .world import Tile, TileMap

_NO_OUTCOME = Outcome()


class Observer:
    """Perception, observations and infos over the env's tracker and public state.

    `start` binds it to a fresh episode; `perceived(i)` is exact only for a ready agent i (nobody
    behind it can be in its view, see rules.py).
    """

    def __init__(self, world: TileMap, names: Sequence[str], radius_p: int, max_vel: int, perception: str,
                 max_steps: int, n_task_features: int = 0, mask_in_info: bool = False):
        self.world = world
        self.names = names
        self.max_vel = max_vel
        self.max_steps = max_steps
        self.perception = Perception(world, radius_p, perception)
        self._locations: dict[Tile, str] = {}
        self._n_task_features = n_task_features
        #: infos carry the action mask (vector observations: the PettingZoo way)
        self.mask_in_info = mask_in_info
        self._full_space = self._encoder = None

    def start(self, tracker, public, task_run: TaskRun) -> None:
        n = len(self.names)
        self.tracker = tracker
        self.public_state = public
        self.task_run = task_run
        #: How the last move of each agent went (navigation.landing), shown in its info.
        self.move_result = ["reset"] * n
        #: How many agents each agent perceived when it last became ready (statistics).
        self.n_perceived = [0] * n

    def perceived(self, i: int) -> list[int]:
        """Agents in ready agent `i`'s perception at its step, sorted."""
        tr = self.tracker
        return self.perception.perceived(tr.pos[i], self.public_state.candidates(tr, i, self.perception.radius_p))

    def emit(self, agents: list[int], kind: "ObservationType",
             evaluate: bool = True) -> tuple[dict, dict, list[Outcome]]:
        """Observations (of type `kind`), infos and task outcomes (`evaluate`: of the step that
        made them ready, so not at reset) of agents that just became ready."""
        names, run = self.names, self.task_run
        obs, infos, outcomes = {}, {}, []
        for i in agents:
            perceived = self.perceived(i)
            self.n_perceived[i] = len(perceived)
            outcomes.append(run.evaluate(self.view(i, perceived)) if evaluate and run.episode is not None
                            else _NO_OUTCOME)
            obs[names[i]] = kind.observe(self, i, perceived)
            infos[names[i]] = self.info(i, perceived)
        return obs, infos, outcomes

    def view(self, i: int, perceived: list[int]) -> View:
        """What ready agent `i` perceives at its step (the data of its observation): what tasks
        and vector observations are functions of."""
        tr, names, public = self.tracker, self.names, self.public_state
        step = tr.step[i]
        return View(names[i], step, tr.pos[i], tuple(Seen(names[j], *public.at(tr, j, step)) for j in perceived))

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

    def plain(self, i: int) -> dict:
        """`full(i)` without its arrays: the same keys and values, tiles as tuples, no action
        mask (a function of the position). What speculation compares a prediction with, cheaply."""
        tr, names, public = self.tracker, self.names, self.public_state
        p, step = tr.pos[i], tr.step[i]
        at = public.at
        return {
            "position": p,
            "step": step,
            "location": self.location(p),
            "activity": public.activity[i],
            "utterance": public.utterance[i],
            "perceived": tuple({"name": names[j], "position": q, "activity": activity, "utterance": utterance}
                               for j in self.perceived(i) for q, activity, utterance in (at(tr, j, step),)),
        }

    def predict(self, i: int, step: int, own: tuple[Tile, str, str],
                guess: Callable[[int, int], tuple[Tile, str, str] | None] | None = None,
                nearby: Iterable[int] = ()) -> tuple[dict, bool]:
        """The observation (`full`'s layout) agent i would get at `step`, being then in state `own`
        = (tile, activity, utterance), if no laggard entered its view; and whether a laggard is in
        that predicted view: `dress(predict_plain(...))`."""
        plain, lagging = self.predict_plain(i, step, own, guess, nearby)
        return self.dress(plain), lagging

    def predict_plain(self, i: int, step: int, own: tuple[Tile, str, str],
                      guess: Callable[[int, int], tuple[Tile, str, str] | None] | None = None,
                      nearby: Iterable[int] = ()) -> tuple[dict, bool]:
        """`predict`'s observation as `plain` has it (tiles as tuples, no action mask). Agents at
        or ahead of `step` are read as the rules read them then; laggards where they are now, or
        as `guess(j, step)` has them when it answers. `nearby` must hold every laggard whose
        guessed tile may lie within the perception radius of `own`'s: the others are looked for
        only near that tile as they are now. Reads only."""
        tr, public, names = self.tracker, self.public_state, self.names
        p = own[0]
        # Near p now: laggards where they are (guessed ones far from it are in `nearby` if
        # they are guessed near), and agents ahead within reach of where they are read at step.
        reach = public.reach(tr, step, self.perception.radius_p)
        states = {}
        for j in chain(tr.near(p, reach), nearby):
            if j == i or j in states:
                continue
            if tr.step[j] >= step:
                states[j] = public.at(tr, j, step)
            else:
                g = guess(j, step) if guess is not None else None
                states[j] = g if g is not None else (tr.pos[j], public.activity[j], public.utterance[j])
        seen = self.perception.perceived(p, [(j, s[0]) for j, s in states.items()])
        lagging = any(tr.step[j] < step for j in seen)
        return {
            "position": p,
            "step": step,
            "location": self.location(p),
            "activity": own[1],
            "utterance": own[2],
            "perceived": tuple({"name": names[j], "position": states[j][0],
                                "activity": states[j][1], "utterance": states[j][2]} for j in seen),
        }, lagging

    def dress(self, plain: dict) -> dict:
        """The observation dict of the observation space (`full`'s) of a `plain` one: tiles as
        int64 arrays, and the action mask."""
        p = plain["position"]
        return {
            "position": np.array(p, dtype=np.int64),
            "step": plain["step"],
            "location": plain["location"],
            "activity": plain["activity"],
            "utterance": plain["utterance"],
            "perceived": tuple({"name": q["name"], "position": np.array(q["position"], dtype=np.int64),
                                "activity": q["activity"], "utterance": q["utterance"]} for q in plain["perceived"]),
            "action_mask": move_mask(self.world, p, self.max_vel),
        }

    def vector(self, i: int, perceived: list[int]) -> np.ndarray:
        """The vector observation (vector.py) of ready agent `i`."""
        view = self.view(i, perceived)
        return self.encoder.encode(view, move_mask(self.world, view.position, self.max_vel),
                                   self.task_run.features(view))

    def info(self, i: int, perceived: list[int]) -> dict:
        names = self.names
        info = {
            "step": self.tracker.step[i],
            "perceived": [names[j] for j in perceived],
            "move_result": self.move_result[i],
        }
        if self.task_run.episode is not None:
            info.update(self.task_run.info(names[i]))
        if self.mask_in_info:
            info["action_mask"] = move_mask(self.world, self.tracker.pos[i], self.max_vel)
        return info

    # -- spaces of the observation types ---------------------------------------------------

    @property
    def full_space(self):
        if self._full_space is None:
            self._full_space = msp.observation_space(self.world.width, self.world.height, self.max_steps,
                                                     self.max_vel)
        return self._full_space

    @property
    def encoder(self) -> VectorEncoder:
        if self._encoder is None:
            self._encoder = VectorEncoder(self.world, self.perception.radius_p, len(msp.move_offsets(self.max_vel)),
                                          self.max_steps, len(self.names), self._n_task_features)
        return self._encoder


class ObservationType:
    """What `reset`/`step`/`observe` hand an agent as its observation; `name` is its
    observation_mode, `space` the gymnasium space every such observation lies in."""

    name = ""

    def observe(self, observer: Observer, i: int, perceived: list[int]) -> Any:
        raise NotImplementedError

    def space(self, observer: Observer):
        raise NotImplementedError(f"observation type {self.name!r} states no space")


class FullObservation(ObservationType):
    """The observation dict of the observation space (spaces.observation_space)."""

    name = "full"

    def observe(self, observer: Observer, i: int, perceived: list[int]) -> dict:
        return observer.full(i, perceived)

    def space(self, observer: Observer):
        return observer.full_space


class PositionObservation(ObservationType):
    """Only the agent's (x, y) tile: an opt-in for agents that read nothing else (trace replay),
    which saves building the dicts on large runs."""

    name = "position"

    def observe(self, observer: Observer, i: int, perceived: list[int]) -> Tile:
        return observer.position(i)

    def space(self, observer: Observer):
        return msp.tile_space(observer.world.width, observer.world.height)


class VectorObservation(ObservationType):
    """One fixed-shape float32 vector (vector.py), for RL harnesses; `make(obs_type="vector")`."""

    name = "vector"

    def observe(self, observer: Observer, i: int, perceived: list[int]) -> np.ndarray:
        return observer.vector(i, perceived)

    def space(self, observer: Observer):
        return observer.encoder.space


#: Observation types by name.
OBSERVATIONS: dict[str, type[ObservationType]] = {
    t.name: t for t in (FullObservation, PositionObservation, VectorObservation)}
