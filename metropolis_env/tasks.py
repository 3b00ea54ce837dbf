"""Tasks: rewards, terminations and per-agent task info as functions of the committed world.

The world defines no reward (an env made without a task hands out 0.0 and never terminates an
agent). A task states one. Its contract is what keeps out-of-order runs exact: every outcome of
agent `a` at step `t` is a function of `a`'s `View` at `t` (its tile and what it perceives, the
same data as its final observation) and of its own earlier views. The env evaluates it when `a`'s
step `t` is final, i.e. when `a` becomes ready at `t` (a commit made it so), in `a`'s step order;
so the sync and every out-of-order run hand out identical rewards, terminations and infos.

    env = me.make("the_ville", agents=8, task="goto")
    ready, infos = env.reset(seed=0)        # infos[a]["goal"] is a's goal tile

Protocols: a `Task` is a factory; `Task.start(...)` makes the `Episode` of one reset (its state,
e.g. the goals drawn from the reset seed). `Episode.evaluate(view)` returns the `Outcome` of the
step that led to `view`; `Episode.info(agent)` is the agent's task info now (merged into its env
info); `Episode.features(view)` the task's part of the `obs_type="vector"` observation
(`Task.n_features` numbers in [-1, 1]).

A terminated agent leaves the episode (no more observations, rewards or actions) but its body
stays where it stood: the env makes it stay put until `max_steps`, so the others still perceive
it and the world of the other agents is the same whichever agents finished first.

Built-ins (`make_task("goto")` etc.; `TASKS` lists them):
- `Goto`: each agent gets a walkable goal tile it can reach within `max_steps` (`info["goal"]`);
  reward 1.0 on the step it stands on it, terminated there.
- `Rendezvous`: agents are paired (`info["partner"]`, and `info["partner_start"]`, the partner's
  start tile); reward 1.0 on the step an agent perceives its partner, terminated there. With an
  odd count the last agent's partner is the first agent of the pairing (who keeps its own).
- `Relay`: one agent (`info["source"]`) knows a message (`info["message"]`); an agent learns it
  when it perceives an agent whose utterance contains it, reward 1.0 on that step. Success: every
  agent knows it. Nobody terminates (a relayer that stopped would stop the relay, and "everybody
  knows" is not a fact any one agent sees at its own step); episodes end at `max_steps`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, NamedTuple, Protocol

import numpy as np

from .errors import ConfigError
from .world import Tile, TileMap


class Seen(NamedTuple):
    """An agent as another perceives it at its step."""

    name: str
    position: Tile
    activity: str
    utterance: str


@dataclass(frozen=True)
class View:
    """What agent `agent` perceives of the committed world at its `step`: its own tile and the
    public state of every agent within its perception (agent order). The same data as its
    observation, so equal in sync and out-of-order runs."""

    agent: str
    step: int
    position: Tile
    perceived: tuple[Seen, ...]


@dataclass(frozen=True)
class Outcome:
    """The task's verdict on one agent-step: its reward and whether the agent is done."""

    reward: float = 0.0
    terminated: bool = False


@dataclass(frozen=True)
class EpisodeSetup:
    """What a task may read when an episode starts: the map, the agents, their start tiles, the
    movement and perception parameters, and the reset seed (for its random draws)."""

    world: TileMap
    agents: tuple[str, ...]
    start: Mapping[str, Tile]
    max_vel: int
    radius_p: int
    max_steps: int
    seed: int


class Episode(Protocol):
    """One episode of a task (see the module docstring for the contract)."""

    def evaluate(self, view: View) -> Outcome: ...

    def info(self, agent: str) -> dict[str, Any]: ...

    def features(self, view: View) -> np.ndarray: ...

    def success(self, agent: str) -> bool: ...


class Task(Protocol):
    """A factory of episodes; `name` is how `make(task=...)` and the docs call it;
    `n_features` the length of its episodes' `features(view)` (0: none)."""

    name: str
    n_features: int

    def start(self, setup: EpisodeSetup) -> Episode: ...


def _offset(world: TileMap, here: Tile, there: Tile) -> tuple[float, float]:
    """(dx, dy) from here to there as fractions of the map's size, in [-1, 1]."""
    return ((there[0] - here[0]) / max(1, world.width - 1), (there[1] - here[1]) / max(1, world.height - 1))


# -- goto ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Goto:
    """Reach a goal tile (see the module docstring). `max_distance`: goals lie at most this
    many moves from the start (default: `max_steps`, so every goal can be reached)."""

    max_distance: int | None = None
    name: str = "goto"
    n_features: ClassVar[int] = 2

    def start(self, setup: EpisodeSetup) -> "GotoEpisode":
        rng = np.random.default_rng([setup.seed, 0x6070])
        limit = setup.max_steps if self.max_distance is None else min(self.max_distance, setup.max_steps)
        goals = {}
        for a in setup.agents:
            start = setup.start[a]
            # Moves are reversible (any walkable tile within max_vel), so the field around the
            # start gives every tile's distance from it.
            d = setup.world.distance_field(start, setup.max_vel)
            ys, xs = np.nonzero((d >= 1) & (d <= limit))
            if len(xs) == 0:
                raise ConfigError(f"goto: agent {a!r} at {start} can reach no other tile within {limit} moves; "
                                  f"give it a start tile with walkable neighbours or raise max_steps")
            k = int(rng.integers(len(xs)))
            goals[a] = (int(xs[k]), int(ys[k]))
        return GotoEpisode(setup.world, goals)


