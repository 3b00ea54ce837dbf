"""RLlibMultiAgentEnv: an AsyncParallelEnv as RLlib's (new API stack) `MultiAgentEnv`.

RLlib's multi-agent contract is the out-of-order one: `reset`/`step` return observations only for
the agents that should act next, and RLlib sends actions only for those. So the adapter is thin:
`step(action_dict)` submits the actions of the agents RLlib holds observations for and returns
the agents that became ready (with their rewards, terminated/truncated flags and infos),
`"__all__"` once every agent is done. RLlib acts for every agent it holds an observation of, so
every ready cluster is complete after each call and the run always moves on.

Use `obs_type="vector"` for learning (a `Box` observation, `Discrete` action); the adapter works
with any obs_type. In a config: `config.environment(RLlibMultiAgentEnv, env_config={"world":
"the_ville", "agents": 8, "obs_type": "vector", "task": "goto"})` builds the env with
`metropolis_env.make(**env_config)`.

`agents` lists the agents not yet done; an agent that finished in a step stays listed until the
next `step()` call, so the dicts of the step that ended it name only agents of `agents` (what
RLlib's checker asks).
"""

from __future__ import annotations

from typing import Any, Mapping

try:
    from ray.rllib.env.multi_agent_env import MultiAgentEnv
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("RLlibMultiAgentEnv needs RLlib: pip install 'metropolis-env[rllib]' "
                      "(ray[rllib]; no torch needed for the env side)") from e

from metropolis_env.env import AsyncParallelEnv
from metropolis_env.errors import ConfigError


class RLlibMultiAgentEnv(MultiAgentEnv):
    """`env`: an AsyncParallelEnv, or a dict of `metropolis_env.make(...)` keyword arguments
    (RLlib's `env_config`)."""

    def __init__(self, env: AsyncParallelEnv | Mapping[str, Any] | None = None):
        if env is None or isinstance(env, Mapping):
            from metropolis_env.make import make

            env = make(**dict(env or {}))
        if not isinstance(env, AsyncParallelEnv):
            raise ConfigError(f"RLlibMultiAgentEnv wraps an AsyncParallelEnv (from metropolis_env.make) or a dict "
                              f"of make() arguments, got {type(env).__name__}")
        self.env = env
        self.possible_agents = list(env.possible_agents)
        self.agents = []
        self.observation_spaces = {a: env.observation_space(a) for a in self.possible_agents}
        self.action_spaces = {a: env.action_space(a) for a in self.possible_agents}
        self._finished: list[str] = []
        super().__init__()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed, options=options)
        obs, infos = self.env.reset(seed=seed, options=options)
        self.agents = list(self.possible_agents)
        self._finished = []
        return obs, infos

    def step(self, action_dict: Mapping[str, Any]):
        if self._finished:
            gone = set(self._finished)
            self.agents = [a for a in self.agents if a not in gone]
        obs, rewards, terms, truncs, infos = self.env.step(dict(action_dict))
        self._finished = [a for a in obs if terms[a] or truncs[a]]
        over = not self.env.agents
        terminated_all = over and all(self.env.terminated(a) for a in self.possible_agents)
        terms["__all__"] = terminated_all
        truncs["__all__"] = over and not terminated_all
        return obs, rewards, terms, truncs, infos

    def render(self):
        return self.env.render()

    def close(self) -> None:
        self.env.close()
