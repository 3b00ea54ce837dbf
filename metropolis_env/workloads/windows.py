"""Named time windows of a trace: the paper's full day, busy hour and quiet hour."""

from __future__ import annotations

import datetime as _dt

import numpy as np

from ..errors import ConfigError
from .trace import Trace

#: name -> (from, to) time of day, or None for the whole trace.
WINDOWS: dict[str, tuple[str, str] | None] = {
    "full": None,
    "busy": ("12:00", "13:00"),   # lunch: ~5,000 calls for 25 agents, long conversations
    "quiet": ("06:00", "07:00"),  # waking up: ~800 calls, routine
}


def window_steps(trace: Trace, name: str) -> tuple[int, int]:
    """(start_step, end_step) of the steps whose time of day lies in the window `name`.

    ConfigError for an unknown name or a window the trace does not cover.
    """
    if name not in WINDOWS:
        raise ConfigError(f"unknown window {name!r}; choose one of {sorted(WINDOWS)}")
    span = WINDOWS[name]
    if span is None:
        return 0, trace.n_steps
    start = _dt.datetime.fromisoformat(trace.start_time)
    midnight = start.hour * 3600 + start.minute * 60 + start.second
    t_of_day = midnight + trace.seconds[:-1]
    lo, hi = (int(h) * 3600 + int(m) * 60 for h, m in (s.split(":") for s in span))
    steps = np.nonzero((t_of_day >= lo) & (t_of_day < hi))[0]
    if steps.size == 0:
        raise ConfigError(f"trace {trace.name} does not cover the {name} window {span[0]}-{span[1]}")
    return int(steps[0]), int(steps[-1]) + 1


def apply_window(trace: Trace, name: str) -> Trace:
    """The part of `trace` inside window `name` (the trace itself for "full")."""
    s, e = window_steps(trace, name)
    return trace if (s, e) == (0, trace.n_steps) else trace.window(s, e)
