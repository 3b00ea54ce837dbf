"""Text rendering of an AsyncParallelEnv (`render_mode="ansi"`): a map and a legend table.

The map shows blocked tiles as '#', walkable ones as '.', and each agent as one character
(`AGENT_CHARS`, repeating after 62 agents; '*' where several agents share a tile). The legend
lists every agent with its character, tile, step, state and cluster, so nothing is lost when the
map is cropped or characters repeat.

States: "ready" (may act now), "pending" (submitted, waiting for cluster mates to submit),
"blocked" (an agent behind it, or a blocked cluster mate, holds it back) and "done" (truncated).
Cluster ids number the coupled components (agents at one step within coupling distance) in
order of their first member; a lone agent is its own cluster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .env import AsyncParallelEnv

#: One character per agent, by agent index (repeats after 62 agents).
AGENT_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
#: Maps up to this many columns are drawn whole; wider ones are cropped around the agents.
MAX_COLUMNS = 160
#: Most rows drawn; taller windows are cropped around the agent at the smallest step.
MAX_ROWS = 100
#: Tiles kept around the agents' bounding box when cropping.
MARGIN = 5


def agent_char(index: int) -> str:
    """The map character of the agent with index `index` in `possible_agents`."""
    return AGENT_CHARS[index % len(AGENT_CHARS)]


def render_ansi(env: "AsyncParallelEnv") -> str:
    """The map with every agent, then a legend row per agent. Requires a reset env."""
    world = env.world
    names = env.possible_agents
    pos, step = list(env.positions.values()), list(env.steps.values())
    n = len(names)

    x0, x1, y0, y1, note = _window(env)
    grid = [list(row) for row in _map_rows(world, x0, x1, y0, y1)]
    for i, (x, y) in enumerate(pos):
        if x0 <= x <= x1 and y0 <= y <= y1:
            cell = grid[y - y0]
            cell[x - x0] = "*" if cell[x - x0] not in "#." else agent_char(i)

    cluster_id = _cluster_ids(env)
    states = _states(env)
    lo, hi = env.step_range
    n_ready = sum(s == "ready" for s in states)
    lines = [f"{world.name} {world.width}x{world.height}: {n} agents, steps {lo}..{hi} "
             f"(spread {hi - lo}), {n_ready} ready, {len(set(cluster_id))} clusters"]
    if note:
        lines.append(note)
    lines.extend("".join(row) for row in grid)
    if n > len(AGENT_CHARS):
        lines.append(f"(agent characters repeat every {len(AGENT_CHARS)} agents; '*' = shared tile)")
    width = max(5, max(len(a) for a in names))
    lines.append(f"{'agent':<{width}}  chr  {'position':>10}  {'step':>5}  {'state':<7}  cluster")
    for i, a in enumerate(names):
        x, y = pos[i]
        lines.append(f"{a:<{width}}  {agent_char(i):^3}  {f'({x},{y})':>10}  {step[i]:>5}  "
                     f"{states[i]:<7}  c{cluster_id[i]}")
    return "\n".join(lines) + "\n"


def _states(env: "AsyncParallelEnv") -> list[str]:
    ready, pending, done = set(env.ready_agents()), set(env.pending_agents()), set(env.done_agents())
    return ["done" if a in done else "pending" if a in pending else "ready" if a in ready else "blocked"
            for a in env.possible_agents]


def _cluster_ids(env: "AsyncParallelEnv") -> list[int]:
    """Coupled component of every agent, numbered 0.. in order of the smallest member."""
    names = env.possible_agents
    index = {a: i for i, a in enumerate(names)}
    out = [-1] * len(names)
    next_id = 0
    for i, a in enumerate(names):
        if out[i] < 0:
            for m in env.cluster(a):
                out[index[m]] = next_id
            next_id += 1
    return out


def _window(env: "AsyncParallelEnv") -> tuple[int, int, int, int, str]:
    """Inclusive tile window (x0, x1, y0, y1) to draw and a line saying how it was cropped."""
    world = env.world
    w, h = world.width, world.height
    if w <= MAX_COLUMNS and h <= MAX_ROWS:
        return 0, w - 1, 0, h - 1, ""
    pos, step = list(env.positions.values()), list(env.steps.values())
    xs = [p[0] for p in pos]
    ys = [p[1] for p in pos]
    x0, x1 = max(0, min(xs) - MARGIN), min(w - 1, max(xs) + MARGIN)
    y0, y1 = max(0, min(ys) - MARGIN), min(h - 1, max(ys) + MARGIN)
    # Agents spread over a huge map do not fit on a screen: centre on the laggard (the agent at
    # the smallest step), the one that gates everybody else's progress.
    lag = min(range(len(step)), key=lambda i: (step[i], i))
    lx, ly = pos[lag]
    how = f"the agents' bounding box plus {MARGIN} tiles"
    if x1 - x0 + 1 > MAX_COLUMNS or y1 - y0 + 1 > MAX_ROWS:
        how = f"centred on {env.possible_agents[lag]!r} at the smallest step"
    if x1 - x0 + 1 > MAX_COLUMNS:
        x0 = min(max(0, lx - MAX_COLUMNS // 2), w - MAX_COLUMNS)
        x1 = x0 + MAX_COLUMNS - 1
    if y1 - y0 + 1 > MAX_ROWS:
        y0 = min(max(0, ly - MAX_ROWS // 2), h - MAX_ROWS)
        y1 = y0 + MAX_ROWS - 1
    outside = sum(not (x0 <= x <= x1 and y0 <= y <= y1) for x, y in pos)
    note = f"window x {x0}..{x1}, y {y0}..{y1} of the {w}x{h} map ({how})"
    if outside:
        note += f"; {outside} agents outside it are in the table only"
    return x0, x1, y0, y1, note


def _map_rows(world, x0: int, x1: int, y0: int, y1: int) -> list[str]:
    walk = world.walkable[y0:y1 + 1, x0:x1 + 1]
    return ["".join("." if c else "#" for c in row) for row in walk.tolist()]
