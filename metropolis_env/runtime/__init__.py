"""The asyncio runtime: agents, the controller (async/sync/single/oracle/nodep) and metrics."""

from .agent import Agent, LLMClient, StepContext
from .controller import MODES, AgentStepError, Controller, run
from .executors import Executor, RayExecutor  # ray itself is imported only when a run starts
from .metrics import RunMetrics

__all__ = ["Agent", "LLMClient", "StepContext", "Controller", "run", "MODES", "AgentStepError", "RunMetrics",
           "Executor", "RayExecutor"]
