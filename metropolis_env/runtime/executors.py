"""Step runners (executors): where agent-steps run.

The controller (driver) always keeps the ready queue, the dependency tracker and the ack loop; an
executor only runs ready clusters and hands back their actions. `LocalExecutor` runs the agents in
the driver's own event loop on one backend (the default). `RayExecutor` runs them on a pool of async Ray actors,
each hosting a fixed share of the agents, which make their LLM calls from inside the actor through
a backend the actor builds itself from a picklable factory (a backend instance is never shipped).

Agent state and worker death. An agent lives in exactly one actor (its slot). With every action
the actor returns a snapshot of the agent's state after the step, and the driver keeps the latest
snapshot it has received per agent. Every result the driver receives is committed (or the run
fails), and an agent's step t is dispatched only after its step t-1 was committed, so at dispatch
time the driver's snapshot is exactly the agent's last committed state. When an actor dies, a
replacement is started in its slot from the agents as first shipped; each agent's latest
snapshot rides along with its first request to the replacement (read at that request's dispatch,
so never stale), and the parts that were in flight on the dead actor are re-run there from the
same observations. A result either arrives once (committed once) or not at all (re-run once), so
no step is lost or committed twice. Re-run steps make their LLM calls again.

Snapshots: if an agent has `state_dict()` / `load_state_dict(state)` (torch's names), the actor
returns `state_dict()` (None for an agent that act() never changes) and a replacement restores
it onto a fresh copy of the shipped agent; otherwise the whole agent is pickled after every step
(always correct, costly for agents with big memories or shared read-only data).

Contract for agents on Ray: act() may depend only on its observation, its own state and its LLM
answers - not on driver objects such as the env (the actor holds a stale copy of anything the
agent references). Agents and their classes must be picklable by cloudpickle and importable on
the workers (install the package there, or `ray.cloudpickle.register_pickle_by_value(module)`).
"""

from __future__ import annotations

import asyncio
import pickle
import time
from typing import Any, Callable, Mapping, Protocol, Sequence

from ..backends.base import Backend
from ..errors import AgentStepError, ConfigError, MetropolisError, portable
from . import eager
from .agent import Agent, LLMClient, StepContext
from .metrics import CallRecord


class Executor(Protocol):
    """Runs agent-steps for a Controller (the step-runner protocol).

    start(agents, models): called once, before the run's clock starts; owns the agents from then.
    act_cluster(cl, step, obs, metrics): run every member of cluster `cl` at `step` on its
        observation (members act concurrently), report their calls and step latencies to
        `metrics`, return {agent: action}; raise AgentStepError for a failed agent step.
    stop(): release workers; returns the backend stats of the run. Called once, also on failure.
    agents(): the agents at their last received state (after a successful run: the final state).
    inline: whether steps may start inside the caller's task before their first suspension
        (eager.start's `manual`): only on the virtual clock, where it saves a Task per step.
    """

    inline: bool

    async def start(self, agents: Mapping[str, Agent], models: Mapping[str, str]) -> None: ...

    async def act_cluster(self, cl: Sequence[str], step: int, obs: Sequence[Any], metrics) -> dict[str, Any]: ...

    async def stop(self) -> dict: ...

    def agents(self) -> dict[str, Agent]: ...


class LocalExecutor:
    """Runs agent-steps in this event loop on `backend`; the agents stay the caller's objects
    (after a run they hold the final state; a checkpoint may pickle them between commits)."""

    def __init__(self, backend: Backend):
        self.backend = backend
        # Real clients (httpx/anyio) need each step in its own task; see eager.start.
        self.inline = bool(getattr(backend, "virtual_time", False))
        self._agents: dict[str, Agent] = {}
        self._models: dict[str, str] = {}

    async def start(self, agents: Mapping[str, Agent], models: Mapping[str, str]) -> None:
        self._agents, self._models = agents, dict(models)  # the caller's dict, not a copy

    async def act_cluster(self, cl: Sequence[str], step: int, obs: Sequence[Any], metrics) -> dict[str, Any]:
        if len(cl) == 1:
            return {cl[0]: await self.act(self._agents[cl[0]], cl[0], step, obs[0], metrics)}
        acts = await gather_eager([self.act(self._agents[a], a, step, o, metrics) for a, o in zip(cl, obs)],
                                  self.inline)
        return dict(zip(cl, acts))

    async def act(self, agent: Agent, name: str, step: int, obs: Any, metrics, llm: LLMClient | None = None) -> Any:
        """One step of `agent` (named `name`) on `obs`; its calls and latency go to `metrics`;
        `llm`: the step's client, if the caller made it (a speculative one)."""
        if llm is None:
            llm = LLMClient(self.backend, name, step, metrics, self._models.get(name))
        t0 = metrics.now()
        try:
            action = await agent.act(obs, StepContext(name, step, llm))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # any failure of an agent step ends the run, named
            raise AgentStepError(name, step, e) from e
        metrics.step_done(metrics.now() - t0)
        return action

    async def stop(self) -> dict:
        return self.backend.stats()

    def agents(self) -> dict[str, Agent]:
        return self._agents


