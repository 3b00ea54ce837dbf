"""metropolis_env: out-of-order execution for LLM multi-agent simulations (after AI Metropolis).

    import metropolis_env as me
    env = me.make("the_ville", agents=25)
    ready, infos = env.reset(seed=0)
    while ready:
        ready, _, _, truncs, _ = env.step({a: env.move_to(a, (72, 14)) for a in ready})
        ready = {a: o for a, o in ready.items() if not truncs[a]}   # truncated agents are done
"""

from .env import AsyncParallelEnv, DependencyStats
from .errors import (AgentDoneError, AgentNotReadyError, ConfigError, InvalidActionError,
                     InvalidActionsError, MapFormatError, MetropolisError, ResetNeededError,
                     UnknownAgentError)
from .make import WORLDS, make, the_ville_personas
from .spaces import CHARSET, sanitize_text
from .world import TileMap, concat, load_map, open_grid, the_ville, villes

__version__ = "0.1.0"

__all__ = [
    "AsyncParallelEnv", "DependencyStats", "make", "the_ville_personas", "WORLDS",
    "TileMap", "the_ville", "villes", "open_grid", "concat", "load_map",
    "CHARSET", "sanitize_text",
    "MetropolisError", "ConfigError", "MapFormatError", "ResetNeededError", "UnknownAgentError",
    "AgentNotReadyError", "AgentDoneError", "InvalidActionError", "InvalidActionsError",
]
