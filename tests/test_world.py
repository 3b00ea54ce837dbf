"""The tile world: the shipped the_ville, concatenated villes, open grids, walking distances and
perception zones, read from package data only."""

from __future__ import annotations

import heapq
from collections import deque

import numpy as np
import pytest

import metropolis_env as me
from metropolis_env import world as W
from metropolis_env.spaces import move_offsets
from metropolis_env.workloads.walking import MOVES4


def bfs(world: me.TileMap, target, max_vel: int) -> np.ndarray:
    """Plain tile-by-tile breadth-first search: the obviously correct distance field."""
    dist = np.full((world.height, world.width), -1, dtype=np.int64)
    tx, ty = target
    dist[ty, tx] = 0
    todo = deque([(tx, ty)])
    steps = [o for o in move_offsets(max_vel) if o != (0, 0)]
    while todo:
        x, y = todo.popleft()
        for dx, dy in steps:
            nx, ny = x + dx, y + dy
            if world.is_walkable((nx, ny)) and dist[ny, nx] < 0:
                dist[ny, nx] = dist[y, x] + 1
                todo.append((nx, ny))
    return dist


# -- the_ville -------------------------------------------------------------------------------------

def test_the_ville_loads_from_package_data():
    m = me.the_ville()
    assert (m.width, m.height) == (140, 100)
    assert int((~m.walkable).sum()) == 2064
    assert m.walkable.dtype == bool and not m.walkable.flags.writeable
    assert len(m.sector_names) == 19 and "Hobbs Cafe" in m.sector_names
    assert len(m.arena_names) == 63
    assert W.data_path("the_ville", "NOTICE").is_file()
    assert me.the_ville() is m  # loaded once


def test_the_ville_zones_are_arenas_then_sectors_then_street():
    m = me.the_ville()
    arena, sector, zone = m.arena, m.sector, m.zone
    assert np.array_equal(zone[arena > 0], arena[arena > 0])
    sector_only = (arena == 0) & (sector >= 0)
    assert np.array_equal(zone[sector_only], W._SECTOR_ZONE_BASE + sector[sector_only])
    assert (zone[(arena == 0) & (sector < 0)] == W.STREET_ZONE).all()
    # every arena lies inside one sector, as the data README promises
    for a in np.unique(arena[arena > 0]):
        assert len(np.unique(sector[arena == a])) == 1


def test_location_names_sector_and_arena():
    m = me.the_ville()
    assert m.location((72, 14)) == "Isabella Rodriguez's apartment:main room"
    assert m.location((16, 18)) == "artist's co-living space:Latoya Williams's room"
    street = next((x, y) for y in range(m.height) for x in range(m.width)
                  if m.walkable[y, x] and m.sector[y, x] < 0)
    assert m.location(street) == ":"


def test_the_ville_personas():
    personas = me.the_ville_personas()
    assert len(personas) == 25
    assert list(personas)[:3] == ["Latoya Williams", "Rajiv Patel", "Abigail Chen"]
    assert personas["Latoya Williams"] == (16, 18)
    assert all(me.the_ville().is_walkable(t) for t in personas.values())
    # the personas start in their own homes: a make() with them just works
    env = me.make("the_ville", agents=personas)
    env.reset()
    assert env.positions == personas


# -- bigger worlds ---------------------------------------------------------------------------------

def test_villes_offsets_copies_with_distinct_rooms_and_shared_streets():
    one = me.the_ville()
    four = me.villes(4, cols=2)
    assert (four.width, four.height) == (280, 200)
    offsets = [(0, 0), (140, 0), (0, 100), (140, 100)]
    for ox, oy in offsets:
        block = (slice(oy, oy + 100), slice(ox, ox + 140))
        assert np.array_equal(four.walkable[block], one.walkable)
        assert np.array_equal(four.arena[block] > 0, one.arena > 0)
        assert four.location((72 + ox, 14 + oy)) == one.location((72, 14))
    rooms = one.arena > 0
    zones_per_copy = [set(np.unique(four.zone[oy:oy + 100, ox:ox + 140][rooms]).tolist()) for ox, oy in offsets]
    for i in range(4):
        assert len(zones_per_copy[i]) == len(np.unique(one.zone[rooms]))
        for j in range(i):
            assert not zones_per_copy[i] & zones_per_copy[j], f"copies {i} and {j} share a room"
    street = (one.arena == 0) & (one.sector < 0)
    for ox, oy in offsets:
        assert (four.zone[oy:oy + 100, ox:ox + 140][street] == W.STREET_ZONE).all()
    assert len(four.arena_names) == 4 * 63 and len(four.sector_names) == 4 * 19


