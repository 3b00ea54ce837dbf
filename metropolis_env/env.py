"""AsyncParallelEnv: a PettingZoo-shaped environment whose agents advance out of order.

Instead of one global `step()` that moves every agent, any subset of *ready* agents submits an
action; an agent's action takes effect when its whole cluster (agents coupled with it) has
submitted. The dependency tracker decides readiness so that every agent observes exactly what it
would observe under global-step execution (see `rules.py` and DESIGN semantics).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from . import spaces as msp
from .bounds import BoxBound
from .errors import (AgentDoneError, AgentNotReadyError, ConfigError, InvalidActionError,
                     InvalidActionsError, ResetNeededError, UnknownAgentError)
from .tasks import EpisodeSetup, Outcome, Seen, TaskRun, View, make_task
from .tracker import Blocker, DependencyTracker
from .vector import VectorEncoder
from .versions import VersionStore
from .world import Tile, TileMap

#: Keys an action dict may hold (see AsyncParallelEnv.step and docs/RULES.md for the promises).
_ACTION_KEYS = frozenset({"move", "activity", "utterance", "path", "route", "until", "depart"})


@dataclass
class DependencyStats:
    """Dependency counters over all committed agent-steps (the paper's measures).

    true_deps: agents actually perceived, itself included (summed per agent-step).
    tracker_deps: agents the tracker made it wait for, blocked by or coupled with, itself
    included (global sync would make this the agent count).
    free_steps: agent-steps that were ready the moment the previous one committed.
    """

    agent_steps: int = 0
    true_deps: int = 0
    tracker_deps: int = 0
    free_steps: int = 0

    @property
    def true_per_step(self) -> float:
        return self.true_deps / self.agent_steps if self.agent_steps else 0.0

    @property
    def tracker_per_step(self) -> float:
        return self.tracker_deps / self.agent_steps if self.agent_steps else 0.0

    @property
    def free_share(self) -> float:
        return self.free_steps / self.agent_steps if self.agent_steps else 0.0


class AsyncParallelEnv:
    """Out-of-order multi-agent environment on a tile map.

    Build it with `metropolis_env.make(...)`. Driving loop::

        ready, infos = env.reset(seed=0)
        while ready:
            ready, _, _, truncs, _ = env.step({a: policy(o) for a, o in ready.items()})
            ready = {a: o for a, o in ready.items() if not truncs[a]}

    `step` accepts any subset of ready agents and returns PettingZoo-shaped dicts keyed by the
    agents that *became ready* through the call (each with its final observation for its next
    step). Agents keep their own step counter (`agent_step`, `steps`); an agent is truncated
    when it reaches `max_steps`.

    `observation_mode` (default "full"): what `reset`/`step`/`observe` return as each agent's
    observation. "full" is the observation of `obs_type` (the dict, or the vector). "position"
    returns only the agent's (x, y) tile as a tuple: an opt-in for agents that read nothing else
    (trace replay), which saves building observations on large runs; `observation_space(agent)`
    is then a Tuple of two Discretes. The infos are the same in both.
    """

    metadata = {"render_modes": ["ansi", "rgb_array", "human"], "name": "metropolis_v0", "is_parallelizable": True}
    OBSERVATION_MODES = ("full", "position")
    #: What "full" observations are: the Dict with texts, or one float32 vector (vector.py).
    OBS_TYPES = ("full", "vector")
    _observation_mode = "full"

    @property
    def observation_mode(self) -> str:
        return self._observation_mode

    @observation_mode.setter
    def observation_mode(self, mode: str) -> None:
        if mode not in self.OBSERVATION_MODES:
            raise ConfigError(f"observation_mode must be one of {self.OBSERVATION_MODES}, got {mode!r}")
        self._observation_mode = mode

    def __init__(self, world: TileMap, agents: Sequence[str], start_tiles: Sequence[Tile] | None = None,
                 *, radius_p: int = 4, max_vel: int = 1, max_steps: int = 8640,
                 perception: str = "box", seed: int | None = 0, render_mode: str | None = None,
                 bound: Any = "box", rules: str = "paper", obs_type: str = "full", task: Any = None):
        _check_int("radius_p", radius_p, 0)
        _check_int("max_vel", max_vel, 1)
        _check_int("max_steps", max_steps, 1)
        if perception not in ("box", "arena"):
            raise ConfigError(f"perception must be 'box' or 'arena', got {perception!r}")
        if rules not in RULES:
            raise ConfigError(f"rules must be one of {RULES}, got {rules!r}: 'paper' (current state "
                              f"only, coupled clusters) or 'versioned' (per-step state, no coupling)")
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ConfigError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        if obs_type not in self.OBS_TYPES:
            raise ConfigError(f"obs_type must be one of {self.OBS_TYPES}, got {obs_type!r}: 'full' (dicts with texts) "
                              f"or 'vector' (a float32 Box and a Discrete move, for RL harnesses)")
        self.task = None if task is None else make_task(task)
        names = list(agents)
        if not names:
            raise ConfigError("an environment needs at least one agent")
        for a in names:
            if not isinstance(a, str) or not a or len(a) > msp.NAME_MAX or msp.bad_chars(a):
                raise ConfigError(f"agent names must be non-empty strings of at most {msp.NAME_MAX} "
                                  f"characters from spaces.CHARSET, got {a!r}")
        dupes = sorted(a for a, c in Counter(names).items() if c > 1)
        if dupes:
            raise ConfigError(f"duplicate agent names {dupes}: every agent needs its own name")
        if start_tiles is not None:
            if len(start_tiles) != len(names):
                raise ConfigError(f"{len(names)} agents but {len(start_tiles)} start tiles")
            start_tiles = [_check_start(world, a, t) for a, t in zip(names, start_tiles)]
        walkable = int(world.walkable.sum())
        if start_tiles is None and walkable == 0:
            raise ConfigError(f"map {world.name} has no walkable tile to spawn agents on")

        self.world = world
        self.radius_p = int(radius_p)
        self.max_vel = int(max_vel)
        self.max_steps = int(max_steps)
        self.perception = perception
        self.rules = rules
        self._versioned = rules == "versioned"
        self.render_mode = render_mode
        self.seed = seed
        self.possible_agents: list[str] = names
        self._index = {a: i for i, a in enumerate(names)}
        self._start_tiles = start_tiles
        self._bound = _make_bound(bound, self)
        self._offsets = msp.move_offsets(self.max_vel)
        self._stay = msp.stay_index(self.max_vel)
        self.obs_type = obs_type
        if obs_type == "vector":
            self._vector = VectorEncoder(world, self.radius_p, len(self._offsets), self.max_steps, len(names),
                                         self.task.n_features if self.task is not None else 0)
            self._obs_space = self._vector.space
        else:
            self._vector = None
            self._obs_space = msp.observation_space(world.width, world.height, self.max_steps, self.max_vel)
        self._tile_space = msp.tile_space(world.width, world.height)
        self._task_run: TaskRun | None = None
        self._window = None
        # One action space per agent, made on first use: each space owns its RNG, so seeding and
        # sampling one agent's space (PettingZoo's seed test) must not disturb another's.
        self._act_spaces: dict[str, Any] = {}
        self._locations: dict[Tile, str] = {}
        self._tracker: DependencyTracker | None = None
        self.agents: list[str] = []

    # -- PettingZoo surface ----------------------------------------------------------------

    def observation_space(self, agent: str):
        """The space of what reset/step hand out for `agent`: the Dict ("full"), the Box
        ("vector"), or with `observation_mode = "position"` a Tuple of two Discretes (x, y)."""
        self._idx(agent)
        return self._tile_space if self._observation_mode == "position" else self._obs_space

    def action_space(self, agent: str):
        """The Dict action space ("full"), or Discrete(n_moves) ("vector"). Each agent has its
        own space object (its own RNG). The env accepts a move index or an action dict in both."""
        self._idx(agent)
        space = self._act_spaces.get(agent)
        if space is None:
            space = msp.move_space(self.max_vel) if self.obs_type == "vector" else msp.action_space(self.max_vel)
            self._act_spaces[agent] = space
        return space

    @property
    def num_agents(self) -> int:
        return len(self.agents)

    @property
    def max_num_agents(self) -> int:
        return len(self.possible_agents)

    @property
    def unwrapped(self) -> "AsyncParallelEnv":
        return self

    def reset(self, seed: int | None = None, options: dict | None = None):
        """Put every agent at step 0 on its start tile; all agents are ready.

        Start tiles given to `make` are fixed; otherwise agents spawn on distinct random walkable
        tiles drawn from `seed` (or the env's seed). Returns (observations, infos) of all agents.
        """
        if seed is not None:
            _check_int("seed", seed, 0)
        n = len(self.possible_agents)
        if self._start_tiles is not None:
            start = list(self._start_tiles)
        else:
            tiles = self.world.walkable_tiles()
            rng = np.random.default_rng(self.seed if seed is None else seed)
            pick = rng.choice(len(tiles), size=n, replace=n > len(tiles))
            start = [(int(tiles[k][0]), int(tiles[k][1])) for k in pick]
        self._activity = [""] * n
        self._utterance = [""] * n
        self._done = [False] * n
        self._move_result = ["reset"] * n
        self._ready: dict[int, tuple[int, ...]] = {}
        self._pending: dict[tuple[int, ...], dict[int, tuple[int, str | None, str]]] = {}
        self._free_start = [True] * n
        self._n_perceived = [0] * n
        self.stats = DependencyStats()
        self._tracker = DependencyTracker(start, self.max_vel, self._bound, versioned=self._versioned)
        self._versions = VersionStore([(p, "", "") for p in start]) if self._versioned else None
        self.agents = list(self.possible_agents)
        names = tuple(self.possible_agents)
        self._task_run = TaskRun(self.task, EpisodeSetup(
            self.world, names, dict(zip(names, start)), self.max_vel, self.radius_p, self.max_steps,
            int(self.seed if seed is None else seed or 0)))
        self._retired: set[int] = set()  # terminated by the task: they stay put until max_steps
        became = self._register_ready(range(n), set(range(n)))
        obs, infos, _ = self._emit(became, evaluate=False)
        return obs, infos

    def step(self, actions: Mapping[str, Any]):
        """Submit actions of ready agents; commit every cluster whose members have all submitted.

        Returns (observations, rewards, terminations, truncations, infos) keyed by the agents
        that became ready through this call (they may act next), plus agents that reached
        `max_steps` (truncated, final observation) or that the task terminated (final
        observation; the env makes them stay put from then on, see tasks.py). Rewards are the
        task's (0.0 without a task: the world defines none).
        Raises a MetropolisError and changes nothing if any action is invalid.
        """
        tr = self._require_reset()
        if not isinstance(actions, Mapping):
            raise InvalidActionsError(
                f"step() takes a dict {{agent: action}}, got {type(actions).__name__}; "
                f"submit e.g. {{agent: env.move_to(agent, tile)}} for agents in env.ready_agents()")
        parsed: dict[int, tuple[int, str | None, str]] = {}
        promises: dict[int, tuple] = {}
        for agent, action in actions.items():
            i = self._idx(agent)
            self._check_may_submit(i)
            parsed[i] = self._parse_action(i, action)
            if self._versioned:
                promise = self._check_promise(i, action, parsed[i][0])
                if promise is not None:
                    promises[i] = promise
            elif isinstance(action, Mapping) and any(action.get(k) is not None for k in ("path", "route")):
                raise InvalidActionError(
                    f"action of agent {agent!r}: a declared 'path' or 'route' needs rules='versioned' (this env "
                    f"uses the paper's rules, which cannot use it); make the env with rules='versioned' or drop it")
        # Everything is valid: from here on nothing raises.
        for i, (kind, tiles, until, depart) in promises.items():
            if kind == "path":
                tr.set_path(i, tr.step[i] + 1, tiles)
            else:
                tr.set_route(i, tiles, until, depart)
        became = self._submit(parsed)
        names = self.possible_agents
        obs, infos, rewards, terms, truncs = {}, {}, {}, {}, {}
        done: list[str] = []
        while became:
            live = [i for i in became if i not in self._retired]
            o, inf, outcomes = self._emit(live)
            obs.update(o)
            infos.update(inf)
            for i, out in zip(live, outcomes):
                a = names[i]
                rewards[a], terms[a], truncs[a] = out.reward, out.terminated, self._done[i]
                if out.terminated:
                    self._retired.add(i)
                if out.terminated or self._done[i]:
                    done.append(a)
            # Agents the task terminated stand still until max_steps (the others still see them).
            became = self._submit({i: (self._idle_move(i), None, "") for i in became
                                   if i in self._retired and not self._done[i]})
        if len(done) == 1:
            # thousands of agents finishing one small cluster at a time: a C-speed removal each,
            # not a Python rebuild of the whole list each time
            self.agents.remove(done[0])
        elif done:
            gone = set(done)
            self.agents = [a for a in self.agents if a not in gone]
        return obs, rewards, terms, truncs, infos

    def render(self) -> str | np.ndarray | None:
        """By render_mode: "ansi" the map with agents and a table of steps and clusters (str);
        "rgb_array" a picture (uint8 (H, W, 3): agents coloured by step, ready clusters, who
        waits for whom; see pictures.py); "human" that picture in a matplotlib window (None)."""
        if self.render_mode == "ansi":
            from .render import render_ansi
            return render_ansi(self)
        if self.render_mode in ("rgb_array", "human"):
            from .pictures import Window, draw, frame_of
            picture = draw(frame_of(self), self.world)
            if self.render_mode == "rgb_array":
                return picture
            if self._window is None:
                self._window = Window()
            self._window.show(picture)
        return None

    def close(self) -> None:
        if self._window is not None:
            self._window.close()
            self._window = None

    # -- task --------------------------------------------------------------------------------

    def task_info(self, agent: str) -> dict:
        """The task's info of `agent` at its current step (also merged into its infos); {}
        without a task."""
        self._require_reset()
        self._idx(agent)
        return self._task_run.info(agent)

    @property
    def returns(self) -> dict[str, float]:
        """Each agent's summed task rewards this episode (0.0 without a task)."""
        self._require_reset()
        return dict(self._task_run.returns)

    def terminated(self, agent: str) -> bool:
        """Whether the task terminated `agent` (it then stays put until max_steps)."""
        self._require_reset()
        return self._idx(agent) in self._retired

    # -- out-of-order surface --------------------------------------------------------------

    def ready_agents(self) -> list[str]:
        """Agents that may act now and have not submitted yet, smallest step first."""
        self._require_reset()
        pend = self._pending
        step = self._tracker.step
        out = [i for i, cl in self._ready.items() if i not in pend.get(cl, ())]
        out.sort(key=lambda i: (step[i], i))
        return [self.possible_agents[i] for i in out]

    def clusters(self) -> list[list[str]]:
        """Ready clusters (agents that must be submitted together), smallest step first.
        Agents the task terminated are left out: the env submits their stays itself."""
        self._require_reset()
        seen = {}
        for cl in self._ready.values():
            seen[cl] = None
        step = self._tracker.step
        out = [[self.possible_agents[i] for i in cl if i not in self._retired]
               for cl in sorted(seen, key=lambda c: (step[c[0]], c))]
        return [cl for cl in out if cl]

    def ready_cluster(self, agent: str) -> tuple[str, ...]:
        """The ready cluster `agent` belongs to (the agents to submit with it; agents the task
        terminated left out).

        Raises AgentNotReadyError if `agent` is not ready.
        """
        self._require_reset()
        i = self._idx(agent)
        cl = self._ready.get(i)
        if cl is None:
            raise AgentNotReadyError(self._not_ready_message(i, "it has no ready cluster"))
        return tuple(self.possible_agents[j] for j in cl if j not in self._retired)

    @property
    def step_range(self) -> tuple[int, int]:
        """(smallest, largest) step over all agents."""
        tr = self._require_reset()
        return tr.min_step, tr.max_step

    def cluster(self, agent: str) -> list[str]:
        """The agents coupled with `agent` at its step (itself included)."""
        tr = self._require_reset()
        return [self.possible_agents[j] for j in tr.cluster_of(self._idx(agent))]

    def is_ready(self, agent: str) -> bool:
        """Whether `agent`'s next observation is final (its cluster may act)."""
        self._require_reset()
        return self._idx(agent) in self._ready

    def observe(self, agent: str) -> Any:
        """The current observation of a ready agent (the one `step`/`reset` returned for it, in
        the same form: it lies in `observation_space(agent)`)."""
        self._require_reset()
        i = self._idx(agent)
        if i not in self._ready and not self._done[i]:
            raise AgentNotReadyError(self._not_ready_message(i, "its observation is not final yet"))
        if self._observation_mode == "position":
            return self._tracker.pos[i]
        if self._vector is not None:
            view = self._view(i, self._perceived(i))
            return self._vector.encode(view, self._mask(view.position), self._task_run.features(view))
        return self._observe(i)

    def agent_step(self, agent: str) -> int:
        """The step `agent` will compute next (== steps taken so far)."""
        return self._require_reset().step[self._idx(agent)]

    @property
    def steps(self) -> dict[str, int]:
        tr = self._require_reset()
        return dict(zip(self.possible_agents, tr.step))

    @property
    def positions(self) -> dict[str, Tile]:
        tr = self._require_reset()
        return dict(zip(self.possible_agents, tr.pos))

    def blocked_by(self, agent: str) -> list[dict]:
        """Who holds `agent` back and by which rule ([] when it may act).

        Each entry: `{"agent", "rule", "gap", "hazard"}` with rule "blocked" (that agent is
        `gap` steps behind and could still come within perception), "cluster" (a coupled agent
        at its step that is itself blocked) or "submission" (a cluster mate that has not
        submitted yet).
        """
        tr = self._require_reset()
        i = self._idx(agent)
        if i in self._ready:
            cl = self._ready[i]
            sub = self._pending.get(cl, {})
            if i not in sub:
                return []
            rows = [Blocker(j, "submission", 0, self._bound.hazard(tr.pos[i], tr.pos[j]))
                    for j in cl if j not in sub]
        else:
            rows = tr.blocked_by(i)
        return [{"agent": self.possible_agents[b.other], "rule": b.rule, "gap": b.gap, "hazard": b.hazard}
                for b in rows]

    def move_to(self, agent: str, tile: Tile) -> dict:
        """A legal action taking `agent` one step along a shortest walk to `tile` (stay if there).

        Raises InvalidActionError if the tile is not walkable or cannot be reached.
        """
        i, field = self._walk_field(agent, tile, "move_to")
        return {"move": self._next_move(field, self._tracker.pos[i])[0]}

    def route_to(self, agent: str, tile: Tile, until: int, depart: int | None = None) -> dict:
        """An action that declares the walk `move_to` takes to `tile` as a route, held through
        step `until` (rules="versioned"): the route's tiles, and this step's move along it, or
        a stay when `depart` (the last step on the first tile) is later than now.

        The agent then keeps to it by following `move_to(agent, tile)` or staying (a pause);
        `step()` checks `until` and `depart` (docs/RULES.md). Raises InvalidActionError if the
        tile is not walkable or cannot be reached.
        """
        i, field = self._walk_field(agent, tile, "route_to")
        p = self._tracker.pos[i]
        tiles = [p]
        move = None
        while field[p[1], p[0]] > 0:
            k, p = self._next_move(field, p)
            move = k if move is None else move
            tiles.append(p)
        if move is None or (depart is not None and depart > self._tracker.step[i]):
            move = self._stay
        action = {"move": move, "route": tiles, "until": until}
        if depart is not None:
            action["depart"] = depart
        return action

    def _walk_field(self, agent: str, tile: Tile, what: str) -> tuple[int, np.ndarray]:
        """(agent index, distance field to `tile`) after checking that `tile` can be reached."""
        tr = self._require_reset()
        i = self._idx(agent)
        try:
            target = (int(tile[0]), int(tile[1]))
        except (TypeError, ValueError, IndexError):
            raise InvalidActionError(f"{what}({agent!r}, {tile!r}): the tile must be (x, y) integers") from None
        if not self.world.is_walkable(target):
            raise InvalidActionError(f"{what}({agent!r}, {target}): that tile is blocked or off the "
                                     f"{self.world.width}x{self.world.height} map; pick a walkable tile")
        field = self.world.distance_field(target, self.max_vel)
        x, y = tr.pos[i]
        if field[y, x] < 0:
            raise InvalidActionError(f"{what}({agent!r}, {target}): no walkable path from {(x, y)} "
                                     f"(agent at step {tr.step[i]}); pick a reachable tile")
        return i, field

    def _next_move(self, field: np.ndarray, p: Tile) -> tuple[int, Tile]:
        """(move index, tile) of the first move, in offset order, that gets closest to the
        field's target from p; the stay on the target. Memoryless, so a walk resumed from any
        tile along it goes on along the same tiles (what makes route_to's route keepable)."""
        x, y = p
        best, best_d, to = self._stay, int(field[y, x]), p
        w, h = self.world.width, self.world.height
        for k, (dx, dy) in enumerate(self._offsets):
            nx, ny = x + dx, y + dy
            if 0 <= nx < w and 0 <= ny < h:
                d = int(field[ny, nx])
                if 0 <= d < best_d:
                    best, best_d, to = k, d, (nx, ny)
        return best, to

    def legal_moves(self, agent: str) -> np.ndarray:
        """The int8 action mask of `agent` at its current tile."""
        tr = self._require_reset()
        return self._mask(tr.pos[self._idx(agent)])

    def snapshot(self) -> dict:
        """A plain-data copy of the whole mutable state (for tests and checkpoints)."""
        tr = self._require_reset()
        return {
            "agents": list(self.agents),
            "pos": list(tr.pos), "step": list(tr.step),
            "activity": list(self._activity), "utterance": list(self._utterance),
            "done": list(self._done), "move_result": list(self._move_result),
            "ready": dict(self._ready),
            "pending": {cl: dict(sub) for cl, sub in self._pending.items()},
            "blockers": [frozenset(s) for s in tr.blockers],
            "blocks": [frozenset(s) for s in tr.blocks],
            "coupled": [frozenset(s) for s in tr.coupled],
            "stats": DependencyStats(**vars(self.stats)),
            "versions": self._versions.snapshot() if self._versions is not None else None,
            "paths": [(b, tuple(p)) if p is not None else None for b, p in zip(tr.path_base, tr.path)],
            "routes": [(e, tuple(r), k, d) if r is not None else None
                       for e, r, k, d in zip(tr.path_end, tr.route, tr.route_at, tr.route_depart)],
            "terminated": frozenset(self._retired), "returns": dict(self._task_run.returns),
        }

    # -- internals -------------------------------------------------------------------------

    def _require_reset(self) -> DependencyTracker:
        if self._tracker is None:
            raise ResetNeededError("call env.reset(seed=...) before using the environment")
        return self._tracker

    def _idx(self, agent: Any) -> int:
        try:
            return self._index[agent]
        except (KeyError, TypeError):
            near = ", ".join(repr(a) for a in self.possible_agents[:5])
            more = ", ..." if len(self.possible_agents) > 5 else ""
            raise UnknownAgentError(f"unknown agent {agent!r}: this env's agents are {near}{more} "
                                    f"(see env.possible_agents)") from None

    def _check_may_submit(self, i: int) -> None:
        name = self.possible_agents[i]
        tr = self._tracker
        if i in self._retired:
            raise AgentDoneError(f"agent {name!r} was terminated by the task {self.task.name!r}; it takes no more "
                                 f"actions (the env keeps it standing still): drop it from the dict")
        if self._done[i]:
            raise AgentDoneError(f"agent {name!r} is truncated at step {tr.step[i]} (max_steps="
                                 f"{self.max_steps}); it takes no more actions: drop it from the dict")
        cl = self._ready.get(i)
        if cl is None:
            raise AgentNotReadyError(self._not_ready_message(i, "it may not act yet"))
        if i in self._pending.get(cl, ()):
            waiting = [self.possible_agents[j] for j in cl if j not in self._pending[cl]]
            raise AgentNotReadyError(
                f"agent {name!r} already submitted its action for step {tr.step[i]}; it waits for "
                f"its cluster mates {waiting} to submit theirs, then appears again in a step() result")

    def _not_ready_message(self, i: int, what: str) -> str:
        tr = self._tracker
        rows = tr.blocked_by(i)[:3]
        why = "; ".join(f"{self.possible_agents[b.other]!r} ({b.rule}, {b.gap} steps behind)"
                        if b.rule == "blocked" else f"{self.possible_agents[b.other]!r} ({b.rule})"
                        for b in rows)
        return (f"agent {self.possible_agents[i]!r} is not ready at step {tr.step[i]}: {what}; held back by "
                f"{why or 'nothing (internal error)'}. Submit only agents in env.ready_agents(); "
                f"env.blocked_by(agent) explains the wait")

    def _parse_action(self, i: int, action: Any) -> tuple[int, str | None, str]:
        """(move index, new activity or None to keep, utterance) of a valid action."""
        if type(action) is dict and len(action) == 1:
            # the common {"move": int} in range, checked without building an error context
            move = action.get("move")
            if type(move) is int and 0 <= move < len(self._offsets):
                return move, None, ""
        name, step = self.possible_agents[i], self._tracker.step[i]
        where = f"action of agent {name!r} at step {step}"
        activity: str | None = None
        utterance = ""
        if isinstance(action, Mapping):
            extra = set(action) - _ACTION_KEYS
            if extra:
                raise InvalidActionError(f"{where} has unknown keys {sorted(map(str, extra))}; "
                                         f"allowed: {', '.join(map(repr, sorted(_ACTION_KEYS)))}")
            if "move" not in action:
                raise InvalidActionError(f"{where} needs a 'move' (an int in 0..{len(self._offsets) - 1}; "
                                         f"{self._stay} stays put)")
            move = action["move"]
            if action.get("activity") is not None:
                activity = self._check_text(where, "activity", action["activity"])
            if action.get("utterance") is not None:
                utterance = self._check_text(where, "utterance", action["utterance"])
        else:
            move = action
        if isinstance(move, np.ndarray) and move.shape == ():
            move = move.item()
        if isinstance(move, bool) or not isinstance(move, (int, np.integer)):
            raise InvalidActionError(f"{where}: 'move' must be an int, got {type(move).__name__} {move!r}; "
                                     f"use env.move_to(agent, tile) to get one")
        if not 0 <= int(move) < len(self._offsets):
            raise InvalidActionError(f"{where}: move {int(move)} is out of range 0..{len(self._offsets) - 1} "
                                     f"(offsets within max_vel={self.max_vel}; {self._stay} stays put)")
        return int(move), activity, utterance

    @staticmethod
    def _check_text(where: str, key: str, text: Any) -> str:
        if not isinstance(text, str):
            raise InvalidActionError(f"{where}: {key!r} must be a str, got {type(text).__name__}")
        if len(text) > msp.TEXT_MAX:
            raise InvalidActionError(f"{where}: {key!r} has {len(text)} characters, at most {msp.TEXT_MAX}; "
                                     f"shorten it (metropolis_env.sanitize_text cuts and cleans)")
        bad = msp.bad_chars(text)
        if bad:
            raise InvalidActionError(f"{where}: {key!r} holds characters outside the text charset "
                                     f"{bad[:5]!r}; clean it with metropolis_env.sanitize_text")
        return text

    def _commit(self, cl: tuple[int, ...], sub: dict[int, tuple[int, str | None, str]]) -> set[int]:
        tr = self._tracker
        new_pos = []
        stats = self.stats
        n_cl = len(cl)
        for m in cl:
            move, activity, utterance = sub[m]
            target, self._move_result[m] = self._landing(tr.pos[m], move)
            new_pos.append(target)
            if activity is not None:
                self._activity[m] = activity
            self._utterance[m] = utterance
            stats.agent_steps += 1
            stats.true_deps += 1 + self._n_perceived[m]
            stats.tracker_deps += n_cl + tr.initial_blockers[m]
            stats.free_steps += self._free_start[m]
            del self._ready[m]
        released = tr.commit(cl, new_pos)
        versions = self._versions
        if versions is not None:
            lo = tr.min_step
            for m, p in zip(cl, new_pos):
                versions.append(m, (p, self._activity[m], self._utterance[m]), lo)
        return released

    def _landing(self, p: Tile, move: int) -> tuple[Tile, str]:
        """(tile, move result) of `move` from tile p: a move off the map or onto a blocked tile
        leaves the agent in place."""
        x, y = p
        dx, dy = self._offsets[move]
        target = (x + dx, y + dy)
        if dx == 0 and dy == 0:
            return target, "stayed"
        if not self.world.in_bounds(target):
            return (x, y), "off_map"
        if not self.world.walkable[target[1], target[0]]:
            return (x, y), "blocked_tile"
        return target, "moved"

    def _check_promise(self, i: int, action: Any, move: int) -> tuple[str, list[Tile], int, int] | None:
        """Validate that `move` keeps the promise `i` is under, and any new promise the action
        declares: ("path", tiles, last step, -) or ("route", tiles, until, depart) to record,
        else None.

        A path lists the tiles the agent promises to stand on after this move and each of its
        next ones: path[0] is where this move lands; a new path may extend a running one (the
        result is merged with the part of the running path it does not cover). A route lists
        tiles starting with the one the agent stands on: through step `until` it stands on route
        tiles only, walking forward at most one route tile per step and pausing as it likes, and
        it stays on route[0] through step `depart` (default: now). It may be declared when no
        promise runs past this step, or while a route runs if the agent stands on that route's
        last tile and departs no earlier than that route's end (it only narrows the promise).
        """
        tr = self._tracker
        name, s = self.possible_agents[i], tr.step[i]
        landing = self._landing(tr.pos[i], move)[0]
        where = f"action of agent {name!r} at step {s}"
        route = tr.route[i]
        running_route = route is not None and tr.path_end[i] > s
        if running_route:
            k = tr.route_at[i]
            allowed = route[k:k + 1] if s + 1 <= tr.route_depart[i] else route[k:k + 2]
            if landing not in allowed:
                nxt = allowed[-1]
                raise InvalidActionError(
                    f"{where}: it declared a route through step {tr.path_end[i]} (departing after step "
                    f"{tr.route_depart[i]}) and stands on its tile {k}, {route[k]}; this move lands on {landing}, "
                    f"off the route or past where it may be at step {s + 1}; a declared route is a promise others "
                    f"already relied on: stay or move to {nxt} (env.move_to(agent, {nxt}))")
        promised = tr.path_tile(i, s + 1)
        if promised is not None and landing != promised:
            raise InvalidActionError(
                f"{where}: it declared a path through step {tr.path_end[i]} that puts it on {promised} at "
                f"step {s + 1}, but this move lands on {landing}; a declared path is a promise others "
                f"already relied on: follow it (env.move_to(agent, {promised}))")
        if not isinstance(action, Mapping):
            return None
        raw_path, raw_route = action.get("path"), action.get("route")
        until, depart = action.get("until"), action.get("depart")
        if raw_route is None:
            if until is not None or depart is not None:
                raise InvalidActionError(f"{where}: 'until' and 'depart' belong to a declared 'route'; add the "
                                         f"route or drop them")
            if raw_path is None:
                return None
            return self._check_path(i, where, raw_path, landing)
        if raw_path is not None:
            raise InvalidActionError(f"{where}: declare a 'path' or a 'route', not both")
        if not _is_int(until) or not s < until <= self.max_steps:
            raise InvalidActionError(f"{where}: a 'route' needs 'until', the last step it holds, an int in "
                                     f"{s + 1}..{self.max_steps}; got {until!r}")
        if depart is None:
            depart = s
        elif not _is_int(depart) or not s <= depart <= until:
            raise InvalidActionError(f"{where}: 'depart', the last step on route[0], must be an int in "
                                     f"{s}..{until} (until); got {depart!r}")
        if running_route:
            if tr.pos[i] != route[-1] or depart < tr.path_end[i]:
                raise InvalidActionError(
                    f"{where}: its route runs through step {tr.path_end[i]}; a new route may replace it only "
                    f"from that route's last tile, {route[-1]}, departing at step {tr.path_end[i]} or later "
                    f"(it stands on {tr.pos[i]}, departs after step {depart})")
        elif tr.path_end[i] > s:
            raise InvalidActionError(f"{where}: its promise of step {tr.path_end[i]} still runs; a new route "
                                     f"may be declared from that step on")
        tiles = self._tile_list(where, "route", raw_route)
        if tiles[0] != tr.pos[i]:
            raise InvalidActionError(f"{where}: route[0] must be the tile the agent stands on, {tr.pos[i]}, "
                                     f"got {tiles[0]}")
        if len(set(tiles)) != len(tiles):
            raise InvalidActionError(f"{where}: a route visits each tile once; it repeats one of {tiles}")
        allowed = tiles[:1] if depart > s else tiles[:2]
        if landing not in allowed:
            raise InvalidActionError(f"{where}: this move lands on {landing}, but the route it declares "
                                     f"allows only {allowed} at step {s + 1}")
        return "route", tiles, int(until), int(depart)

    def _check_path(self, i: int, where: str, raw: Any, landing: Tile) -> tuple[str, list[Tile], int, int]:
        tr = self._tracker
        s = tr.step[i]
        if tr.route[i] is not None and tr.path_end[i] > s:
            raise InvalidActionError(f"{where}: its route runs through step {tr.path_end[i]}; a path may be "
                                     f"declared from that step on")
        if isinstance(raw, Sequence) and not isinstance(raw, (str, bytes)) and len(raw) > self.max_steps - s:
            raise InvalidActionError(f"{where}: 'path' has {len(raw)} tiles but the agent has only "
                                     f"{self.max_steps - s} steps left (max_steps={self.max_steps})")
        tiles = self._tile_list(where, "path", raw)
        if tiles[0] != landing:
            raise InvalidActionError(f"{where}: path[0] must be the tile this move lands on, {landing}, "
                                     f"got {tiles[0]}")
        for k, q in enumerate(tiles):
            old = tr.path_tile(i, s + 1 + k)
            if old is not None and old != q:
                raise InvalidActionError(f"{where}: path[{k}] = {q} breaks the path declared earlier, which "
                                         f"puts it on {old} at step {s + 1 + k}; a new path may only extend it")
        # The earlier promise still holds beyond the new path's end.
        if tr.path_end[i] > s + len(tiles):
            tiles += tr.path[i][s + 1 + len(tiles) - tr.path_base[i]:]
        return "path", tiles, s + len(tiles), s

    def _tile_list(self, where: str, key: str, raw: Any) -> list[Tile]:
        """A non-empty list of walkable (x, y) tiles, each at most max_vel from the one before."""
        if isinstance(raw, (str, bytes)) or not isinstance(raw, Sequence) or not raw:
            raise InvalidActionError(f"{where}: {key!r} must be a non-empty list of (x, y) tiles, got {raw!r}")
        tiles: list[Tile] = []
        for k, tile in enumerate(raw):
            try:
                x, y = tile
                if isinstance(x, bool) or isinstance(y, bool):
                    raise TypeError
                q = (int(x), int(y))
                if q != (x, y):
                    raise TypeError
            except (TypeError, ValueError):
                raise InvalidActionError(f"{where}: {key}[{k}] must be an (x, y) pair of ints, got {tile!r}") from None
            if not self.world.is_walkable(q):
                raise InvalidActionError(f"{where}: {key}[{k}] = {q} is blocked or off the map; a {key} "
                                         f"holds walkable tiles only")
            if tiles and max(abs(q[0] - tiles[-1][0]), abs(q[1] - tiles[-1][1])) > self.max_vel:
                raise InvalidActionError(f"{where}: {key}[{k - 1}] -> {key}[{k}] ({tiles[-1]} -> {q}) is more "
                                         f"than max_vel={self.max_vel} tiles: one move per step")
            tiles.append(q)
        return tiles

    def _register_ready(self, candidates, committed: set[int]) -> list[int]:
        """Register the ready clusters among `candidates`; returns the agents that became ready
        (done agents included: that is when their final observation is due)."""
        tr = self._tracker
        became: list[int] = []
        for c in candidates:
            if c in self._ready or self._done[c]:
                continue
            cl = tr.ready_cluster(c)
            if cl is None:
                continue
            cl = tuple(cl)
            for m in cl:
                if self._done[m] or m in self._ready:
                    continue
                if tr.step[m] >= self.max_steps:
                    self._done[m] = True
                else:
                    self._ready[m] = cl
                # Ready in the same call that committed its previous step: it never waited.
                self._free_start[m] = m in committed and not tr.initial_blockers[m]
                became.append(m)
        became.sort()
        return became

    def _perceived(self, i: int) -> list[int]:
        """Agents in `i`'s perception at its step (i ready: nobody behind can be, see rules.py)."""
        tr = self._tracker
        p = tr.pos[i]
        r = self.radius_p
        zone = self.world.zone
        same_zone = self.perception == "arena"
        zi = zone[p[1], p[0]]
        out = []
        if self._versioned:
            # Agents ahead are read at i's step: their tile then is within their lead's worth of
            # moves of where they are now. Agents behind cannot be perceived: i is ready.
            t, step, versions = tr.step[i], tr.step, self._versions
            candidates = tr._near(p, r + (tr.max_step - t) * self.max_vel)
        else:
            candidates = tr._near(p, r)
        for j in candidates:
            if j == i:
                continue
            if self._versioned:
                if step[j] < t:
                    continue
                q = versions.at(j, t)[0]
            else:
                q = tr.pos[j]
            if abs(q[0] - p[0]) <= r and abs(q[1] - p[1]) <= r and (not same_zone or zone[q[1], q[0]] == zi):
                out.append(j)
        out.sort()
        return out

    def _public(self, j: int, step: int) -> tuple[Tile, str, str]:
        """(tile, activity, last utterance) of agent j as an agent at `step` perceives it."""
        if self._versioned:
            return self._versions.at(j, step)
        return self._tracker.pos[j], self._activity[j], self._utterance[j]

    def _location(self, p: Tile) -> str:
        # Agents revisit few tiles; formatting the name every observation was a visible cost.
        loc = self._locations.get(p)
        if loc is None:
            loc = self._locations[p] = self.world.location(p)
        return loc

    def _mask(self, p: Tile) -> np.ndarray:
        return _move_mask(self.world, p, self.max_vel)

    def _submit(self, parsed: dict[int, tuple[int, str | None, str]]) -> list[int]:
        """Record valid actions of ready agents, commit every cluster they complete; returns the
        agents that became ready."""
        complete: list[tuple[int, ...]] = []
        for i, act in parsed.items():
            cl = self._ready[i]
            sub = self._pending.setdefault(cl, {})
            sub[i] = act
            if len(sub) == len(cl):
                complete.append(cl)
        candidates: set[int] = set()
        committed: set[int] = set()
        for cl in complete:
            candidates |= self._commit(cl, self._pending.pop(cl))
            committed.update(cl)
        return self._register_ready(sorted(candidates), committed)

    def _idle_move(self, i: int) -> int:
        """The move of an agent the task terminated: stay, or keep to a path it declared."""
        tr = self._tracker
        self._n_perceived[i] = len(self._perceived(i))  # its true dependencies, for the stats
        to = tr.path_tile(i, tr.step[i] + 1)
        if to is None:
            return self._stay
        x, y = tr.pos[i]
        return self._offsets.index((to[0] - x, to[1] - y))

    def _emit(self, agents: list[int], evaluate: bool = True) -> tuple[dict, dict, list[Outcome]]:
        """Observations, infos and task outcomes (when `evaluate`: not at reset) of agents that
        just became ready."""
        names = self.possible_agents
        obs, infos, outcomes = {}, {}, []
        tiles_only = self._observation_mode == "position"
        pos = self._tracker.pos
        run = self._task_run
        needs_view = run.episode is not None or self._vector is not None
        for i in agents:
            perceived = self._perceived(i)
            self._n_perceived[i] = len(perceived)
            info = self._info(i, perceived)
            if needs_view:
                view = self._view(i, perceived)
                outcomes.append(run.evaluate(view) if evaluate else _NO_OUTCOME)
                info.update(run.info(names[i]))
            else:
                outcomes.append(_NO_OUTCOME)
            if tiles_only:
                obs[names[i]] = pos[i]
            elif self._vector is not None:
                mask = self._mask(pos[i])
                info["action_mask"] = mask
                obs[names[i]] = self._vector.encode(view, mask, run.features(view))
            else:
                obs[names[i]] = self._observe(i, perceived)
            infos[names[i]] = info
        return obs, infos, outcomes

    def _view(self, i: int, perceived: list[int]) -> View:
        """What `i` perceives at its step (the data of its observation), for tasks and vectors."""
        names = self.possible_agents
        step = self._tracker.step[i]
        return View(names[i], step, self._tracker.pos[i],
                    tuple(Seen(names[j], *self._public(j, step)) for j in perceived))

    def _observe(self, i: int, perceived: list[int] | None = None) -> dict:
        tr = self._tracker
        names = self.possible_agents
        p = tr.pos[i]
        if perceived is None:
            perceived = self._perceived(i)
        seen = [(names[j],) + self._public(j, tr.step[i]) for j in perceived]
        return {
            "position": np.array(p, dtype=np.int64),
            "step": tr.step[i],
            "location": self._location(p),
            "activity": self._activity[i],
            "utterance": self._utterance[i],
            "perceived": tuple({"name": name, "position": np.array(q, dtype=np.int64),
                                "activity": activity, "utterance": utterance}
                               for name, q, activity, utterance in seen),
            "action_mask": self._mask(p),
        }

    def _info(self, i: int, perceived: list[int]) -> dict:
        names = self.possible_agents
        return {
            "step": self._tracker.step[i],
            "perceived": [names[j] for j in perceived],
            "move_result": self._move_result[i],
        }


_NO_OUTCOME = Outcome()


def _move_mask(world: TileMap, p: Tile, max_vel: int) -> np.ndarray:
    # The moves of `move_offsets` are the (2v+1) x (2v+1) square around p, row-major: exactly
    # the slice of the walkable grid padded with v rows and columns of wall on every side.
    x, y = p
    return _padded_walkable(world, max_vel)[y:y + 2 * max_vel + 1, x:x + 2 * max_vel + 1].flatten()


@lru_cache(maxsize=16)
def _padded_walkable(world: TileMap, max_vel: int) -> np.ndarray:
    """int8 walkable grid of `world` with a border of `max_vel` blocked tiles (map edges)."""
    v = max_vel
    out = np.zeros((world.height + 2 * v, world.width + 2 * v), dtype=np.int8)
    out[v:v + world.height, v:v + world.width] = world.walkable
    out.setflags(write=False)
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_start(world: TileMap, agent: str, tile: Any) -> Tile:
    try:
        x, y = int(tile[0]), int(tile[1])
        if len(tile) != 2:
            raise ValueError
    except (TypeError, ValueError, IndexError):
        raise ConfigError(f"start tile of {agent!r} must be (x, y) integers, got {tile!r}") from None
    if not world.in_bounds((x, y)):
        raise ConfigError(f"start tile {(x, y)} of {agent!r} is off the {world.width}x{world.height} map "
                          f"{world.name!r}")
    if not world.walkable[y, x]:
        raise ConfigError(f"start tile {(x, y)} of {agent!r} is blocked on map {world.name!r}; "
                          f"choose a walkable tile (world.walkable[y, x] is True)")
    return (x, y)


#: Dependency rule sets (see rules.py): the paper's, and ours with per-step state versions.
RULES = ("paper", "versioned")


def _make_bound(bound: Any, env: AsyncParallelEnv):
    if bound == "box":
        return BoxBound(env.radius_p)
    if bound == "map":
        from .map_bound import shared_map_bound  # walls and rooms: see docs/MAP_BOUND.md
        return shared_map_bound(env.world, env.radius_p, env.max_vel, env.perception)
    if isinstance(bound, str):
        raise ConfigError(f"unknown bound {bound!r}; available: 'box', 'map'")
    if not (hasattr(bound, "hazard") and hasattr(bound, "search_radius")):
        raise ConfigError("a custom bound needs hazard(a, b) and search_radius(h) methods (see bounds.py)")
    return bound
