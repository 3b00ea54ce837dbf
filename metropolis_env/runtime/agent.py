"""The agent protocol: what the runtime calls to make an agent act.

An agent's step is `await agent.act(observation, ctx)`, returning an action for the env (a move
index, or `{"move", "activity", "utterance"}`). Inside it, the agent may make any number of LLM
calls through `ctx.llm`; calls of one step form a sequential chain (as in Generative Agents'
perceive -> retrieve -> plan), numbered 0, 1, ... so that a replay cache can key them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..backends.base import Backend, LLMRequest, LLMResponse


@runtime_checkable
class Agent(Protocol):
    """Anything with `async def act(observation, ctx) -> action`."""

    async def act(self, observation: Any, ctx: "StepContext") -> Any: ...


class LLMClient:
    """An agent-step's handle on the backend: fills in agent, step and chain index, and reports
    every call to the run's metrics. Calls of a speculative step (computed ahead on a predicted
    observation) carry `speculative=True`: servers run them behind every other call."""

    def __init__(self, backend: Backend, agent: str, step: int, metrics, model: str | None = None,
                 speculative: bool = False):
        self._backend = backend
        self.speculative = speculative
        self.agent = agent
        self.step = step
        self._metrics = metrics
        self._model = model
        self.calls = 0

    async def complete(self, prompt: str | None = None, *, messages: list[dict] | None = None,
                       max_tokens: int = 64, input_tokens: int | None = None,
                       output_tokens: int | None = None, temperature: float | None = 0.0,
                       model: str | None = None, **extra: Any) -> LLMResponse:
        """Make the next call of this step's chain and return the backend's response."""
        req = LLMRequest(agent=self.agent, step=self.step, index=self.calls, prompt=prompt,
                         messages=tuple(messages) if messages is not None else None,
                         max_tokens=max_tokens, input_tokens=input_tokens,
                         output_tokens=output_tokens, temperature=temperature,
                         model=model or self._model, speculative=self.speculative, extra=extra)
        self.calls += 1
        self._metrics.call_started()
        try:
            resp = await self._backend.complete(req)
        finally:
            self._metrics.call_finished()
        self._metrics.record_call(req, resp)
        return resp


@dataclass
class StepContext:
    """What an agent gets besides its observation: who and when it is, and its LLM client."""

    agent: str
    step: int
    llm: LLMClient
    extra: dict = field(default_factory=dict)