def test_villes_default_is_one_row_and_make_sizes_it_by_agents():
    assert (me.villes(3).width, me.villes(3).height) == (420, 100)
    assert (me.villes(5, cols=2).width, me.villes(5, cols=2).height) == (280, 300)
    env = me.make("villes", agents=60)
    assert env.world.width == 3 * 140
    env = me.make("villes", agents=10, k=4, cols=2)
    assert (env.world.width, env.world.height) == (280, 200)
    assert env.perception == "arena"


def test_concat_of_grids_keeps_blocked_tiles_in_place():
    a = me.open_grid(3, 2, blocked=[(0, 0)])
    b = me.open_grid(3, 2, blocked=[(2, 1)])
    m = me.concat([a, b, a], cols=2)
    assert (m.width, m.height) == (6, 4)
    empty_slot = {(x, y) for x in range(3, 6) for y in range(2, 4)}  # no map there: wall
    assert {(int(x), int(y)) for y, x in np.argwhere(~m.walkable)} == {(0, 0), (5, 1), (0, 2)} | empty_slot


def test_open_grid():
    g = me.open_grid(7, 5, blocked=[(3, 2)])
    assert (g.width, g.height) == (7, 5)
    assert int((~g.walkable).sum()) == 1 and not g.is_walkable((3, 2))
    assert (g.zone == W.STREET_ZONE).all() and g.location((0, 0)) == ":"
    assert not g.is_walkable((7, 0)) and not g.is_walkable((-1, 0))
    assert len(g.walkable_tiles()) == 34
    env = me.make("grid", agents=3, width=9, height=4)
    assert (env.world.width, env.world.height, env.perception) == (9, 4, "box")


# -- walking -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("max_vel", [1, 2])
@pytest.mark.parametrize("target", [(72, 14), (16, 18), (127, 46), (0, 0)])
def test_distance_field_equals_bfs_on_the_ville(target, max_vel):
    m = me.the_ville()
    if not m.is_walkable(target):
        target = tuple(int(v) for v in m.walkable_tiles()[0])
    field = m.distance_field(target, max_vel)
    assert np.array_equal(field, bfs(m, target, max_vel))
    assert field[target[1], target[0]] == 0
    assert (field[~m.walkable] == -1).all()


def walks_reference(walkable, seeds, moves, limit=None) -> np.ndarray:
    """Plain Dijkstra from seeded start values (unit moves): the obviously correct walks."""
    h, w = walkable.shape
    dist = np.full((h, w), -1, dtype=np.int64)
    heap = [(int(seeds[y, x]), x, y) for y, x in zip(*np.nonzero((seeds >= 0) & walkable))]
    heapq.heapify(heap)
    while heap:
        d, x, y = heapq.heappop(heap)
        if dist[y, x] >= 0 or (limit is not None and d > limit):
            continue
        dist[y, x] = d
        for dx, dy in moves:
            nx, ny = x + dx, y + dy
            if 0 <= nx < w and 0 <= ny < h and walkable[ny, nx] and dist[ny, nx] < 0:
                heapq.heappush(heap, (d + 1, nx, ny))
    return dist


@pytest.mark.parametrize("seed", range(12))
def test_shortest_walks_equal_dijkstra_on_random_grids(seed):
    # seeded starts (dense and sparse values), limits, 4-connected and box moves
    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 30, size=2)
    walkable = rng.random((h, w)) < rng.uniform(0.3, 0.95)
    moves = [MOVES4, [o for o in move_offsets(1) if o != (0, 0)],
             [o for o in move_offsets(2) if o != (0, 0)]][seed % 3]
    top = [3, 40, 10 ** 6][seed % 4 % 3]
    seeds = np.where(rng.random((h, w)) < 0.05, rng.integers(0, top, size=(h, w)), -1)
    limit = [None, int(rng.integers(0, 12))][seed % 2]
    got = W.shortest_walks(walkable, seeds, moves, limit=limit)
    assert got.dtype == np.int32 and got.shape == (h, w) and not got.flags.writeable
    assert np.array_equal(got, walks_reference(walkable, seeds, moves, limit))
    if walkable.any():
        ys, xs = np.nonzero(walkable)
        one = np.full((h, w), -1)
        one[ys[0], xs[0]] = 0
        assert np.array_equal(W.shortest_walks(walkable, (xs[0], ys[0]), moves, limit=limit),
                              walks_reference(walkable, one, moves, limit))


