"""The controller: drives agents through an environment with their LLM calls in flight together.

Modes (all run the same agents on the same backend, so their metrics compare):
- `async`: dependency-driven. A ready queue ordered by step (smallest first) holds ready clusters;
  each is dispatched as soon as it is ready (all members act concurrently), and completions are
  committed to the env as they arrive (the ack queue), which makes new clusters ready.
- `sync`: the global barrier, through SyncParallelWrapper: every agent of step t in parallel,
  then t+1.
- `single`: one agent and one call at a time, as the original Generative Agents code.
- `oracle` / `nodep`: for trace replay. Agent i's step t waits only for the agents it really
  perceived at t to finish step t-1 (`dependencies(i, t)`), or for nobody; no env is stepped.

Every (agent, step) is dispatched exactly once and committed exactly once; a failing agent step
cancels the run and raises AgentStepError naming the agent and step.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from typing import Any, Callable, Iterable, Mapping

from ..backends.base import Backend
from ..env import AsyncParallelEnv
from ..steps import StepRange
from ..errors import ConfigError, MetropolisError
from . import eager
from .agent import Agent, LLMClient, StepContext
from .checkpoint import Checkpointer, snapshot
from .executors import Executor
from .metrics import MetricsRecorder, RunMetrics

MODES = ("async", "sync", "single", "oracle", "nodep")


class AgentStepError(MetropolisError, RuntimeError):
    """An agent's step failed (its act() raised, e.g. a non-retryable LLM error)."""

    def __init__(self, agent: str, step: int, cause: BaseException):
        super().__init__(f"agent {agent!r} failed at step {step}: {type(cause).__name__}: {cause}")
        self.agent, self.step, self.cause = agent, step, cause


