"""Replay the real 25-agent Generative Agents run through the out-of-order env and count
dependencies per agent-step.

    python examples/replay_real_run.py                       # whole run, box and arena perception
    python examples/replay_real_run.py --steps 500 --perception box

The run `skip-morning-s-14` ships with the package (data/the_ville/runs; midnight to 08:22, 3,000
steps, 14 conversations). Agents are the 25 personas on their step-0 tiles. At env step t an
agent moves toward its recorded tile of step t + 1 (the data's row for step s is the tile after
step s) with `env.move_to`, and sets its recorded activity; a chatting agent says so in its
utterance. The driver is out of order: each call submits a random (seeded) subset of the ready
clusters, so agents drift apart in time as far as the tracker allows.

Printed per agent-step, from `env.stats` (DependencyStats):
- true dependencies: agents actually perceived, itself included (the paper's 1.85 for a full
  day is this measure; on this mostly-asleep morning a plain box count gives about 1.5);
- tracker dependencies: agents it was blocked by or coupled with, itself included (global sync
  makes this 25: everybody waits for everybody);
- the share of agent-steps that were ready with no blocker when their previous step committed.

A few recorded moves are teleports (more than one tile in a step, at the joins of the recorded
segments); an env with max_vel = 1 cannot jump, so `move_to` walks there over the next steps and
the agent catches up with the recording when it pauses. The script reports how many.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import random
import time

import metropolis_env as me
from metropolis_env.world import data_path

RUN = "skip-morning-s-14"


def load_run() -> tuple[dict[int, dict[str, tuple[int, int]]], dict[int, dict[str, tuple[str, str]]]]:
    """Recorded tiles {step: {agent: (x, y)}} and events {step: {agent: (activity, partner)}}."""
    base = data_path("the_ville", "runs", RUN)

    def rows(name: str):
        with base.joinpath(name).open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8", newline="") as f:
            yield from csv.DictReader(io.StringIO(f.read()))

    tiles: dict[int, dict[str, tuple[int, int]]] = {}
    for r in rows("positions.csv.gz"):
        tiles.setdefault(int(r["step"]), {})[r["agent"]] = (int(r["x"]), int(r["y"]))
    events: dict[int, dict[str, tuple[str, str]]] = {}
    for r in rows("events.csv.gz"):
        activity = r["description"].split(" @ ")[0]
        events.setdefault(int(r["step"]), {})[r["agent"]] = (activity, r["chat_partner"])
    return tiles, events


def replay(perception: str, steps: int, seed: int, tiles, events) -> dict:
    personas = me.the_ville_personas()
    env = me.make("the_ville", agents=personas, perception=perception, max_steps=steps)
    offsets = {o: k for k, o in enumerate(me.spaces.move_offsets(env.max_vel))}
    rng = random.Random(seed)
    env.reset(seed=seed)
    deviating = 0  # agent-steps whose tile differs from the recording (teleport catch-up)
    calls = 0
    max_spread = 0

    def action(agent: str) -> dict:
        t = env.agent_step(agent)
        x, y = env.positions[agent]
        target = tiles[t + 1][agent]
        d = (target[0] - x, target[1] - y)
        # The usual case, one tile or none: that offset is the shortest path; move_to's BFS
        # field would say the same at the cost of a map-wide search per new tile.
        move = {"move": offsets[d]} if d in offsets else env.move_to(agent, target)
        activity, partner = events[t + 1][agent]
        out = dict(move, activity=me.sanitize_text(activity))
        if partner:
            out["utterance"] = me.sanitize_text(f"(talking with {partner})")
        return out

    while env.agents:
        ready = env.clusters()
        if not ready:
            raise RuntimeError("deadlock: live agents but no ready cluster")  # never (liveness)
        chosen = [cl for cl in ready if rng.random() < 0.5] or [rng.choice(ready)]
        actions = {a: action(a) for cl in chosen for a in cl}
        _, _, _, _, infos = env.step(actions)
        calls += 1
        for a in actions:
            t = env.agent_step(a)
            deviating += env.positions[a] != tiles[t][a]
        lo, hi = env.step_range
        max_spread = max(max_spread, hi - lo)
    return {"perception": perception, "stats": env.stats, "deviating": deviating, "calls": calls,
            "max_spread": max_spread}


def teleports(tiles, steps: int) -> list[tuple[int, str, int]]:
    out = []
    for t in range(1, steps + 1):
        for a, (x, y) in tiles[t].items():
            px, py = tiles[t - 1][a]
            jump = max(abs(x - px), abs(y - py))
            if jump > 1:
                out.append((t - 1, a, jump))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=2999, help="steps per agent (at most 2999; default all)")
    p.add_argument("--perception", choices=["box", "arena", "both"], default="both")
    p.add_argument("--seed", type=int, default=0, help="seeds the out-of-order driver")
    args = p.parse_args(argv)
    if not 1 <= args.steps <= 2999:
        p.error("--steps must be in 1..2999 (the run has 3,000 recorded tiles per agent)")

    tiles, events = load_run()
    jumps = teleports(tiles, args.steps)
    print(f"replaying {RUN}: 25 agents x {args.steps} steps, out of order (random half of the "
          f"ready clusters per call, seed {args.seed})")
    print(f"{len(jumps)} recorded teleports (> 1 tile in one step): "
          + ", ".join(f"{a} at step {t} ({j} tiles)" for t, a, j in jumps[:6])
          + (" ..." if len(jumps) > 6 else ""))

    modes = ["box", "arena"] if args.perception == "both" else [args.perception]
    rows = []
    for mode in modes:
        start = time.perf_counter()
        r = replay(mode, args.steps, args.seed, tiles, events)
        r["seconds"] = time.perf_counter() - start
        rows.append(r)

    print("\n| perception | agent-steps | true deps / agent-step | tracker deps / agent-step "
          "| ready with no blocker | step() calls | max step spread | off-recording agent-steps | s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        s = r["stats"]
        print(f"| {r['perception']} | {s.agent_steps:,} | {s.true_per_step:.3f} | {s.tracker_per_step:.3f} "
              f"| {s.free_share:.1%} | {r['calls']:,} | {r['max_spread']} | {r['deviating']:,} "
              f"| {r['seconds']:.1f} |")
    print("\nglobal sync: tracker deps = 25 per agent-step (every agent waits for all others)")
    if any(r["deviating"] for r in rows):
        print("off-recording agent-steps: after a teleport move_to walks the jump and the agent "
              "catches up when the recording pauses")


if __name__ == "__main__":
    main()
