"""The `obs_type="vector"` observation: one fixed-shape float32 vector per agent.

For harnesses that want numbers (SuperSuit, Stable-Baselines3, CleanRL, RLlib): the observation
space is a `gymnasium.spaces.Box`, the action space `Discrete(n_moves)` (the move index; see
`spaces.move_offsets`). Layout, in order (`VectorEncoder.slices` names the parts):

- `action_mask` (n_moves): 1.0 for moves onto walkable tiles (also in `info["action_mask"]`
  as int8, the PettingZoo way; `action_space(a).sample(mask=info["action_mask"])` works).
- `position` (2): own tile, x / (width - 1) and y / (height - 1), in [0, 1].
- `step` (1): own step / max_steps, in [0, 1].
- `grid` (3 x (2r+1) x (2r+1), r = radius_p, row-major, channels first): the perception window
  centred on the agent. Channel 0: 1.0 where the tile is blocked or off the map. Channel 1:
  how many perceived agents stand there. Channel 2: how many of those said something (non-empty
  utterance) at their last step.
- `task` (k): the task's features (`Episode.features`, e.g. goto's goal offset), none without
  a task.

Text (locations, activities, utterance contents) is left out: it has no fixed-size numeric form
worth a guess here; channel 2 keeps whether someone spoke. Agents that need words use the full
observation (`obs_type="full"`, the default).

Everything is a function of the agent's `View` (tile and perceived agents at its step), so
vector observations are equal in sync and out-of-order runs, like the full ones.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from gymnasium import spaces

from .tasks import View
from .world import TileMap

#: Channels of the egocentric grid.
GRID_CHANNELS = ("blocked", "agents", "speaking")


class VectorEncoder:
    """Builds vector observations for one env (map, radius, speed, horizon, agent count, task)."""

    def __init__(self, world: TileMap, radius_p: int, n_moves: int, max_steps: int, n_agents: int,
                 n_task_features: int = 0):
        self.world = world
        self.radius_p = r = int(radius_p)
        self.max_steps = int(max_steps)
        side = 2 * r + 1
        sizes = {"action_mask": n_moves, "position": 2, "step": 1, "grid": len(GRID_CHANNELS) * side * side,
                 "task": n_task_features}
        self.slices: dict[str, slice] = {}
        at = 0
        for name, n in sizes.items():
            self.slices[name] = slice(at, at + n)
            at += n
        self.size = at
        low = np.zeros(at, dtype=np.float32)
        high = np.ones(at, dtype=np.float32)
        grid = self.slices["grid"]
        # agent counts per tile: at most every other agent
        high[grid.start + side * side:grid.stop] = max(1, n_agents - 1)
        low[self.slices["task"]] = -1.0
        self.space = spaces.Box(low, high, dtype=np.float32)
        self._side = side
        self._scale = (max(1, world.width - 1), max(1, world.height - 1))

    def encode(self, view: View, mask: np.ndarray, task_features: np.ndarray | None = None) -> np.ndarray:
        out = np.zeros(self.size, dtype=np.float32)
        s = self.slices
        out[s["action_mask"]] = mask
        x, y = view.position
        out[s["position"]] = x / self._scale[0], y / self._scale[1]
        out[s["step"]] = view.step / self.max_steps
        r, side = self.radius_p, self._side
        grid = out[s["grid"]].reshape(len(GRID_CHANNELS), side, side)  # a view into out
        grid[0] = 1 - _padded_walkable(self.world, r)[y:y + side, x:x + side]
        for other in view.perceived:
            gx, gy = other.position[0] - x + r, other.position[1] - y + r
            grid[1, gy, gx] += 1
            if other.utterance:
                grid[2, gy, gx] += 1
        if task_features is not None and len(task_features):
            out[s["task"]] = task_features
        return out


@lru_cache(maxsize=16)
def _padded_walkable(world: TileMap, pad: int) -> np.ndarray:
    """float32 walkable grid of `world` with a border of `pad` blocked tiles (off the map)."""
    out = np.zeros((world.height + 2 * pad, world.width + 2 * pad), dtype=np.float32)
    out[pad:pad + world.height, pad:pad + world.width] = world.walkable
    out.setflags(write=False)
    return out