async def gather_eager(coros: list, manual: bool = True) -> list:
    """Like gather(), but steps that need no waiting finish without a Task; on the first
    failure the others are cancelled."""
    started: list = []
    try:
        for c in coros:
            started.append(eager.start(c, manual))
        tasks = [s for s in started if not isinstance(s, eager.Done)]
        if tasks:
            await asyncio.gather(*tasks)
    except BaseException:
        for c in coros[len(started):]:
            c.close()
        await cancel_all([s for s in started if not isinstance(s, eager.Done)])
        raise
    return [s.value if isinstance(s, eager.Done) else s.result() for s in started]


async def cancel_all(tasks) -> None:
    """Cancel the tasks not yet done and wait until they are."""
    pending = [t for t in tasks if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)


class ExecutorError(MetropolisError, RuntimeError):
    """The executor cannot go on (e.g. replacement actors keep dying at once)."""


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("the Ray executor needs Ray: pip install 'metropolis-env[ray]'") from None
    return ray


# -- the actor --------------------------------------------------------------------------------

class _CallLog:
    """Stands in for the run's MetricsRecorder inside an actor: keeps each call's client-side span
    and its response, to be replayed into the driver's metrics."""

    __slots__ = ("calls", "_t")

    def __init__(self):
        self.calls: list[CallRecord] = []
        self._t = 0.0

    def call_started(self) -> None:
        self._t = asyncio.get_running_loop().time()

    def call_finished(self) -> None:
        pass

    def record_call(self, req, resp) -> None:
        end = asyncio.get_running_loop().time()
        # Times are the actor loop's clock, turned into wall time by the host before they leave.
        self.calls.append(CallRecord(req.index, self._t, end, resp.start, resp.end,
                                     resp.input_tokens, resp.output_tokens, resp.retries))


def _snapshot(agent: Any) -> tuple[str, Any]:
    state_dict = getattr(agent, "state_dict", None)
    if callable(state_dict):
        return ("state_dict", state_dict())
    from ray import cloudpickle

    return ("pickle", cloudpickle.dumps(agent))


def _restore(agent: Any, snapshot: tuple[str, Any]) -> Any:
    kind, payload = snapshot
    if kind == "state_dict":
        agent.load_state_dict(payload)
        return agent
    return pickle.loads(payload)


class AgentHost:
    """The body of one Ray actor: hosts a share of the agents and runs their steps.

    agents: the agents as first shipped (for a replacement actor too). backend_factory: a
    zero-argument callable building this actor's backend, called on the first step (inside the
    actor's event loop, where clients that bind to a loop must be created).
    """

    def __init__(self, agents: Mapping[str, Any], backend_factory: Callable[[], Any],
                 models: Mapping[str, str]):
        self._agents = dict(agents)
        self._factory = backend_factory
        self._models = dict(models)
        self._backend = None
        self._loop_to_wall = 0.0

    async def ready(self) -> bool:
        return True

    async def act(self, step: int, items: list[tuple[str, Any, Any]]) -> list[tuple]:
        """Run agents `items` = [(agent, observation, snapshot or None)] at `step` concurrently.
        A snapshot is restored before the agent acts. Returns per item, in order:
        (agent, ok, action or exception, snapshot after the step, latency_s, calls)."""
        if self._backend is None:
            loop = asyncio.get_running_loop()
            self._loop_to_wall = time.time() - loop.time()
            self._backend = self._factory()
        for name, _, snap in items:
            if snap is not None:
                self._agents[name] = _restore(self._agents[name], snap)
        if len(items) == 1:
            return [await self._act_one(step, items[0][0], items[0][1])]
        return list(await asyncio.gather(*(self._act_one(step, name, o) for name, o, _ in items)))

    async def _act_one(self, step: int, name: str, obs: Any) -> tuple:
        log = _CallLog()
        agent = self._agents[name]
        ctx = StepContext(name, step, LLMClient(self._backend, name, step, log, self._models.get(name)))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            action = await agent.act(obs, ctx)
            latency = loop.time() - t0
            snap = _snapshot(agent)
        except Exception as e:  # reported to the driver, which ends the run naming agent and step
            return (name, False, portable(e), None, 0.0, ())
        calls = tuple(c.shifted(self._loop_to_wall) for c in log.calls)
        return (name, True, action, snap, latency, calls)

    async def stats(self) -> dict:
        return self._backend.stats() if self._backend is not None else {}

    async def close(self) -> None:
        if self._backend is not None:
            await self._backend.aclose()


