"""AsyncParallelEnv: a PettingZoo-shaped environment whose agents advance out of order.

Instead of one global `step()` that moves every agent, any subset of *ready* agents submits an
action; an agent's action takes effect when its whole cluster (agents coupled with it) has
submitted. The dependency tracker decides readiness so that every agent observes exactly what it
would observe under global-step execution (see `rules.py` and docs/RULES.md).

This module is the PettingZoo face and the submission bookkeeping; the rooms behind it are
env_config.py (checked arguments, agent names), actions.py (parsing), promises.py (declared
paths and routes), observer.py (perception, observations, infos), navigation.py (moves and
walks), submissions.py (who may act), stats.py, tracker.py and rules.py; tasks.py states
rewards, prediction.py predicts observations, pictures.py draws.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Sequence

import numpy as np

from . import navigation as nav
from . import spaces as msp
from .actions import Action, ActionParser, declares_promise
from .bounds import make_bound
from .env_config import AgentNames, check_env_args, check_int
from .errors import AgentNotReadyError, ConfigError, InvalidActionError, InvalidActionsError, ResetNeededError
from .observer import OBSERVATIONS, Observer
from .pictures import Painter
from .placement import check_start_tiles, draw_start_tiles
from .prediction import predict_observation
from .promises import PathPromise, declare
from .rules import RULES, PaperRules
from .stats import DependencyStats
from .submissions import Submissions
from .tasks import EpisodeSetup, TaskRun
from .tracker import DependencyTracker
from .world import Tile, TileMap

__all__ = ["AsyncParallelEnv", "DependencyStats", "RULES"]


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

    `observation_mode` (default: `obs_type`): what `reset`/`step`/`observe` return as each agent's
    observation, one of observer.OBSERVATIONS: "full" the observation dict, "vector" one float32
    vector (vector.py), "position" only the agent's (x, y) tile. `observation_space(agent)` is
    that type's space. The infos are the same in all (plus the action mask with obs_type "vector").
    `obs_type`: "full" or "vector" (also makes the action space `Discrete(n_moves)`).
    `rules`: a rule set (rules.py) or its name in RULES.
    `task`: None (rewards 0.0, nobody terminates) or a task (tasks.py) or its name.
    """

    metadata = {"render_modes": ["ansi", "rgb_array", "human"], "name": "metropolis_v0", "is_parallelizable": True}
    OBS_TYPES = ("full", "vector")
    OBSERVATION_MODES = tuple(OBSERVATIONS)
    _observation_mode = "full"
    _observation = OBSERVATIONS["full"]()

    @property
    def observation_mode(self) -> str:
        return self._observation_mode

    @observation_mode.setter
    def observation_mode(self, mode: str) -> None:
        if mode not in OBSERVATIONS:
            raise ConfigError(f"observation_mode must be one of {self.OBSERVATION_MODES}, got {mode!r}")
        self._observation_mode = mode
        self._observation = OBSERVATIONS[mode]()

    def __init__(self, world: TileMap, agents: Sequence[str], start_tiles: Sequence[Tile] | None = None,
                 *, radius_p: int = 4, max_vel: int = 1, max_steps: int = 8640,
                 perception: str = "box", seed: int | None = 0, render_mode: str | None = None,
                 bound: Any = "box", rules: PaperRules | str = "paper", obs_type: str = "full", task: Any = None):
        self.rules, self.task = check_env_args(radius_p, max_vel, max_steps, perception, rules, render_mode,
                                               self.metadata["render_modes"], obs_type, self.OBS_TYPES, task)
        self._names = AgentNames(agents)
        names = self._names.names
        self._start_tiles = check_start_tiles(world, names, start_tiles)

        self.world = world
        self.radius_p = int(radius_p)
        self.max_vel = int(max_vel)
        self.max_steps = int(max_steps)
        self.perception = perception
        self.render_mode = render_mode
        self.seed = seed
        self.possible_agents: list[str] = names
        self._bound = make_bound(bound, world, self.radius_p, self.max_vel, perception)
        self._offsets = msp.move_offsets(self.max_vel)
        self._parser = ActionParser(self.max_vel)
        self.obs_type = obs_type
        self._observer = Observer(world, names, self.radius_p, self.max_vel, perception, self.max_steps,
                                  self.task.n_features if self.task is not None else 0,
                                  mask_in_info=obs_type == "vector")
        self.observation_mode = obs_type
        # One action space per agent, made on first use: each space owns its RNG, so seeding and
        # sampling one agent's space (PettingZoo's seed test) must not disturb another's.
        self._act_spaces: dict[str, Any] = {}
        self._painter = Painter()
        self._tracker: DependencyTracker | None = None
        self.agents: list[str] = []

    # -- PettingZoo surface ----------------------------------------------------------------

    def observation_space(self, agent: str):
        """The space of what reset/step/observe hand out for `agent` (observation_mode's)."""
        self._idx(agent)
        return self._observation.space(self._observer)

    def action_space(self, agent: str):
        """The Dict action space (obs_type "full") or Discrete(n_moves) ("vector"), one object per
        agent (its own RNG). The env takes a move index or an action dict in both."""
        self._idx(agent)
        space = self._act_spaces.get(agent)
        if space is None:
            space = self._act_spaces[agent] = (msp.move_space if self.obs_type == "vector" else msp.action_space)(self.max_vel)
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
            check_int("seed", seed, 0)
        n = len(self.possible_agents)
        start = (list(self._start_tiles) if self._start_tiles is not None
                 else draw_start_tiles(self.world, n, self.seed if seed is None else seed))
        self._subs = Submissions(self.possible_agents, self.max_steps)
        self.stats = DependencyStats()
        self._tracker = DependencyTracker(start, self.max_vel, self._bound, rules=self.rules)
        self._public = self.rules.public_state(start)
        names = tuple(self.possible_agents)
        self._task_run = TaskRun(self.task, EpisodeSetup(
            self.world, names, dict(zip(names, start)), self.max_vel, self.radius_p, self.max_steps,
            int(self.seed or 0) if seed is None else seed))
        self._observer.start(self._tracker, self._public, self._task_run)
        self.agents = list(self.possible_agents)
        became = self._subs.register(self._tracker, range(n), set(range(n)))
        obs, infos, _ = self._observer.emit(became, self._observation, evaluate=False)
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
        parsed: dict[int, Action] = {}
        promises = {}
        names, promising, subs = self.possible_agents, self.rules.promises, self._subs
        for agent, action in actions.items():
            i = self._idx(agent)
            subs.check_may_submit(i, tr)
            parsed[i] = self._parser.parse(action, names[i], tr.step[i])
            if promising:
                promise = declare(tr.promise[i], action, agent=names[i], pos=tr.pos[i], step=tr.step[i],
                                  landing=self._landing(i, parsed[i].move)[0],
                                  world=self.world, max_vel=self.max_vel, max_steps=self.max_steps)
                if promise is not None:
                    promises[i] = promise
            elif declares_promise(action):
                raise InvalidActionError(
                    f"action of agent {agent!r}: a declared 'path' or 'route' needs rules='versioned' (this env "
                    f"uses the paper's rules, which cannot use it); make the env with rules='versioned' or drop it")
        # Everything is valid: from here on nothing raises.
        for i, promise in promises.items():
            tr.declare(i, promise)
        obs, rewards, terms, truncs, infos, done = self._hand_out(self._submit(parsed))
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
        waits for whom); "human" that picture in a matplotlib window (None). See pictures.py."""
        return self._painter.render(self)

    def close(self) -> None:
        self._painter.close()

    # -- task ------------------------------------------------------------------------------

    def task_info(self, agent: str) -> dict:
        """The task's info of `agent` at its current step (also in its infos); {} without a task."""
        self._require_reset()
        return self._task_run.info(self.possible_agents[self._idx(agent)])

    @property
    def returns(self) -> dict[str, float]:
        """Each agent's summed task rewards this episode (0.0 without a task)."""
        self._require_reset()
        return dict(self._task_run.returns)

    def terminated(self, agent: str) -> bool:
        """Whether the task terminated `agent` (it then stays put until max_steps)."""
        self._require_reset()
        return self._idx(agent) in self._subs.terminated

    # -- out-of-order surface --------------------------------------------------------------

    def ready_agents(self) -> list[str]:
        """Agents that may act now and have not submitted yet, smallest step first."""
        tr = self._require_reset()
        return [self.possible_agents[i] for i in self._subs.waiting(tr.step)]

    def pending_agents(self) -> list[str]:
        """Agents that submitted and wait for cluster mates to submit, smallest step first."""
        tr = self._require_reset()
        return [self.possible_agents[i] for i in self._subs.submitted(tr.step)]

    def done_agents(self) -> list[str]:
        """Agents truncated at max_steps."""
        self._require_reset()
        return [a for a, d in zip(self.possible_agents, self._subs.done) if d]

    def clusters(self) -> list[list[str]]:
        """Ready clusters (agents that must be submitted together), smallest step first."""
        tr = self._require_reset()
        return [[self.possible_agents[i] for i in cl] for cl in self._subs.clusters(tr.step)]

    def ready_cluster(self, agent: str) -> tuple[str, ...]:
        """The ready cluster `agent` belongs to (the agents to submit with it; agents the task
        terminated left out: the env submits for them).

        Raises AgentNotReadyError if `agent` is not ready.
        """
        tr = self._require_reset()
        i = self._idx(agent)
        cl = self._subs.ready.get(i)
        if cl is None:
            raise AgentNotReadyError(self._subs.not_ready_message(i, tr, "it has no ready cluster"))
        return tuple(self.possible_agents[j] for j in cl if j not in self._subs.terminated)

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
        return self._idx(agent) in self._subs.ready

    def observe(self, agent: str) -> Any:
        """The current observation of a ready agent (the one `step`/`reset` returned for it, of
        the observation_mode's type: it lies in `observation_space(agent)`)."""
        tr = self._require_reset()
        i = self._idx(agent)
        if i not in self._subs.ready and not self._subs.done[i]:
            raise AgentNotReadyError(self._subs.not_ready_message(i, tr, "its observation is not final yet"))
        return self._observation.observe(self._observer, i, self._observer.perceived(i))

    def predict_observation(self, agent: str, actions: Sequence[Any] | None = None) -> dict:
        """Read-only: the observation dict `agent` would get after taking `actions` (its next
        actions, in order; none: at its current step) if no laggard enters its view meanwhile
        (exact for a ready agent and no actions). See prediction.py."""
        return predict_observation(self, agent, () if actions is None else actions)

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

    def promise(self, agent: str):
        """The promise (promises.py) `agent` is held to, or None."""
        return self._require_reset().promise[self._idx(agent)]

    def blocked_by(self, agent: str) -> list[dict]:
        """Who holds `agent` back and by which rule ([] when it may act).

        Each entry: `{"agent", "rule", "gap", "hazard"}` with rule "blocked" (that agent is
        `gap` steps behind and could still come within perception), "cluster" (a coupled agent
        at its step that is itself blocked) or "submission" (a cluster mate that has not
        submitted yet).
        """
        tr = self._require_reset()
        rows = self._subs.blocked_by(self._idx(agent), tr)
        return [{"agent": self.possible_agents[b.other], "rule": b.rule, "gap": b.gap, "hazard": b.hazard}
                for b in rows]

    def move_to(self, agent: str, tile: Tile) -> dict:
        """A legal action taking `agent` one step along a shortest walk to `tile` (stay if there).

        Raises InvalidActionError if the tile is not walkable or cannot be reached.
        """
        tr = self._require_reset()
        i = self._idx(agent)
        return nav.move_to(self.world, tr.pos[i], tile, self.max_vel, f"move_to({agent!r}, {tile!r}) at step {tr.step[i]}")

    def route_to(self, agent: str, tile: Tile, until: int, depart: int | None = None) -> dict:
        """An action that declares the walk `move_to` takes to `tile` as a route, held through
        step `until` (rules="versioned"): the route's tiles, and this step's move along it, or
        a stay when `depart` (the last step on the first tile) is later than now.

        The agent then keeps to it by following `move_to(agent, tile)` or staying (a pause);
        `step()` checks `until` and `depart` (docs/RULES.md). Raises InvalidActionError if the
        tile is not walkable or cannot be reached.
        """
        tr = self._require_reset()
        i = self._idx(agent)
        return nav.route_to(self.world, tr.pos[i], tr.step[i], tile, until, depart, self.max_vel,
                            f"route_to({agent!r}, {tile!r}) at step {tr.step[i]}")

    def legal_moves(self, agent: str) -> np.ndarray:
        """The int8 action mask of `agent` at its current tile."""
        tr = self._require_reset()
        return nav.move_mask(self.world, tr.pos[self._idx(agent)], self.max_vel)

    def snapshot(self) -> dict:
        """A plain-data copy of the whole mutable state (for tests and checkpoints)."""
        tr = self._require_reset()
        return {"agents": list(self.agents), **tr.snapshot(), **self._public.snapshot(), **self._subs.snapshot(),
                "move_result": list(self._observer.move_result), "stats": DependencyStats(**vars(self.stats)),
                "returns": dict(self._task_run.returns)}

    # -- internals -------------------------------------------------------------------------

    def _require_reset(self) -> DependencyTracker:
        if self._tracker is None:
            raise ResetNeededError("call env.reset(seed=...) before using the environment")
        return self._tracker

    def _idx(self, agent: Any) -> int:
        return self._names.index(agent)

    def _submit(self, parsed: dict[int, Action]) -> list[int]:
        """Record valid actions of ready agents and commit every cluster they complete; returns
        the agents that became ready."""
        subs = self._subs
        complete = [cl for cl in (subs.submit(i, act) for i, act in parsed.items()) if cl is not None]
        candidates: set[int] = set()
        committed: set[int] = set()
        for cl in complete:
            candidates |= self._commit(cl, subs.take(cl))
            committed.update(cl)
        return subs.register(self._tracker, sorted(candidates), committed)

    def _hand_out(self, became: list[int]) -> tuple[dict, dict, dict, dict, dict, list[str]]:
        """The step's dicts for agents that became ready, and the names that left the episode.

        Agents the task terminated stand still until max_steps (the others still see them): the
        env submits their moves itself whenever they become ready, and hands out whoever becomes
        ready on the way."""
        subs, names = self._subs, self.possible_agents
        obs, rewards, terms, truncs, infos, done = {}, {}, {}, {}, {}, []
        while became:
            live = [i for i in became if i not in subs.terminated] if subs.terminated else became
            o, inf, outcomes = self._observer.emit(live, self._observation)
            obs.update(o)
            infos.update(inf)
            for i, out in zip(live, outcomes):
                a = names[i]
                rewards[a], terms[a], truncs[a] = out.reward, out.terminated, subs.done[i]
                if out.terminated:
                    subs.terminated.add(i)
                if out.terminated or subs.done[i]:
                    done.append(a)
            idle = [i for i in became if i in subs.terminated and not subs.done[i]] if subs.terminated else ()
            became = self._submit({i: self._idle_action(i) for i in idle}) if idle else []
        return obs, rewards, terms, truncs, infos, done

    def _idle_action(self, i: int) -> Action:
        """A terminated agent's move: stay, or keep to the path it promised (a route allows a pause)."""
        tr = self._tracker
        to = tr.promise[i].tile_at(tr.step[i] + 1) if isinstance(tr.promise[i], PathPromise) else None
        return Action(self._offsets.index((to[0] - tr.pos[i][0], to[1] - tr.pos[i][1])) if to else len(self._offsets) // 2)

    def _landing(self, i: int, move: int) -> tuple[Tile, str]:
        return nav.landing(self.world, self._tracker.pos[i], self._offsets[move])

    def _commit(self, cl: tuple[int, ...], sub: dict[int, Action]) -> set[int]:
        tr, stats, public, observer = self._tracker, self.stats, self._public, self._observer
        free = self._subs.free_start
        new_pos = []
        n_cl = len(cl)
        for m in cl:
            act = sub[m]
            target, observer.move_result[m] = self._landing(m, act.move)
            new_pos.append(target)
            if act.activity is not None:
                public.activity[m] = act.activity
            public.utterance[m] = act.utterance
            stats.record(observer.n_perceived[m], n_cl, tr.initial_blockers[m], free[m])
        released = tr.commit(cl, new_pos)
        public.record(tr, cl)
        return released

