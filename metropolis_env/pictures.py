"""Pictures of an out-of-order run: the map, the agents coloured by step, their clusters and who
waits for whom (`render_mode="rgb_array"` and `"human"`; `movie.py` strings frames together).

A `Frame` is a plain-data snapshot taken through the env's public methods only (`positions`,
`steps`, `ready_agents()`, `clusters()`, `blocked_by()`), so it can be kept, pickled and drawn
later. `draw(frame, world)` paints it with matplotlib's Agg canvas (no window, no pyplot state)
into a uint8 (H, W, 3) array:

- walkable tiles light, blocked ones dark;
- each agent a dot coloured by its step (the colour bar spans the frame's step range: in an
  out-of-order run agents are at different steps); ready agents have a black ring, finished
  (truncated or terminated) agents are grey crosses;
- ready clusters of several agents (coupled: they submit together) joined by blue lines;
- red arrows from an agent that waits to each agent that holds it back (`blocked_by`).

matplotlib is an optional dependency (the `plot` extra), imported when a picture is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .errors import ConfigError
from .world import TileMap

if TYPE_CHECKING:  # pragma: no cover
    from .env import AsyncParallelEnv

#: Pixels per tile of a picture, before the figure's margins (maps wider than 1,600 px shrink).
TILE_PX = 5
MAX_PX = 1600


@dataclass(frozen=True)
class Frame:
    """One moment of a run. Agent `k` is `agents[k]`; `waits` holds (k, j, rule): k waits for j."""

    agents: tuple[str, ...]
    positions: np.ndarray  # (n, 2) int (x, y)
    steps: np.ndarray  # (n,) int
    ready: frozenset[int]
    done: frozenset[int]
    clusters: tuple[tuple[int, ...], ...]  # ready clusters with 2+ members
    waits: tuple[tuple[int, int, str], ...]
    title: str = ""


def frame_of(env: "AsyncParallelEnv", title: str = "") -> Frame:
    """Snapshot `env` (reset) through its public methods. O(agents x their blockers)."""
    names = list(env.possible_agents)
    index = {a: k for k, a in enumerate(names)}
    positions = env.positions
    steps = env.steps
    live = set(env.agents)
    ready = frozenset(index[a] for a in env.ready_agents())
    clusters = tuple(tuple(index[a] for a in cl) for cl in env.clusters() if len(cl) > 1)
    waits = []
    for a in names:
        if a in live and index[a] not in ready:
            waits.extend((index[a], index[row["agent"]], row["rule"]) for row in env.blocked_by(a))
    return Frame(tuple(names), np.array([positions[a] for a in names], dtype=np.int64).reshape(-1, 2),
                 np.array([steps[a] for a in names], dtype=np.int64),
                 ready, frozenset(index[a] for a in names if a not in live), clusters, tuple(waits), title)


def _require_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError("pictures need matplotlib: pip install 'metropolis-env[plot]' "
                          "(or pip install matplotlib)") from None


def draw(frame: Frame, world: TileMap) -> np.ndarray:
    """The picture of `frame` on `world` as a uint8 (H, W, 3) RGB array."""
    _require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    px = min(TILE_PX, max(1, MAX_PX // max(world.width, 1)))
    dpi = 100
    fig = Figure(figsize=(max(4.0, world.width * px / dpi + 1.2), max(3.0, world.height * px / dpi + 0.6)), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.02, 0.02, 0.82, 0.9))
    ax.imshow(np.where(world.walkable, 0.93, 0.35), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    pos, steps = frame.positions, frame.steps
    lo, hi = (int(steps.min()), int(steps.max())) if len(steps) else (0, 0)
    for k, j, rule in frame.waits:
        (x0, y0), (x1, y1) = pos[k], pos[j]
        if (x0, y0) != (x1, y1):
            ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                        arrowprops=dict(arrowstyle="->", color="tab:red", lw=0.8, alpha=0.8))
    for cl in frame.clusters:
        xy = pos[list(cl)]
        ax.plot(xy[:, 0], xy[:, 1], color="tab:blue", lw=1.5, alpha=0.8)
    live = [k for k in range(len(frame.agents)) if k not in frame.done]
    if live:
        ring = ["black" if k in frame.ready else "none" for k in live]
        dots = ax.scatter(pos[live, 0], pos[live, 1], c=steps[live], cmap="viridis", vmin=lo, vmax=max(hi, lo + 1),
                          s=36, edgecolors=ring, linewidths=1.2, zorder=3)
        fig.colorbar(dots, cax=fig.add_axes((0.87, 0.1, 0.03, 0.75)), label="step")
    done = sorted(frame.done)
    if done:
        ax.scatter(pos[done, 0], pos[done, 1], marker="x", color="0.5", s=30, zorder=3)
    title = frame.title or ""
    summary = f"steps {lo}..{hi}, {len(frame.ready)} ready, {len(frame.waits)} waits"
    ax.set_title(f"{title}  ({summary})" if title else summary, fontsize=9)
    ax.set_xlim(-0.5, world.width - 0.5)
    ax.set_ylim(world.height - 0.5, -0.5)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy()


class Painter:
    """An env's `render()` for its render_mode: None (nothing), "ansi" (render.py's text),
    "rgb_array" (`draw`) or "human" (`draw` shown in a `Window`)."""

    def __init__(self):
        self._window: Window | None = None

    def render(self, env: "AsyncParallelEnv") -> str | np.ndarray | None:
        if env.render_mode is None:
            return None
        if env.render_mode == "ansi":
            from .render import render_ansi
            return render_ansi(env)
        picture = draw(frame_of(env), env.world)
        if env.render_mode == "rgb_array":
            return picture
        if self._window is None:
            self._window = Window()
        self._window.show(picture)
        return None

    def close(self) -> None:
        if self._window is not None:
            self._window.close()
            self._window = None


class Window:
    """`render_mode="human"`: shows pictures in one matplotlib window, refreshed on each call."""

    def __init__(self):
        _require_matplotlib()
        self._fig = None
        self._image = None

    def show(self, picture: np.ndarray) -> None:
        import matplotlib.pyplot as plt

        if self._fig is None or not plt.fignum_exists(self._fig.number):
            self._fig = plt.figure("metropolis-env")
            ax = self._fig.add_axes((0, 0, 1, 1))
            ax.axis("off")
            self._image = ax.imshow(picture)
            plt.show(block=False)
        else:
            self._image.set_data(picture)
        self._fig.canvas.draw_idle()
        plt.pause(0.001)

    def close(self) -> None:
        if self._fig is not None:
            import matplotlib.pyplot as plt

            plt.close(self._fig)
            self._fig = None