@dataclass
class GotoEpisode:
    world: TileMap
    goals: dict[str, Tile]
    arrived: set[str] = field(default_factory=set)

    def evaluate(self, view: View) -> Outcome:
        if view.position != self.goals[view.agent]:
            return Outcome()
        self.arrived.add(view.agent)
        return Outcome(1.0, True)

    def info(self, agent: str) -> dict[str, Any]:
        return {"goal": self.goals[agent], "success": agent in self.arrived}

    def features(self, view: View) -> np.ndarray:
        return np.array(_offset(self.world, view.position, self.goals[view.agent]), dtype=np.float32)

    def success(self, agent: str) -> bool:
        return agent in self.arrived


# -- rendezvous ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rendezvous:
    """Pairs meet within perception (see the module docstring)."""

    name: str = "rendezvous"
    #: partner's start offset (2), partner perceived (1), its offset in perception radii (2)
    n_features: ClassVar[int] = 5

    def start(self, setup: EpisodeSetup) -> "RendezvousEpisode":
        if len(setup.agents) < 2:
            raise ConfigError("rendezvous needs at least 2 agents (they meet in pairs)")
        order = [setup.agents[k] for k in np.random.default_rng([setup.seed, 0x2E2D]).permutation(len(setup.agents))]
        partner = {}
        for k in range(0, len(order) - 1, 2):
            partner[order[k]], partner[order[k + 1]] = order[k + 1], order[k]
        if len(order) % 2:
            partner[order[-1]] = order[0]
        return RendezvousEpisode(setup.world, setup.radius_p, partner, dict(setup.start))


@dataclass
class RendezvousEpisode:
    world: TileMap
    radius_p: int
    partner: dict[str, str]
    start: dict[str, Tile]
    met: set[str] = field(default_factory=set)

    def _seen(self, view: View) -> Seen | None:
        want = self.partner[view.agent]
        return next((s for s in view.perceived if s.name == want), None)

    def evaluate(self, view: View) -> Outcome:
        if self._seen(view) is None:
            return Outcome()
        self.met.add(view.agent)
        return Outcome(1.0, True)

    def info(self, agent: str) -> dict[str, Any]:
        p = self.partner[agent]
        return {"partner": p, "partner_start": self.start[p], "success": agent in self.met}

    def features(self, view: View) -> np.ndarray:
        out = np.zeros(Rendezvous.n_features, dtype=np.float32)
        out[0:2] = _offset(self.world, view.position, self.start[self.partner[view.agent]])
        seen = self._seen(view)
        if seen is not None:
            r = max(1, self.radius_p)
            out[2:5] = 1.0, (seen.position[0] - view.position[0]) / r, (seen.position[1] - view.position[1]) / r
        return out

    def success(self, agent: str) -> bool:
        return agent in self.met


# -- relay --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Relay:
    """Pass a message on by utterances (see the module docstring)."""

    name: str = "relay"
    n_features: ClassVar[int] = 1

    def start(self, setup: EpisodeSetup) -> "RelayEpisode":
        rng = np.random.default_rng([setup.seed, 0x4E1A])
        source = setup.agents[int(rng.integers(len(setup.agents)))]
        message = f"relay-{int(rng.integers(16 ** 6)):06x}"
        return RelayEpisode(source, message, {source})


@dataclass
class RelayEpisode:
    source: str
    message: str
    knows: set[str]

    def evaluate(self, view: View) -> Outcome:
        if view.agent in self.knows or not any(self.message in s.utterance for s in view.perceived):
            return Outcome()
        self.knows.add(view.agent)
        return Outcome(1.0, False)

    def info(self, agent: str) -> dict[str, Any]:
        knows = agent in self.knows
        return {"source": self.source, "message": self.message if knows else None, "success": knows}

    def features(self, view: View) -> np.ndarray:
        return np.array([view.agent in self.knows], dtype=np.float32)

    def success(self, agent: str) -> bool:
        return agent in self.knows


#: Built-in tasks by name.
TASKS: dict[str, type] = {"goto": Goto, "rendezvous": Rendezvous, "relay": Relay}


def make_task(task: str | Task) -> Task:
    """A built-in task by name (`TASKS`), or `task` itself if it has `name` and `start`."""
    if isinstance(task, str):
        if task not in TASKS:
            raise ConfigError(f"unknown task {task!r}; built-ins: {sorted(TASKS)}, or pass an object with "
                              f"name and start(setup) (see metropolis_env.tasks.Task)")
        return TASKS[task]()
    n = getattr(task, "n_features", None)
    if not (isinstance(getattr(task, "name", None), str) and callable(getattr(task, "start", None))
            and isinstance(n, int) and n >= 0):
        raise ConfigError(f"task must be a name in {sorted(TASKS)} or an object with a str `name`, an int "
                          f"`n_features` >= 0 and `start(setup) -> Episode` (see metropolis_env.tasks.Task), "
                          f"got {task!r}")
    return task


class TaskRun:
    """The env's book of one episode of a task: evaluates each final view once, adds up the
    returns and remembers who terminated. With `task=None` every outcome is `Outcome()` (reward
    0.0, never terminated) and infos get nothing."""

    def __init__(self, task: Task | None, setup: EpisodeSetup):
        self.task = task
        self.episode: Episode | None = task.start(setup) if task is not None else None
        self.returns: dict[str, float] = dict.fromkeys(setup.agents, 0.0)
        self.terminated: set[str] = set()

    def evaluate(self, view: View) -> Outcome:
        if self.episode is None:
            return Outcome()
        out = self.episode.evaluate(view)
        self.returns[view.agent] += out.reward
        if out.terminated:
            self.terminated.add(view.agent)
        return out

    def info(self, agent: str) -> dict[str, Any]:
        return self.episode.info(agent) if self.episode is not None else {}

    def features(self, view: View) -> np.ndarray | None:
        return self.episode.features(view) if self.episode is not None else None
