"""One Ray actor per agent vs a pool of actors hosting many agents, against the local runtime.

The same agents (walkers making one real-time LLM call per step on an EchoBackend, so every run
does identical work) run locally and on Ray with several actor counts, on a local Ray instance.
Prints, per configuration: actor start-up time, the run's completion time, its ratio to the local
run, LLM parallelism, driver time per agent-step, and the resident memory of the actor processes
(Linux /proc). Run from the repository root (needs `pip install 'metropolis-env[ray]'`):

    python benchmarks/ray_actors.py                       # 100 agents, actors 2, 4, 100
    python benchmarks/ray_actors.py --agents 50 --actors 1 4 50 --steps 10
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import os
import time

import numpy as np

import metropolis_env as me
from metropolis_env.backends.echo import EchoBackend
from metropolis_env.runtime import Controller
from metropolis_env.runtime.executors import RayExecutor


class Walker:
    """One LLM call per step; a legal move chosen from the answer (classes of __main__ reach the
    actors by value through cloudpickle)."""

    def __init__(self, name: str):
        self.name = name
        self.n = 0

    async def act(self, obs, ctx):
        text = (await ctx.llm.complete(f"{self.name} {self.n} {obs['position'].tolist()}", max_tokens=4)).text
        self.n += 1
        legal = np.flatnonzero(obs["action_mask"])
        h = int.from_bytes(hashlib.blake2b(text.encode() + self.name.encode(), digest_size=8).digest(), "little")
        return {"move": int(legal[h % len(legal)])}


def actor_rss_mib() -> float:
    """Resident memory of this machine's AgentHost actor processes (Ray titles them ray::AgentHost)."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if not f.read().startswith(b"ray::AgentHost"):
                    continue
            with open(f"/proc/{pid}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            continue
    return total / 1024


def run_once(agents: int, steps: int, latency: float, actors: int | None):
    env = me.make("grid", agents=agents, width=100, height=100, max_steps=steps, seed=0)
    factory = functools.partial(EchoBackend, base_s=latency, per_token_s=0.0, virtual=False)
    ex = None if actors is None else RayExecutor(num_actors=actors, backend_factory=factory)
    rss = []

    def sample(agent, step, action):
        if ex is not None and not rss and step == steps // 2:
            rss.append(actor_rss_mib())

    c = Controller(env, {a: Walker(a) for a in env.possible_agents}, None if ex else factory(), "async",
                   executor=ex, on_commit=sample)
    t0 = time.perf_counter()
    m = asyncio.run(c.run())
    wall = time.perf_counter() - t0
    return m, wall, (ex.startup_s if ex else 0.0), (rss[0] if rss else 0.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", type=int, default=100)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--latency", type=float, default=0.05, help="seconds per LLM call")
    p.add_argument("--actors", type=int, nargs="+", default=[2, 4, 100])
    p.add_argument("--num-cpus", type=int, default=os.cpu_count())
    a = p.parse_args()

    import ray

    ray.init(num_cpus=a.num_cpus, include_dashboard=False, log_to_driver=False)
    rows = [("local", *run_once(a.agents, a.steps, a.latency, None))]
    for n in a.actors:
        rows.append((f"ray x{n}", *run_once(a.agents, a.steps, a.latency, n)))
    base = rows[0][1].completion_time_s
    print(f"{a.agents} agents x {a.steps} steps, {a.latency * 1e3:.0f} ms per call, {a.num_cpus} CPUs")
    print(f"{'executor':<11}{'startup s':>10}{'run s':>8}{'vs local':>9}{'parallel':>9}"
          f"{'driver us/step':>15}{'actors RSS MiB':>15}")
    for name, m, wall, startup, rss in rows:
        print(f"{name:<11}{startup:>10.2f}{m.completion_time_s:>8.2f}{m.completion_time_s / base:>9.2f}"
              f"{m.parallelism:>9.1f}{m.controller_us_per_agent_step:>15.0f}{rss:>15.0f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
