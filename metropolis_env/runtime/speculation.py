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
Whenever what is known or guessed of an agent changes (a commit, its chain's new tip, a cut),
the chains that read it or hold steps near it are re-predicted and cut where they no longer
hold (`_news`), and a chain waits rather than guess a perceived laggard that just changed
(`settle`). The env is never touched by a speculative step, so nothing needs
undoing, and for deterministic agents a run with speculation equals the run without.

Contract: an agent's act() may depend only on its observation, its own state and its LLM
answers, as for Ray workers; it may read its own tile from the env (e.g. `env.move_to`) only
with depth 1, since a deeper speculative step runs while the env still has it where it is.
Agents are copied by pickling (references to the env kept); an agent whose `state_dict()`
returns None is taken as unchanged by act() and not copied.
"""

from __future__ import annotations

import asyncio
from itertools import chain as chain_from
from itertools import islice
from typing import Any

from ..errors import AgentStepError, ConfigError, MetropolisError
from ..prediction import (VIEWS, OwnState, agent_view, observation_key, own_after, own_state, plain_observation,
                          watchers)
from . import eager
from .agent import LLMClient
from .answers import Answers
from .checkpoint import restore, snapshot
from .executors import LocalExecutor, cancel_all, gather_eager
from .guesses import Guesses
from .held import Ahead, Chain, HeldCalls, Slots, Traffic
from .metrics import gpu_shares
from .observers import RunObserver
from .scheduling import DependencyPolicy
from .shelf import Shelf, state_digest


#: Default depth: speculative steps with LLM calls held per agent (chosen by measurement,
#: docs/SPECULATION.md).
DEPTH = 24
#: max_inflight="auto": max(AUTO_MIN, agents // AUTO_PER) speculative steps computing at once.
#: Unlimited speculation slowed a GPU-bound run (1,000 agents on 8 GPUs) by 2.6%; this limit
#: made it 1.1% faster, and costs nothing at 25 agents (docs/SPECULATION.md).
AUTO_MIN, AUTO_PER = 16, 8
#: Default horizon: held steps per agent, with or without LLM calls (docs/SPECULATION.md).
HORIZON = 512
#: Default settle: a chain waits for a perceived laggard whose public state changed within this
#: many steps of the last one it is known at, rather than guess it unchanged (docs/SPECULATION.md).
SETTLE = 1


class Speculation(RunObserver):
    """Speculative execution for a Controller (mode "async", local runner).

    depth: held speculative steps with LLM calls per agent (steps without calls are free and
    limited only by `horizon`, in steps); 1: one costly step ahead at most.
    max_inflight: speculative agent-steps computing at once over all agents, smallest step
    first ("auto": max(16, agents // 8); None: no limit).
    reuse: answer an agent's later calls that are identical to completed calls of its discarded
    speculative steps from those (`answers.Answers`; greedy calls with a prompt only).
    busy_at: a speculative step starts only while the real (non-speculative) LLM calls in flight
    plus the speculative steps computing are fewer than this (None: whatever the real load; see
    docs/SPECULATION.md, "Load", for what it did and did not do on the simulated server).
    Whatever the settings, an adopted step's call still waiting in the server's queue is
    promoted to a real call of its step (`Backend.promote`), so it does not wait behind real
    calls as speculation would.
    """

    def __init__(self, depth: int = DEPTH, max_inflight: int | str | None = "auto", horizon: int = HORIZON,
                 reuse: bool = True, settle: int | None = SETTLE, busy_at: int | None = None):
        if not isinstance(depth, int) or depth < 1:
            raise ConfigError(f"speculation depth must be an int >= 1, got {depth!r}")
        if max_inflight != "auto" and max_inflight is not None and (not isinstance(max_inflight, int)
                                                                     or max_inflight < 1):
            raise ConfigError(f"speculation max_inflight must be an int >= 1, 'auto' or None, got {max_inflight!r}")
        if not isinstance(horizon, int) or horizon < 1:
            raise ConfigError(f"speculation horizon must be an int >= 1 (steps), got {horizon!r}")
        if settle is not None and (not isinstance(settle, int) or settle < 0):
            raise ConfigError(f"speculation settle must be an int >= 0 (steps) or None, got {settle!r}")
        self.depth, self.max_inflight, self.horizon, self.reuse = depth, max_inflight, horizon, reuse
        if busy_at is not None and (not isinstance(busy_at, int) or busy_at < 1):
            raise ConfigError(f"speculation busy_at must be an int >= 1 (real LLM calls in flight) or None, "
                              f"got {busy_at!r}")
        self.settle, self.busy_at = settle, busy_at

    def settings(self) -> dict:
        """The constructor's arguments (what a checkpoint saves: `Speculation(**settings())`
        makes an equal one; held chains are state, never settings)."""
        return {"depth": self.depth, "max_inflight": self.max_inflight, "horizon": self.horizon,
                "reuse": self.reuse, "settle": self.settle, "busy_at": self.busy_at}

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
        self.chains: dict[str, Chain] = {}
        self.want: set[str] = set()     # blocked agents without a chain
        self.moved: list[str] = []      # committed since the last look
        self.readers: dict[str, set[str]] = {}  # agent -> chains that held a step perceiving it
        self.landing: dict[str, tuple[int, asyncio.Future]] = {}  # adopted mid-step, until committed
        self.guesses = Guesses(self.env, self.chains)
        self.waiters: dict[str, list] = {}
        self.changed: dict[str, int] = {}
        self.last_public: dict[str, tuple] = {}
        limit = self.max_inflight
        if limit == "auto":
            limit = max(AUTO_MIN, len(self.env.possible_agents) // AUTO_PER)
        self._backend = controller.runner.backend
        self.traffic = controller.runner.backend = Traffic(self._backend, self.busy_at)
        gauge = self.traffic if self.busy_at is not None else None
        self.slots = Slots(limit or None, gauge) if limit or gauge else None
        self.hits = self.misses = self.cuts = self.issued = self.wasted_calls = 0
        self.wasted_tokens = self.spec_tokens = 0
        self.answers = Answers() if self.reuse else None
        self.shelf = Shelf()
        if self.answers is not None:  # every call of the run, real or speculative, may be a re-run
            controller.runner.backend = self.answers.backend(controller.runner.backend)
        return self.dispatch

    # -- observer hooks ----------------------------------------------------------------------

    def committed(self, agent: str, step: int, action: Any) -> None:
        waiting = self.landing.pop(agent, None)
        if waiting is not None and waiting[0] == step and not waiting[1].done():
            waiting[1].set_result(None)
        st = own_state(self.env, agent)
        if self.last_public.get(agent, st[1:]) != st[1:]:
            # Its public state changed: news for the chains that read it (an unchanged state
            # changes no prediction, held or guessed).
            self.changed[agent] = max(self.changed.get(agent, 0), st.step)
            self.moved.append(agent)
        self.last_public[agent] = st[1:]
        self._wake(agent)
        if self.answers is not None:
            self.answers.forget(agent, step)
        for gone in self.shelf.forget(agent, step):
            self._wasted(gone)
        if step + 1 < self.env.max_steps and not self.env.is_ready(agent) and agent not in self.chains:
            self.want.add(agent)

    def between_commits(self) -> None:
        env = self.env
        for j in self.moved:
            # j's state at its new step is final now: held steps from that step on are open to
            # the news, and so is a chain's first step, which under the paper's rules reads
            # everyone's current state.
            self._news(j, env.agent_step(j), first=True)
        self.moved.clear()
        index = self.c.policy.index  # a set's order of names changes between processes
        for a in sorted(self.want, key=lambda a: (env.agent_step(a), index[a])):
            if not env.is_ready(a) and a not in self.chains:
                self.chains[a] = chain = Chain(a, self.guesses.held, self.guesses.ends)
                self._extend(a, chain, own_state(env, a), self.c.agents[a])
        self.want.clear()

    def _news(self, agent: str, step: int, first: bool = False) -> None:
        """What is known or guessed of `agent` from `step` on has changed (it committed, its chain
        reached a new state, or held steps of it were dropped): in every chain it holds back, the
        first held step at or after `step` whose prediction no longer holds is cut there and
        redone. A held step is re-predicted only if it perceived `agent` or would now (a cheap
        tile test first). News flows from laggards to the agents they hold back, never the other
        way, except to chains that perceived it ahead of them (under the paper's rules an agent
        ahead is read as it is now); every cut drops held steps and adds none, so a cascade of
        cuts ends. Only a shortcut: every held step is checked against the real observation before
        it is used."""
        env = self.env
        j = env._idx(agent)
        sees = env._observer.perception.sees
        readers = self.readers.get(agent, set())
        tiles: dict[int, Any] = {}  # j's guessed tile by step: chains share steps

        def tile_at(s: int):
            t = tiles.get(s)
            if t is None:
                t = tiles[s] = self.guesses.tile(j, s)
            return t

        near = self.guesses.held.near(tile_at(step))
        reach, size = self.guesses.reach(j), self.guesses.held.size
        for w in sorted(readers.union(watchers(env, agent), near) - {agent}, key=self.c.policy.index.__getitem__):
            chain = self.chains.get(w)
            if chain is None or not chain.steps:
                readers.discard(w)
                continue
            steps = chain.steps
            start = max(0, step - steps[0].step)
            apart = None  # the last (tile, j's tile) found out of view: runs of held steps repeat it
            looked = chain_from(((0, steps[0]),) if first and start > 0 else (),
                                enumerate(islice(steps, start, None), start))
            for k, ahead in looked:
                if j not in ahead.seen:
                    p = ahead.own.position
                    if (p[0] // size, p[1] // size) not in reach:
                        continue  # j is guessed nowhere near
                    pair = (p, tile_at(ahead.own.step))
                    if pair == apart:
                        continue
                    if not sees(*pair):
                        apart = pair
                        continue
                if not self.guesses.holds(w, ahead):
                    self._cut(w, k)
                    break

    # -- chains ------------------------------------------------------------------------------

    def _extend(self, name: str, chain: Chain, own: OwnState, agent: Any) -> None:
        chain.set_tip(own)
        chain.task = asyncio.ensure_future(self._run_chain(name, chain, own, agent))

    async def _run_chain(self, name: str, chain: Chain, own: OwnState, agent: Any) -> None:
        """Compute held steps of `name` from `own` (its state at the next step) on copies of
        `agent` (its state before that step), appending them to `chain`."""
        env, loop = self.env, asyncio.get_running_loop()
        mine: list[Ahead] = []
        try:
            while own.step < env.max_steps:
                while self._full(chain):
                    chain.room.clear()
                    await chain.room.wait()
                predicted = self.guesses.predict(name, own)
                movers = self._unsettled(own, predicted) if self.settle is not None else ()
                while movers:  # wait for their state at own.step rather than guess it
                    fut = loop.create_future()
                    for y in movers:
                        self.waiters.setdefault(y, []).append(fut)
                    await fut
                    predicted = self.guesses.predict(name, own)
                    movers = self._unsettled(own, predicted)
                data = None if self._stateless[name] else snapshot(agent, env)
                state = None if data is None else state_digest(data)
                key = observation_key(predicted)
                for p in predicted["perceived"]:
                    self.readers.setdefault(p["name"], set()).add(name)
                ahead = self.shelf.take(name, own.step, key, state)  # computed before from the same inputs
                if ahead is None:
                    ahead = await self._compute(name, chain, own, predicted, key, state,
                                                agent if data is None else restore(data, env), mine)
                    if ahead is None:
                        return
                else:
                    chain.push(ahead)
                action, copy = ahead.action.result(), ahead.agent
                if self.depth == 1 and ahead.calls.adopted:
                    # Adopted while computing: at depth 1 the next step may read the agent's own
                    # tile from the env (the contract), so the env commits this one first. Not
                    # deeper: waiting costs (a cluster commits when all its members are done;
                    # genagents-day full, 8 GPUs, depth 4: 15,050 s without the wait, 20,489 s
                    # with it), and deeper steps may not read the env anyway.
                    landed = loop.create_future()
                    self.landing[name] = (ahead.step, landed)
                    await landed
                try:
                    tip = own_after(env, name, own, action)
                except MetropolisError:  # an action the env would reject: its real step will say so
                    return
                guessed = chain.ghost_at(tip.step) or own  # what the others took it for
                chain.set_tip(tip)
                self._wake(name)
                if tip[1:] != own[1:]:
                    self.changed[name] = max(self.changed.get(name, 0), tip.step)
                if tip[1:] != guessed[1:]:  # news for the chains that guessed otherwise
                    chain.clear_ghost()
                    self._news(name, tip.step)
                else:
                    chain.pass_ghost(tip.step)
                agent, own = copy, tip
        finally:  # cancelled or broken: none of its held steps may stay unresolved
            for ahead in mine:
                if not ahead.action.done():
                    ahead.action.cancel()

    async def _compute(self, name: str, chain: Chain, own: OwnState, predicted: dict, key: tuple,
                       state: bytes | None, copy: Any, mine: list) -> Ahead | None:
        """Compute held step `own.step` of `name` on `copy` (its state before the step) and the
        predicted observation; the step is on the chain while computing. None if act() raised
        (the real step will decide: maybe it failed only on a wrong prediction)."""
        env, runner = self.env, self.c.runner
        calls = HeldCalls(self.c.metrics, self)
        llm = LLMClient(runner.backend, name, own.step, calls, self.c.models.get(name), speculative=True)
        seen = frozenset(env._idx(p["name"]) for p in predicted["perceived"])
        ahead = Ahead(own, key, seen, copy, asyncio.get_running_loop().create_future(), llm, calls, state)
        chain.push(ahead)
        mine.append(ahead)
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
        except AgentStepError as e:
            ahead.action.set_exception(e)
            return None
        ahead.action.set_result(action)
        return ahead

    def _wake(self, agent: str) -> None:
        for fut in self.waiters.pop(agent, ()):
            if not fut.done():
                fut.set_result(None)

    def _unsettled(self, own: OwnState, predicted: dict) -> list[str]:
        """The laggards perceived in `predicted` whose state at `own.step` is not known yet
        (neither committed nor held nor their chain's tip) and whose public state changed within
        `settle` steps of the last step it is known at: guessing them unchanged is likely wrong."""
        env, out = self.env, []
        for p in predicted["perceived"]:
            y = p["name"]
            known = env.agent_step(y)
            chain = self.chains.get(y)
            if chain is not None and chain.tip is not None:
                known = max(known, chain.tip.step)
            if known < own.step and known - self.changed.get(y, -10 ** 9) <= self.settle:
                out.append(y)
        return out

    def _full(self, chain: Chain) -> bool:
        if len(chain.steps) >= self.horizon:
            return True
        return chain.costly >= self.depth

    def _cut(self, agent: str, k: int) -> None:
        """Discard held steps k.. of `agent` and compute them again from step k (the chain's task
        is always working on its last step, so it is among those discarded)."""
        chain = self.chains[agent]
        if chain.task is not None and not chain.task.done():
            chain.task.cancel()
        dropped = list(chain.steps)[k:]
        chain.haunt(dropped)  # until computed again, others take it to do what it did
        for _ in dropped:
            self._waste(chain.pop())
        self.cuts += 1
        base = chain.steps[-1].agent if chain.steps else self.c.agents[agent]
        self._extend(agent, chain, dropped[0].own, base)
        self._wake(agent)

    def _discard(self, agent: str, news: bool = True) -> None:
        chain = self.chains.pop(agent)
        chain.close()
        if chain.task is not None and not chain.task.done():
            chain.task.cancel()
        for ahead in chain.steps:
            self._waste(ahead)
        if news and chain.steps:
            self._news(agent, chain.steps[0].step + 1)

    def _waste(self, ahead: Ahead) -> None:
        """`ahead` was dropped: shelved if complete (wasted only if never taken again)."""
        for gone in self.shelf.keep(ahead.llm.agent, ahead):
            self._wasted(gone)

    def _wasted(self, ahead: Ahead) -> None:
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
            self._discard(a, news=False)
        await cancel_all(tasks)
        for gone in self.shelf.clear():
            self._wasted(gone)
        if self.answers is not None:
            self.answers.clear()
        self.c.runner.backend = self._backend

    # -- dispatch ----------------------------------------------------------------------------

    def _take(self, agent: str, step: int) -> Ahead | None:
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
        if failed or observation_key(plain_observation(self.env, agent)) != ahead.key:
            self.misses += 1
            self._discard(agent)
            return None
        self.hits += 1
        chain.popleft()
        chain.room.set()
        if not chain.steps and (chain.task is None or chain.task.done()):
            del self.chains[agent]
            chain.close()
        ahead.calls.adopt()
        ahead.llm.speculative = False  # the rest of its calls are real work now
        self.traffic.adopt(agent, step)  # and its call in flight, if still queued, goes as one
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
        m.recalled_steps, m.recalled_calls = self.shelf.taken, self.shelf.taken_calls
        if self.answers is not None:
            self.answers.report(m)


def _is_stateless(agent: Any) -> bool:
    state_dict = getattr(agent, "state_dict", None)
    return callable(state_dict) and state_dict() is None
