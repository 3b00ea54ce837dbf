"""The benchmark: one workload, several execution modes, one table of ratios measured in one run."""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from ..env import RULES
from ..errors import ConfigError, portable
from ..runtime.controller import MODES, run
from ..workloads.promises import LOOKAHEADS, plan_ahead
from ..runtime.metrics import RunMetrics
from ..runtime.speculation import Speculation
from .replay import trace_agents, trace_env, word_prompt

WINDOWS = ("full", "busy", "quiet")
#: The bench's name for async mode with speculation (`--speculate`).
SPEC_MODE = "async+spec"
#: Dependency tracking as the paper does it (BenchConfig's defaults), and our best (`--best`):
#: walls and rooms, per-step versions, the routes and stays personas know ahead (docs/RULES.md).
PAPER_SETTINGS = {"bound": "box", "rules": "paper", "lookahead": "off"}
BEST = {"bound": "map", "rules": "versioned", "lookahead": "persona"}

#: How each kind of OpenAI-compatible server takes request priority and a fixed output length
#: (see backends/openai_backend.py for the sources). "transformers" (`transformers serve`) has no
#: priority and fixes the length through a per-request generation_config (replay.py).
SERVER_STYLES = {
    "vllm": {"priority": "low_first", "fixed_length": True},
    "sglang": {"priority": "high_first", "fixed_length": True},
    "llamacpp": {"priority": "off", "fixed_length": True},
    "transformers": {"priority": "off", "fixed_length": False},
    "openai": {"priority": "off", "fixed_length": False},
}


@dataclass
class BenchConfig:
    """What to run. Defaults reproduce the paper's setting: Llama-3-8B on NVIDIA L4."""

    workload: str = "genagents-day"
    agents: int = 25
    window: str = "busy"
    seed: int = 0
    modes: tuple[str, ...] = ("single", "sync", "async", "oracle")
    backend: str = "sim"
    gpu: str = "l4"
    model: str = "llama-3-8b"
    gpus: int = 1
    policy: str = "priority"
    bound: str = "box"
    rules: str = "paper"
    lookahead: str = "off"
    max_clusters: int | None = None
    base_urls: tuple[str, ...] = ()
    api_model: str | None = None
    server: str = "vllm"
    timeout_s: float = 300.0
    steps: int | None = None
    trace_path: str | None = None
    executor: str = "local"
    ray_address: str | None = None
    ray_actors: int = 4
    progress: bool = True
    lower_bounds: bool = True
    record_calls: bool = False
    #: Speculation depth of the "async+spec" run (async with speculation, runtime/speculation.py);
    #: None: no such run.
    speculate: int | None = None
    #: Worker processes running the modes side by side (simulated backend only; the results are
    #: those of a sequential run). None: one per mode, up to the CPUs this process may use.
    jobs: int | None = None

    def validate(self) -> None:
        bad = [m for m in self.modes if m not in MODES and not (m == SPEC_MODE and self.speculate)]
        if bad:
            raise ConfigError(f"unknown modes {bad}; choose from {MODES}")
        if self.rules not in RULES:
            raise ConfigError(f"unknown rules {self.rules!r}; choose from {RULES}")
        if self.lookahead not in LOOKAHEADS:
            raise ConfigError(f"unknown lookahead {self.lookahead!r}; choose from {LOOKAHEADS}")
        if self.lookahead != "off" and self.rules != "versioned":
            raise ConfigError("--lookahead (declared paths and routes) needs --rules versioned: the paper's "
                              "rules cannot use a declared promise")
        if self.window not in WINDOWS:
            raise ConfigError(f"unknown window {self.window!r}; choose from {WINDOWS}")
        if self.backend not in ("sim", "openai"):
            raise ConfigError(f"unknown backend {self.backend!r}; choose 'sim' or 'openai'")
        if self.backend == "openai" and not self.base_urls:
            raise ConfigError("--backend openai needs --base-url (an OpenAI-compatible server)")
        if self.executor not in ("local", "ray"):
            raise ConfigError(f"unknown executor {self.executor!r}; choose 'local' or 'ray'")
        if self.executor == "ray" and self.backend == "sim":
            raise ConfigError("--executor ray runs on wall-clock time in separate processes, and the simulated "
                              "server needs one virtual clock: use --backend openai with --executor ray")
        if self.executor == "ray" and self.ray_actors < 1:
            raise ConfigError(f"--actors must be >= 1, got {self.ray_actors}")
        if self.server not in SERVER_STYLES:
            raise ConfigError(f"unknown server kind {self.server!r}; choose from {tuple(SERVER_STYLES)}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if self.gpus < 1:
            raise ConfigError(f"gpus must be >= 1, got {self.gpus}")
        if self.speculate is not None and (self.speculate < 1 or self.executor != "local"):
            raise ConfigError(f"--speculate takes a depth >= 1 and runs agents in this process (no --executor "
                              f"ray); got depth {self.speculate}, executor {self.executor}")
        if self.jobs is not None and self.jobs < 1:
            raise ConfigError(f"jobs must be >= 1, got {self.jobs}")
        if self.jobs is not None and self.jobs > 1 and (self.backend != "sim" or self.executor != "local"):
            raise ConfigError("--jobs > 1 runs modes side by side, which only the simulated backend (each mode "
                              "on its own virtual clock) allows: modes on real servers would share their GPUs")

    def worker_count(self) -> int:
        """Processes that run the modes: `jobs`, or by default one per mode up to the usable
        CPUs; always 1 for real servers (modes must not share a server's GPUs) and one mode."""
        if self.backend != "sim" or self.executor != "local" or len(self.modes) < 2:
            return 1
        if self.jobs is not None:
            return min(self.jobs, len(self.modes))
        return max(1, min(len(self.modes), _usable_cpus()))


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


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
            })
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "workload": self.workload_stats,
            "bounds": {"critical_s": self.critical_s, "gpu_limit_s": self.gpu_limit_s},
            "runs": self.rows(),
            "wall_s": self.wall_s,
            "jobs": self.jobs,
        }


