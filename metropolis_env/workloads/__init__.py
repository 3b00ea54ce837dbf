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


#: Distinct days replayed by the copies of a large village. The paper scales to 1,000 agents
#: with 40 recorded days, one per copy; beyond 40 copies (10,000 agents) the days repeat, each
#: in its own copy of the map.
DISTINCT_DAYS = 40


def load_workload(name: str, agents: int = 25, seed: int = 0, window: str = "full",
                  cols: int | None = None) -> Trace:
    """The trace of workload `name` for `agents` agents (25 or a multiple of 25), cut to
    `window` ("full", "busy" 12-1 PM, "quiet" 6-7 AM).

    More than 25 agents: agents // 25 copies of the_ville, `cols` per row (default: one row up
    to 40 copies, else a near-square grid); copy c replays seed `seed + c % DISTINCT_DAYS`.
    ConfigError for an unknown name, agent count or window.
    """
    if name not in WORKLOADS:
        raise ConfigError(f"unknown workload {name!r}; choose one of {sorted(WORKLOADS)}")
    if isinstance(agents, bool) or not isinstance(agents, int) or agents < 25 or agents % 25:
        raise ConfigError(f"agents must be 25 or a multiple of 25 (copies of the_ville), got {agents!r}")
    gen = WORKLOADS[name]
    copies = agents // 25
    if copies == 1:
        return apply_window(gen(seed), window)
    # Cut each copy to the window before joining them: a thousand agents' full days are large.
    segments = [apply_window(gen(seed + c % DISTINCT_DAYS), window) for c in range(copies)]
    return concatenate(segments, cols=cols, name=f"{name}x{copies}")


__all__ = ["Trace", "TraceStats", "load_workload", "WORKLOADS", "WINDOWS", "window_steps",
           "apply_window", "concatenate", "default_cols", "genagents_day", "the_ville_morning",
           "CALL_KINDS"]
