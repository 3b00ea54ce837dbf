"""Trace: one recorded (or synthesised) simulation, step by step, with the LLM calls it made.

A trace is what the runtime replays and the benchmark measures. For every agent a and time t it
holds the agent's tile, and for every step t (the step that turns time t into time t + 1) the
activity, the conversation, the chain of LLM calls the agent made to compute that step and the
agents it perceived at time t (the step's true dependencies).

Layout (N agents, T steps; every array is numpy):

* `positions` int16 (N, T + 1, 2): (x, y) at time t, i.e. the state before step t;
  `positions[:, t + 1]` is the result of step t. Moves are 4-connected and walkable.
* `activity` int32 (N, T): index into `activities` (strings) of what the agent does in step t.
* `partner` int32 (N, T): the agent it converses with in step t, -1 when none;
  `utterance` bool (N, T): whether it speaks in step t.
* LLM calls, in CSR form: `n_calls` uint16 (N, T) calls in the chain of (a, t), and flat
  `input_tokens`, `output_tokens` int32 and `call_kind` uint8 (index into `call_kinds`), ordered
  step-major (all calls of step 0 agent 0, of step 0 agent 1, ..., then step 1 ...) and, inside
  one agent-step, in chain order (each call needs the previous one's answer).
* Perception, in CSR form: `n_perceived` int16 (N, T) and flat `perceived_ids` int32, ordered
  the same way; ids of one agent-step ascend. Computed with the env's rule (box of `radius_p`,
  narrowed to one `world.zone` when `same_zone`) on `positions[:, t]`.
* `seconds` int64 (T + 1,): game seconds since `start_time` at time t (recorded runs have clock
  jumps; synthetic ones advance `seconds_per_step` per step).
* `plans` (`plans.Plans` or None): what each persona intended at each step, as its generator
  planned it then (genagents-day); recorded runs carry none. Lookahead promises use only these.

Derived state (CSR offsets) is computed on first use, not stored.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..world import TileMap, _assemble, the_ville, villes
from . import plans as P

#: Version of the on-disk format written by `Trace.save` (see docs/WORKLOADS.md).
FORMAT_VERSION = 1

_ARRAYS = ("positions", "activity", "partner", "utterance", "n_calls", "input_tokens",
           "output_tokens", "call_kind", "n_perceived", "perceived_ids", "seconds")
_DTYPES = {"positions": np.int16, "activity": np.int32, "partner": np.int32, "utterance": np.bool_,
           "n_calls": np.uint16, "input_tokens": np.int32, "output_tokens": np.int32,
           "call_kind": np.uint8, "n_perceived": np.int16, "perceived_ids": np.int32,
           "seconds": np.int64}


@dataclass(frozen=True)
class TraceStats:
    """Summary of a trace, in the paper's measures.

    calls_per_hour[h] counts the calls of steps whose time falls in hour h of the start date
    (h = 0 is midnight; a trace starting at 12:00 has its first calls at index 12).
    true_deps_per_agent_step: 1 + agents perceived, averaged over agent-steps (the paper's 1.85).
    """

    agents: int
    steps: int
    calls: int
    calls_per_hour: np.ndarray
    mean_input_tokens: float
    mean_output_tokens: float
    true_deps_per_agent_step: float
    max_chain: int
    agent_steps_with_calls: int
    conversation_agent_steps: int

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["calls_per_hour"] = [int(c) for c in self.calls_per_hour]
        return d


@dataclass(frozen=True, eq=False)
class Trace:
    """A replayable workload; see the module docstring for the meaning of every array.

    Build one with a generator (`load_workload`, `genagents_day`, `the_ville_morning`) or
    `Trace.load`. Agent arguments of the methods accept an index or a name.
    """

    name: str
    agents: tuple[str, ...]
    world: TileMap
    positions: np.ndarray
    activity: np.ndarray
    activities: tuple[str, ...]
    partner: np.ndarray
    utterance: np.ndarray
    n_calls: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    call_kind: np.ndarray
    call_kinds: tuple[str, ...]
    n_perceived: np.ndarray
    perceived_ids: np.ndarray
    seconds: np.ndarray
    radius_p: int = 4
    same_zone: bool = True
    start_time: str = "2023-02-13T00:00:00"
    seconds_per_step: int = 10
    meta: dict = field(default_factory=dict)
    plans: P.Plans | None = None

    def __post_init__(self) -> None:
        n, t = len(self.agents), self.n_steps
        shapes = {"positions": (n, t + 1, 2), "activity": (n, t), "partner": (n, t),
                  "utterance": (n, t), "n_calls": (n, t), "n_perceived": (n, t), "seconds": (t + 1,)}
        for key, shape in shapes.items():
            a = getattr(self, key)
            if a.shape != shape:
                raise ConfigError(f"trace {self.name}: {key} has shape {a.shape}, expected {shape}")
        calls = int(self.n_calls.sum(dtype=np.int64))
        for key in ("input_tokens", "output_tokens", "call_kind"):
            if getattr(self, key).shape != (calls,):
                raise ConfigError(f"trace {self.name}: {key} must hold one entry per call ({calls})")
        if self.perceived_ids.shape != (int(self.n_perceived.sum(dtype=np.int64)),):
            raise ConfigError(f"trace {self.name}: perceived_ids must match n_perceived")
        if self.plans is not None:
            self.plans.check(n, t, self.name)

    # -- sizes and lookups -----------------------------------------------------------------

    @property
    def n_agents(self) -> int:
        return len(self.agents)

    @property
    def n_steps(self) -> int:
        """Steps in the trace: times run 0..n_steps, steps 0..n_steps - 1."""
        return int(self.positions.shape[1]) - 1

    def agent_index(self, agent: int | str) -> int:
        """The index of an agent given by index or name; ConfigError if there is none."""
        if isinstance(agent, str):
            try:
                return self._index[agent]
            except KeyError:
                raise ConfigError(f"trace {self.name} has no agent {agent!r}") from None
        i = int(agent)
        if not 0 <= i < self.n_agents:
            raise ConfigError(f"agent index {i} out of range 0..{self.n_agents - 1}")
        return i

    @cached_property
    def _index(self) -> dict[str, int]:
        return {a: i for i, a in enumerate(self.agents)}

    def _cell(self, agent: int | str, step: int) -> int:
        t = int(step)
        if not 0 <= t < self.n_steps:
            raise ConfigError(f"step {t} out of range 0..{self.n_steps - 1}")
        return t * self.n_agents + self.agent_index(agent)

    @cached_property
    def call_offsets(self) -> np.ndarray:
        """int64 (N * T + 1,): calls of (a, t) are flat entries [o[t*N + a], o[t*N + a + 1])."""
        return _offsets(self.n_calls)

    @cached_property
    def perceived_offsets(self) -> np.ndarray:
        """int64 (N * T + 1,): perceived ids of (a, t) are [o[t*N + a], o[t*N + a + 1])."""
        return _offsets(self.n_perceived)

    def call_tokens(self, agent: int | str, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(input_tokens, output_tokens) of the chain of `agent` at `step`, as array views."""
        k = self._cell(agent, step)
        lo, hi = self.call_offsets[k], self.call_offsets[k + 1]
        return self.input_tokens[lo:hi], self.output_tokens[lo:hi]

    def calls(self, agent: int | str, step: int) -> list[tuple[int, int]]:
        """The chain of LLM calls of `agent` at `step`: [(input_tokens, output_tokens), ...]
        in chain order (each call waits for the previous one). Empty when it made none."""
        i, o = self.call_tokens(agent, step)
        return list(zip(i.tolist(), o.tolist()))

    def perceived(self, agent: int | str, step: int) -> list[int]:
        """Indices of the agents `agent` perceived at time `step` (itself excluded), ascending:
        the agents its step `step` truly depends on."""
        k = self._cell(agent, step)
        return self.perceived_ids[self.perceived_offsets[k]:self.perceived_offsets[k + 1]].tolist()

    def prompt(self, agent: int | str, step: int, index: int) -> str:
        """A synthetic prompt for call `index` of (agent, step), about `input_tokens` words long.

        Deterministic; for backends that need text. Real prompt text is not recorded.
        """
        k = self._cell(agent, step)
        lo, hi = self.call_offsets[k], self.call_offsets[k + 1]
        if not 0 <= index < hi - lo:
            raise ConfigError(f"{self.agents[k % self.n_agents]} made {hi - lo} calls at step {step}")
        a = self.agent_index(agent)
        kind = self.call_kinds[int(self.call_kind[lo + index])]
        head = (f"[{kind}] You are {self.agents[a]}. It is step {step}. "
                f"Current activity: {self.activities[int(self.activity[a, step])]}. ")
        words = int(self.input_tokens[lo + index])
        filler = " ".join(_FILLER[(step + a + j) % len(_FILLER)] for j in range(max(0, words - len(head.split()))))
        return head + filler

    # -- derived traces and summaries -------------------------------------------------------

    def window(self, start_step: int, end_step: int) -> "Trace":
        """The steps start_step..end_step - 1 as a trace of their own, re-based to step 0.

        Positions keep times start_step..end_step; `start_time` moves to the window's first
        time and `seconds` restart at 0. `meta["window"]` records where it came from.
        """
        s, e = int(start_step), int(end_step)
        if not 0 <= s < e <= self.n_steps:
            raise ConfigError(f"window [{s}, {e}) must lie inside 0..{self.n_steps} with start < end")
        n = self.n_agents
        c0, c1 = self.call_offsets[s * n], self.call_offsets[e * n]
        p0, p1 = self.perceived_offsets[s * n], self.perceived_offsets[e * n]
        start = (_dt.datetime.fromisoformat(self.start_time)
                 + _dt.timedelta(seconds=int(self.seconds[s]))).isoformat()
        meta = dict(self.meta)
        base = self.meta.get("window", {"start_step": 0})
        meta["window"] = {"start_step": base["start_step"] + s, "end_step": base["start_step"] + e,
                          "of": self.meta.get("window", {}).get("of", self.name)}
        return replace(
            self, positions=self.positions[:, s:e + 1], activity=self.activity[:, s:e],
            partner=self.partner[:, s:e], utterance=self.utterance[:, s:e],
            n_calls=self.n_calls[:, s:e], input_tokens=self.input_tokens[c0:c1],
            output_tokens=self.output_tokens[c0:c1], call_kind=self.call_kind[c0:c1],
            n_perceived=self.n_perceived[:, s:e], perceived_ids=self.perceived_ids[p0:p1],
            seconds=self.seconds[s:e + 1] - self.seconds[s], start_time=start, meta=meta,
            plans=None if self.plans is None else self.plans.window(s, e))

    def hour_of_step(self) -> np.ndarray:
        """int64 (T,): hour of step t's time counted from midnight of the start date."""
        start = _dt.datetime.fromisoformat(self.start_time)
        midnight = start.hour * 3600 + start.minute * 60 + start.second
        return (midnight + self.seconds[:-1]) // 3600

    def stats(self) -> TraceStats:
        """Calls, calls per hour, token means, true dependencies per agent-step (see TraceStats)."""
        per_step = self.n_calls.sum(axis=0, dtype=np.int64)
        hours = self.hour_of_step()
        per_hour = np.bincount(hours, weights=per_step, minlength=24).astype(np.int64)
        calls = int(per_step.sum())
        agent_steps = self.n_agents * self.n_steps
        return TraceStats(
            agents=self.n_agents, steps=self.n_steps, calls=calls, calls_per_hour=per_hour,
            mean_input_tokens=float(self.input_tokens.mean()) if calls else 0.0,
            mean_output_tokens=float(self.output_tokens.mean()) if calls else 0.0,
            true_deps_per_agent_step=1.0 + float(self.n_perceived.mean(dtype=np.float64)) if agent_steps else 0.0,
            max_chain=int(self.n_calls.max()) if agent_steps else 0,
            agent_steps_with_calls=int(np.count_nonzero(self.n_calls)),
            conversation_agent_steps=int(np.count_nonzero(self.partner >= 0)))

    # -- files -----------------------------------------------------------------------------

    def header(self) -> dict[str, Any]:
        """The JSON header written by `save`: everything but the arrays."""
        return {
            "format": "metropolis-trace", "version": FORMAT_VERSION, "name": self.name,
            "agents": list(self.agents), "n_steps": self.n_steps, "start_time": self.start_time,
            "seconds_per_step": self.seconds_per_step, "radius_p": self.radius_p,
            "same_zone": self.same_zone, "activities": list(self.activities),
            "call_kinds": list(self.call_kinds), "world": _world_spec(self.world, self.meta),
            "meta": self.meta,
        }

    def save(self, path: str | Path, compress: bool = False) -> Path:
        """Write the trace as one `.npz` file: the arrays named as the fields, plus `header`
        (the JSON of `header()` as utf-8 bytes). Maps other than the_ville / villes travel as
        `world_*` arrays. Returns the path written (".npz" appended when missing)."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        arrays = {k: getattr(self, k) for k in _ARRAYS}
        arrays.update(P.arrays(self.plans))
        header = self.header()
        arrays["header"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
        if header["world"]["map"] == "custom":
            for k in ("walkable", "sector", "arena"):
                arrays["world_" + k] = getattr(self.world, k)
        (np.savez_compressed if compress else np.savez)(path, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Trace":
        """Read a file written by `save`; ConfigError if it is not a trace of a known version."""
        with np.load(Path(path), allow_pickle=False) as z:
            if "header" not in z.files:
                raise ConfigError(f"{path} is not a metropolis trace (no header)")
            header = json.loads(bytes(z["header"]).decode("utf-8"))
            if header.get("format") != "metropolis-trace" or header.get("version") != FORMAT_VERSION:
                raise ConfigError(f"{path}: unsupported trace format {header.get('format')!r} "
                                  f"version {header.get('version')!r} (expected {FORMAT_VERSION})")
            arrays = {k: np.asarray(z[k], dtype=_DTYPES[k]) for k in _ARRAYS}
            arrays["plans"] = P.from_arrays(z)
            world = _world_from_spec(header["world"], z)
        return cls(name=header["name"], agents=tuple(header["agents"]), world=world,
                   activities=tuple(header["activities"]), call_kinds=tuple(header["call_kinds"]),
                   radius_p=int(header["radius_p"]), same_zone=bool(header["same_zone"]),
                   start_time=header["start_time"], seconds_per_step=int(header["seconds_per_step"]),
                   meta=header["meta"], **arrays)

    def to_jsonl(self, path: str | Path) -> Path:
        """A human-readable export: the header on line 1, then one JSON object per agent-step
        in step-major order: {"step", "agent", "x", "y", "activity", "partner", "utterance",
        "perceived": [names], "calls": [[input_tokens, output_tokens, kind], ...]}.
        `x, y` are the position at time `step` (before the step)."""
        path = Path(path)
        names = self.agents
        co, po = self.call_offsets, self.perceived_offsets
        with open(path, "w", encoding="utf-8") as f:
            f.write(json.dumps(self.header()) + "\n")
            buf = io.StringIO()
            for t in range(self.n_steps):
                for a in range(self.n_agents):
                    k = t * self.n_agents + a
                    p = int(self.partner[a, t])
                    rec = {"step": t, "agent": names[a], "x": int(self.positions[a, t, 0]),
                           "y": int(self.positions[a, t, 1]),
                           "activity": self.activities[int(self.activity[a, t])],
                           "partner": names[p] if p >= 0 else None,
                           "utterance": bool(self.utterance[a, t]),
                           "perceived": [names[j] for j in self.perceived_ids[po[k]:po[k + 1]]],
                           "calls": [[int(i), int(o), self.call_kinds[int(c)]] for i, o, c in
                                     zip(self.input_tokens[co[k]:co[k + 1]], self.output_tokens[co[k]:co[k + 1]],
                                         self.call_kind[co[k]:co[k + 1]])]}
                    buf.write(json.dumps(rec))
                    buf.write("\n")
                f.write(buf.getvalue())
                buf.seek(0)
                buf.truncate()
        return path


def _offsets(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts.T.ravel(), out=out[1:])
    return out


def _world_spec(world: TileMap, meta: dict[str, Any]) -> dict[str, Any]:
    # Known maps are rebuilt on load rather than stored: generators record how in meta["world"].
    if world is the_ville():
        return {"map": "the_ville"}
    spec = meta.get("world")
    if isinstance(spec, dict) and spec.get("map") == "villes":
        return {"map": "villes", "k": int(spec["k"]), "cols": spec.get("cols")}
    return {"map": "custom", "name": world.name, "sector_names": list(world.sector_names),
            "arena_names": {str(k): v for k, v in world.arena_names.items()}}


def _world_from_spec(spec: dict[str, Any], z) -> TileMap:
    kind = spec.get("map")
    if kind == "the_ville":
        return the_ville()
    if kind == "villes":
        return villes_map(int(spec["k"]), spec.get("cols"))
    if kind == "custom":
        walkable = np.array(z["world_walkable"], dtype=bool)
        return _assemble(spec["name"], walkable, np.array(z["world_sector"], dtype=np.int32),
                         np.array(z["world_arena"], dtype=np.int32), tuple(spec["sector_names"]),
                         {int(k): v for k, v in spec["arena_names"].items()})
    raise ConfigError(f"unknown world spec {spec!r} in trace header")


@lru_cache(maxsize=4)
def villes_map(k: int, cols: int | None) -> TileMap:
    """`world.villes(k, cols)`, built once per (k, cols): concatenated maps are large."""
    return villes(k, cols)


_FILLER = ("the", "town", "of", "Smallville", "morning", "plan", "memory", "cafe", "friend", "today",
           "conversation", "schedule", "walk", "park", "work", "home", "idea", "book", "music", "lunch")
