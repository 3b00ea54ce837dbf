"""Trace replay: agents that re-enact a recorded day, step by step, with its LLM call chains.

A trace agent's step t makes exactly the calls the trace recorded for that agent-step (a
sequential chain with the recorded input/output token counts) and then moves to the recorded
tile of time t+1. Every mode therefore produces the same trajectories; modes differ only in when
steps may start, which is what the benchmark measures.
"""

from __future__ import annotations

import json
import weakref
from typing import Any, Callable

import numpy as np

from ..env import AsyncParallelEnv
from ..errors import MetropolisError
from ..runtime.agent import StepContext
from ..spaces import move_offsets
from ..workloads.promises import declaration, lookahead_promises

PromptFn = Callable[[int], str]


def word_prompt(n_tokens: int) -> str:
    """A prompt of `n_tokens` words "t0 t1 ...": exactly n tokens with a word-level tokenizer
    whose vocabulary is those words (the offline GPU recipe in docs/REAL_SERVER.md)."""
    return " ".join(f"t{k % 1000}" for k in range(n_tokens))


def fixed_length_generation_config(n_out: int) -> dict:
    """Request fields that make `transformers serve` generate exactly `n_out` tokens
    (docs/REAL_SERVER.md: it takes a JSON generation_config per request)."""
    return {"generation_config": json.dumps({"min_new_tokens": n_out, "max_new_tokens": n_out,
                                             "do_sample": False})}


class ReplayTable:
    """What trace agents read at every step, precomputed once per trace and shared by all its
    agents: per agent, memoryviews (plain Python ints on indexing, no numpy scalars) of its
    packed tiles, move indices and call counts, and the flat call arrays.

    A 10,000-agent replay makes millions of agent-steps; `Trace.calls` and numpy indexing per
    step were a visible share of them.
    """

    def __init__(self, trace, max_vel: int = 1):
        offsets = move_offsets(max_vel)
        pos = np.asarray(trace.positions, dtype=np.int64)  # (N, T + 1, 2)
        self.n_agents = int(trace.n_agents)
        # (x, y) packed in one int: a position compare is one memoryview read.
        self.packed = _rows(pos[:, :, 0] * _PACK + pos[:, :, 1], np.int32)
        d = pos[:, 1:] - pos[:, :-1]  # (N, T, 2) displacement of every step
        lut = np.full((2 * max_vel + 1, 2 * max_vel + 1), -1, dtype=np.int64)
        for k, (dx, dy) in enumerate(offsets):
            lut[dy + max_vel, dx + max_vel] = k
        dx, dy = d[:, :, 0], d[:, :, 1]
        inside = (np.abs(dx) <= max_vel) & (np.abs(dy) <= max_vel)
        moves = np.full(dx.shape, -1, dtype=np.int64)
        moves[inside] = lut[dy[inside] + max_vel, dx[inside] + max_vel]
        self.moves = _rows(moves, np.int8)  # -1: a step the env cannot make (more than max_vel)
        self.n_calls = _rows(trace.n_calls, np.uint16)
        self.call_offsets = memoryview(np.ascontiguousarray(trace.call_offsets, dtype=np.int64))
        self.input_tokens = memoryview(np.ascontiguousarray(trace.input_tokens, dtype=np.int32))
        self.output_tokens = memoryview(np.ascontiguousarray(trace.output_tokens, dtype=np.int32))
        self._trace = weakref.ref(trace)
        self._promises: dict[str, tuple[list[memoryview], ...]] = {}

    def promises(self, lookahead: str) -> tuple[list[memoryview], ...]:
        """Per agent, the rows of `workloads.promises.lookahead_promises` of the trace: (end,
        kind, target, depart), computed on first use."""
        if lookahead not in self._promises:
            got = lookahead_promises(self._trace(), lookahead)
            self._promises[lookahead] = tuple(_rows(x, np.int32) for x in got)
        return self._promises[lookahead]


_PACK = 1 << 16  # tiles are int16 (0..32767): x * _PACK + y fits an int32

_TABLES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def replay_table(trace, max_vel: int = 1) -> ReplayTable:
    """The ReplayTable of `trace` for `max_vel`, built once per trace (cached while it lives)."""
    per_trace = _TABLES.setdefault(trace, {})
    table = per_trace.get(max_vel)
    if table is None:
        table = per_trace[max_vel] = ReplayTable(trace, max_vel)
    return table


def _rows(a: np.ndarray, dtype) -> list[memoryview]:
    a = np.ascontiguousarray(a, dtype=dtype)
    return [memoryview(row) for row in a]


