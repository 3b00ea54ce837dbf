"""Wrappers over AsyncParallelEnv (the package `metropolis_env.wrappers`)."""

from .sync import SyncParallelWrapper

__all__ = ["SyncParallelWrapper"]
