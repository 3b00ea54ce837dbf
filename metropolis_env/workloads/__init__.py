"""Workloads: replayable traces of LLM agent simulations (see docs/WORKLOADS.md).

    from metropolis_env.workloads import load_workload
    trace = load_workload("genagents-day", agents=100, seed=0, window="busy")
    trace.calls("Isabella Rodriguez", 10)   # [(input_tokens, output_tokens), ...]

Names: "genagents-day" (synthetic full day, calibrated to the paper) and "the_ville-morning"
(the recorded run shipped with the package). `agents` is 25 or a multiple of 25: copies of
the_ville side by side, copy c replaying seed + c.
"""

from __future__ import annotations

from typing import Callable

from ..errors import ConfigError
from .calls import CALL_KINDS
from .genagents_day import genagents_day
from .real_run import the_ville_morning
from .scale import concatenate, default_cols
from .trace import Trace, TraceStats
from .windows import WINDOWS, apply_window, window_steps

#: name -> generator of the 25-agent trace of one seed.
WORKLOADS: dict[str, Callable[[int], Trace]] = {
    "genagents-day": genagents_day,
    "the_ville-morning": the_ville_morning,
}


def load_workload(name: str, agents: int = 25, seed: int = 0, window: str = "full",
                  cols: int | None = None) -> Trace:
    """The trace of workload `name` for `agents` agents (25 or a multiple of 25), cut to
    `window` ("full", "busy" 12-1 PM, "quiet" 6-7 AM).

    More than 25 agents: agents // 25 copies of the_ville, `cols` per row (default: one row up
    to 40 copies, else a near-square grid); copy c replays seed `seed + c`.
    ConfigError for an unknown name, agent count or window.
    """
    if name not in WORKLOADS:
        raise ConfigError(f"unknown workload {name!r}; choose one of {sorted(WORKLOADS)}")
    if isinstance(agents, bool) or not isinstance(agents, int) or agents < 25 or agents % 25:
        raise ConfigError(f"agents must be 25 or a multiple of 25 (copies of the_ville), got {agents!r}")
    gen = WORKLOADS[name]
    copies = agents // 25
    if copies == 1:
        trace = gen(seed)
    else:
        trace = concatenate([gen(seed + c) for c in range(copies)], cols=cols,
                            name=f"{name}x{copies}")
    return apply_window(trace, window)


__all__ = ["Trace", "TraceStats", "load_workload", "WORKLOADS", "WINDOWS", "window_steps",
           "apply_window", "concatenate", "default_cols", "genagents_day", "the_ville_morning",
           "CALL_KINDS"]
