"""Ready-made agents: LLM-driven villagers (trace-replay agents live in metropolis_env.bench)."""

from .village import VillagerAgent, parse_action

__all__ = ["VillagerAgent", "parse_action"]
