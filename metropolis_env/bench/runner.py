"""The benchmark: one workload, several execution modes, one table of ratios measured in one run."""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ConfigError, portable
from ..runtime.controller import run
from ..runtime.metrics import RunMetrics
from ..workloads.promises import plan_ahead
from .config import BEST, PAPER, SERVER_STYLES, SPEC_MODE, BenchConfig, ServerConfig
from .replay import trace_agents, trace_env, word_prompt

__all__ = ["BEST", "PAPER", "BenchConfig", "BenchResult", "load_trace", "make_backend", "run_bench", "run_mode"]


@dataclass
class BenchResult:
    config: BenchConfig
    runs: dict[str, RunMetrics]
    critical_s: float | None = None
    gpu_limit_s: float | None = None
    workload_stats: dict = field(default_factory=dict)
    wall_s: float = 0.0
    #: processes that ran the modes (1: this one)
    jobs: int = 1

    def ratio(self, mode: str, base: str) -> float | None:
        if mode not in self.runs or base not in self.runs:
            return None
        t = self.runs[mode].completion_time_s
        return self.runs[base].completion_time_s / t if t > 0 else None

    def rows(self) -> list[dict[str, Any]]:
        """One dict per mode, in the JSON schema of `metropolis-env bench --json`."""
        out = []
        for mode, m in self.runs.items():
            oracle = self.ratio(mode, "oracle")
            out.append({
                "mode": mode,
                "completion_time_s": m.completion_time_s,
                "speedup_vs_sync": self.ratio(mode, "sync"),
                "speedup_vs_single": self.ratio(mode, "single"),
                "pct_of_oracle": 100.0 * oracle if oracle is not None else None,
                "parallelism": m.parallelism,
                "deps_per_agent_step": m.deps_per_agent_step,
                "llm_calls": m.llm_calls,
                "tokens_in": m.tokens_in,
                "tokens_out": m.tokens_out,
                "step_spread_mean": m.step_spread_mean,
                "gpu_busy_share": m.gpu_busy_share,
                "retries": m.retries,
                "wall_time_s": m.wall_time_s,
                "controller_us_per_agent_step": m.controller_us_per_agent_step,
                "wasted_call_share": m.wasted_call_share,
                "wasted_calls": m.wasted_calls,
                "wasted_tokens": m.wasted_tokens,
                "spec_hit_rate": m.spec_hit_rate,
                "spec_token_share": m.spec_token_share,
                "spec_gpu_share": m.spec_gpu_share,
                "wasted_gpu_share": m.wasted_gpu_share,
                "reused_calls": m.reused_calls,
                "reused_tokens": m.reused_tokens,
                "recalled_steps": m.recalled_steps,
                "recalled_calls": m.recalled_calls,
            })
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.config.flat(),
            "workload": self.workload_stats,
            "bounds": {"critical_s": self.critical_s, "gpu_limit_s": self.gpu_limit_s},
            "runs": self.rows(),
            "wall_s": self.wall_s,
            "jobs": self.jobs,
        }


def load_trace(cfg: BenchConfig):
    """The workload trace of `cfg` (or the saved trace file `cfg.trace.trace_path`), cut to the
    `cfg.trace.steps` steps from `cfg.trace.first_step` if set (re-based to step 0)."""
    from ..workloads import load_workload

    t = cfg.trace
    if t.trace_path:
        from ..workloads import Trace

        trace = Trace.load(t.trace_path)
    else:
        trace = load_workload(t.workload, agents=t.agents, seed=t.seed, window=t.window)
    if t.first_step >= trace.n_steps:
        raise ConfigError(f"--first-step {t.first_step} is past the end: this trace has {trace.n_steps} steps "
                          f"(0..{trace.n_steps - 1})")
    end = trace.n_steps if t.steps is None else min(trace.n_steps, t.first_step + t.steps)
    if t.first_step or end < trace.n_steps:
        trace = trace.window(t.first_step, end)
    if cfg.tracking.lookahead == "plan-ahead":
        trace = plan_ahead(trace)  # the workload of personas that plan ahead, for every mode
    return trace


def make_backend(llm: ServerConfig):
    """A fresh backend for one run (no state carried between modes)."""
    if llm.backend == "sim":
        return llm.simulated()
    from ..backends.openai_backend import OpenAIBackend

    style = SERVER_STYLES[llm.server]
    priority = style["priority"] if llm.policy == "priority" else "off"
    return OpenAIBackend(list(llm.base_urls), model=llm.api_model or llm.model, priority=priority,
                         fixed_length=style["fixed_length"], timeout=llm.timeout_s)


