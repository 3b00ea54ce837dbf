"""What a benchmark runs: four typed sections, one place for every setting.

`BenchConfig` = `TraceConfig` (what is replayed) + `ServerConfig` (the LLM server the agents
call) + `TrackingConfig` (how dependencies are tracked) + `RunConfig` (how the modes run).
Each field carries its command-line flag and help in its metadata (`option`), and
`metropolis-env bench` is generated from them (`bench/options.py`), so a default or a help
text is written once. `ScalePolicy` holds what the bench leaves out by default as the
population grows; nothing else decides it.

Every flat field name is unique across the sections: `BenchConfig.of(agents=100, gpus=8)`
builds a config from flat names, `cfg.replace(...)` changes some, and `cfg.flat()` is the
`config` object of the bench's JSON (the same keys as ever).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..errors import ConfigError
from ..env import RULES
from ..runtime.controller import MODES
from ..runtime.speculation import DEPTH as SPECULATION_DEPTH
from ..runtime.speculation import HORIZON as SPECULATION_HORIZON
from ..runtime.speculation import SETTLE as SPECULATION_SETTLE
from ..runtime.speculation import Speculation
from ..workloads.promises import LOOKAHEADS
from .options import comma_list, int_or_none

WINDOWS = ("full", "busy", "quiet")
#: The bench's run of async mode with speculation (`--speculate`, runtime/speculation.py).
SPEC_MODE = "async+spec"
BACKENDS = ("sim", "openai")
EXECUTORS = ("local", "ray")

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


def option(default: Any, help: str, *, flag: str | None = None, **argparse_kw: Any) -> Any:
    """A config field with its command-line form: `flag` (default `--field-name`), `help`, and
    any further `argparse.add_argument` keywords (choices, type, nargs, const, action)."""
    return field(default=default, metadata={"help": help, "flag": flag, "argparse": argparse_kw})


@dataclass(frozen=True)
class ScalePolicy:
    """What `metropolis-env bench` leaves out by default as the population grows, because it
    would cost far more than it tells. A setting given explicitly always wins.

    - `single` (one LLM call at a time) runs up to `single_max_agents` agents: above, it adds
      hours of virtual time and millions of sequential events, and nothing to compare with.
    - `oracle` runs below `oracle_min_skip` agents: mining the true dependencies of every
      agent-step is the memory peak of a 10,000-agent run.
    - The lower bounds (critical path, gpu-limit) are computed up to `bounds_max_agents`:
      gpu-limit submits every call of the trace at once.
    - Per-call records (the Gantt charts of `--plot`) are kept up to `call_records_max_agents`:
      one record per LLM call, and a chart of more agents is unreadable anyway.
    """

    single_max_agents: int = 500
    oracle_min_skip: int = 5000
    bounds_max_agents: int = 1000
    call_records_max_agents: int = 100

    def modes(self, agents: int) -> tuple[str, ...]:
        out = ("single", "sync", "async", "oracle")
        if agents > self.single_max_agents:
            out = out[1:]
        if agents >= self.oracle_min_skip:
            out = out[:-1]
        return out

    def lower_bounds(self, agents: int) -> bool:
        return agents <= self.bounds_max_agents

    def record_calls(self, agents: int) -> bool:
        return agents <= self.call_records_max_agents



SCALE = ScalePolicy()


@dataclass(frozen=True)
class TraceConfig:
    """What is replayed: a workload (or a saved trace file) and its slice."""

    workload: str = option("genagents-day", "genagents-day | the_ville-morning | recorded:PATH "
                                            "(a recorded run folder, docs/WORKLOADS.md)")
    agents: int = option(25, "the workload's persona count (25 for the shipped ones) or a multiple of it "
                             "(copies side by side)", type=int)
    window: str = option("busy", "full | busy (12-1 PM) | quiet (6-7 AM)")
    seed: int = option(0, "seeds the workload's synthetic trace and the env's start positions", type=int)
    steps: int | None = option(None, "replay only the window's first N steps (default: all of them)", type=int)
    trace_path: str | None = option(None, "replay a trace file saved with Trace.save instead", flag="--trace")
    first_step: int = option(0, "replay from the window's step S on (with --steps N: steps S..S+N-1); sync "
                             "times add up over consecutive slices, since its server is empty at every barrier",
                             type=int)

    def validate(self) -> None:
        if self.window not in WINDOWS:
            raise ConfigError(f"unknown window {self.window!r}; choose from {WINDOWS}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if self.first_step < 0:
            raise ConfigError(f"first step must be >= 0, got {self.first_step}")


@dataclass(frozen=True)
class ServerConfig:
    """The LLM server the agents call: the embedded simulated one, or real OpenAI-compatible ones."""

    backend: str = option("sim", "sim (embedded simulated server) | openai")
    gpu: str = option("l4", "simulated server preset: GPU l4 | a100 | a100-40gb | h100 | h200, optionally "
                            "-ENGINE: sglang (a bare GPU name), vllm, or roofline (no scheduler limits); "
                            "docs/SIMULATOR.md")
    model: str = option("llama-3-8b", "simulated model preset")
    gpus: int = option(1, "data-parallel GPU replicas of the simulated server (the paper's figures use 8)",
                       type=int)
    policy: str = option("priority", "priority: smallest step first, in the runtime's ready queue and the "
                         "server's queue (the paper's priority) | fcfs: arrival order in both")
    server_options: tuple[str, ...] = option(
        (), "simulated server setting KEY=VALUE over the preset's (repeatable): any field of "
        "backends.simulated.ServerConfig but gpu, model, replicas and policy, e.g. max_batch=8, "
        "routing=round-robin, iteration_overhead_s=0.004 (docs/SIMULATOR.md)", flag="--server-option",
        action="append")
    base_urls: tuple[str, ...] = option((), "OpenAI-compatible server (repeatable)", flag="--base-url",
                                        action="append")
    api_model: str | None = option(None, "model name on the real server (default: --model)")
    server: str = option("vllm", "kind of real server, for priority and fixed output length: "
                         + " | ".join(SERVER_STYLES))
    timeout_s: float = option(300.0, "seconds per request attempt (real servers)", flag="--timeout", type=float)

    def validate(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r}; choose 'sim' or 'openai'")
        if self.backend == "openai" and not self.base_urls:
            raise ConfigError("--backend openai needs --base-url (an OpenAI-compatible server)")
        if self.server not in SERVER_STYLES:
            raise ConfigError(f"unknown server kind {self.server!r}; choose from {tuple(SERVER_STYLES)}")
        if self.gpus < 1:
            raise ConfigError(f"gpus must be >= 1, got {self.gpus}")
        if self.server_options and self.backend != "sim":
            raise ConfigError("--server-option sets the simulated server; a real server (--backend openai) "
                              "is configured where it runs")
        if self.backend == "sim":
            self.simulated()  # a bad preset or setting fails here, before any trace is built

    def simulated(self):
        """A fresh simulated server of these settings (`backends.simulated.make_backend`)."""
        from ..backends.simulated import make_backend

        return make_backend(gpu=self.gpu, model=self.model, gpus=self.gpus, policy=self.policy,
                            **self.sim_overrides())

    def sim_overrides(self) -> dict[str, Any]:
        """`server_options` as simulated-server settings {field: typed value}; ConfigError naming
        the option that is malformed, unknown, set by another flag, or of the wrong type."""
        from typing import get_type_hints

        from ..backends.simulated import ServerConfig as SimServer

        own_flags = {"gpu": "--gpu", "model": "--model", "replicas": "--gpus", "policy": "--policy"}
        types = get_type_hints(SimServer)
        out: dict[str, Any] = {}
        for item in self.server_options:
            key, eq, text = item.partition("=")
            key, text = key.strip(), text.strip()
            if not eq or not key or not text:
                raise ConfigError(f"--server-option {item!r}: expected KEY=VALUE, e.g. max_batch=8")
            if key in own_flags:
                raise ConfigError(f"--server-option {item!r}: set {key} with {own_flags[key]}")
            if key not in types:
                known = sorted(set(types) - set(own_flags))
                raise ConfigError(f"--server-option {item!r}: the simulated server has no setting {key!r}; "
                                  f"choose from {known}")
            out[key] = _typed(item, types[key], text)
        return out


def _typed(item: str, kind: type, text: str) -> Any:
    """A --server-option's VALUE as the setting's type (int, float, bool or str)."""
    if kind is bool:
        words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        if text.lower() in words:
            return words[text.lower()]
    else:
        try:
            return kind(text)
        except (TypeError, ValueError):
            pass
    expected = {bool: "true or false", int: "an integer", float: "a number"}.get(kind, kind.__name__)
    raise ConfigError(f"--server-option {item!r}: expected {expected}, got {text!r}")


@dataclass(frozen=True)
class TrackingConfig:
    """How dependencies are tracked. The defaults are the paper's (`PAPER`); `BEST` is ours,
    beyond the paper (`bench --best`): walls and rooms, per-step versions, and the routes and
    stays personas know ahead (docs/RULES.md)."""

    bound: str = option("box", "dependency bound: box (the paper's) | map (walls and rooms)")
    rules: str = option("paper", "dependency rules: paper (current state only, coupled clusters) | versioned "
                        "(per-step state versions: no coupling, shorter blocking)", choices=RULES)
    lookahead: str = option(
        "off", "with --rules versioned: trace agents declare what they know ahead as paths and routes: "
        "persona (their walks, sleep, conversations; the value of a bare --lookahead), plan-ahead (the same, "
        "with personas that plan their next activity on arrival: a workload variant) or clairvoyant (the "
        "whole future: an upper bound) (docs/RULES.md)", nargs="?", const="persona", choices=LOOKAHEADS)

    def validate(self) -> None:
        if self.rules not in RULES:
            raise ConfigError(f"unknown rules {self.rules!r}; choose from {RULES}")
        if self.lookahead not in LOOKAHEADS:
            raise ConfigError(f"unknown lookahead {self.lookahead!r}; choose from {LOOKAHEADS}")
        if self.lookahead != "off" and self.rules != "versioned":
            raise ConfigError("--lookahead (declared paths and routes) needs --rules versioned: the paper's "
                              "rules cannot use a declared promise")


PAPER = TrackingConfig()
BEST = TrackingConfig(bound="map", rules="versioned", lookahead="persona")


@dataclass(frozen=True)
class RunConfig:
    """How the modes run: which, where, and what is measured beside them."""

    modes: tuple[str, ...] | None = option(
        None, "comma-separated: single,sync,async,oracle,nodep (default: single,sync,async,oracle; single only "
        f"up to {SCALE.single_max_agents} agents, oracle only below {SCALE.oracle_min_skip:,})", type=comma_list)
    max_clusters: int | None = option(None, "cap on clusters in flight (default: none)", type=int)
    speculate: int | None = option(
        None, f"add an {SPEC_MODE} run: async with speculation, blocked agents computing up to DEPTH steps "
        f"with LLM calls ahead on predicted observations, used only when exact (a bare --speculate: depth "
        f"{SPECULATION_DEPTH}; docs/SPECULATION.md)", nargs="?", const=SPECULATION_DEPTH, type=int)
    speculate_horizon: int = option(
        SPECULATION_HORIZON, "with --speculate: held steps per agent, with or without LLM calls (steps without "
        "calls are free; a longer horizon lets sleepers and walkers run further ahead)", type=int)
    speculate_settle: int | None = option(
        SPECULATION_SETTLE, "with --speculate: a chain waits for a perceived laggard whose public state changed "
        "within this many steps rather than guess it unchanged; 'none': always guess", type=int_or_none)
    executor: str = option("local", "where agent-steps run: local (this process) | ray (a pool of Ray actors)",
                           choices=EXECUTORS)
    ray_address: str | None = option(None, "Ray cluster to join with --executor ray (e.g. auto, "
                                     "ray://head:10001; default: a local Ray)", flag="--address")
    ray_actors: int = option(4, "Ray actors hosting the agents (--executor ray)", flag="--actors", type=int)
    jobs: int | None = option(
        None, "worker processes running the modes side by side (simulated backend; the results are those of "
        "a sequential run); default: one per mode up to the usable CPUs; 1: all modes in this process, one "
        "after another", type=int)
    progress: bool = option(True, "no progress bar (bars are off anyway when stderr is not a terminal)",
                            flag="--no-progress", action="store_false")
    lower_bounds: bool | None = option(
        None, f"skip the critical-path and gpu-limit bounds (computed by default up to "
        f"{SCALE.bounds_max_agents:,} agents)", flag="--no-bounds", action="store_false")
    #: Keep one record per LLM call (for Gantt charts); the CLI sets it with --plot, by scale.
    record_calls: bool = False

    def validate(self) -> None:
        bad = [m for m in self.modes or () if m not in MODES and not (m == SPEC_MODE and self.speculate)]
        if bad:
            raise ConfigError(f"unknown modes {bad}; choose from {MODES}")
        if self.executor not in EXECUTORS:
            raise ConfigError(f"unknown executor {self.executor!r}; choose 'local' or 'ray'")
        if self.executor == "ray" and self.ray_actors < 1:
            raise ConfigError(f"--actors must be >= 1, got {self.ray_actors}")
        if self.jobs is not None and self.jobs < 1:
            raise ConfigError(f"jobs must be >= 1, got {self.jobs}")
        if self.speculate is not None and (self.speculate < 1 or self.executor != "local"):
            raise ConfigError(f"--speculate takes a depth >= 1 and runs agents in this process (not with "
                              f"--executor ray); got depth {self.speculate}, executor {self.executor}")
        tuned = [flag for flag, value, default in (("--speculate-horizon", self.speculate_horizon, SPECULATION_HORIZON),
                                                   ("--speculate-settle", self.speculate_settle, SPECULATION_SETTLE))
                 if value != default]
        if tuned and self.speculate is None:
            raise ConfigError(f"{' and '.join(tuned)} tune speculation: add --speculate [DEPTH] to run it")
        if self.speculate is not None:
            self.speculation()  # its own checks of horizon and settle

    def speculation(self) -> Speculation:
        """The Speculation of the async+spec run (ConfigError for a bad setting)."""
        try:
            return Speculation(depth=self.speculate, horizon=self.speculate_horizon, settle=self.speculate_settle)
        except ConfigError as e:
            raise ConfigError(f"{e} (--speculate, --speculate-horizon, --speculate-settle)") from None


SECTIONS = {"trace": TraceConfig, "llm": ServerConfig, "tracking": TrackingConfig, "run": RunConfig}


def _flat(section) -> dict[str, Any]:
    return {f.name: getattr(section, f.name) for f in fields(section)}


#: flat field name -> its section
_SECTION_OF = {f.name: s for s, cls in SECTIONS.items() for f in fields(cls)}


@dataclass(frozen=True)
class BenchConfig:
    """What to run. Defaults reproduce the paper's setting: Llama-3-8B on NVIDIA L4, the paper's
    dependency tracking; `modes` and `lower_bounds` left at None follow `SCALE`."""

    trace: TraceConfig = field(default_factory=TraceConfig)
    llm: ServerConfig = field(default_factory=ServerConfig)
    tracking: TrackingConfig = PAPER
    run: RunConfig = field(default_factory=RunConfig)

    @classmethod
    def of(cls, **flat: Any) -> BenchConfig:
        """A config from flat field names: `BenchConfig.of(agents=100, gpus=8, modes=("async",))`."""
        return cls().replace(**flat)

    def replace(self, **flat: Any) -> BenchConfig:
        """A copy with the given flat fields changed (each routed to its section)."""
        unknown = sorted(set(flat) - set(_SECTION_OF))
        if unknown:
            raise ConfigError(f"unknown bench settings {unknown}; choose from {sorted(_SECTION_OF)}")
        by_section: dict[str, dict[str, Any]] = {}
        for k, v in flat.items():
            by_section.setdefault(_SECTION_OF[k], {})[k] = v
        return replace(self, **{s: replace(getattr(self, s), **kw) for s, kw in by_section.items()})

    def flat(self) -> dict[str, Any]:
        """Every field by its flat name (the `config` object of the bench's JSON)."""
        return {k: v for s in SECTIONS for k, v in _flat(getattr(self, s)).items()}

    def resolved(self, scale: ScalePolicy = SCALE) -> BenchConfig:
        """The config with the settings left to the scale policy filled in."""
        agents = self.trace.agents
        modes = self.run.modes if self.run.modes is not None else scale.modes(agents)
        if self.run.speculate and SPEC_MODE not in modes:
            modes = (*modes, SPEC_MODE)
        run = replace(self.run, modes=modes,
                      lower_bounds=(self.run.lower_bounds if self.run.lower_bounds is not None
                                    else scale.lower_bounds(agents)))
        return replace(self, run=run)

    def validate(self) -> None:
        for s in SECTIONS:
            getattr(self, s).validate()
        if self.run.executor == "ray" and self.llm.backend == "sim":
            raise ConfigError("--executor ray runs on wall-clock time in separate processes, and the simulated "
                              "server needs one virtual clock: use --backend openai with --executor ray")
        if self.run.jobs is not None and self.run.jobs > 1 and not self._modes_may_share_a_process():
            raise ConfigError("--jobs > 1 runs modes side by side, which only the simulated backend (each mode "
                              "on its own virtual clock) allows: modes on real servers would share their GPUs")

    def _modes_may_share_a_process(self) -> bool:
        return self.llm.backend == "sim" and self.run.executor == "local"

    def worker_count(self) -> int:
        """Processes that run the modes: `jobs`, or by default one per mode up to the usable
        CPUs; always 1 for real servers (modes must not share a server's GPUs) and one mode."""
        modes = self.resolved().run.modes
        if not self._modes_may_share_a_process() or len(modes) < 2:
            return 1
        if self.run.jobs is not None:
            return min(self.run.jobs, len(modes))
        return max(1, min(len(modes), _usable_cpus()))


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
