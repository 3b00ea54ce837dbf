"""the_ville with 25 scripted villagers, run out of order under simulated think latency.

    python examples/scripted_village.py                  # 25 agents, 1,000 steps, a few seconds
    python examples/scripted_village.py --steps 300 --seed 3
    python examples/scripted_village.py --routes         # map bound, versioned rules, declared routes

Each villager walks between places of the village (home, the cafe, the park, the market, the
college, the pub...) with `env.move_to`, lingers there, and stops to chat for a few steps with
anyone it meets whom it has not talked to lately. No LLM: each step "thinks" for a random time
(seeded per agent and step; chatting takes longer, as LLM conversations do) on a virtual clock.
A villager whose thought completes submits its action at once; the env holds it until its
cluster has submitted, and returns agents as soon as the dependency tracker lets them go on.

Prints how far agents ran ahead of each other (max - min step over time, and a histogram),
`env.stats` (dependencies per agent-step), and the virtual time the run took against the
global-step baseline with the same think times (the sum over steps of the slowest agent).

With `--routes` the env uses the map bound and the versioned rules, and each villager declares
what it knows ahead (docs/RULES.md): setting off, its walk as a route (`env.route_to`) held
until it has arrived and lingered the shortest time it ever lingers; on arriving, its stay until
it leaves. A chat on the way is a pause, which a route allows.
"""

from __future__ import annotations

import argparse
import heapq
import random
from collections import Counter

import numpy as np

import metropolis_env as me

PLACES = ("Hobbs Cafe", "Johnson Park", "The Willows Market and Pharmacy", "Oak Hill College",
          "The Rose and Crown Pub", "Harvey Oak Supply Store")


class Villager:
    """A scripted agent: walk to a place, linger, walk on; chat with newcomers it meets."""

    #: Fewest steps a villager lingers at a place (what its routes may promise).
    MIN_LINGER = 10

    def __init__(self, name: str, home: tuple[int, int], places: list[tuple[int, int]], seed: int,
                 routes: bool = False):
        self.name = name
        self.routes = routes
        self.promised_until = -1  # the last step of the route it declared
        self.rng = random.Random(f"{seed}:{name}")
        self.home = home
        self.places = places
        self.goal = self.rng.choice(places)
        self.linger = 0
        self.chat_left = 0
        self.partner = ""
        self.last_chat: dict[str, int] = {}
        self.chats = 0

    def act(self, env: me.AsyncParallelEnv, obs: dict) -> dict:
        step = obs["step"]
        here = tuple(int(v) for v in obs["position"])
        if self.chat_left:
            self.chat_left -= 1
            return {"move": env.move_to(self.name, here)["move"], "activity": f"chatting with {self.partner}",
                    "utterance": f"... and then, {self.partner.split()[0]}, it rained all morning"}
        for other in obs["perceived"]:
            who = other["name"]
            if step - self.last_chat.get(who, -10_000) > 200:  # not the same pair over and over
                self.last_chat[who] = step
                self.partner, self.chat_left = who, self.rng.randint(2, 6)
                self.chats += 1
                return {"move": env.move_to(self.name, here)["move"], "activity": f"chatting with {who}",
                        "utterance": f"Hi {who.split()[0]}! How are you?"}
        if here == self.goal:
            stay = {"move": env.move_to(self.name, here)["move"], "activity": "spending time here"}
            if self.linger == 0:
                self.linger = self.rng.randint(self.MIN_LINGER, 60)
                if self.routes:
                    # it stands here through step + linger (chats only make it longer); it
                    # arrived on its route's last tile, so it may announce that as a new route
                    leave = min(env.max_steps, step + self.linger)
                    stay.update(route=[here], until=leave, depart=leave)
                    self.promised_until = leave
            self.linger -= 1
            if self.linger == 0:
                self.goal = self.home if self.rng.random() < 0.3 else self.rng.choice(self.places)
            return stay
        if self.routes and step >= self.promised_until:
            # setting off: on the walk until it has arrived and lingered, chats being pauses
            walk = env.route_to(self.name, self.goal, until=step)
            walk["until"] = self.promised_until = min(env.max_steps, step + len(walk["route"]) - 1 + self.MIN_LINGER)
            return dict(walk, activity="walking")
        return {"move": env.move_to(self.name, self.goal)["move"], "activity": "walking"}

    def is_chatting(self) -> bool:
        return self.chat_left > 0


def place_tiles(world: me.TileMap, rng: random.Random, per_place: int = 4) -> list[tuple[int, int]]:
    tiles = []
    for name in PLACES:
        s = world.sector_names.index(name)
        ys, xs = np.nonzero(world.walkable & (world.sector == s))
        for k in rng.sample(range(len(xs)), per_place):
            tiles.append((int(xs[k]), int(ys[k])))
    return tiles


