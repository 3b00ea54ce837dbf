"""The benchmark: trace replay in every execution mode, lower bounds, tables, plots, the sweep."""

from .runner import BenchConfig, BenchResult, run_bench, run_mode

__all__ = ["BenchConfig", "BenchResult", "run_bench", "run_mode"]
