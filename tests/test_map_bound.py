"""The map-aware bound (metropolis_env.map_bound): sound, never looser than the box, and exact in use.

- The hazard equals its definition, checked two independent ways: by the formula over the env's
  own distance fields on the_ville, and by breadth-first search in the product space of both
  agents' tiles on small maps with walls and rooms.
- It is never below the box hazard, symmetric, and moves by at most max_vel per move (the
  tracker's incremental update depends on that).
- Out-of-order runs with bound="map" reproduce the sync run (every position, every observation)
  on the_ville and on concatenated villes, under random interleavings; after every step() the
  map-form validity invariant holds for all pairs and the ready set equals a brute-force one.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections import deque

import numpy as np
import pytest

import metropolis_env as me
from metropolis_env import world as W
from metropolis_env.map_bound import MapBound


# -- references (share no code with map_bound) ------------------------------------------------

def perceives(world: W.TileMap, p, q, radius_p: int, perception: str) -> bool:
    """The env's perception rule, restated: box radius_p, and the same zone with "arena"."""
    if max(abs(p[0] - q[0]), abs(p[1] - q[1])) > radius_p:
        return False
    return perception == "box" or world.zone[p[1], p[0]] == world.zone[q[1], q[0]]


@functools.lru_cache(maxsize=None)
def moves_until_perception(world: W.TileMap, a, b, radius_p: int, max_vel: int, perception: str,
                           limit: int | None = None) -> float:
    """min over perceivable (u, v) of walk(a, u) + walk(b, v), from the env's own distance
    fields (inf if never); with `limit`, min(that, limit), searching only near a."""
    da = world.distance_field(a, max_vel).astype(np.int64)
    db = world.distance_field(b, max_vel).astype(np.int64)
    big = 1 << 40
    da[da < 0] = big
    db[db < 0] = big
    if limit is not None:
        # A pair below the limit has walk(a, u) < limit, and v within radius_p of u.
        ys, xs = np.nonzero(da < limit)
        if ys.size == 0:
            return limit
        crop = (slice(max(ys.min() - radius_p, 0), ys.max() + radius_p + 1),
                slice(max(xs.min() - radius_p, 0), xs.max() + radius_p + 1))
        da, db, zone = da[crop], db[crop], world.zone[crop]
    else:
        zone = world.zone
    h, w = da.shape
    best = big
    for oy in range(-radius_p, radius_p + 1):
        for ox in range(-radius_p, radius_p + 1):
            u = (slice(max(0, -oy), min(h, h - oy)), slice(max(0, -ox), min(w, w - ox)))
            v = (slice(max(0, oy), min(h, h + oy)), slice(max(0, ox), min(w, w + ox)))
            ok = np.ones(da[u].shape, bool) if perception == "box" else zone[u] == zone[v]
            if ok.size:
                best = min(best, int(np.where(ok, da[u] + db[v], big).min()))
    if limit is not None:
        return min(best, limit)
    return float("inf") if best >= big else best


def product_space_moves(world: W.TileMap, radius_p: int, max_vel: int, perception: str) -> dict:
    """{(a, b): fewest moves of either agent until they perceive each other}, by one backward
    breadth-first search over pairs of tiles from every perceiving pair (the definition itself)."""
    tiles = [tuple(map(int, t)) for t in world.walkable_tiles()]
    steps = [(dx, dy) for dx in range(-max_vel, max_vel + 1) for dy in range(-max_vel, max_vel + 1) if dx or dy]

    def nbrs(t):
        return [(t[0] + dx, t[1] + dy) for dx, dy in steps if world.is_walkable((t[0] + dx, t[1] + dy))]

    dist = {(a, b): 0 for a in tiles for b in tiles if perceives(world, a, b, radius_p, perception)}
    todo = deque(dist)
    while todo:
        a, b = todo.popleft()
        d = dist[(a, b)] + 1
        for s in [(a2, b) for a2 in nbrs(a)] + [(a, b2) for b2 in nbrs(b)]:  # moves are reversible
            if s not in dist:
                dist[s] = d
                todo.append(s)
    return dist


def box_hazard(a, b, radius_p: int) -> int:
    return max(0, max(abs(a[0] - b[0]), abs(a[1] - b[1])) - radius_p)