def run_mode(trace, cfg: BenchConfig, mode: str, progress_position: int | None = None) -> RunMetrics:
    """Run one mode of the benchmark on `trace` and return its metrics."""
    llm, tracking, r = cfg.llm, cfg.tracking, cfg.run
    env = trace_env(trace, bound=tracking.bound, rules=tracking.rules, seed=cfg.trace.seed)
    prompt = word_prompt if llm.backend == "openai" else None
    agents = trace_agents(trace, prompt=prompt,
                          generation_config=llm.backend == "openai" and llm.server == "transformers",
                          lookahead=tracking.lookahead)
    if r.executor == "ray":
        from functools import partial

        from ..runtime.executors import RayExecutor

        # Each actor builds its own backend from the config (a backend instance is not shipped).
        executor = RayExecutor(num_actors=r.ray_actors, backend_factory=partial(make_backend, llm),
                               address=r.ray_address)
        backend = None
    else:
        executor, backend = None, make_backend(llm)
    speculation = r.speculation() if mode == SPEC_MODE else None
    with _quiet_gc():
        return run(env, agents, backend, "async" if speculation else mode, seed=cfg.trace.seed,
                   max_clusters=r.max_clusters, speculation=speculation,
                   # the paper's priority orders both the ready queue and the server's queue
                   ready_order="step" if llm.policy == "priority" else "arrival",
                   dependencies=trace.perceived if mode == "oracle" else None,
                   progress=r.progress, record_calls=r.record_calls, executor=executor,
                   progress_position=progress_position)


#: Cyclic-GC thresholds during a bench run (Python's default is (700, 10, 10)).
GC_THRESHOLDS = (100_000, 20, 100)


@contextlib.contextmanager
def _quiet_gc():
    """Run with the objects built so far (trace, env, agents, modules) frozen out of the cyclic
    garbage collector and a higher collection threshold, then restore both.

    A large run allocates millions of short-lived containers (requests, futures, tasks, dicts),
    and with the default thresholds the collector kept re-scanning everything alive: about a
    sixth of a 10,000-agent run's CPU time. Nothing of the run depends on when garbage goes.
    """
    old = gc.get_threshold()
    freeze = gc.get_freeze_count() == 0  # never unfreeze what a caller froze
    if freeze:
        gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*old)
        if freeze:
            gc.unfreeze()


def run_bench(cfg: BenchConfig, trace=None) -> BenchResult:
    """Run every mode of `cfg` on the same trace, plus the computed lower bounds."""
    cfg = cfg.resolved()
    cfg.validate()
    wall0 = time.perf_counter()
    trace = trace if trace is not None else load_trace(cfg)
    jobs = cfg.worker_count()
    if jobs > 1:
        runs = _run_modes_in_workers(trace, cfg, jobs)
    else:
        runs = {mode: run_mode(trace, cfg, mode) for mode in cfg.run.modes}
    result = BenchResult(cfg, runs, workload_stats=_stats(trace))
    result.jobs = jobs
    if cfg.run.lower_bounds and cfg.llm.backend == "sim":
        from .bounds import critical_path_s, gpu_limit_s

        result.critical_s = critical_path_s(trace, make_backend(cfg.llm))
        result.gpu_limit_s = gpu_limit_s(trace, make_backend(cfg.llm))
    result.wall_s = time.perf_counter() - wall0
    return result


_WORKER_TRACE = None


def _init_worker(trace) -> None:
    # With the fork start method the trace is inherited, not pickled.
    global _WORKER_TRACE
    _WORKER_TRACE = trace


def _worker_run(cfg: BenchConfig, mode: str, position: int) -> RunMetrics:
    try:
        return run_mode(_WORKER_TRACE, cfg, mode, progress_position=position if cfg.run.progress else None)
    except Exception as e:
        sent = portable(e)  # e.g. AgentStepError: sent back as a MetropolisError with its message
        if sent is e:
            raise
        raise sent from None


def _run_modes_in_workers(trace, cfg: BenchConfig, jobs: int) -> dict[str, RunMetrics]:
    """Each mode in a worker process, `jobs` at a time; the same RunMetrics as run_mode in
    this process (every mode builds its own env, agents and backend on its own virtual clock)."""
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker,
                             initargs=(trace,)) as pool:
        futures = {mode: pool.submit(_worker_run, cfg, mode, k) for k, mode in enumerate(cfg.run.modes)}
        return {mode: f.result() for mode, f in futures.items()}


def _stats(trace) -> dict:
    try:
        s = trace.stats()
    except AttributeError:
        return {}
    s = s if isinstance(s, dict) else asdict(s)
    # numpy values (calls per hour, counts) as plain JSON types
    return {k: v.tolist() if hasattr(v, "tolist") else v for k, v in s.items()}