class TraceAgent:
    """Re-enacts agent `index` of `trace`.

    prompt: None for backends that take token counts (the simulated server), or a function
    n_tokens -> prompt text for real servers. check_position: verify that the env put the agent
    where the trace says (proves the replay is faithful in env-driven modes); the observation
    may be the env's dict or, with the env's `observation_mode = "position"`, the (x, y) tile.
    lookahead: "off", "persona" (declare what the persona knows ahead: its walks as routes, its
    sleep and conversations as paths; needs an env with rules="versioned"), "plan-ahead" (the
    same on a `promises.plan_ahead` trace, announcing each next walk on arrival) or
    "clairvoyant" (its whole future: an upper bound); see workloads/promises.py.
    """

    def __init__(self, trace, index: int, max_vel: int = 1, prompt: PromptFn | None = None,
                 check_position: bool = True, generation_config: bool = False, lookahead: str = "off"):
        self.trace = trace
        self.index = index
        self.name = trace.agents[index]
        self.prompt = prompt
        self.check_position = check_position
        self.generation_config = generation_config
        self.max_vel = max_vel
        self.lookahead = lookahead
        self._bind_table()

    def _bind_table(self) -> None:
        table = replay_table(self.trace, self.max_vel)
        self._packed = table.packed[self.index]
        self._moves = table.moves[self.index]
        self._n_calls = table.n_calls[self.index]
        self._table = table
        if self.lookahead != "off":
            self._promise_end, self._kind, self._target, self._depart = (
                rows[self.index] for rows in table.promises(self.lookahead))
        else:
            self._promise_end = self._kind = self._target = self._depart = None

    def state_dict(self) -> None:
        # act() never changes a trace agent: workers that host it (RayExecutor) snapshot nothing,
        # instead of pickling the whole trace after every step.
        return None

    def load_state_dict(self, state: None) -> None:
        pass

    def __getstate__(self) -> dict:
        # memoryviews do not pickle (checkpoints, Ray workers): rebuild them from the trace.
        d = dict(self.__dict__)
        for k in ("_packed", "_moves", "_n_calls", "_table", "_promise_end", "_kind", "_target", "_depart"):
            del d[k]
        return d

    def __setstate__(self, d: dict) -> None:
        self.__dict__.update(d)
        self._bind_table()

    def _tile(self, t: int) -> tuple[int, int]:
        p = self.trace.positions
        return (int(p[self.index, t, 0]), int(p[self.index, t, 1]))

    async def act(self, observation: Any, ctx: StepContext) -> dict:
        t = ctx.step
        if self.check_position and observation is not None:
            if type(observation) is tuple:
                seen = observation
            elif isinstance(observation, dict) and "position" in observation:
                seen = observation["position"]
            else:
                seen = None
            if seen is not None and int(seen[0]) * _PACK + int(seen[1]) != self._packed[t]:
                raise MetropolisError(f"replay of {self.name!r} diverged at step {t}: env has it at "
                                      f"{(int(seen[0]), int(seen[1]))}, the trace at {self._tile(t)}")
        n = self._n_calls[t]
        if n:
            table = self._table
            lo = table.call_offsets[t * table.n_agents + self.index]
            ins, outs = table.input_tokens, table.output_tokens
            llm = ctx.llm
            for k in range(lo, lo + n):
                n_in, n_out = ins[k], outs[k]
                # transformers serve: greedy decoding from the generation_config, no temperature field
                extra = ({"extra_body": fixed_length_generation_config(n_out), "temperature": None}
                         if self.generation_config else {})
                await llm.complete(self.prompt(n_in) if self.prompt else None,
                                   input_tokens=n_in, output_tokens=n_out, max_tokens=n_out, **extra)
        move = self._moves[t]
        if move < 0:
            raise MetropolisError(f"trace moves {self.name!r} from {self._tile(t)} to {self._tile(t + 1)} at "
                                  f"step {t}: more than max_vel; the trace is not replayable")
        if self._promise_end is not None and self._promise_end[t] > t:
            # What the persona knows ahead, through step e, from its plans (workloads/promises.py):
            # the route of its walk (once arrived: of its next walk), or its exact tiles.
            return {"move": move, **declaration(self.trace, self.index, t, self._promise_end[t], self._kind[t],
                                                 self._target[t], self._depart[t])}
        return {"move": move}


def trace_env(trace, *, radius_p: int | None = None, max_vel: int = 1, bound: Any = "box",
              rules: str = "paper", seed: int = 0) -> AsyncParallelEnv:
    """An env on the trace's world with its agents on their recorded start tiles. Trace agents
    read only their tile, so the env hands out tiles, not observation dicts
    (`observation_mode = "position"`)."""
    start = [(int(x), int(y)) for x, y in trace.positions[:, 0]]
    env = AsyncParallelEnv(trace.world, list(trace.agents), start,
                            radius_p=trace.radius_p if radius_p is None else radius_p,
                            max_vel=max_vel, max_steps=int(trace.n_steps),
                            perception="arena" if trace.same_zone else "box", seed=seed, bound=bound,
                            rules=rules)
    env.observation_mode = "position"
    return env


def trace_agents(trace, prompt: PromptFn | None = None, max_vel: int = 1,
                 generation_config: bool = False, lookahead: str = "off") -> dict[str, TraceAgent]:
    return {name: TraceAgent(trace, i, max_vel=max_vel, prompt=prompt, generation_config=generation_config,
                             lookahead=lookahead)
            for i, name in enumerate(trace.agents)}