def two_rooms() -> W.TileMap:
    """16 x 10: two rooms with one shared wall (close in a box, far on foot) and a street.

    Room 1 (x 1..5, y 1..7) opens at (6, 7); room 2 (x 7..14, y 1..4) opens at (12, 5)."""
    w, h = 16, 10
    walk = np.zeros((h, w), bool)
    walk[1:9, 1:15] = True
    walk[0:9, 6] = False
    walk[5, 7:15] = False
    walk[7, 6] = True
    walk[5, 12] = True
    arena = np.zeros((h, w), int)
    arena[1:8, 1:6] = 1
    arena[1:5, 7:15] = 2
    return W.from_dict({
        "width": w, "height": h, "name": "two_rooms",
        "blocked": ["".join("." if c else "#" for c in row) for row in walk],
        "arenas": {"grid": arena.tolist(), "table": {"1": "room 1", "2": "room 2"}},
    })


# -- the value ------------------------------------------------------------------------------

@pytest.mark.parametrize("max_vel,perception", [(1, "arena"), (1, "box"), (2, "arena")])
def test_hazard_is_the_definition_on_small_maps(max_vel, perception):
    world = two_rooms()
    truth = product_space_moves(world, 2, max_vel, perception)
    bound = MapBound(world, 2, max_vel, perception, horizon=6)
    tiles = [tuple(map(int, t)) for t in world.walkable_tiles()]
    for a in tiles:
        for b in tiles:
            m = truth.get((a, b), float("inf"))
            expected = max(box_hazard(a, b, 2), max_vel * min(m, 6))
            assert bound.hazard(a, b) == expected, (a, b, m)


def test_walls_and_rooms_make_the_map_bound_tighter():
    world = two_rooms()
    bound = MapBound(world, 2, 1, "arena")
    # Either side of the wall between the rooms: perceivable through it in a box, yet the
    # walk round by the doors is long.
    a, b = (5, 2), (7, 2)
    assert box_hazard(a, b, 2) == 0
    assert bound.hazard(a, b) == moves_until_perception(world, a, b, 2, 1, "arena") > 4


def test_hazard_matches_walking_definition_on_the_ville():
    world = W.the_ville()
    bound = MapBound(world, 4, 1, "arena", horizon=24)
    rng = random.Random(7)
    tiles = [tuple(map(int, t)) for t in world.walkable_tiles()]
    checked = tighter = 0
    while checked < 60:
        a = rng.choice(tiles)
        b = (a[0] + rng.randint(-20, 20), a[1] + rng.randint(-20, 20))
        if not world.is_walkable(b):
            continue
        m = moves_until_perception(world, a, b, 4, 1, "arena")
        h = bound.hazard(a, b)
        assert h <= m, f"not a lower bound at {a}, {b}"
        assert h == max(box_hazard(a, b, 4), min(m, 24)), (a, b, m, h)
        checked += 1
        tighter += h > box_hazard(a, b, 4)
    assert tighter > 0, "the sample should hold pairs separated by walls"


@pytest.mark.parametrize("world_name", ["the_ville", "villes"])
def test_never_below_box_symmetric_and_one_move_changes_it_by_at_most_max_vel(world_name):
    world = W.the_ville() if world_name == "the_ville" else W.villes(2)
    bound = MapBound(world, 4, 1, "arena", horizon=12)
    rng = random.Random(3)
    tiles = [tuple(map(int, t)) for t in world.walkable_tiles()]
    for _ in range(300):
        a = rng.choice(tiles)
        b = (a[0] + rng.randint(-30, 30), a[1] + rng.randint(-30, 30))
        if not world.is_walkable(b):
            continue
        h = bound.hazard(a, b)
        assert h >= box_hazard(a, b, 4)
        assert h == bound.hazard(b, a)
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                a2 = (a[0] + dx, a[1] + dy)
                if world.is_walkable(a2):
                    assert abs(bound.hazard(a2, b) - h) <= 1, (a, a2, b)


def test_blocked_tiles_get_the_box_value():
    world = two_rooms()
    bound = MapBound(world, 2, 1, "arena")
    wall, floor = (6, 2), (3, 3)
    assert bound.hazard(wall, floor) == bound.hazard(floor, wall) == box_hazard(wall, floor, 2)


def test_cache_stays_within_its_budget():
    world = W.the_ville()
    one = MapBound(world, 4, 1, "arena", horizon=8).field((72, 14)).nbytes
    bound = MapBound(world, 4, 1, "arena", horizon=8, cache_bytes=10 * one)
    tiles = [tuple(map(int, t)) for t in world.walkable_tiles()[:40]]
    st = bound.precompute(tiles)
    assert st.tiles == 10 and st.bytes <= 10 * one and st.evicted == 30 and st.computed == 40
    # Evicted fields come back with the same values.
    fresh = MapBound(world, 4, 1, "arena", horizon=8)
    assert all(bound.hazard(tiles[0], t) == fresh.hazard(tiles[0], t) for t in tiles)


