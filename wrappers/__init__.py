"""Wrappers over AsyncParallelEnv (the package `metropolis_env.wrappers`).

`SyncParallelWrapper`: the global-step baseline as a PettingZoo ParallelEnv.
`RLlibMultiAgentEnv`: the env as RLlib's MultiAgentEnv (imported on first use: it needs ray[rllib]).
"""

from .sync import SyncParallelWrapper

__all__ = ["SyncParallelWrapper", "RLlibMultiAgentEnv"]


def __getattr__(name: str):
    if name == "RLlibMultiAgentEnv":
        from .rllib import RLlibMultiAgentEnv

        return RLlibMultiAgentEnv
    raise AttributeError(f"module 'metropolis_env.wrappers' has no attribute {name!r}")
