"""Trace replay: agents that re-enact a recorded day, step by step, with its LLM call chains.

A trace agent's step t makes exactly the calls the trace recorded for that agent-step (a
sequential chain with the recorded input/output token counts) and then moves to the recorded
tile of time t+1. Every mode therefore produces the same trajectories; modes differ only in when
steps may start, which is what the benchmark measures.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from ..env import AsyncParallelEnv
from ..errors import MetropolisError
from ..runtime.agent import StepContext
from ..spaces import move_offsets

PromptFn = Callable[[int], str]


def word_prompt(n_tokens: int) -> str:
    """A prompt of `n_tokens` words "t0 t1 ...": exactly n tokens with a word-level tokenizer
    whose vocabulary is those words (the offline GPU recipe in shared/gpu/REAL_SERVER.md)."""
    return " ".join(f"t{k % 1000}" for k in range(n_tokens))


def fixed_length_generation_config(n_out: int) -> dict:
    """Request fields that make `transformers serve` generate exactly `n_out` tokens
    (shared/gpu/REAL_SERVER.md: it takes a JSON generation_config per request)."""
    return {"generation_config": json.dumps({"min_new_tokens": n_out, "max_new_tokens": n_out,
                                             "do_sample": False})}


class TraceAgent:
    """Re-enacts agent `index` of `trace`.

    prompt: None for backends that take token counts (the simulated server), or a function
    n_tokens -> prompt text for real servers. check_position: verify that the env put the agent
    where the trace says (proves the replay is faithful in env-driven modes).
    """

    def __init__(self, trace, index: int, max_vel: int = 1, prompt: PromptFn | None = None,
                 check_position: bool = True, generation_config: bool = False):
        self.trace = trace
        self.index = index
        self.name = trace.agents[index]
        self.prompt = prompt
        self.check_position = check_position
        self.generation_config = generation_config
        self._move_index = {off: k for k, off in enumerate(move_offsets(max_vel))}

    def state_dict(self) -> None:
        # act() never changes a trace agent: workers that host it (RayExecutor) snapshot nothing,
        # instead of pickling the whole trace after every step.
        return None

    def load_state_dict(self, state: None) -> None:
        pass

    async def act(self, observation: Any, ctx: StepContext) -> dict:
        t = ctx.step
        pos = self.trace.positions
        here = (int(pos[self.index, t, 0]), int(pos[self.index, t, 1]))
        if self.check_position and isinstance(observation, dict) and "position" in observation:
            seen = (int(observation["position"][0]), int(observation["position"][1]))
            if seen != here:
                raise MetropolisError(f"replay of {self.name!r} diverged at step {t}: env has it at {seen}, "
                                      f"the trace at {here}")
        for n_in, n_out in self.trace.calls(self.index, t):
            n_in, n_out = int(n_in), int(n_out)
            # transformers serve: greedy decoding from the generation_config, no temperature field
            extra = ({"extra_body": fixed_length_generation_config(n_out), "temperature": None}
                     if self.generation_config else {})
            await ctx.llm.complete(self.prompt(n_in) if self.prompt else None,
                                   input_tokens=n_in, output_tokens=n_out, max_tokens=n_out, **extra)
        nxt = (int(pos[self.index, t + 1, 0]), int(pos[self.index, t + 1, 1]))
        move = self._move_index.get((nxt[0] - here[0], nxt[1] - here[1]))
        if move is None:
            raise MetropolisError(f"trace moves {self.name!r} from {here} to {nxt} at step {t}: "
                                  f"more than max_vel; the trace is not replayable")
        return {"move": move}


def trace_env(trace, *, radius_p: int | None = None, max_vel: int = 1, bound: Any = "box",
              rules: str = "paper", seed: int = 0) -> AsyncParallelEnv:
    """An env on the trace's world with its agents on their recorded start tiles."""
    start = [(int(x), int(y)) for x, y in trace.positions[:, 0]]
    return AsyncParallelEnv(trace.world, list(trace.agents), start,
                            radius_p=trace.radius_p if radius_p is None else radius_p,
                            max_vel=max_vel, max_steps=int(trace.n_steps),
                            perception="arena" if trace.same_zone else "box", seed=seed, bound=bound,
                            rules=rules)


def trace_agents(trace, prompt: PromptFn | None = None, max_vel: int = 1,
                 generation_config: bool = False) -> dict[str, TraceAgent]:
    return {name: TraceAgent(trace, i, max_vel=max_vel, prompt=prompt, generation_config=generation_config)
            for i, name in enumerate(trace.agents)}