def test_make_accepts_the_map_bound_and_rejects_unknown_ones():
    env = me.make("the_ville", agents=3, bound="map")
    env.reset(seed=0)
    assert env.blocked_by(env.possible_agents[0]) == []
    with pytest.raises(me.errors.ConfigError, match="'map'"):
        me.make("the_ville", agents=3, bound="walls")


# -- in use: equivalence with sync and the invariant ----------------------------------------

def _hash(*parts) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little")


def _canon(o: dict) -> tuple:
    return (tuple(o["position"].tolist()), int(o["step"]), o["location"], o["activity"], o["utterance"],
            tuple((p["name"], tuple(p["position"].tolist()), p["activity"], p["utterance"]) for p in o["perceived"]),
            tuple(o["action_mask"].tolist()))


class Walker:
    """Deterministic in (seed, agent, its observations so far): walks between a few shared
    destinations (so agents meet), and stops to greet agents it perceives, naming them."""

    def __init__(self, env, seed: int, pool: int = 12):
        self.env, self.seed = env, seed
        tiles = env.world.walkable_tiles()
        rng = random.Random(_hash("pool", env.world.name, seed))
        self.pool = [tuple(map(int, tiles[k])) for k in rng.sample(range(len(tiles)), pool)]
        self.state: dict[str, tuple] = {}
        self.stay = me.spaces.stay_index(env.max_vel)

    def act(self, agent: str, obs: dict) -> dict:
        here = tuple(int(c) for c in obs["position"])
        n, dest = self.state.get(agent, (0, None))
        h = _hash(self.seed, agent, n, _canon(obs))
        if obs["perceived"] and h % 3 == 0:
            self.state[agent] = (n + 1, dest)
            names = ",".join(p["name"] for p in obs["perceived"])
            return {"move": self.stay, "activity": "greeting", "utterance": f"hi {names}"}
        if dest is None or dest == here or (h >> 8) % 50 == 0:
            dest = self.pool[(h >> 16) % len(self.pool)]
            if self.env.world.distance_field(dest, self.env.max_vel)[here[1], here[0]] < 0:
                dest = here
        self.state[agent] = (n + 1, dest)
        return dict(self.env.move_to(agent, dest), activity=f"to {dest}")


def run_sync(make_env, seed: int):
    env = make_env()
    policy = Walker(env, seed)
    obs, _ = env.reset(seed=seed)
    traj = {a: [_canon(o)] for a, o in obs.items()}
    while env.agents:
        obs = env.step({a: policy.act(a, obs[a]) for a in env.agents})[0]
        for a, o in obs.items():
            traj[a].append(_canon(o))
    return traj


