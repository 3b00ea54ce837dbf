"""A deterministic reactive policy and the two driving loops (sync, out-of-order) for tests.

The policy satisfies the premise of the equivalence contract (docs/SEMANTICS.md): an agent's action is a
pure function of (seed, agent, the observations it has received so far). Every choice comes from a
stable hash (hashlib, never Python's salted `hash()`) of the seed, the agent and the canonical
content of its observation and its own state, and that state is built only from the agent's own
observations. So any difference in what an agent perceives (a neighbour's position, activity or
utterance at the wrong time) changes its choices and shows up in its trajectory.

Behaviour: agents walk shortest paths (`env.move_to`) between destinations drawn from a small pool
shared by all agents (so they meet), sometimes stray onto a random (possibly masked) move, and react
to whom they perceive: they answer an agent that addresses them, and sometimes stop and talk with
someone they see, uttering a few lines that name the partner.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

import metropolis_env as me
from metropolis_env import navigation as nav
from metropolis_env.spaces import move_offsets


def canonical(obj: Any) -> Any:
    """A hashable, comparable form of an observation or info: arrays and lists become tuples,
    dicts sorted tuples of (key, value), numpy scalars Python scalars."""
    t = type(obj)
    if t in _LEAVES:
        return obj
    if t is dict:
        return tuple(sorted([(k, canonical(v)) for k, v in obj.items()]))
    if t is np.ndarray:
        return _freeze(obj.tolist()) if obj.ndim != 1 else tuple(obj.tolist())
    if t is list or t is tuple:
        return tuple([canonical(x) for x in obj])
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


_LEAVES = frozenset({str, int, float, bool, type(None)})
_OBS_KEYS = frozenset({"position", "step", "location", "activity", "utterance", "perceived", "action_mask"})
_INFO_KEYS = frozenset({"step", "perceived", "move_result"})


def canonical_observation(o: dict) -> Any:
    """`canonical(o)` of an observation, computed faster for the env's documented layout."""
    if o.keys() != _OBS_KEYS:
        return canonical(o)
    try:
        # Exactly these four keys (four entries, all present), else the generic form.
        perceived = tuple([(("activity", p["activity"]), ("name", p["name"]),
                            ("position", tuple(p["position"].tolist())), ("utterance", p["utterance"]))
                           for p in o["perceived"] if len(p) == 4])
    except (KeyError, AttributeError):
        return canonical(o)
    if len(perceived) != len(o["perceived"]):
        return canonical(o)
    return (("action_mask", tuple(o["action_mask"].tolist())), ("activity", o["activity"]),
            ("location", o["location"]), ("perceived", perceived),
            ("position", tuple(o["position"].tolist())), ("step", canonical(o["step"])),
            ("utterance", o["utterance"]))


def canonical_info(info: dict) -> Any:
    """`canonical(info)`, computed faster for the env's documented layout."""
    if info.keys() != _INFO_KEYS or type(info["perceived"]) is not list:
        return canonical(info)
    return (("move_result", info["move_result"]), ("perceived", tuple(info["perceived"])),
            ("step", canonical(info["step"])))


def _freeze(x: Any) -> Any:
    return tuple(_freeze(v) for v in x) if isinstance(x, list) else x


