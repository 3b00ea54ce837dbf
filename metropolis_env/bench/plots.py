"""Figures of benchmark results (matplotlib, imported lazily: `pip install metropolis-env[plot]`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("plots need matplotlib: pip install 'metropolis-env[plot]'") from e
    return plt


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def binned_parallelism(timeline: list[tuple[float, int]], end: float, bins: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Time-weighted mean outstanding requests in `bins` equal intervals of [0, end]."""
    edges = np.linspace(0.0, end, bins + 1)
    area = np.zeros(bins)
    level, t_prev = 0, 0.0
    for t, n in list(timeline) + [(end, 0)]:
        # spread level over [t_prev, t) across the bins it covers
        if t > t_prev:
            lo = np.clip(edges[:-1], t_prev, t)
            hi = np.clip(edges[1:], t_prev, t)
            area += level * (hi - lo)
        level, t_prev = n, t
    width = np.diff(edges)
    return (edges[:-1] + edges[1:]) / 2, np.divide(area, width, out=np.zeros(bins), where=width > 0)


def plot_parallelism(result, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 4))
    for mode, m in result.runs.items():
        x, y = binned_parallelism(m.timeline, m.completion_time_s)
        ax.plot(x, y, label=f"{mode} (mean {m.parallelism:.1f})")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("outstanding LLM requests")
    ax.set_title("Parallelism over time")
    ax.legend()
    return _save(plt, fig, path)


def plot_gantt(result, mode: str, path: Path, max_agents: int = 25) -> Path | None:
    """Agent x time chart of LLM calls (the paper's Figure 1), for small runs."""
    m = result.runs.get(mode)
    if m is None or not m.calls:
        return None
    plt = _plt()
    agents = sorted({c[0] for c in m.calls})[:max_agents]
    row = {a: k for k, a in enumerate(agents)}
    fig, ax = plt.subplots(figsize=(10, 0.3 * len(agents) + 1.5))
    cmap = plt.get_cmap("viridis")
    top = max(c[1] for c in m.calls) or 1
    bars: dict[str, list] = {a: [] for a in agents}
    for agent, step, _idx, start, end in m.calls:
        if agent in row:
            bars[agent].append(((start, end - start), cmap(step / top)))
    for agent, calls in bars.items():  # one collection per agent: thousands of calls stay fast
        if calls:
            spans, colours = zip(*calls)
            ax.broken_barh(spans, (row[agent] - 0.4, 0.8), facecolors=colours)
    ax.autoscale_view()
    ax.set_yticks(range(len(agents)))
    ax.set_yticklabels(agents, fontsize=7)
    ax.set_xlabel("time (s)")
    ax.set_title(f"LLM calls per agent, {mode} (colour = step)")
    return _save(plt, fig, path)


def plot_speedup_vs_agents(points: list[tuple[int, float, str]], path: Path) -> Path:
    """points: (agents, async/sync speedup, label of the series)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label in sorted({p[2] for p in points}):
        xs = [p[0] for p in points if p[2] == label]
        ys = [p[1] for p in points if p[2] == label]
        ax.plot(xs, ys, marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("agents")
    ax.set_ylabel("speedup over global sync")
    ax.legend()
    return _save(plt, fig, path)


def plot_result(result, out_dir: str) -> list[Path]:
    """Figures for one bench result: parallelism over time and Gantt charts of small runs."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [plot_parallelism(result, out / "parallelism.png")]
    for mode in ("sync", "async"):
        p = plot_gantt(result, mode, out / f"gantt_{mode}.png")
        if p is not None:
            paths.append(p)
    return paths
