"""Tracker dependencies per agent-step with the box bound vs the map bound, next to the true ones.

Replays a recorded day through the out-of-order env: every agent walks (env.move_to) toward the
tile its recording holds for its next time, and each driver call submits a random subset of the
ready clusters (seeded). The world, the recording and the schedule are the same for every bound,
so the columns differ only by the bound's false dependencies. Also prints the map bound's
precompute time and cache memory.

Two measures of dependencies per agent-step (itself included), next to the true one (agents
perceived at that step):
- lockstep: the agent-steps (X, t-1) whose commit each rule makes (A, t) wait for, evaluated on
  the recorded trajectory as if every agent were one step behind A: schedule-free, and always
  >= the true count (perceiving X at t needs X's step t-1), so the ratio is the rule's overhead;
- dynamic (the env's `stats.tracker_per_step`): cluster members plus blockers found when each
  agent reached its step, under a random out-of-order schedule. With the versioned rules agents
  at or ahead of A's step are never waited for, so this can fall below the true count.

Run from the repository root:

    python benchmarks/bench_bounds.py                 # the shipped 25-agent run, 3000 steps
    python benchmarks/bench_bounds.py --steps 600 --horizons 16 32 48
    python benchmarks/bench_bounds.py --workload genagents-day
"""

from __future__ import annotations

import argparse
import csv
import gzip
import random
import time

import numpy as np

import metropolis_env as me
from metropolis_env import world as W
from metropolis_env.bounds import BoxBound
from metropolis_env.map_bound import MapBound


