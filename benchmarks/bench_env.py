"""Environment overhead per agent-step: zero-latency random walkers on concatenated villes.

    python benchmarks/bench_env.py                      # N = 100, 1,000, 10,000; 30 steps
    python benchmarks/bench_env.py --agents 1000 --steps 200

Each agent draws a random legal move (uniform over the ones its observation's `action_mask`
allows; seeded) every step, so the world and the dependency tracker do real work (agents move,
meet, couple and block) while the "LLM" costs nothing: what is timed is the environment alone.
N agents live on N/25 copies of the_ville, arranged in a near-square grid (ceil(sqrt(k))
columns), 25 per copy as in the paper's scaling runs.

- async: the out-of-order env driven by submitting every ready agent at each call (the README
  loop); the time of the `step()` calls, divided by the agent-steps committed.
- sync: SyncParallelWrapper (global barrier), same world, same walkers.

Prints a markdown table and the ratio of cost per agent-step at the largest N to that at the
second largest (10,000 vs 1,000 by default). It prints, never asserts: timings are not tests.
"""

from __future__ import annotations

import argparse
import math
import random
import time

import metropolis_env as me
from metropolis_env.wrappers import SyncParallelWrapper


def make_env(n: int, steps: int, seed: int) -> me.AsyncParallelEnv:
    k = max(1, math.ceil(n / 25))
    return me.make("villes", agents=n, k=k, cols=math.ceil(math.sqrt(k)), max_steps=steps, seed=seed)


class Walkers:
    """Seeded random legal moves: one RNG per agent, so every agent's walk is the same sequence
    of choices whatever order the driver submits in."""

    def __init__(self, agents: list[str], seed: int):
        self.rng = {a: random.Random(f"{seed}:{a}") for a in agents}

    def act(self, agent: str, obs: dict) -> int:
        legal = [k for k, ok in enumerate(obs["action_mask"].tolist()) if ok]
        return self.rng[agent].choice(legal)


def run_async(n: int, steps: int, seed: int) -> dict:
    env = make_env(n, steps, seed)
    walk = Walkers(env.possible_agents, seed)
    ready, _ = env.reset(seed=seed)
    env_time = 0.0
    calls = 0
    start = time.perf_counter()
    while ready:
        actions = {a: walk.act(a, o) for a, o in ready.items()}
        t = time.perf_counter()
        ready, _, _, truncs, _ = env.step(actions)
        env_time += time.perf_counter() - t
        calls += 1
        ready = {a: o for a, o in ready.items() if not truncs[a]}
    wall = time.perf_counter() - start
    assert env.stats.agent_steps == n * steps, "every agent must reach max_steps"
    return dict(mode="async", n=n, agent_steps=env.stats.agent_steps, env_s=env_time, wall_s=wall,
                calls=calls, tracker=env.stats.tracker_per_step, free=env.stats.free_share)


def run_sync(n: int, steps: int, seed: int) -> dict:
    sync = SyncParallelWrapper(make_env(n, steps, seed))
    walk = Walkers(sync.possible_agents, seed)
    obs, _ = sync.reset(seed=seed)
    env_time = 0.0
    calls = 0
    start = time.perf_counter()
    while sync.agents:
        actions = {a: walk.act(a, obs[a]) for a in sync.agents}
        t = time.perf_counter()
        obs, *_ = sync.step(actions)
        env_time += time.perf_counter() - t
        calls += 1
    wall = time.perf_counter() - start
    stats = sync.env.stats
    return dict(mode="sync", n=n, agent_steps=stats.agent_steps, env_s=env_time, wall_s=wall,
                calls=calls, tracker=stats.tracker_per_step, free=stats.free_share)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agents", type=int, nargs="+", default=[100, 1_000, 10_000],
                   help="agent counts to run (default: 100 1000 10000)")
    p.add_argument("--steps", type=int, default=30, help="steps per agent (max_steps; default 30)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--modes", nargs="+", choices=["async", "sync"], default=["async", "sync"])
    p.add_argument("--repeat", type=int, default=1,
                   help="runs per cell; the fastest is reported (other processes only add time)")
    p.add_argument("--profile", action="store_true",
                   help="cProfile the async run of the largest N and print the top functions")
    args = p.parse_args(argv)

    rows = []
    for n in args.agents:
        for mode in args.modes:
            run = run_async if mode == "async" else run_sync
            row = min((run(n, args.steps, args.seed) for _ in range(max(1, args.repeat))),
                      key=lambda r: r["env_s"])
            row["us"] = 1e6 * row["env_s"] / row["agent_steps"]
            rows.append(row)
            print(f"  {mode:5s} N={n:>6,}: {row['us']:6.1f} us/agent-step "
                  f"({row['agent_steps'] / row['env_s']:,.0f} agent-steps/s)", flush=True)

    print(f"\n{args.steps} steps per agent, random legal walks, villes of 25 agents each "
          f"(env time only: the walkers' own time is excluded; best of {max(1, args.repeat)})\n")
    print("| agents | mode | agent-steps/s | us per agent-step | step() calls | tracker deps/step | ready without a blocker |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['n']:,} | {r['mode']} | {r['agent_steps'] / r['env_s']:,.0f} | {r['us']:.1f} | "
              f"{r['calls']:,} | {r['tracker']:.2f} | {r['free']:.1%} |")
    sizes = sorted(set(args.agents))
    if len(sizes) >= 2:
        big, small = sizes[-1], sizes[-2]
        print()
        for mode in args.modes:
            cost = {r["n"]: r["us"] for r in rows if r["mode"] == mode}
            print(f"{mode}: cost per agent-step at {big:,} agents / at {small:,} = "
                  f"{cost[big] / cost[small]:.2f}x")

    if args.profile:
        import cProfile
        import pstats
        prof = cProfile.Profile()
        prof.runcall(run_async, sizes[-1], args.steps, args.seed)
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
