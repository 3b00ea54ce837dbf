"""What trace agents may promise (workloads/promises.py): whole sleeping and conversation runs."""

from __future__ import annotations

import numpy as np
import pytest

from metropolis_env.workloads import load_workload
from metropolis_env.workloads.promises import promise_ends


@pytest.fixture(scope="module")
def day():
    return load_workload("genagents-day", agents=25)


def _key(trace, a: int, t: int):
    p = int(trace.partner[a, t])
    if p >= 0:
        return ("chat", p)
    name = trace.activities[int(trace.activity[a, t])]
    return ("sleep", name) if "sleeping" in name else None


def test_promises_cover_exactly_whole_sleeping_and_conversation_runs(day):
    ends = promise_ends(day)
    assert ends.shape == (25, day.n_steps)
    starts = np.argwhere(ends >= 0)
    assert len(starts) > 100
    rng = np.random.default_rng(0)
    for a, t in starts[rng.choice(len(starts), 200, replace=False)]:
        e = int(ends[a, t])
        key = _key(day, a, t)
        assert key is not None and e >= t
        assert all(_key(day, a, u) == key for u in range(t, e + 1))
        # maximal: the run neither continues past e nor started before t
        assert e == day.n_steps - 1 or _key(day, a, e + 1) != key
        assert t == 0 or _key(day, a, t - 1) != key
    # and nothing else is promised: every step of a run is inside exactly one declaration
    covered = np.zeros(ends.shape, dtype=bool)
    for a, t in starts:
        covered[a, t:ends[a, t] + 1] = True
    sample = rng.choice(day.n_steps, 400, replace=False)
    for a in range(25):
        for t in sample:
            assert covered[a, t] == (_key(day, a, int(t)) is not None)


def test_a_window_starts_runs_in_progress_at_its_first_step(day):
    busy = day.window(12 * 360, 13 * 360)
    ends = promise_ends(busy)
    for a in range(25):
        if _key(busy, a, 0) is not None:
            assert ends[a, 0] >= 0
