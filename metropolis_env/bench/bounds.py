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


def _unloaded_latencies(pairs: np.ndarray, backend) -> np.ndarray:
    """Latency of each distinct (input, output) token pair served alone on an idle `backend`."""

    async def measure() -> list[float]:
        out = []
        for n_in, n_out in pairs:  # one at a time: the server is idle for each
            resp = await backend.complete(LLMRequest("critical-path", 0, 0, input_tokens=int(n_in),
                                                     output_tokens=int(n_out), max_tokens=int(n_out)))
            out.append(resp.end - resp.start)
        return out

    return np.asarray(clock.run(measure(), virtual=True), dtype=float)


def step_costs(trace, backend) -> np.ndarray:
    """(n_steps, n_agents) seconds of each agent-step's call chain, each call served alone."""
    pairs = np.stack([trace.input_tokens, trace.output_tokens], axis=1).astype(np.int64)
    if not len(pairs):
        return np.zeros((trace.n_steps, len(trace.agents)))
    uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
    per_call = _unloaded_latencies(uniq, backend)[inverse.ravel()]
    cum = np.concatenate([[0.0], np.cumsum(per_call)])
    off = np.asarray(trace.call_offsets, dtype=np.int64)  # step-major: (t, a) -> t * n + a
    return (cum[off[1:]] - cum[off[:-1]]).reshape(trace.n_steps, len(trace.agents))


def critical_path_s(trace, backend) -> float:
    """Longest dependency chain of call latencies (seconds), with unlimited GPUs."""
    n = len(trace.agents)
    if n == 0:
        return 0.0
    cost = step_costs(trace, backend)
    off = np.asarray(trace.perceived_offsets, dtype=np.int64)
    ids = np.asarray(trace.perceived_ids, dtype=np.int64)
    finish = np.zeros(n)
    for t in range(trace.n_steps):
        lo, hi = off[t * n:(t + 1) * n], off[t * n + 1:(t + 1) * n + 1]
        start = finish.copy()
        has = hi > lo
        if has.any():
            # max over each agent's perceived agents of their finish time at step t-1
            seen = finish[ids[lo[0]:hi[-1]]]
            peak = np.maximum.reduceat(seen, lo[has] - lo[0])
            start[has] = np.maximum(start[has], peak)
        finish = start + cost[t]
    return float(finish.max())


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