def test_distance_field_marks_unreachable_tiles():
    wall = [(3, y) for y in range(5)]
    g = me.open_grid(7, 5, blocked=wall)
    field = g.distance_field((0, 0))
    assert np.array_equal(field, bfs(g, (0, 0), 1))
    assert (field[:, 4:] == -1).all() and field[4, 2] == 4
    with pytest.raises(me.ConfigError, match="not walkable"):
        g.distance_field((3, 1))


def test_move_to_walks_a_shortest_path():
    env = me.make("the_ville", agents={"walker": (16, 18)}, max_steps=500)
    env.reset()
    goal = (72, 14)
    expected = int(env.world.distance_field(goal)[18, 16])
    assert expected > 50
    walked = 0
    while env.positions["walker"] != goal:
        before = env.positions["walker"]
        field = env.world.distance_field(goal)
        _, _, _, _, infos = env.step({"walker": env.move_to("walker", goal)})
        after = env.positions["walker"]
        assert infos["walker"]["move_result"] == "moved"
        assert field[after[1], after[0]] == field[before[1], before[0]] - 1
        walked += 1
    assert walked == expected
    _, _, _, _, infos = env.step({"walker": env.move_to("walker", goal)})
    assert infos["walker"]["move_result"] == "stayed" and env.positions["walker"] == goal


def test_move_to_with_faster_agents_takes_fewer_steps():
    env = me.make(me.open_grid(20, 3), agents={"a": (0, 1)}, max_vel=3, radius_p=1)
    env.reset()
    steps = 0
    while env.positions["a"] != (19, 1):
        env.step({"a": env.move_to("a", (19, 1))})
        steps += 1
    assert steps == 7 == env.world.distance_field((19, 1), 3)[1, 0]


# -- perception zones ----------------------------------------------------------------------------------

def pair_across_a_wall(m: me.TileMap, radius_p: int = 4):
    """Two walkable tiles within the perception box that lie in different rooms."""
    for y in range(m.height):
        for x in range(m.width - 2):
            if m.walkable[y, x] and m.arena[y, x] > 0 and not m.walkable[y, x + 1] and m.walkable[y, x + 2]:
                if m.zone[y, x + 2] != m.zone[y, x]:
                    return (x, y), (x + 2, y)
    raise AssertionError("the_ville has a wall between rooms")


def pair_in_one_room(m: me.TileMap):
    for y in range(m.height):
        for x in range(m.width - 3):
            if m.arena[y, x] > 0 and m.walkable[y, x] and m.walkable[y, x + 3] and m.zone[y, x + 3] == m.zone[y, x]:
                return (x, y), (x + 3, y)
    raise AssertionError("no room 4 tiles wide")


@pytest.mark.parametrize("perception, perceive", [("arena", False), ("box", True)])
def test_agents_on_either_side_of_a_wall(perception, perceive):
    m = me.the_ville()
    a, b = pair_across_a_wall(m)
    env = me.make("the_ville", agents={"a": a, "b": b}, perception=perception)
    obs, infos = env.reset()
    assert infos["a"]["perceived"] == (["b"] if perceive else [])
    assert infos["b"]["perceived"] == (["a"] if perceive else [])
    assert [p["name"] for p in obs["a"]["perceived"]] == infos["a"]["perceived"]
    # The paper's rules stay box-based: the pair is coupled either way (a safe over-approximation).
    assert env.clusters() == [["a", "b"]]


@pytest.mark.parametrize("perception", ["arena", "box"])
def test_agents_in_one_room_see_each_other(perception):
    m = me.the_ville()
    a, b = pair_in_one_room(m)
    env = me.make("the_ville", agents={"a": a, "b": b}, perception=perception)
    obs, infos = env.reset()
    assert infos["a"]["perceived"] == ["b"]
    seen = obs["a"]["perceived"][0]
    assert seen["name"] == "b" and tuple(seen["position"]) == b


def test_street_agents_share_one_zone_and_the_box_is_the_limit():
    g = me.open_grid(12, 3)
    env = me.make(g, agents={"a": (0, 1), "b": (4, 1), "c": (5, 1)}, radius_p=4, perception="arena")
    _, infos = env.reset()
    assert infos["a"]["perceived"] == ["b"]  # c is 5 tiles away: outside the box
    assert infos["b"]["perceived"] == ["a", "c"]
