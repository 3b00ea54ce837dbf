"""Dependency statistics, counted as agent-steps commit (the paper's measures)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DependencyStats:
    """Dependency counters over all committed agent-steps (the paper's measures).

    true_deps: agents actually perceived, itself included (summed per agent-step).
    tracker_deps: agents the tracker made it wait for, blocked by or coupled with, itself
    included (global sync would make this the agent count).
    free_steps: agent-steps that were ready the moment the previous one committed.
    """

    agent_steps: int = 0
    true_deps: int = 0
    tracker_deps: int = 0
    free_steps: int = 0

    def record(self, perceived: int, cluster: int, blockers: int, free: bool) -> None:
        """Count one committed agent-step: it perceived `perceived` others, committed with a
        cluster of `cluster` agents after `blockers` held it back, and was `free` (never waited)."""
        self.agent_steps += 1
        self.true_deps += 1 + perceived
        self.tracker_deps += cluster + blockers
        self.free_steps += free

    @property
    def true_per_step(self) -> float:
        return self.true_deps / self.agent_steps if self.agent_steps else 0.0

    @property
    def tracker_per_step(self) -> float:
        return self.tracker_deps / self.agent_steps if self.agent_steps else 0.0

    @property
    def free_share(self) -> float:
        return self.free_steps / self.agent_steps if self.agent_steps else 0.0
