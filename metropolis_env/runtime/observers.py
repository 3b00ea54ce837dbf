"""Run observers: what watches a run's dispatches and commits without steering it.

The drive loop tells every observer, in order: an agent-step was dispatched (before it starts
acting), committed (after the env took its action), the loop is between commits (every agent is
idle or suspended in an LLM call: the moment to save a checkpoint), the run failed, the run
finished. Progress bars, the user's `on_commit` callback and checkpointing are observers.
"""

from __future__ import annotations

from typing import Any, Callable


class RunObserver:
    """Base class: every hook does nothing. Hooks must not raise (except a failing checkpoint
    write, which ends the run)."""

    def dispatched(self, agent: str, step: int) -> None:
        """`agent` is about to act at `step` (nothing of the step has run yet)."""

    def committed(self, agent: str, step: int, action: Any) -> None:
        """The env took `agent`'s action of `step`."""

    def between_commits(self) -> None:
        """No commit is half done; agents are idle or waiting on their LLM calls."""

    def failed(self, error: BaseException) -> str | None:
        """The run is ending with `error`; may return a note to append to its message."""
        return None

    def finished(self) -> None:
        """Every agent-step was committed."""

    def closed(self) -> None:
        """The run is over (after `failed` or `finished`): release what the observer holds."""


class CommitCallback(RunObserver):
    """Calls `fn(agent, step, action)` after each commit (Controller's `on_commit`)."""

    def __init__(self, fn: Callable[[str, int, Any], None]):
        self.fn = fn

    def committed(self, agent: str, step: int, action: Any) -> None:
        self.fn(agent, step, action)


class ProgressBar(RunObserver):
    """A tqdm bar over agent-steps; `position` is tqdm's terminal line (bars side by side)."""

    def __init__(self, total: int, label: str, position: int | None = None):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=label, unit="agent-step", leave=False, mininterval=0.5,
                        position=position)

    def committed(self, agent: str, step: int, action: Any) -> None:
        self.bar.update(1)

    def closed(self) -> None:
        self.bar.close()
