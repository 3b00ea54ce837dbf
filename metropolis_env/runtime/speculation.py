"""Speculation: blocked agents compute their next steps ahead, used only when exactly right.

An agent blocked at step s (a laggard might still enter its view) waits. With speculation, a
copy of it acts at s on its *predicted* observation (`prediction.predict_observation`: laggards
where they are now), then at s+1 on the observation predicted from that held action, up to
`depth` steps ahead; their LLM calls go to the server behind every other call
(`LLMRequest.speculative`). When the agent becomes ready at s, the env's real observation is
compared with the predicted one (the full observation: everything the agent perceives, whatever
part of it the agent reads). Equal: the held action is submitted at once (or, if still being
computed, awaited with its remaining calls promoted to normal priority) and the copy becomes the
agent. Different: the chain is cancelled (its in-flight calls too) and the step runs normally.
A commit that changes a held prediction (a laggard moved while it still holds the agent back)
cancels that chain at once. The env is never touched by a speculative step, so nothing needs
undoing, and for deterministic agents a run with speculation equals the run without.

Contract: an agent's act() may depend only on its observation, its own state and its LLM
answers, as for Ray workers; it may read its own tile from the env (e.g. `env.move_to`) only
with depth 1, since a deeper speculative step runs while the env still has it where it is.
Agents are copied by pickling (references to the env kept); an agent whose `state_dict()`
returns None is taken as unchanged by act() and not copied.
"""

from __future__ import annotations

import asyncio
import heapq
from collections import deque
from typing import Any

from ..errors import AgentStepError, ConfigError, MetropolisError
from ..prediction import (VIEWS, OwnState, agent_view, full_observation, observation_key, own_after, own_state, predict,
                          watchers)
from . import eager
from .agent import LLMClient
from .answers import Answers
from .checkpoint import restore, snapshot
from .executors import LocalExecutor, cancel_all, gather_eager
from .metrics import gpu_shares
from .observers import RunObserver
from .scheduling import DependencyPolicy


class _Ahead:
    """One speculative step of an agent: its own state at the step, the key of its predicted
    observation, the agent copy it runs on (after the step: the agent's state after it), its
    action (a future), its LLM client and the calls it made."""

    __slots__ = ("own", "key", "agent", "action", "llm", "calls", "wait")

    def __init__(self, own: OwnState, key: tuple, agent: Any, action: asyncio.Future, llm: LLMClient,
                 calls: "_HeldCalls"):
        self.own, self.key, self.agent, self.action, self.llm, self.calls = own, key, agent, action, llm, calls
        self.wait: asyncio.Future | None = None  # while waiting for a slot (max_inflight)

    @property
    def step(self) -> int:
        return self.own.step


class _HeldCalls:
    """Stands in for the run's metrics in a speculative step: calls count as outstanding at once
    (they load the server), but are recorded only once the step is adopted."""

    __slots__ = ("metrics", "owner", "done", "started", "adopted")

    def __init__(self, metrics, owner: "Speculation"):
        self.metrics, self.owner = metrics, owner
        self.done: list = []
        self.started = 0
        self.adopted = False

    def now(self) -> float:
        return self.metrics.now()

    def call_started(self) -> None:
        self.started += 1
        self.owner.issued += 1
        self.metrics.call_started()

    def call_finished(self) -> None:
        self.metrics.call_finished()

    def record_call(self, req, resp) -> None:
        self.owner.spec_tokens += resp.input_tokens + resp.output_tokens
        if self.adopted:
            self.metrics.record_call(req, resp)
        else:
            self.done.append((req, resp))

    def step_done(self, latency: float) -> None:
        pass  # an adopted step's latency is measured from its real dispatch

    def adopt(self) -> None:
        self.adopted = True
        for req, resp in self.done:
            self.metrics.record_call(req, resp)
        self.done.clear()


class _Slots:
    """At most `n` speculative steps computing at once; waiters are let in smallest step first
    (the step most likely to be needed soonest), not in arrival order. A waiting step whose
    result is needed now (adopted) is let through at once, without a slot."""

    def __init__(self, n: int):
        self.free = n
        self.waiting: list[tuple[int, int, asyncio.Future]] = []
        self._seq = 0

    async def acquire(self, ahead: "_Ahead") -> bool:
        """Wait for a slot; True if one was taken (then `release` it), False if let through."""
        if self.free > 0 and not self.waiting:
            self.free -= 1
            return True
        ahead.wait = fut = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self.waiting, (ahead.step, self._seq, fut))
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.result():
                self.release()  # granted just as it was cancelled: pass the slot on
            raise

    def let_through(self, ahead: "_Ahead") -> None:
        if ahead.wait is not None and not ahead.wait.done():
            ahead.wait.set_result(False)

    def release(self) -> None:
        while self.waiting:
            _, _, fut = heapq.heappop(self.waiting)
            if not fut.done():
                fut.set_result(True)
                return
        self.free += 1


