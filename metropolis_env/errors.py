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


class AgentStepError(MetropolisError, RuntimeError):
    """An agent's step failed (its act() raised, e.g. a non-retryable LLM error); names the agent
    and the step, and keeps the cause."""

    def __init__(self, agent: str, step: int, cause: BaseException):
        super().__init__(f"agent {agent!r} failed at step {step}: {type(cause).__name__}: {cause}")
        self.agent, self.step, self.cause = agent, step, cause


def portable(error: BaseException) -> BaseException:
    """`error` itself if it survives pickling (to cross a process boundary), else a
    MetropolisError "Type: message": exceptions of user code (and AgentStepError, whose
    constructor takes its parts) need not be picklable, and the other side must still learn what
    went wrong."""
    import pickle

    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return MetropolisError(f"{type(error).__name__}: {error}")