def run_async(make_env, seed: int, schedule: int, check=None):
    """Each call submits a random subset of ready clusters; on odd schedules the leaders
    first, which lets agents run far ahead and exercises blocking."""
    env = make_env()
    policy = Walker(env, seed)
    rng = random.Random(schedule)
    obs, _ = env.reset(seed=seed)
    traj = {a: [_canon(o)] for a, o in obs.items()}
    latest = dict(obs)
    while env.agents:
        clusters = env.clusters()
        assert clusters, f"deadlock at steps {env.steps}"
        if schedule % 2:
            clusters.sort(key=lambda cl: -env.agent_step(cl[0]))
            pick = clusters[:max(1, len(clusters) // 3)]
        else:
            pick = [cl for cl in clusters if rng.random() < 0.4] or [rng.choice(clusters)]
        actions = {a: policy.act(a, latest.pop(a)) for cl in pick for a in cl}
        obs = env.step(actions)[0]
        for a, o in obs.items():
            traj[a].append(_canon(o))
            latest[a] = o
        if check:
            check(env)
    return traj


def check_map_invariant(env) -> None:
    """Brute force over all pairs: the map-form validity invariant, its truth by the walking
    definition where the box alone would not give it, and readiness from the rules (the paper's,
    or the versioned ones: no coupling, blocking one move shorter, validity for gaps >= 2)."""
    versioned = env.rules.name == "versioned"
    margin = 0 if versioned else 1  # moves of margin beyond the gap (see rules.py)
    bound = env._bound
    names = env.possible_agents
    pos = [env.positions[a] for a in names]
    step = [env.agent_step(a) for a in names]
    v, r = env.max_vel, env.radius_p
    n = len(names)
    coupled = [[] for _ in range(n)]
    blocked = [False] * n
    for i in range(n):
        for j in range(i + 1, n):
            if box_hazard(pos[i], pos[j], r) > (abs(step[i] - step[j]) + 1) * v:
                continue  # far apart in the box already: nothing to check
            h = bound.hazard(pos[i], pos[j])
            gap = step[i] - step[j]
            # Pairs this many steps apart must never be able to perceive each other.
            apart = abs(gap) - 1 - (1 - margin)
            if gap and apart >= 0:
                assert h > apart * v, f"{names[i]}, {names[j]} break the invariant"
                if box_hazard(pos[i], pos[j], r) <= apart * v:
                    # Only the map keeps them apart: check it by the definition.
                    a, b = sorted((pos[i], pos[j]))  # the definition is symmetric: memo once
                    m = moves_until_perception(env.world, a, b, r, v, env.perception, limit=apart + 1)
                    assert m >= apart + 1, f"{names[i]}, {names[j]} could perceive across steps"
            if gap:
                lag, lead = (j, i) if gap > 0 else (i, j)
                if h <= (abs(gap) + margin) * v:
                    blocked[lead] = True
            elif h <= v and not versioned:
                coupled[i].append(j)
                coupled[j].append(i)
    label = list(range(n))
    for i in range(n):  # connected components, by flooding
        if label[i] == i:
            todo = [i]
            while todo:
                k = todo.pop()
                for j in coupled[k]:
                    if label[j] != i:
                        label[j] = i
                        todo.append(j)
    held = {label[i] for i in range(n) if blocked[i]}
    for i, a in enumerate(names):
        if step[i] < env.max_steps:
            assert env.is_ready(a) == (label[i] not in held), f"{a} readiness differs from the rules"


def test_ooo_equals_sync_on_the_ville_with_map_bound():
    def make():
        return me.make("the_ville", agents=25, max_steps=300, bound="map")
    ref = run_sync(make, seed=1)
    for schedule in range(4):
        assert run_async(make, seed=1, schedule=schedule) == ref, f"schedule {schedule} diverged"


def test_ooo_equals_sync_on_villes_with_map_bound():
    world = W.villes(4)  # one map object for all runs: its distance fields are cached on it

    def make():
        return me.make(world, agents=100, max_steps=120, perception="arena", bound="map")
    ref = run_sync(make, seed=2)
    for schedule in range(2):
        assert run_async(make, seed=2, schedule=schedule) == ref, f"schedule {schedule} diverged"


@pytest.mark.parametrize("rules", ["paper", "versioned"])
@pytest.mark.parametrize("schedule", [0, 1])
def test_map_invariant_holds_after_every_step(schedule, rules):
    def make():
        return me.make("the_ville", agents=25, max_steps=120, bound="map", rules=rules)
    run_async(make, seed=3, schedule=schedule, check=check_map_invariant)


def test_versioned_rules_with_map_bound_equal_sync():
    """Both ways beyond the paper at once, on the_ville and on concatenated villes."""
    def make():
        return me.make("the_ville", agents=25, max_steps=300, bound="map", rules="versioned")
    ref = run_sync(make, seed=1)
    for schedule in range(4):
        assert run_async(make, seed=1, schedule=schedule) == ref, f"schedule {schedule} diverged"
    world = W.villes(4)

    def make_villes():
        return me.make(world, agents=100, max_steps=120, perception="arena", bound="map", rules="versioned")
    ref = run_sync(make_villes, seed=2)
    assert run_async(make_villes, seed=2, schedule=1) == ref


def test_map_bound_and_versioned_rules_wait_less():
    """Same schedule, same world: the map bound makes agents wait for fewer others, and the
    versioned rules for fewer still."""
    def make(bound, rules):
        return lambda: me.make("the_ville", agents=25, max_steps=150, bound=bound, rules=rules)
    deps = {}
    for bound, rules in (("box", "paper"), ("map", "paper"), ("map", "versioned")):
        env_holder = {}

        def keep(env):
            env_holder["env"] = env
        run_async(make(bound, rules), seed=4, schedule=1, check=keep)
        deps[bound, rules] = env_holder["env"].stats.tracker_per_step
    assert deps["map", "versioned"] < deps["map", "paper"] < deps["box", "paper"]