def think_time(rng: random.Random, chatting: bool) -> float:
    """Seconds one step takes to decide: lognormal like LLM calls; a conversation turn is longer."""
    return rng.lognormvariate(0.0, 0.6) * (4.0 if chatting else 1.0)


def histogram(values: list[int], width: int = 40) -> list[str]:
    edges = [0, 1, 2, 3, 5, 9, 17, 33, 65, 129, 10**9]
    counts = Counter()
    for v in values:
        for lo, hi in zip(edges, edges[1:]):
            if lo <= v < hi:
                counts[(lo, hi)] += 1
                break
    total = max(1, len(values))
    top = max(counts.values(), default=1)
    lines = []
    for lo, hi in zip(edges, edges[1:]):
        c = counts[(lo, hi)]
        if c == 0 and lo > max(values, default=0):
            break
        label = f"{lo}" if hi == lo + 1 else f"{lo}-{hi - 1}" if hi < 10**9 else f">={lo}"
        lines.append(f"  {label:>7} | {'#' * round(width * c / top):<{width}} {c / total:6.1%}")
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=1000, help="steps per agent (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--perception", choices=["arena", "box"], default="arena")
    p.add_argument("--routes", action="store_true",
                   help="map bound, versioned rules, and villagers declare their walks and stays as routes")
    args = p.parse_args(argv)

    personas = me.the_ville_personas()
    tracking = dict(bound="map", rules="versioned") if args.routes else {}
    env = me.make("the_ville", agents=personas, max_steps=args.steps, perception=args.perception,
                  seed=args.seed, **tracking)
    rng = random.Random(args.seed)
    places = place_tiles(env.world, rng)
    villagers = {a: Villager(a, home, places, args.seed, routes=args.routes) for a, home in personas.items()}
    latency = {a: random.Random(f"latency:{args.seed}:{a}") for a in personas}
    think: dict[tuple[str, int], float] = {}

    # Virtual clock: an agent that becomes ready starts thinking now and submits when done.
    now = 0.0
    queue: list[tuple[float, str]] = []
    pending: dict[str, dict] = {}

    def start(ready: dict) -> None:
        for a, o in ready.items():
            if o["step"] >= env.max_steps:
                continue  # truncated: its final observation, nothing more to do
            pending[a] = villagers[a].act(env, o)
            t = think_time(latency[a], villagers[a].is_chatting())
            think[(a, o["step"])] = t
            heapq.heappush(queue, (now + t, a))

    ready, _ = env.reset(seed=args.seed)
    start(ready)
    spread_samples: list[int] = []
    timeline: list[tuple[float, int, int]] = []
    while queue:
        now, a = heapq.heappop(queue)
        ready, *_ = env.step({a: pending.pop(a)})
        start(ready)
        lo, hi = env.step_range
        spread_samples.append(hi - lo)
        timeline.append((now, lo, hi))
    assert not env.agents, "every villager reaches max_steps (liveness)"

    sync_time = sum(max(think[(a, t)] for a in personas) for t in range(args.steps))
    s = env.stats
    print(f"the_ville, 25 scripted villagers, {args.steps} steps each, perception {args.perception!r}, "
          f"simulated think time (seed {args.seed})"
          + (", map bound, versioned rules, declared routes" if args.routes else "") + "\n")
    print("how far agents ran ahead of each other (max - min step), over virtual time:")
    for k in range(0, 11):
        t, lo, hi = timeline[min(len(timeline) - 1, k * (len(timeline) - 1) // 10)]
        print(f"  t = {t:8.1f} s   steps {lo:>5}..{hi:<5}  spread {hi - lo:>4} "
              f"{'#' * min(60, hi - lo)}")
    print(f"\nspread after each submission: mean {np.mean(spread_samples):.1f}, "
          f"max {max(spread_samples)}")
    for line in histogram(spread_samples):
        print(line)
    chats = sum(v.chats for v in villagers.values())
    print(f"\nchats started (by either side): {chats}")
    print(f"dependencies per agent-step: true {s.true_per_step:.2f} (agents perceived, itself "
          f"included), tracker {s.tracker_per_step:.2f} (global sync: 25)")
    print(f"agent-steps ready with no blocker: {s.free_share:.1%} of {s.agent_steps:,}")
    print(f"virtual time: out of order {now:,.0f} s vs global steps {sync_time:,.0f} s "
          f"({sync_time / now:.2f}x)")


if __name__ == "__main__":
    main()
