"""Lower bounds on a trace's completion time, computed with the same simulated server.

- critical: the longest chain of dependent work with unlimited GPUs. Agent i's step t starts
  when its own step t-1 and the steps t-1 of every agent it really perceived at t are done, and
  lasts the sum of its calls' unloaded latencies (one request alone on the server).
- gpu-limit: the throughput bound. Every call of the trace is submitted at once, with no
  dependencies: the server's makespan.
"""

from __future__ import annotations

import asyncio

import numpy as np

from .. import clock
from ..backends.base import LLMRequest


def _unloaded_latencies(trace, backend) -> dict[tuple[int, int], float]:
    pairs = sorted({(int(a), int(b)) for i in range(len(trace.agents)) for t in range(trace.n_steps)
                    for a, b in trace.calls(i, t)})

    async def measure() -> dict[tuple[int, int], float]:
        out = {}
        for n_in, n_out in pairs:  # one at a time: the server is idle for each
            resp = await backend.complete(LLMRequest("critical-path", 0, 0, input_tokens=n_in,
                                                     output_tokens=n_out, max_tokens=n_out))
            out[(n_in, n_out)] = resp.end - resp.start
        return out

    return clock.run(measure(), virtual=True)


def critical_path_s(trace, backend) -> float:
    """Longest dependency chain of call latencies (seconds), with unlimited GPUs."""
    latency = _unloaded_latencies(trace, backend)
    n = len(trace.agents)
    finish = np.zeros(n)
    for t in range(trace.n_steps):
        start = finish.copy()
        for i in range(n):
            deps = trace.perceived(i, t)
            if len(deps):
                start[i] = max(start[i], float(finish[np.asarray(deps, dtype=np.int64)].max()))
        cost = np.array([sum(latency[(int(a), int(b))] for a, b in trace.calls(i, t)) for i in range(n)])
        finish = start + cost
    return float(finish.max()) if n else 0.0


def gpu_limit_s(trace, backend) -> float:
    """Makespan of all the trace's calls submitted at once (seconds)."""
    reqs = [LLMRequest(trace.agents[i], t, k, input_tokens=int(a), output_tokens=int(b), max_tokens=int(b))
            for i in range(len(trace.agents)) for t in range(trace.n_steps)
            for k, (a, b) in enumerate(trace.calls(i, t))]

    async def flood() -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.gather(*(backend.complete(r) for r in reqs))
        return loop.time() - t0

    return clock.run(flood(), virtual=True)