def stable_hash(*parts: Any) -> int:
    """A 64-bit hash of `repr(parts)` that is the same in every process and run."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little")


def destination_pool(world: me.TileMap, count: int) -> list[tuple[int, int]]:
    """`count` walkable tiles of `world`, the same for every seed (so the map's distance-field
    cache serves every run on the map)."""
    tiles = world.walkable_tiles()
    rng = random.Random(stable_hash("destinations", world.name, world.width, world.height))
    return [(int(tiles[k][0]), int(tiles[k][1])) for k in rng.sample(range(len(tiles)), count)]


@dataclass
class _AgentState:
    destination: tuple[int, int] | None = None
    partner: str | None = None
    talk_left: int = 0
    cooldown: dict[str, int] = field(default_factory=dict)  # partner -> step before which we don't talk
    seen: int = 0  # observations received (history digest: makes state part of every hash)


class ReactivePolicy:
    """Walk between pooled destinations, react to perceived agents; see the module docstring.

    `act(agent, obs)` must be called once per observation of `agent`, in the order the agent
    received them; the returned action is a pure function of seed, agent and those observations.
    """

    def __init__(self, env: me.AsyncParallelEnv, seed: int, destinations: list[tuple[int, int]] | None = None,
                 talkativeness: int = 3):
        self.env = env
        self.seed = seed
        self.destinations = destinations or destination_pool(self.env.world, 16)
        self.talkativeness = talkativeness  # start a chat with chance 1/talkativeness
        self._state: dict[str, _AgentState] = {}
        self._n_moves = int(self.env.action_space(self.env.possible_agents[0])["move"].n)
        self._stay = self._n_moves // 2  # offsets are row-major with (0, 0) in the middle

    def act(self, agent: str, obs: dict) -> dict:
        st = self._state.setdefault(agent, _AgentState())
        st.seen += 1
        h = stable_hash(self.seed, agent, canonical_observation(obs), st.seen, st.destination, st.partner, st.talk_left)
        step = int(obs["step"])
        here = (int(obs["position"][0]), int(obs["position"][1]))
        others = {p["name"]: p for p in obs["perceived"]}

        # Answer whoever addresses us, unless already talking.
        if st.talk_left == 0:
            callers = sorted(n for n, p in others.items() if p["utterance"].startswith(f"@{agent} "))
            if callers:
                st.partner, st.talk_left = callers[h % len(callers)], 1 + (h >> 8) % 3
            else:
                free = sorted(n for n in others if st.cooldown.get(n, -1) <= step)
                if free and (h >> 12) % self.talkativeness == 0:
                    st.partner, st.talk_left = free[(h >> 16) % len(free)], 2 + (h >> 20) % 4
        if st.talk_left > 0:
            st.talk_left -= 1
            if st.talk_left == 0:
                st.cooldown[st.partner] = step + 10 + (h >> 24) % 20
            return {"move": self._stay,
                    "activity": f"chatting with {st.partner}",
                    "utterance": f"@{st.partner} line {(h >> 28) % 1000} at {here}"}

        if (h >> 32) % 23 == 0:
            # Stray: any move, a masked one included (it leaves the agent in place).
            return {"move": int((h >> 40) % self._n_moves), "activity": "wandering"}
        if st.destination is None or st.destination == here or (h >> 36) % 97 == 0:
            st.destination = self._pick_destination(here, h)
        if st.destination is None:
            return {"move": int((h >> 40) % self._n_moves), "activity": "lost"}
        return dict(self.env.move_to(agent, st.destination), activity=f"going to {st.destination}")

    def _pick_destination(self, here: tuple[int, int], h: int) -> tuple[int, int] | None:
        world, v = self.env.world, self.env.max_vel
        for attempt in range(8):
            dest = self.destinations[stable_hash(h, attempt) % len(self.destinations)]
            if dest != here and world.distance_field(dest, v)[here[1], here[0]] >= 0:
                return dest
        return None


class PromisingPolicy:
    """ReactivePolicy that now and then makes a promise about its next tiles and keeps it.

    A promise is a declared `"path"` (stay put, or walk a hashed sequence of legal moves, for
    1..16 steps) or a declared `"route"` (a stretch of up to 12 tiles of a shortest walk to a
    pooled destination, held for 1..20 steps, sometimes departing a few steps later, along which
    it walks or pauses by hash; at the route's end it may declare the next route, departing when
    the running one ends). While a promise runs the agent keeps it whatever it perceives. Deterministic in (seed, agent, its
    observations), like the policy it wraps. Needs an env with rules="versioned".
    """

    def __init__(self, env: me.AsyncParallelEnv, seed: int, destinations: list[tuple[int, int]] | None = None):
        self.env = env
        self.seed = seed
        self.inner = ReactivePolicy(env, seed, destinations)
        self.offsets = me.spaces.move_offsets(env.max_vel)
        self.promise: dict[str, list[tuple[int, int]]] = {}
        # agent -> (route tiles, last step on its first tile, last step of the promise)
        self.route: dict[str, tuple[list[tuple[int, int]], int, int]] = {}

    def _move(self, here: tuple[int, int], to: tuple[int, int]) -> int:
        return self.offsets.index((to[0] - here[0], to[1] - here[1]))

    def act(self, agent: str, obs: dict) -> dict:
        here = (int(obs["position"][0]), int(obs["position"][1]))
        step = int(obs["step"])
        todo = self.promise.get(agent)
        action = self.inner.act(agent, obs)  # always called: its state follows every observation
        h = stable_hash(self.seed, "promise", agent, canonical_observation(obs))
        if todo:
            nxt = todo.pop(0)
            return {"move": self._move(here, nxt), "activity": "keeping a promise"}
        if agent in self.route:
            tiles, depart, until = self.route[agent]
            if step < until:
                k = tiles.index(here)  # where the walk got to (it was a pause or a step)
                if k + 1 == len(tiles) and h % 4 == 0:
                    return self._declare_route(agent, here, step, h, action, depart=until + (h >> 40) % 3)
                walk = k + 1 < len(tiles) and step >= depart and h % 3 != 0
                return {"move": self._move(here, tiles[k + 1] if walk else here), "activity": "on a route"}
            del self.route[agent]
        if h % 3:
            return action
        kind = (h >> 4) % 3
        if kind == 2:
            return self._declare_route(agent, here, step, h, action)
        landing = nav.landing(self.env.world, here, move_offsets(self.env.max_vel)[action["move"]])[0]
        path = [landing]
        for k in range(1, 1 + (h >> 8) % 16):
            x, y = path[-1]
            if kind == 1:
                options = [(x + dx, y + dy) for dx, dy in self.offsets if self.env.world.is_walkable((x + dx, y + dy))]
                path.append(options[stable_hash(h, k) % len(options)])
            else:
                path.append((x, y))
        left = self.env.max_steps - step
        path = path[:left]
        self.promise[agent] = list(path[1:])
        return dict(action, path=path)

    def _declare_route(self, agent: str, here: tuple[int, int], step: int, h: int, action: dict,
                       depart: int | None = None) -> dict:
        world, v = self.env.world, self.env.max_vel
        dest = self.inner.destinations[(h >> 8) % len(self.inner.destinations)]
        field = world.distance_field(dest, v)
        tiles = [here]
        while len(tiles) < 12 and field[tiles[-1][1], tiles[-1][0]] > 0:
            x, y = tiles[-1]
            d = field[y, x]
            tiles.append(next((x + dx, y + dy) for dx, dy in self.offsets
                              if world.is_walkable((x + dx, y + dy)) and field[y + dy, x + dx] == d - 1))
        if depart is None:
            depart = step + (h >> 32) % 4 if (h >> 28) % 3 == 0 else step
        until = min(self.env.max_steps, max(depart, step + 1) + (h >> 16) % 20)
        depart = min(depart, until)
        walk = len(tiles) > 1 and depart == step and (h >> 24) % 2 == 0
        self.route[agent] = (tiles, depart, until)
        return dict(action, move=self._move(here, tiles[1] if walk else here), route=tiles, until=until,
                    depart=depart, activity="declaring a route")


# -- driving loops ---------------------------------------------------------------------------

@dataclass
class Trajectories:
    """What a run produced for every agent: positions[a][t] is a's tile at time t,
    observations[a][t] the canonical (observation, info) a received for its step t, and
    actions[a][t] the action it took at step t."""

    positions: dict[str, list[tuple[int, int]]]
    observations: dict[str, list[Any]]
    actions: dict[str, list[Any]]

    @classmethod
    def empty(cls, agents) -> "Trajectories":
        return cls({a: [] for a in agents}, {a: [] for a in agents}, {a: [] for a in agents})

    def record(self, obs: dict, infos: dict, expected: "Trajectories | None" = None) -> None:
        """Append what `step()`/`reset()` returned; with `expected`, fail at the first observation
        that differs from it."""
        for a, o in obs.items():
            seq = self.observations[a]
            t = len(seq)
            assert int(o["step"]) == t, f"{a} got an observation for step {o['step']} after {t}"
            got = (canonical_observation(o), canonical_info(infos[a]))
            if expected is not None and got != expected.observations[a][t]:
                raise AssertionError(f"{a} diverges from the expected run at step {t}:\n"
                                     f"  got:      {got}\n  expected: {expected.observations[a][t]}")
            seq.append(got)
            self.positions[a].append((int(o["position"][0]), int(o["position"][1])))

    def record_actions(self, actions: dict) -> None:
        for a, act in actions.items():
            self.actions[a].append(act)


class ReplayPolicy:
    """The actions a recorded run took, by agent and step.

    Driving a run with it and checking its observations against the recording (`run_async(...,
    expected=recorded)`) tests a deterministic policy without recomputing it: as long as an
    agent's observations equal the recorded ones, its action is the recorded one.
    """

    def __init__(self, recorded: Trajectories):
        self.recorded = recorded

    def act(self, agent: str, obs: dict) -> Any:
        return self.recorded.actions[agent][int(obs["step"])]


def run_sync(env: me.AsyncParallelEnv, seed: int, policy: ReactivePolicy) -> Trajectories:
    """Global-barrier execution through SyncParallelWrapper: every live agent acts every step."""
    from metropolis_env.wrappers import SyncParallelWrapper

    sync = SyncParallelWrapper(env)
    obs, infos = sync.reset(seed=seed)
    traj = Trajectories.empty(sync.possible_agents)
    traj.record(obs, infos)
    while sync.agents:
        actions = {a: policy.act(a, obs[a]) for a in sync.agents}
        traj.record_actions(actions)
        obs, _, _, _, infos = sync.step(actions)
        assert set(obs) == set(actions), "a sync step must return every agent that acted"
        traj.record(obs, infos)
    return traj


@dataclass(frozen=True)
class Interleaving:
    """Knobs of one random out-of-order schedule.

    Each call picks every ready cluster with probability `share` (at least one), ordered by
    `order` ("random", "laggards" first or "leaders" first - leaders first lets agents run far
    ahead, which makes step gaps and blocking), keeps the first `max_clusters` of them, submits
    them in a shuffled dict order, and with probability `partial` submits only part of a
    multi-agent cluster now and the rest in later calls.
    """

    seed: int
    share: float = 0.5
    order: str = "random"
    max_clusters: int = 1_000_000
    partial: float = 0.2


def run_async(env: me.AsyncParallelEnv, seed: int, policy: ReactivePolicy | ReplayPolicy, schedule: Interleaving,
              check: Callable[[me.AsyncParallelEnv, dict], None] | None = None,
              expected: Trajectories | None = None) -> Trajectories:
    """Out-of-order execution: submit random subsets of ready clusters (and parts of clusters)
    until every agent is truncated. `check(env, ready)` runs after reset and after every step()
    call, with `ready` the observations of agents that are ready and have not submitted. With
    `expected`, every observation is compared with it as it arrives."""
    rng = random.Random(schedule.seed)
    obs, infos = env.reset(seed=seed)
    traj = Trajectories.empty(env.possible_agents)
    traj.record(obs, infos, expected)
    ready = dict(obs)
    if check:
        check(env, ready)
    done: set[str] = set()
    steps = env.steps
    while len(done) < len(env.possible_agents):
        assert ready, (f"deadlock: nobody is ready, {len(done)} of {len(env.possible_agents)} agents "
                       f"finished; steps {env.steps}")
        clusters = [[a for a in cl if a in ready] for cl in env.clusters()]
        clusters = [cl for cl in clusters if cl]
        if schedule.order == "random":
            rng.shuffle(clusters)
        else:
            clusters.sort(key=lambda cl: (steps[cl[0]], rng.random()), reverse=schedule.order == "leaders")
        chosen = [cl for cl in clusters if rng.random() < schedule.share][:schedule.max_clusters]
        if not chosen:
            chosen = clusters[:1]
        submit: list[str] = []
        for cl in chosen:
            if len(cl) > 1 and rng.random() < schedule.partial:
                cl = rng.sample(cl, rng.randint(1, len(cl) - 1))
            submit.extend(cl)
        rng.shuffle(submit)
        actions = {a: policy.act(a, ready.pop(a)) for a in submit}
        traj.record_actions(actions)
        obs, _, terms, truncs, infos = env.step(actions)
        traj.record(obs, infos, expected)
        steps = env.steps
        for a in obs:
            assert not terms[a]
            if truncs[a]:
                assert steps[a] == env.max_steps, f"{a} truncated at step {steps[a]}"
                done.add(a)
            else:
                ready[a] = obs[a]
        if check:
            check(env, ready)
    assert env.agents == [], "every agent reached max_steps, none may stay live"
    return traj


class RandomWalk:
    """Random moves (masked ones included) and occasional utterances naming a perceived agent.

    Still a pure function of (seed, agent, observation), so its runs can be compared with sync;
    meant for small crowded grids where it makes many different configurations quickly.
    """

    def __init__(self, seed: int):
        self.seed = seed

    def act(self, agent: str, obs: dict) -> dict:
        h = stable_hash(self.seed, agent, canonical_observation(obs))
        action = {"move": h % len(obs["action_mask"])}
        if obs["perceived"] and (h >> 16) % 3 == 0:
            other = obs["perceived"][(h >> 20) % len(obs["perceived"])]
            action["utterance"] = f"@{other['name']} {(h >> 24) % 100}"
        return action
