"""One exception hierarchy for everything the library rejects.

Every error says what was wrong (naming the agent and its step where there is one) and how to fix
it. Whatever raised, the environment's state is as it was before the call.
"""

from __future__ import annotations


class MetropolisError(Exception):
    """Base class of every error raised on bad input by metropolis_env."""


class ConfigError(MetropolisError, ValueError):
    """Invalid construction: parameters, agent lists, start tiles, unknown world."""


class MapFormatError(MetropolisError, ValueError):
    """A map file or map dictionary that does not follow the documented format."""


class ResetNeededError(MetropolisError, RuntimeError):
    """The environment was used before `reset()`."""


class UnknownAgentError(MetropolisError, KeyError):
    """An agent name that is not one of the environment's agents."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class AgentNotReadyError(MetropolisError, RuntimeError):
    """An action for an agent that may not act now (blocked, waiting, or already submitted)."""


class AgentDoneError(AgentNotReadyError):
    """An action for an agent that is already truncated or terminated."""


class InvalidActionError(MetropolisError, ValueError):
    """An action outside the agent's action space (wrong type, out of range, bad text)."""


class InvalidActionsError(InvalidActionError, TypeError):
    """`step()` was given something other than a dict of actions."""