# -- the driver side --------------------------------------------------------------------------

class RayExecutor:
    """Runs agent-steps on `num_actors` async Ray actors, agents assigned round-robin. One run at
    a time: `Controller.run` starts the actors and stops them at its end.

    backend_factory: picklable zero-argument callable (a module-level function, or
        functools.partial of one) building the LLM backend inside each actor. Its backend must
        run on real time (`virtual_time` False): actors are separate processes, so there is no
        shared virtual clock.
    address: the Ray cluster to join (`ray.init(address=...)`, e.g. "auto" or "head:6379");
        None joins the Ray already initialised in this process, else starts a local one.
    max_concurrency: agent-steps one actor runs at once (async actor: coroutines, not threads).
    actor_options: passed to `.options()` of every actor (num_cpus, resources, runtime_env, ...).
    init_kwargs: passed to `ray.init` when this executor starts or joins Ray.
    max_restarts: replacement actors one slot may get in a row without a step completing on
        them; beyond it the run fails (a worker that cannot start would otherwise loop forever).

    Metrics: each call's span is measured in its actor (from the client's send to its answer, as
    the local runtime does) and converted to the driver's clock through wall time. Parallelism is
    the sum of those spans over the run's completion time (the time-integral of outstanding
    requests, free of clock skew between nodes); the timeline and per-call start/end shift by any
    skew between the actors' and the driver's clocks. Step latency is each agent's act() time in
    its actor. The backend stats are each actor's `stats()` (in "per_actor") with integer counters
    summed over actors.
    """

    inline = False  # actors run on real time

    def __init__(self, num_actors: int = 4, backend_factory: Callable[[], Any] | None = None, *,
                 address: str | None = None, max_concurrency: int = 1000,
                 actor_options: Mapping[str, Any] | None = None,
                 init_kwargs: Mapping[str, Any] | None = None, max_restarts: int = 3):
        if num_actors < 1:
            raise ConfigError(f"num_actors must be >= 1, got {num_actors}")
        if not callable(backend_factory):
            raise ConfigError("RayExecutor needs backend_factory: a picklable zero-argument callable that "
                              "builds the backend inside each actor (a backend instance is not shipped)")
        if max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.num_actors = num_actors
        self.backend_factory = backend_factory
        self.address = address
        self.max_concurrency = max_concurrency
        self.actor_options = dict(actor_options or {})
        self.init_kwargs = dict(init_kwargs or {})
        self.max_restarts = max_restarts
        #: Replacement actors started (after deaths); parts re-run on them.
        self.restarts = 0
        self.reruns = 0
        #: Seconds spent starting the actors (before the run's clock starts).
        self.startup_s = 0.0
        self._handles: list = []

    # -- what tests and operators may look at --

    @property
    def actors(self) -> list:
        """The current actor handle of each slot (a replacement after a death)."""
        return list(self._handles)

    def slot_of(self, agent: str) -> int:
        return self._slot[agent]

    def inflight(self, slot: int) -> int:
        """Parts (one actor's share of a cluster) now running on the actor of `slot`."""
        return self._inflight[slot]

    # -- Executor --

    async def start(self, agents: Mapping[str, Agent], models: Mapping[str, str]) -> None:
        ray = _import_ray()
        from ray import cloudpickle

        try:
            cloudpickle.dumps(self.backend_factory)
        except Exception as e:
            raise ConfigError(f"backend_factory must be picklable to reach the actors: {e}") from None
        t0 = time.perf_counter()
        self.restarts = self.reruns = 0
        if not ray.is_initialized():
            ray.init(address=self.address, **self.init_kwargs)
        self._ray = ray
        self._died = (ray.exceptions.RayActorError,)
        names = list(agents)
        n = min(self.num_actors, len(names))
        self._slot = {a: k % n for k, a in enumerate(names)}
        self._original = dict(agents)
        self._snap: dict[str, tuple | None] = {a: None for a in names}  # None: as first shipped
        self._models = dict(models)
        # One object per slot: agents sharing read-only data (a trace, a map) pickle it once per
        # actor, and a replacement actor reads the same object instead of a new upload.
        try:
            self._shipped = [ray.put({a: agents[a] for a in names if self._slot[a] == k}) for k in range(n)]
        except Exception as e:
            raise ConfigError(f"the agents must be picklable (cloudpickle) to run on Ray actors: {e}") from e
        self._cls = ray.remote(AgentHost)
        self._handles = [self._spawn(k) for k in range(n)]
        self._gen = [0] * n
        self._seeded: list[set[str]] = [set() for _ in range(n)]
        self._inflight = [0] * n
        self._failures = [0] * n
        try:
            await asyncio.gather(*(h.ready.remote() for h in self._handles))
        except self._died as e:
            for h in self._handles:
                ray.kill(h, no_restart=True)
            self._handles = []
            raise ExecutorError(f"Ray actors failed to start (are metropolis-env and the agents' code "
                                f"installed on every node?): {e}") from e
        self.startup_s = time.perf_counter() - t0
        loop = asyncio.get_running_loop()
        self._wall_to_run = loop.time() - time.time()

    def _spawn(self, slot: int):
        opts = dict(self.actor_options)
        opts.setdefault("max_concurrency", self.max_concurrency)
        # The executor replaces dead actors itself (it must re-seed them); Ray must not.
        opts["max_restarts"] = 0
        return self._cls.options(**opts).remote(self._shipped[slot], self.backend_factory, self._models)

    async def act_cluster(self, cl: Sequence[str], step: int, obs: Sequence[Any], metrics) -> dict[str, Any]:
        slot = self._slot
        if len(cl) == 1:
            got = await self._run_part(slot[cl[0]], step, [(cl[0], obs[0])], metrics)
            return {cl[0]: got[0]}
        parts: dict[int, list] = {}
        for a, o in zip(cl, obs):
            parts.setdefault(slot[a], []).append((a, o))
        if len(parts) == 1:
            (k, items), = parts.items()
            acts = await self._run_part(k, step, items, metrics)
        else:
            tasks = [asyncio.ensure_future(self._run_part(k, step, items, metrics)) for k, items in parts.items()]
            try:
                done = await asyncio.gather(*tasks)
            except BaseException:
                for t in tasks:
                    t.cancel()
                raise
            acts = [x for part in done for x in part]
        order = [a for items in parts.values() for a, _ in items]
        by_agent = dict(zip(order, acts))
        return {a: by_agent[a] for a in cl}

    async def _run_part(self, k: int, step: int, items: list[tuple[str, Any]], metrics) -> list[Any]:
        while True:
            gen, handle, seeded = self._gen[k], self._handles[k], self._seeded[k]
            payload = []
            for a, o in items:
                snap = None
                if a not in seeded:
                    seeded.add(a)
                    snap = self._snap[a]
                payload.append((a, o, snap))
            self._inflight[k] += 1
            try:
                out = await handle.act.remote(step, payload)
            except self._died as e:
                if self._gen[k] == gen:  # the first part to notice replaces the actor
                    self._failures[k] += 1
                    if self._failures[k] > self.max_restarts:
                        raise ExecutorError(f"Ray actor {k} died {self._failures[k]} times in a row "
                                            f"without completing a step: {e}") from e
                    self._respawn(k)
                self.reruns += 1
                continue
            finally:
                self._inflight[k] -= 1
            self._failures[k] = 0
            break
        actions = []
        off = self._wall_to_run
        for name, ok, value, snap, latency, calls in out:
            if not ok:
                raise AgentStepError(name, step, value)
            self._snap[name] = snap
            actions.append(value)
            metrics.step_done(latency)
            for c in calls:
                metrics.record_remote_call(name, step, CallRecord(*c).shifted(off))
        return actions

    def _respawn(self, k: int) -> None:
        self._ray.kill(self._handles[k], no_restart=True)  # a hung (not dead) actor must not come back
        self._handles[k] = self._spawn(k)
        self._gen[k] += 1
        self._seeded[k] = set()
        self.restarts += 1

    async def stop(self) -> dict:
        if not self._handles:
            return {}
        per_actor = []
        failed = (asyncio.TimeoutError, *self._died, self._ray.exceptions.RayTaskError)
        for h in self._handles:
            try:  # one entry per actor, whether stats, close, both or neither answer
                stats = await asyncio.wait_for(_await(h.stats.remote()), timeout=30)
            except failed:
                stats = {}
            per_actor.append(stats)
            try:
                await asyncio.wait_for(_await(h.close.remote()), timeout=30)
            except failed:
                pass
        for h in self._handles:
            self._ray.kill(h, no_restart=True)
        self._handles = []
        stats: dict[str, Any] = {}
        keys = set().union(*per_actor) if per_actor else set()
        for key in sorted(keys):
            vals = [s.get(key) for s in per_actor]
            if all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
                stats[key] = sum(vals)
        stats.update(actors=len(per_actor), restarts=self.restarts, reruns=self.reruns, per_actor=per_actor)
        return stats

    def agents(self) -> dict[str, Agent]:
        return {a: ag if self._snap[a] is None else _restore(ag, self._snap[a])
                for a, ag in self._original.items()}


async def _await(ref):
    return await ref