class _Chain:
    __slots__ = ("steps", "task", "room")

    def __init__(self):
        self.steps: deque[_Ahead] = deque()
        self.task: asyncio.Task | None = None
        self.room = asyncio.Event()


#: Default depth: speculative steps with LLM calls held per agent (chosen by measurement,
#: docs/SPECULATION.md).
DEPTH = 4
#: max_inflight="auto": max(AUTO_MIN, agents // AUTO_PER) speculative steps computing at once.
#: Unlimited speculation slowed a GPU-bound run (1,000 agents on 8 GPUs) by 2.6%; this limit
#: made it 1.1% faster, and costs nothing at 25 agents (docs/SPECULATION.md).
AUTO_MIN, AUTO_PER = 16, 8


class Speculation(RunObserver):
    """Speculative execution for a Controller (mode "async", local runner).

    depth: held speculative steps with LLM calls per agent (steps without calls are free and
    limited only by `horizon`, in steps); 1: one costly step ahead at most.
    max_inflight: speculative agent-steps computing at once over all agents, smallest step
    first ("auto": max(16, agents // 8); None: no limit).
    reuse: answer an agent's later calls that are identical to completed calls of its discarded
    speculative steps from those (`answers.Answers`; greedy calls with a prompt only).
    """

    def __init__(self, depth: int = DEPTH, max_inflight: int | str | None = "auto", horizon: int = 256,
                 reuse: bool = True):
        if not isinstance(depth, int) or depth < 1:
            raise ConfigError(f"speculation depth must be an int >= 1, got {depth!r}")
        if max_inflight != "auto" and max_inflight is not None and (not isinstance(max_inflight, int)
                                                                     or max_inflight < 1):
            raise ConfigError(f"speculation max_inflight must be an int >= 1, 'auto' or None, got {max_inflight!r}")
        self.depth, self.max_inflight, self.horizon, self.reuse = depth, max_inflight, horizon, reuse

    # -- set-up ------------------------------------------------------------------------------

    def check(self, controller) -> None:
        """Raise ConfigError for what speculation cannot run on; called at construction."""
        if not isinstance(controller.policy, DependencyPolicy):
            raise ConfigError(f"speculation runs with mode 'async' only, not {controller.mode!r}: the other "
                              f"modes never hold an agent back on a prediction")
        if not isinstance(controller.runner, LocalExecutor):
            raise ConfigError("speculation runs agents in this process only (no executor): it copies them")
        if controller.env.observation_mode not in VIEWS:
            raise ConfigError(f"speculation hands agents predicted observations of modes {VIEWS}, not "
                              f"{controller.env.observation_mode!r}")
        self._stateless = {}
        for name, agent in controller.agents.items():
            self._stateless[name] = _is_stateless(agent)
            if self._stateless[name]:
                continue
            try:
                restore(snapshot(agent, controller.env), controller.env)
            except Exception as e:
                raise ConfigError(f"speculation runs copies of agents, and agent {name!r} cannot be copied "
                                  f"(pickled): {type(e).__name__}: {e}. Make it picklable (or give it "
                                  f"state_dict() returning None if act() never changes it), or run "
                                  f"without speculation") from None

    def attach(self, controller, dispatch):
        """Start a run: returns the dispatch function that uses held results."""
        self.c, self.env, self.inner = controller, controller.env, dispatch
        self.chains: dict[str, _Chain] = {}
        self.want: set[str] = set()     # blocked agents without a chain
        self.moved: list[str] = []      # committed since the last look
        limit = self.max_inflight
        if limit == "auto":
            limit = max(AUTO_MIN, len(self.env.possible_agents) // AUTO_PER)
        self.slots = _Slots(limit) if limit else None
        self.hits = self.misses = self.cuts = self.issued = self.wasted_calls = 0
        self.wasted_tokens = self.spec_tokens = 0
        self.answers = Answers() if self.reuse else None
        if self.answers is not None:  # every call of the run, real or speculative, may be a re-run
            self._backend, controller.runner.backend = controller.runner.backend, self.answers.backend(
                controller.runner.backend)
        return self.dispatch

    # -- observer hooks ----------------------------------------------------------------------

    def committed(self, agent: str, step: int, action: Any) -> None:
        self.moved.append(agent)
        if self.answers is not None:
            self.answers.forget(agent, step)
        if step + 1 < self.env.max_steps and not self.env.is_ready(agent) and agent not in self.chains:
            self.want.add(agent)

    def between_commits(self) -> None:
        env = self.env
        for j in self.moved:
            # j's state at its new step is final now: held steps of the agents it holds back that
            # read it (that step, and the first, which reads everyone's current state under the
            # paper's rules) are checked again, and a chain proven wrong is cut there and redone.
            t = env.agent_step(j)
            for w in watchers(env, j):
                chain = self.chains.get(w)
                if chain is None or not chain.steps:
                    continue
                first = chain.steps[0].step
                for k in {0, t - first}:
                    if 0 <= k < len(chain.steps) and not self._holds(w, chain.steps[k]):
                        self._cut(w, k)
                        break
        self.moved.clear()
        index = self.c.policy.index  # a set's order of names changes between processes
        for a in sorted(self.want, key=lambda a: (env.agent_step(a), index[a])):
            if not env.is_ready(a) and a not in self.chains:
                self.chains[a] = chain = _Chain()
                self._extend(a, chain, own_state(env, a), self.c.agents[a])
        self.want.clear()

    def _revealed(self, agent: str, step: int) -> None:
        """`agent`'s own speculation now has it doing something new at `step`: held steps of the
        agents it holds back that predicted otherwise are cut there and redone. Only agents a
        laggard holds back are checked, never the other way: news flows from laggards to leaders,
        so cuts cannot chase each other in a circle. Only a shortcut: every held step is checked
        against the real observation before it is used."""
        for w in watchers(self.env, agent):
            chain = self.chains.get(w)
            if chain is None or not chain.steps:
                continue
            k = step - chain.steps[0].step
            if 0 <= k < len(chain.steps) and not self._holds(w, chain.steps[k]):
                self._cut(w, k)

    def _holds(self, agent: str, ahead: _Ahead) -> bool:
        return observation_key(predict(self.env, agent, ahead.own, self._guess)[0]) == ahead.key

    def _guess(self, j: int, step: int) -> OwnState | None:
        """Laggard j's state at `step` as its own held steps have it (the latest it holds up to
        `step`), or None."""
        chain = self.chains.get(self.env.possible_agents[j])
        if chain is None or not chain.steps:
            return None
        k = min(step - chain.steps[0].step, len(chain.steps) - 1)
        return chain.steps[k].own if k >= 0 else None

    # -- chains ------------------------------------------------------------------------------

    def _extend(self, name: str, chain: _Chain, own: OwnState, agent: Any) -> None:
        chain.task = asyncio.ensure_future(self._run_chain(name, chain, own, agent))

    async def _run_chain(self, name: str, chain: _Chain, own: OwnState, agent: Any) -> None:
        """Compute held steps of `name` from `own` (its state at the next step) on copies of
        `agent` (its state before that step), appending them to `chain`."""
        env, runner, metrics = self.env, self.c.runner, self.c.metrics
        loop = asyncio.get_running_loop()
        mine: list[_Ahead] = []
        prev = chain.steps[-1].own if chain.steps else own_state(env, name)
        try:
            while own.step < env.max_steps:
                while self._full(chain):
                    chain.room.clear()
                    await chain.room.wait()
                predicted = predict(env, name, own, self._guess)[0]
                copy = agent if self._stateless[name] else restore(snapshot(agent, env), env)
                calls = _HeldCalls(metrics, self)
                llm = LLMClient(runner.backend, name, own.step, calls, self.c.models.get(name), speculative=True)
                ahead = _Ahead(own, observation_key(predicted), copy, loop.create_future(), llm, calls)
                chain.steps.append(ahead)
                mine.append(ahead)
                if own[1:] != prev[1:]:  # news for the agents it holds back
                    self._revealed(name, own.step)
                view = agent_view(env, predicted)
                try:
                    if self.slots is None:
                        action = await runner.act(copy, name, own.step, view, calls, llm=llm)
                    else:
                        took = await self.slots.acquire(ahead)
                        try:
                            action = await runner.act(copy, name, own.step, view, calls, llm=llm)
                        finally:
                            if took:
                                self.slots.release()
                except AgentStepError as e:  # maybe only on a wrong prediction: the real step decides
                    ahead.action.set_exception(e)
                    return
                ahead.action.set_result(action)
                try:
                    own = own_after(env, name, own, action)
                except MetropolisError:  # an action the env would reject: its real step will say so
                    return
                agent, prev = copy, ahead.own
        finally:  # cancelled or broken: none of its held steps may stay unresolved
            for ahead in mine:
                if not ahead.action.done():
                    ahead.action.cancel()

    def _full(self, chain: _Chain) -> bool:
        if len(chain.steps) >= self.horizon:
            return True
        return sum(1 for a in chain.steps if a.calls.started) >= self.depth

    def _cut(self, agent: str, k: int) -> None:
        """Discard held steps k.. of `agent` and compute them again from step k (the chain's task
        is always working on its last step, so it is among those discarded)."""
        chain = self.chains[agent]
        if chain.task is not None and not chain.task.done():
            chain.task.cancel()
        dropped = list(chain.steps)[k:]
        for _ in dropped:
            self._waste(chain.steps.pop())
        self.cuts += 1
        base = chain.steps[-1].agent if chain.steps else self.c.agents[agent]
        self._extend(agent, chain, dropped[0].own, base)

    def _discard(self, agent: str) -> None:
        chain = self.chains.pop(agent)
        if chain.task is not None and not chain.task.done():
            chain.task.cancel()
        for ahead in chain.steps:
            self._waste(ahead)

    def _waste(self, ahead: _Ahead) -> None:
        self.wasted_calls += ahead.calls.started
        self.wasted_tokens += sum(resp.input_tokens + resp.output_tokens for _, resp in ahead.calls.done)
        if self.answers is not None:
            self.answers.keep(ahead.calls.done)
        if ahead.action.done() and not ahead.action.cancelled():
            ahead.action.exception()  # retrieved: a failed speculation is not an error of the run

    async def stop(self) -> None:
        """End the run's speculation: discard what is held, wait for cancelled chains to end."""
        tasks = [c.task for c in self.chains.values() if c.task is not None]
        for a in list(self.chains):
            self._discard(a)
        await cancel_all(tasks)
        if self.answers is not None:
            self.answers.clear()
            self.c.runner.backend = self._backend

    # -- dispatch ----------------------------------------------------------------------------

    def _take(self, agent: str, step: int) -> _Ahead | None:
        """The held step of `agent` at `step` if its prediction was exact, else None (and the
        chain is gone)."""
        chain = self.chains.get(agent)
        if chain is None:
            return None
        ahead = chain.steps[0] if chain.steps else None
        if ahead is None or ahead.step != step:
            self._discard(agent)
            return None
        failed = ahead.action.done() and (ahead.action.cancelled() or ahead.action.exception() is not None)
        if failed or observation_key(full_observation(self.env, agent)) != ahead.key:
            self.misses += 1
            self._discard(agent)
            return None
        self.hits += 1
        chain.steps.popleft()
        chain.room.set()
        if not chain.steps and (chain.task is None or chain.task.done()):
            del self.chains[agent]
        ahead.calls.adopt()
        ahead.llm.speculative = False  # the rest of its calls are real work now
        if self.slots is not None:
            self.slots.let_through(ahead)
        if ahead.agent is not self.c.agents[agent]:
            self.c.agents[agent] = ahead.agent
        return ahead

    def dispatch(self, cl: tuple[str, ...], step: int, obs: list[Any]):
        held = [self._take(a, step) for a in cl]
        if not any(held):
            return self.inner(cl, step, obs)
        if all(h is not None and h.action.done() for h in held):
            return eager.Done({a: h.action.result() for a, h in zip(cl, held)})
        return eager.start(self._finish(cl, step, obs, held), self.c.runner.inline)

    async def _finish(self, cl, step, obs, held) -> dict[str, Any]:
        runner, metrics = self.c.runner, self.c.metrics
        t0 = metrics.now()

        async def one(a, o, h):
            if h is None:
                return await runner.act(self.c.agents[a], a, step, o, metrics)
            action = await h.action
            metrics.step_done(metrics.now() - t0)
            return action

        acts = await gather_eager([one(a, o, h) for a, o, h in zip(cl, obs, held)], runner.inline)
        return dict(zip(cl, acts))

    # -- results -----------------------------------------------------------------------------

    def report(self, m) -> None:
        """Fill the speculation fields of RunMetrics `m`."""
        tested = self.hits + self.misses
        issued = m.llm_calls + self.wasted_calls
        m.wasted_calls = self.wasted_calls
        m.wasted_call_share = self.wasted_calls / issued if issued else 0.0
        m.wasted_tokens = self.wasted_tokens
        m.spec_hit_rate = self.hits / tested if tested else None
        total = m.tokens_in + m.tokens_out + self.wasted_tokens
        m.spec_token_share = self.spec_tokens / total if total else 0.0
        m.spec_gpu_share, m.wasted_gpu_share = gpu_shares(m.backend, self.c.metrics.spec_gpu_used_s)
        if self.answers is not None:
            self.answers.report(m)


def _is_stateless(agent: Any) -> bool:
    state_dict = getattr(agent, "state_dict", None)
    return callable(state_dict) and state_dict() is None
