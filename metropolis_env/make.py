"""`make()`: build an AsyncParallelEnv on a named world."""

from __future__ import annotations

import csv
import gzip
import json
import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from . import world as W
from .env import AsyncParallelEnv
from .errors import ConfigError

WORLDS = ("the_ville", "villes", "grid")


def make(world: str | W.TileMap = "the_ville", agents: int | list[str] | Mapping[str, W.Tile] = 25, *,
         radius_p: int = 4, max_vel: int = 1, max_steps: int = 8640, seed: int | None = 0,
         perception: str | None = None, render_mode: str | None = None, bound: Any = "box",
         rules: str = "paper", k: int | None = None, cols: int | None = None, width: int = 140, height: int = 100,
         obs_type: str = "full", task: Any = None) -> AsyncParallelEnv:
    """Build an out-of-order environment.

    world: "the_ville" (the Generative Agents map), "villes" (`k` the_villes side by side,
    `cols` per row; default k = ceil(agents / 25) in one row), "grid" (an open `width` x `height`
    map), or a `TileMap`.
    agents: a count (named agent_000...; spawned on random walkable tiles from the reset seed),
    a list of names (spawned likewise; at most one agent per walkable tile), or {name: (x, y)}
    start tiles.
    perception: "arena" (box narrowed to the same room, as Generative Agents; default on the
    villes) or "box" (default on grids and custom maps).
    bound: the dependency bound, "box" (the paper's) or "map" (walking distance around walls and
    rooms, fewer false dependencies; see docs/MAP_BOUND.md), or an object with
    hazard(a, b) / search_radius(h) (see bounds.py).
    rules: "paper" (the world holds current state only: coupled clusters step together, as in
    AI Metropolis) or "versioned" (the env keeps each agent's state per step, so an agent waits
    only for laggards that could walk into its view; no coupling; see rules.py), or a rule set
    object (`rules.PaperRules()`, `rules.VersionedRules()`). Both give exactly the sync
    trajectories.
    obs_type: "full" (the observation dict, with texts) or "vector" (a float32 Box and a
    Discrete move action, for RL harnesses; see vector.py).
    task: None (rewards 0.0, nobody terminates), a built-in task name ("goto", "rendezvous",
    "relay") or a `tasks.Task` object; rewards, terminations and `infos` then come from it
    (see tasks.py).
    render_mode: None, "ansi" (text), "rgb_array" (a uint8 picture) or "human" (a window).
    """
    if isinstance(world, W.TileMap):
        tmap = world
        default_perception = "box"
    elif world == "the_ville":
        tmap, default_perception = W.the_ville(), "arena"
    elif world == "villes":
        n = agents if isinstance(agents, int) else len(agents)
        tmap, default_perception = W.villes(k if k is not None else max(1, math.ceil(n / 25)), cols=cols), "arena"
    elif world == "grid":
        tmap, default_perception = W.open_grid(width, height), "box"
    else:
        raise ConfigError(f"unknown world {world!r}; choose one of {WORLDS} or pass a TileMap")
    names, tiles = _agent_list(agents)
    return AsyncParallelEnv(tmap, names, tiles, radius_p=radius_p, max_vel=max_vel, max_steps=max_steps,
                            perception=perception or default_perception, seed=seed,
                            render_mode=render_mode, bound=bound, rules=rules, obs_type=obs_type, task=task)


def _agent_list(agents: Any) -> tuple[list[str], list | None]:
    if isinstance(agents, bool):
        raise ConfigError(f"agents must be a count, a list of names or {{name: (x, y)}}, got {agents!r}")
    if isinstance(agents, int):
        if agents < 1:
            raise ConfigError(f"agents must be >= 1, got {agents}")
        width = max(3, len(str(agents - 1)))
        return [f"agent_{i:0{width}d}" for i in range(agents)], None
    if isinstance(agents, Mapping):
        return list(agents), list(agents.values())
    if isinstance(agents, (list, tuple)):
        return list(agents), None
    raise ConfigError(f"agents must be a count, a list of names or {{name: (x, y)}}, got {type(agents).__name__}")


@lru_cache(maxsize=1)
def _run_meta() -> dict:
    with W.data_path("the_ville", "runs", "skip-morning-s-14", "meta.json").open(encoding="utf-8") as f:
        return json.load(f)


def the_ville_personas() -> dict[str, W.Tile]:
    """The 25 Generative Agents personas and their tiles at step 0 of the shipped real run."""
    names = _run_meta()["persona_names"]
    start: dict[str, W.Tile] = {}
    with W.data_path("the_ville", "runs", "skip-morning-s-14", "positions.csv.gz").open("rb") as raw:
        with gzip.open(raw, "rt", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if row["step"] != "0":
                    break
                start[row["agent"]] = (int(row["x"]), int(row["y"]))
    return {n: start[n] for n in names}
