"""Workloads: replayable traces of LLM agent simulations (see docs/WORKLOADS.md).

    from metropolis_env.workloads import load_workload
    trace = load_workload("genagents-day", agents=100, seed=0, window="busy")
    trace.calls("Isabella Rodriguez", 10)   # [(input_tokens, output_tokens), ...]

Names: "genagents-day" (synthetic full day, calibrated to the paper), "the_ville-morning"
(the recorded run shipped with the package) and "recorded:PATH" (a recorded run folder: the
shipped format or reverie's storage folder, `recorded.py`). `agents` is the workload's persona
count (25 for the named ones) or a multiple of it: copies of the_ville side by side, copy c
replaying seed + c.
"""

from __future__ import annotations

from typing import Callable

from ..errors import ConfigError
from .calls import CALL_KINDS
from .genagents_day import genagents_day
from .real_run import recorded_trace, the_ville_morning
from .scale import concatenate, default_cols
from .trace import Trace, TraceStats
from .windows import WINDOWS, apply_window, window_steps

#: Prefix of a workload name that names a recorded run folder: "recorded:PATH".
RECORDED = "recorded:"

#: name -> generator of the 25-agent trace of one seed.
WORKLOADS: dict[str, Callable[[int], Trace]] = {
    "genagents-day": genagents_day,
    "the_ville-morning": the_ville_morning,
}


#: Distinct days replayed by the copies of a large village. The paper scales to 1,000 agents
#: with 40 recorded days, one per copy; beyond 40 copies (10,000 agents) the days repeat, each
#: in its own copy of the map.
DISTINCT_DAYS = 40


def load_workload(name: str, agents: int | None = 25, seed: int = 0, window: str = "full",
                  cols: int | None = None) -> Trace:
    """The trace of workload `name` for `agents` agents, cut to `window` ("full", "busy" 12-1 PM,
    "quiet" 6-7 AM).

    `name` is one of WORKLOADS or "recorded:PATH" (a recorded run folder). `agents` is the
    workload's persona count n (25 for the named workloads; None means n) or a multiple of it:
    agents // n copies of the_ville, `cols` per row (default: one row up to 40 copies, else a
    near-square grid); copy c replays seed `seed + c % DISTINCT_DAYS`. ConfigError for an
    unknown name, agent count or window, or a malformed run folder (naming the file and row).
    """
    if name.startswith(RECORDED):
        path = name[len(RECORDED):]
        if not path:
            raise ConfigError("--workload recorded:PATH needs the path of a run folder after 'recorded:'")

        def gen(s: int) -> Trace:
            return recorded_trace(path, s)
    elif name in WORKLOADS:
        gen = WORKLOADS[name]
    else:
        raise ConfigError(f"unknown workload {name!r}; choose one of {sorted(WORKLOADS)} or "
                          f"{RECORDED}PATH (a recorded run folder, docs/WORKLOADS.md)")
    first = gen(seed)
    n = first.n_agents
    if agents is None:
        agents = n
    if isinstance(agents, bool) or not isinstance(agents, int) or agents < n or agents % n:
        raise ConfigError(f"{name} has {n} personas: agents must be {n} or a multiple of {n} (copies of "
                          f"the_ville side by side), got {agents!r}")
    copies = agents // n
    if copies == 1:
        return apply_window(first, window)
    # Cut each copy to the window before joining them: a thousand agents' full days are large.
    segments = [apply_window(gen(seed + c % DISTINCT_DAYS), window) for c in range(copies)]
    return concatenate(segments, cols=cols, name=f"{first.name}x{copies}")


__all__ = ["Trace", "TraceStats", "load_workload", "WORKLOADS", "WINDOWS", "window_steps",
           "apply_window", "concatenate", "default_cols", "genagents_day", "the_ville_morning",
           "recorded_trace", "RECORDED",
           "CALL_KINDS"]