def recorded_run(name: str = "skip-morning-s-14") -> tuple[list[str], np.ndarray]:
    """(persona names, positions[agent, step] as (x, y)) of a shipped real run."""
    with W.data_path("the_ville", "runs", name, "positions.csv.gz").open("rb") as raw:
        with gzip.open(raw, "rt", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    names = list(dict.fromkeys(r["agent"] for r in rows))
    index = {n: i for i, n in enumerate(names)}
    n_steps = max(int(r["step"]) for r in rows) + 1
    pos = np.zeros((len(names), n_steps, 2), dtype=np.int64)
    for r in rows:
        pos[index[r["agent"]], int(r["step"])] = (int(r["x"]), int(r["y"]))
    return names, pos


def workload_run(name: str, agents: int = 25) -> tuple[list[str], np.ndarray, W.TileMap] | None:
    """(agents, positions[agent, time], world) of a workload of metropolis_env.workloads, or
    None when that module is not there."""
    try:
        from metropolis_env.workloads import load_workload
    except ImportError:
        return None
    trace = load_workload(name, agents=agents)
    return list(trace.agents), np.asarray(trace.positions), trace.world


def replay(world: W.TileMap, names: list[str], pos: np.ndarray, steps: int, bound, seed: int,
           share: float = 0.5, rules: str = "paper") -> tuple[me.env.DependencyStats, float, float]:
    """Drive the env out of order toward the recorded tiles; (dependency stats, wall seconds,
    cluster members per agent-step: the part of the tracker's dependencies that is coupling)."""
    starts = {n: (int(pos[i, 0, 0]), int(pos[i, 0, 1])) for i, n in enumerate(names)}
    env = me.make(world, starts, max_steps=steps, perception="arena", bound=bound, rules=rules)
    index = {n: i for i, n in enumerate(names)}
    rng = random.Random(seed)
    last = pos.shape[1] - 1
    t0 = time.perf_counter()
    coupled = 0
    env.reset(seed=seed)
    while env.agents:
        clusters = env.clusters()
        if not clusters:
            break
        pick = [c for c in clusters if rng.random() < share] or [rng.choice(clusters)]
        actions = {}
        for cl in pick:
            coupled += len(cl) * len(cl)
            for a in cl:
                goal = pos[index[a], min(env.agent_step(a) + 1, last)]
                actions[a] = env.move_to(a, (int(goal[0]), int(goal[1])))
        env.step(actions)
    wall = time.perf_counter() - t0
    return env.stats, wall, coupled / max(env.stats.agent_steps, 1)


def lockstep_deps(world: W.TileMap, pos: np.ndarray, steps: int, bound, rules: str, v: int = 1) -> float:
    """Mean of 1 + |{X: rule makes (A, t) wait for (X, t-1)}| over t = 1..steps (see module doc).

    versioned: h(A_t, X_{t-1}) <= v. paper: h(A_t, X_{t-1}) <= 2 v (blocked one step behind),
    or X coupled with A at t-1 through a chain (h <= v at the same step): a cluster commits as one.
    """
    n = pos.shape[0]
    reach = v if rules == "versioned" else 2 * v
    total = 0
    for t in range(1, steps + 1):
        now, before = pos[:, t], pos[:, t - 1]
        cheb = np.maximum(np.abs(now[:, None, 0] - before[None, :, 0]), np.abs(now[:, None, 1] - before[None, :, 1]))
        cand = cheb <= bound.search_radius(reach)
        wait = np.zeros((n, n), dtype=bool)
        for a, x in zip(*np.nonzero(cand)):
            if a != x and bound.hazard(tuple(now[a]), tuple(before[x])) <= reach:
                wait[a, x] = True
        if rules == "paper":
            wait |= _components_matrix(before, bound, v)
        np.fill_diagonal(wait, False)
        total += n + int(wait.sum())
    return total / (n * steps)


def _components_matrix(p: np.ndarray, bound, v: int) -> np.ndarray:
    """same[a, x]: a and x in one coupling component (h <= v at one step), by union-find."""
    n = p.shape[0]
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a
    cheb = np.maximum(np.abs(p[:, None, 0] - p[None, :, 0]), np.abs(p[:, None, 1] - p[None, :, 1]))
    for a, x in zip(*np.nonzero(np.triu(cheb <= bound.search_radius(v), 1))):
        if bound.hazard(tuple(p[a]), tuple(p[x])) <= v:
            parent[find(a)] = find(x)
    root = np.array([find(a) for a in range(n)])
    return root[:, None] == root[None, :]


def true_deps(world: W.TileMap, pos: np.ndarray, steps: int, radius_p: int = 4) -> float:
    """Mean of 1 + agents perceived (same arena within the box) over t = 1..steps."""
    from metropolis_env.workloads.perception import perceived_csr

    counts, _ = perceived_csr(world, pos[:, 1:steps + 1], steps, radius_p, same_zone=True)
    return 1.0 + float(counts.mean())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--share", type=float, default=0.5, help="chance to submit each ready cluster per call")
    ap.add_argument("--horizons", type=int, nargs="+", default=[32])
    ap.add_argument("--workload", default="real", help="'real' (the shipped run) or a workload name")
    ap.add_argument("--agents", type=int, default=25, help="agents of a workload (multiples of 25)")
    ap.add_argument("--no-precompute", action="store_true", help="skip the full-map precompute timing")
    args = ap.parse_args(argv)

    world = W.the_ville()
    if args.workload == "real":
        names, pos = recorded_run()
        label = "the_ville real run skip-morning-s-14"
    else:
        got = workload_run(args.workload, args.agents)
        if got is None:
            print(f"workload {args.workload!r}: metropolis_env.workloads.load_workload not available; skipped")
            return
        names, pos, world = got
        label = f"workload {args.workload}"
    steps = min(args.steps, pos.shape[1] - 1)

    print("precompute (every walkable tile of the_ville, a sample of villes(4); not part of the replay):")
    for wname, w in () if args.no_precompute else (("the_ville", W.the_ville()), ("villes(4)", W.villes(4))):
        for k in args.horizons:
            mb = MapBound(w, 4, 1, "arena", horizon=k, cache_bytes=1 << 40)
            tiles = w.walkable_tiles()
            if wname != "the_ville":
                tiles = tiles[:: max(1, len(tiles) // 2000)]  # a sample: time scales per tile
            t0 = time.perf_counter()
            st = mb.precompute(tiles)
            dt = time.perf_counter() - t0
            n_all = int(w.walkable.sum())
            per = dt / st.tiles
            print(f"  {wname:10s} horizon {k:3d}: {per * 1e3:6.2f} ms/tile -> {per * n_all:7.1f} s for all "
                  f"{n_all} tiles, {st.bytes / st.tiles / 1024:6.1f} KiB/tile -> "
                  f"{st.bytes / st.tiles * n_all / 2**20:7.1f} MiB for all")

    print(f"\n{label}: {len(names)} agents x {steps} steps, random subset submission "
          f"(share {args.share}, seed {args.seed})")
    print(f"  {'bound':12s} {'tracker/step':>12s} {'of which cluster':>16s} {'true/step':>10s} {'ratio':>7s} {'free':>6s} "
          f"{'cache MiB':>9s} {'fields s':>8s} {'wall s':>7s}")
    bounds = [("box", "box")] + [(f"map h={k}", MapBound(world, 4, 1, "arena", horizon=k)) for k in args.horizons]
    lockstep = {}
    for rules in ("paper", "versioned"):
        print(f"  rules {rules}")
        for label_b, bound in bounds:
            stats, wall, cluster = replay(world, names, pos, steps, bound, args.seed, args.share, rules)
            cache = bound.cache_stats() if isinstance(bound, MapBound) else None
            print(f"  {label_b:12s} {stats.tracker_per_step:12.3f} {cluster:16.3f} {stats.true_per_step:10.3f} "
                  f"{stats.tracker_per_step / stats.true_per_step:7.3f} {stats.free_share:6.1%} "
                  f"{(cache.bytes / 2**20 if cache else 0):9.1f} {(cache.compute_s if cache else 0):8.2f} {wall:7.1f}")
            b = BoxBound(4) if bound == "box" else bound
            lockstep[rules, label_b] = lockstep_deps(world, pos, steps, b, rules)
    truth = true_deps(world, pos, steps)
    print(f"\n  lockstep dependencies per agent-step (schedule-free), true {truth:.3f}:")
    for (rules, label_b), d in lockstep.items():
        print(f"  {rules:10s} {label_b:12s} {d:7.3f}  ({d / truth:.3f}x true)")


if __name__ == "__main__":
    main()