def load_trace(cfg: BenchConfig):
    """The workload trace of `cfg` (or the saved trace file `cfg.trace_path`), cut to its first
    `cfg.steps` steps if set."""
    from ..workloads import load_workload

    if cfg.trace_path:
        from ..workloads import Trace

        trace = Trace.load(cfg.trace_path)
    else:
        trace = load_workload(cfg.workload, agents=cfg.agents, seed=cfg.seed, window=cfg.window)
    if cfg.steps is not None and cfg.steps < trace.n_steps:
        trace = trace.window(0, cfg.steps)
    if cfg.lookahead == "plan-ahead":
        trace = plan_ahead(trace)  # the workload of personas that plan ahead, for every mode
    return trace


def make_backend(cfg: BenchConfig):
    """A fresh backend for one run (no state carried between modes)."""
    if cfg.backend == "sim":
        from ..backends.simulated import make_backend as make_sim

        return make_sim(gpu=cfg.gpu, model=cfg.model, gpus=cfg.gpus, policy=cfg.policy)
    from ..backends.openai_backend import OpenAIBackend

    style = SERVER_STYLES[cfg.server]
    priority = style["priority"] if cfg.policy == "priority" else "off"
    return OpenAIBackend(list(cfg.base_urls), model=cfg.api_model or cfg.model, priority=priority,
                         fixed_length=style["fixed_length"], timeout=cfg.timeout_s)


def run_mode(trace, cfg: BenchConfig, mode: str, progress_position: int | None = None) -> RunMetrics:
    """Run one mode of the benchmark on `trace` and return its metrics."""
    env = trace_env(trace, bound=cfg.bound, rules=cfg.rules, seed=cfg.seed)
    prompt = word_prompt if cfg.backend == "openai" else None
    agents = trace_agents(trace, prompt=prompt,
                          generation_config=cfg.backend == "openai" and cfg.server == "transformers",
                          lookahead=cfg.lookahead)
    if cfg.executor == "ray":
        from functools import partial

        from ..runtime.executors import RayExecutor

        # Each actor builds its own backend from the config (a backend instance is not shipped).
        executor = RayExecutor(num_actors=cfg.ray_actors, backend_factory=partial(make_backend, cfg),
                               address=cfg.ray_address)
        backend = None
    else:
        executor, backend = None, make_backend(cfg)
    speculation = Speculation(depth=cfg.speculate) if mode == SPEC_MODE else None
    with _quiet_gc():
        return run(env, agents, backend, "async" if speculation else mode, seed=cfg.seed,
                   max_clusters=cfg.max_clusters, speculation=speculation,
                   dependencies=trace.perceived if mode == "oracle" else None,
                   progress=cfg.progress, record_calls=cfg.record_calls, executor=executor,
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
    cfg.validate()
    wall0 = time.perf_counter()
    trace = trace if trace is not None else load_trace(cfg)
    jobs = cfg.worker_count()
    if jobs > 1:
        runs = _run_modes_in_workers(trace, cfg, jobs)
    else:
        runs = {mode: run_mode(trace, cfg, mode) for mode in cfg.modes}
    result = BenchResult(cfg, runs, workload_stats=_stats(trace))
    result.jobs = jobs
    if cfg.lower_bounds and cfg.backend == "sim":
        from .bounds import critical_path_s, gpu_limit_s

        result.critical_s = critical_path_s(trace, make_backend(cfg))
        result.gpu_limit_s = gpu_limit_s(trace, make_backend(cfg))
    result.wall_s = time.perf_counter() - wall0
    return result


_WORKER_TRACE = None


def _init_worker(trace) -> None:
    # With the fork start method the trace is inherited, not pickled.
    global _WORKER_TRACE
    _WORKER_TRACE = trace


def _worker_run(cfg: BenchConfig, mode: str, position: int) -> RunMetrics:
    try:
        return run_mode(_WORKER_TRACE, cfg, mode, progress_position=position if cfg.progress else None)
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
        futures = {mode: pool.submit(_worker_run, cfg, mode, k) for k, mode in enumerate(cfg.modes)}
        return {mode: f.result() for mode, f in futures.items()}


def _stats(trace) -> dict:
    try:
        s = trace.stats()
    except AttributeError:
        return {}
    s = s if isinstance(s, dict) else asdict(s)
    # numpy values (calls per hour, counts) as plain JSON types
    return {k: v.tolist() if hasattr(v, "tolist") else v for k, v in s.items()}
