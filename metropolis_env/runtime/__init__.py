"""The asyncio runtime: agents, the controller (scheduling policies over one drive loop), step
runners, run observers and metrics."""

from ..errors import AgentStepError
from .agent import Agent, LLMClient, StepContext
from .controller import Controller, run
from .executors import Executor, LocalExecutor, RayExecutor  # ray itself is imported only when a run starts
from .metrics import RunMetrics
from .observers import RunObserver
from .scheduling import MODES, BarrierPolicy, DagPolicy, DependencyPolicy, SchedulingPolicy

__all__ = ["Agent", "LLMClient", "StepContext", "Controller", "run", "MODES", "AgentStepError", "RunMetrics",
           "Executor", "LocalExecutor", "RayExecutor", "RunObserver", "SchedulingPolicy", "DependencyPolicy",
           "BarrierPolicy", "DagPolicy"]
