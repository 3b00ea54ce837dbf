"""Every lookahead level runs on every shipped workload and window (issue 13 item 7): the env
accepts every promise the trace agents declare and the replay stays on the trace.

Each case replays a short slice, chosen where promises are made and tested: wake-ups, lunch,
and the_ville-morning's steps 2600-2700, where Jennifer Moore walks to her tile, leaves it for
a conversation and walks back (a route read from that walk visited a tile twice: the `--best`
crash of issue 13)."""

from __future__ import annotations


import pytest

from metropolis_env.bench.runner import BenchConfig, run_mode
from metropolis_env.workloads import WORKLOADS, load_workload
from metropolis_env.workloads.promises import LOOKAHEADS, plan_ahead

#: (workload, window) -> the slice of the window replayed.
SLICES = {
    ("genagents-day", "full"): (2520, 2600),      # 07:00: wake-ups, walks to the bathroom
    ("genagents-day", "busy"): (0, 80),           # 12:00: walks to lunch, conversations
    ("genagents-day", "quiet"): (0, 80),          # 06:00: the first wake-ups
    ("the_ville-morning", "full"): (2600, 2700),  # the --best crash
    ("the_ville-morning", "quiet"): (0, 80),
}


def test_the_matrix_covers_every_shipped_workload_and_window():
    from metropolis_env.errors import ConfigError
    from metropolis_env.workloads import WINDOWS

    for name in WORKLOADS:
        for window in WINDOWS:
            try:
                load_workload(name, window=window)
            except ConfigError:
                continue  # a window the workload does not cover
            assert (name, window) in SLICES


@pytest.mark.parametrize("workload,window", sorted(SLICES))
def test_every_lookahead_runs_on_every_shipped_workload_and_window(workload, window):
    s, e = SLICES[workload, window]
    trace = load_workload(workload, agents=25, window=window).window(s, e)
    cfg = BenchConfig.of(workload=workload, window=window, gpus=8, bound="map", rules="versioned",
                      progress=False, lower_bounds=False)
    calls = set()
    for lookahead in LOOKAHEADS:
        replayed = plan_ahead(trace) if lookahead == "plan-ahead" else trace
        got = run_mode(replayed, cfg.replace(lookahead=lookahead), "async")
        assert got.agent_steps == 25 * (e - s)
        calls.add(got.llm_calls)
    assert len(calls) == 1  # the same calls, whatever is declared
