"""SyncParallelWrapper: the global-barrier baseline as a real `pettingzoo.ParallelEnv`."""

from __future__ import annotations

from typing import Any

from pettingzoo import ParallelEnv

from metropolis_env.env import AsyncParallelEnv
from metropolis_env.errors import InvalidActionError, InvalidActionsError


class SyncParallelWrapper(ParallelEnv):
    """Every `step()` advances every live agent by one step: nobody starts t+1 before all finish t.

    It drives the same world and rules as the async env: with all agents at one step nobody is
    blocked, so submitting everyone commits everyone. This is the traditional execution that
    out-of-order runs are checked against and compared with.
    """

    def __init__(self, env: AsyncParallelEnv):
        if not isinstance(env, AsyncParallelEnv):
            raise TypeError(f"SyncParallelWrapper wraps an AsyncParallelEnv (from metropolis_env.make), "
                            f"got {type(env).__name__}")
        self.env = env
        self.metadata = dict(env.metadata, name="metropolis_sync_v0")
        self.possible_agents = list(env.possible_agents)
        self.render_mode = env.render_mode
        self.agents: list[str] = []

    def reset(self, seed: int | None = None, options: dict | None = None):
        obs, infos = self.env.reset(seed=seed, options=options)
        self.agents = list(self.env.agents)
        return obs, infos

    def step(self, actions: dict[str, Any]):
        """Advance all live agents one step. Every live agent needs an action."""
        if not isinstance(actions, dict):
            raise InvalidActionsError(f"step() takes a dict {{agent: action}}, got {type(actions).__name__}")
        live = set(self.env.agents)
        missing = [a for a in self.env.agents if a not in actions]
        if missing and set(actions) <= live:
            raise InvalidActionError(
                f"the sync env advances every live agent together: actions missing for {missing[:5]} "
                f"at step {self.env.agent_step(missing[0])}; submit one action per agent in env.agents")
        out = self.env.step(actions)
        self.agents = list(self.env.agents)
        return out

    def observation_space(self, agent: str):
        return self.env.observation_space(agent)

    def action_space(self, agent: str):
        return self.env.action_space(agent)

    def render(self):
        return self.env.render()

    def close(self) -> None:
        self.env.close()

    def state(self):
        """Positions of all agents, as (n, 2) int array in possible_agents order."""
        import numpy as np
        return np.array([self.env.positions[a] for a in self.possible_agents], dtype=np.int64)

    def __getattr__(self, name: str):
        # Forward the async env's read-only helpers (positions, steps, move_to, ...).
        if name.startswith("_") or name == "env":
            raise AttributeError(name)
        return getattr(self.env, name)