class Controller:
    """Runs `agents` in `env` on `backend` in one of MODES; `await run()` returns RunMetrics.

    agents: {name: Agent} for every agent of the env.
    max_clusters: cap on clusters in flight at once (async mode); None = no cap.
    dependencies: for `oracle`, a callable (agent_index, step) -> indices of the agents whose
    state at time `step` that agent step reads (itself excluded).
    models: optional {agent: model name} passed on with every LLM call.
    progress: show a tqdm progress bar over agent-steps; progress_position: its terminal line
    (tqdm's `position`), for runs that show their bars side by side (bench --jobs).
    on_commit: optional callback(agent, step, action) after each committed agent-step.
    executor: where agent-steps run; None runs them in this event loop on `backend`. An executor
    (e.g. `RayExecutor`) runs them elsewhere on backends it builds itself: pass backend=None. The
    controller keeps the ready queue and commits; after a successful run `agents` hold the
    agents' final state. No checkpointing with an executor (the agents live in the workers).
    """

    def __init__(self, env: AsyncParallelEnv, agents: Mapping[str, Agent], backend: Backend | None,
                 mode: str = "async", *, seed: int | None = 0, max_clusters: int | None = None,
                 dependencies: Callable[[int, int], Iterable[int]] | None = None,
                 models: Mapping[str, str] | None = None, progress: bool = False,
                 record_calls: bool = False, on_commit: Callable[[str, int, Any], None] | None = None,
                 checkpoint: "Checkpointer | None" = None, resume_state: dict | None = None,
                 executor: "Executor | None" = None, progress_position: int | None = None):
        if mode not in MODES:
            raise ConfigError(f"unknown mode {mode!r}; choose one of {MODES}")
        missing = [a for a in env.possible_agents if a not in agents]
        if missing:
            raise ConfigError(f"no Agent given for {missing[:5]}: pass agents={{name: agent}} for every env agent")
        for name, ag in agents.items():
            if not callable(getattr(ag, "act", None)):
                raise ConfigError(f"agent {name!r} has no act(observation, ctx) method")
        if mode == "oracle" and dependencies is None:
            raise ConfigError("mode 'oracle' needs dependencies=(agent_index, step) -> perceived agent indices")
        if executor is None and backend is None:
            raise ConfigError("pass a backend (or an executor that builds its own backends)")
        if executor is not None and (checkpoint is not None or resume_state is not None):
            raise ConfigError("runs on an executor cannot checkpoint or resume yet: the agents live in its workers")
        if max_clusters is not None and max_clusters < 1:
            raise ConfigError(f"max_clusters must be >= 1 or None, got {max_clusters}")
        self.env = env
        self.agents = dict(agents)
        self.backend = backend
        self.mode = mode
        self.seed = seed
        self.max_clusters = max_clusters
        self.dependencies = dependencies
        self.models = dict(models or {})
        self.progress = progress
        self.progress_position = progress_position
        self.record_calls = record_calls
        self.on_commit = on_commit
        self.checkpoint = checkpoint
        # Steps start eagerly in the caller's task only on the virtual clock (simulated backends),
        # where it saves a Task per step; real clients (httpx/anyio) need their own task.
        self._manual_eager = bool(getattr(backend, "virtual_time", False))
        self._snapshots: dict[str, bytes] = {}
        self.resume_state = resume_state
        self.executor = executor
        if resume_state is not None and mode not in ("async", "sync", "single"):
            raise ConfigError(f"mode {mode!r} cannot be resumed (only async, sync and single runs checkpoint)")
        if checkpoint is not None and mode not in ("async", "sync", "single"):
            raise ConfigError(f"mode {mode!r} does not checkpoint; use async, sync or single")
        self.metrics: MetricsRecorder | None = None
        self.committed: dict[str, int] = {}
        self._controller_s = 0.0

    async def run(self) -> RunMetrics:
        loop = asyncio.get_running_loop()
        if self.executor is not None:
            await self.executor.start(self.agents, self.models)  # workers up before the clock starts
        self.metrics = MetricsRecorder(loop.time, record_calls=self.record_calls)
        if self.resume_state is not None:
            self.committed = dict(self.resume_state["committed"])
        else:
            self.committed = {a: 0 for a in self.env.possible_agents}
        total = len(self.env.possible_agents) * self.env.max_steps - sum(self.committed.values())
        self._bar = _progress_bar(total, self.mode, self.progress_position) if self.progress else None
        wall0 = time.perf_counter()
        true_deps = None
        try:
            if self.mode == "async":
                await self._run_async()
                deps = self.env.stats.tracker_per_step
                true_deps = self.env.stats.true_per_step
            elif self.mode in ("sync", "single"):
                await self._run_sync(sequential=self.mode == "single")
                deps = float(len(self.env.possible_agents))
                true_deps = self.env.stats.true_per_step
            else:
                deps = await self._run_dag(use_deps=self.mode == "oracle")
        except AgentStepError as e:
            if self.checkpoint is not None:
                path = self._save_checkpoint()
                e.args = (f"{e.args[0]} (run checkpointed in {path.parent}; fix the cause and "
                          f"`metropolis-env resume {path.parent}`)",)
            raise
        finally:
            if self._bar is not None:
                self._bar.close()
            if self.executor is not None:
                backend_stats = await self.executor.stop()
        if self.checkpoint is not None:
            self._save_checkpoint()
        if self.executor is None:
            backend_stats = self.backend.stats()
        else:
            self.agents.update(self.executor.agents())
        return self.metrics.finish(self.mode, deps, backend_stats, time.perf_counter() - wall0,
                                   self._controller_s, true_deps)

    # -- one agent-step ---------------------------------------------------------------------

    async def _act(self, agent: str, step: int, obs: Any) -> Any:
        if self.checkpoint is not None:
            # the agent as it was before this step: what a checkpoint saves while it is acting
            self._snapshots[agent] = snapshot(self.agents[agent], self.env)
        ctx = StepContext(agent, step, LLMClient(self.backend, agent, step, self.metrics, self.models.get(agent)))
        t0 = self.metrics.now()
        try:
            action = await self.agents[agent].act(obs, ctx)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # any failure of an agent step ends the run, named
            raise AgentStepError(agent, step, e) from e
        self.metrics.step_done(self.metrics.now() - t0)
        return action

    async def _act_remote(self, agent: str, step: int, obs: Any) -> Any:
        return (await self.executor.act_cluster((agent,), step, [obs], self.metrics))[agent]

    def _mark_committed(self, agent: str, step: int, action: Any) -> None:
        # The ledger that proves no step is lost or run twice.
        if self.committed[agent] != step:
            raise RuntimeError(f"internal: {agent!r} committed step {step} but had done {self.committed[agent]}")
        self.committed[agent] = step + 1
        if self.on_commit is not None:
            self.on_commit(agent, step, action)
        if self._bar is not None:
            self._bar.update(1)
        if self.checkpoint is not None:
            self.checkpoint.since_last += 1
            self._snapshots.pop(agent, None)

    def _maybe_checkpoint(self) -> None:
        # Called only between commits: every agent is idle or suspended in an LLM call.
        if self.checkpoint is not None and self.checkpoint.since_last >= self.checkpoint.every:
            self._save_checkpoint()

    def _save_checkpoint(self):
        snapshots = dict(self._snapshots)
        return self.checkpoint.save({
            "env": self.env, "agents": {n: a for n, a in self.agents.items() if n not in snapshots},
            "snapshots": snapshots, "mode": self.mode, "seed": self.seed,
            "max_clusters": self.max_clusters, "models": self.models, "committed": self.committed,
        })

    # -- async ------------------------------------------------------------------------------

    async def _run_async(self) -> None:
        env = self.env
        if self.resume_state is None:
            obs, _ = env.reset(seed=self.seed)
        else:
            obs = {a: env.observe(a) for a in env.ready_agents()}
        ready_obs: dict[str, Any] = {}
        heap: list[tuple[int, int, tuple[str, ...]]] = []
        index = {a: i for i, a in enumerate(env.possible_agents)}

        def enqueue(new_obs: dict[str, Any], truncs: Mapping[str, bool], terms: Mapping[str, bool]) -> None:
            # done agents (truncated, or terminated by the env's task) act no more
            seen = set()
            for a, o in new_obs.items():
                if truncs.get(a) or terms.get(a):
                    continue
                ready_obs[a] = o
            for a in new_obs:
                if truncs.get(a) or terms.get(a) or a in seen:
                    continue
                cl = env.ready_cluster(a)
                seen.update(cl)
                heapq.heappush(heap, (env.agent_step(a), index[cl[0]], cl))

        enqueue(obs, {}, {})

        def commit(entry: tuple[int, int, tuple[str, ...]], actions: dict[str, Any]) -> None:
            step, _, cl = entry
            new_obs, _, terms, truncs, _ = env.step(actions)
            for a in cl:
                self._mark_committed(a, step, actions[a])
            enqueue(new_obs, truncs, terms)

        if self.executor is None:
            act_cluster = self._act_cluster
        else:
            def act_cluster(cl, step, obs):
                return self.executor.act_cluster(cl, step, obs, self.metrics)

        def dispatch(entry: tuple[int, int, tuple[str, ...]]):
            step, _, cl = entry
            return eager.start(act_cluster(cl, step, [ready_obs.pop(a) for a in cl]), self._manual_eager)

        await self._drive(heap, dispatch, commit, lambda: env.step_range)

    async def _drive(self, heap: list, dispatch, commit, step_range) -> None:
        """The dispatch/ack loop shared by async and DAG modes.

        Pops ready entries (smallest step first) while the cap allows, starts each eagerly
        (a step that makes no LLM call commits at once), and commits the in-flight ones as they
        complete, in queue order when several complete at the same instant.
        """
        inflight: dict[asyncio.Task, tuple] = {}
        completed: list[asyncio.Task] = []
        wake = asyncio.Event()

        def on_done(task: asyncio.Task) -> None:
            completed.append(task)
            wake.set()

        clock = time.perf_counter
        try:
            while True:
                # Controller time: queue handling and commits, not the agents' own work, which
                # eager dispatch runs inline.
                ctrl = 0.0
                while heap and (self.max_clusters is None or len(inflight) < self.max_clusters):
                    t_ctrl = clock()
                    entry = heapq.heappop(heap)
                    ctrl += clock() - t_ctrl
                    started = dispatch(entry)
                    t_ctrl = clock()
                    if isinstance(started, eager.Done):
                        commit(entry, started.value)
                    else:
                        inflight[started] = entry
                        started.add_done_callback(on_done)
                    ctrl += clock() - t_ctrl
                t_ctrl = clock()
                lo, hi = step_range()
                self.metrics.set_spread(hi - lo)
                self._maybe_checkpoint()
                self._controller_s += ctrl + clock() - t_ctrl
                if not inflight:
                    break
                await wake.wait()
                wake.clear()
                t_ctrl = time.perf_counter()
                batch = sorted(completed, key=lambda t: inflight[t])
                completed.clear()
                for task in batch:
                    commit(inflight.pop(task), task.result())
                self._controller_s += time.perf_counter() - t_ctrl
        finally:
            await _cancel(inflight)

    async def _act_cluster(self, cl: tuple[str, ...], step: int, obs: list[Any]) -> dict[str, Any]:
        if len(cl) == 1:
            return {cl[0]: await self._act(cl[0], step, obs[0])}
        actions = await _gather_eager([self._act(a, step, o) for a, o in zip(cl, obs)], self._manual_eager)
        return dict(zip(cl, actions))

    # -- sync / single ----------------------------------------------------------------------

    async def _run_sync(self, sequential: bool) -> None:
        from ..wrappers import SyncParallelWrapper

        sync = SyncParallelWrapper(self.env)
        if self.resume_state is None:
            obs, _ = sync.reset(seed=self.seed)
            step = 0
        else:
            sync.agents = list(self.env.agents)
            obs = {a: self.env.observe(a) for a in sync.agents}
            step = self.env.agent_step(sync.agents[0]) if sync.agents else self.env.max_steps
        while sync.agents:
            agents = list(sync.agents)
            if self.executor is not None and not sequential:  # one request per worker per step
                got = await self.executor.act_cluster(agents, step, [obs[a] for a in agents], self.metrics)
                acts = [got[a] for a in agents]
            elif sequential:
                act = self._act if self.executor is None else self._act_remote
                acts = [await act(a, step, obs[a]) for a in agents]
            else:
                acts = await _gather_eager([self._act(a, step, obs[a]) for a in agents], self._manual_eager)
            t_ctrl = time.perf_counter()
            actions = dict(zip(agents, acts))
            obs, _, _, _, _ = sync.step(actions)
            for a in agents:
                self._mark_committed(a, step, actions[a])
            step += 1
            self._maybe_checkpoint()
            self._controller_s += time.perf_counter() - t_ctrl

    # -- oracle / nodep ---------------------------------------------------------------------

    async def _run_dag(self, use_deps: bool) -> float:
        names = self.env.possible_agents
        n, max_steps = len(names), self.env.max_steps
        done = [0] * n                      # steps completed per agent
        spread = StepRange([0] * n)
        waiting: dict[tuple[int, int], list[int]] = {}  # (agent, steps it must reach) -> waiters
        unmet = [0] * n
        heap: list[tuple[int, int]] = []
        dep_total = 0

        def try_ready(i: int) -> None:
            nonlocal dep_total
            t = done[i]
            if t >= max_steps:
                return
            deps = [j for j in self.dependencies(i, t) if j != i] if use_deps else []
            dep_total += 1 + len(deps)
            blocking = [j for j in deps if done[j] < t]
            unmet[i] = len(blocking)
            for j in blocking:
                waiting.setdefault((j, t), []).append(i)
            if not blocking:
                heapq.heappush(heap, (t, i))

        for i in range(n):
            try_ready(i)

        act = self._act if self.executor is None else self._act_remote

        def dispatch(entry: tuple[int, int]):
            t, i = entry
            return eager.start(act(names[i], t, {"step": t}), self._manual_eager)

        def commit(entry: tuple[int, int], action: Any) -> None:
            t, i = entry
            self._mark_committed(names[i], t, action)
            done[i] = t + 1
            spread.advance(t)
            for w in waiting.pop((i, t + 1), ()):
                unmet[w] -= 1
                if unmet[w] == 0:
                    heapq.heappush(heap, (done[w], w))
            try_ready(i)

        await self._drive(heap, dispatch, commit, spread.range)
        return dep_total / (n * max_steps)


async def _gather_eager(coros: list, manual: bool = True) -> list:
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
        await _cancel([s for s in started if not isinstance(s, eager.Done)])
        raise
    return [s.value if isinstance(s, eager.Done) else s.result() for s in started]


async def _cancel(tasks) -> None:
    pending = [t for t in tasks if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)


def _progress_bar(total: int, mode: str, position: int | None = None):
    from tqdm import tqdm

    return tqdm(total=total, desc=mode, unit="agent-step", leave=False, mininterval=0.5, position=position)


def run(env: AsyncParallelEnv, agents: Mapping[str, Agent], backend: Backend, mode: str = "async",
        **kwargs: Any) -> RunMetrics:
    """Run a whole simulation and return its metrics; under the virtual clock when the backend's
    latencies are simulated (seconds of GPU time take microseconds of wall time)."""
    from .. import clock

    controller = Controller(env, agents, backend, mode, **kwargs)
    return clock.run(controller.run(), virtual=backend is not None and backend.virtual_time)
