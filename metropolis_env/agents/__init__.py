"""Ready-made agents: LLM-driven villagers, and scripted and LLM agents for the built-in tasks
(trace-replay agents live in metropolis_env.bench)."""

from .task_agents import LLMTaskAgent, ScriptedTaskAgent, scripted_action
from .village import VillagerAgent, parse_action

__all__ = ["VillagerAgent", "parse_action", "LLMTaskAgent", "ScriptedTaskAgent", "scripted_action"]
