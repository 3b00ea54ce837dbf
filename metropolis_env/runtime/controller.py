"""The controller: one drive loop that runs a scheduling policy's agent-steps on a step runner.

Modes are scheduling policies (runtime/scheduling.py) and all run the same agents on the same
backend, so their metrics compare:
- `async` (DependencyPolicy): ready clusters dispatched as soon as the env makes them ready,
  committed as they complete.
- `sync` / `single` (BarrierPolicy): the global barrier; `single` runs one agent at a time.
- `oracle` / `nodep` (DagPolicy): trace replay; agent i's step t waits only for the agents it
  really perceived at t, or for nobody; no env is stepped.

Where steps run is a step runner (runtime/executors.py): `LocalExecutor` in this event loop, or
`RayExecutor` on Ray actors. What watches the run (progress, `on_commit`, checkpoints) are
observers of dispatch and commit (runtime/observers.py). Every (agent, step) is dispatched
exactly once and committed exactly once; a failing agent step cancels the run and raises
AgentStepError naming the agent and step.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Iterable, Mapping

from .. import clock
from ..backends.base import Backend
from ..env import AsyncParallelEnv
from ..errors import AgentStepError, ConfigError
from . import eager
from .agent import Agent
from .checkpoint import Checkpointer, CheckpointObserver
from .executors import Executor, LocalExecutor, cancel_all
from .metrics import MetricsRecorder, RunMetrics
from .observers import CommitCallback, ProgressBar, RunObserver
from .scheduling import MODES, SchedulingPolicy, policy_for
from .speculation import Speculation

__all__ = ["Controller", "run", "MODES", "AgentStepError"]


class Controller:
    """Runs `agents` in `env` under a scheduling policy; `await run()` returns RunMetrics.

    agents: {name: Agent} for every agent of the env.
    mode: a mode name of MODES, or a SchedulingPolicy object.
    max_clusters: cap on clusters in flight at once (async mode); None = no cap.
    ready_order: "step" (smallest step first, the paper's priority) or "arrival" (first ready,
    first dispatched); it only matters under a cap (see scheduling.ReadyQueue).
    dependencies: for `oracle`, a callable (agent_index, step) -> indices of the agents whose
    state at time `step` that agent step reads (itself excluded).
    models: optional {agent: model name} passed on with every LLM call.
    progress: show a tqdm progress bar over agent-steps; progress_position: its terminal line
    (tqdm's `position`), for runs that show their bars side by side (bench --jobs).
    on_commit: optional callback(agent, step, action) after each committed agent-step.
    observers: more RunObservers of dispatch and commit.
    checkpoint: a Checkpointer (async, sync and single runs); resume_state: a loaded checkpoint
    to continue from (see runtime/resume.py).
    executor: where agent-steps run; None runs them in this event loop on `backend`. An executor
    (e.g. `RayExecutor`) runs them elsewhere on backends it builds itself: pass backend=None. The
    controller keeps the ready queue and commits; after a successful run `agents` hold the
    agents' final state. No checkpointing with an executor (the agents live in the workers).
    speculation: a Speculation, or its depth (async mode, local runner): blocked agents compute
    ahead on predicted observations; results are used only when they are exact.
    """

    def __init__(self, env: AsyncParallelEnv, agents: Mapping[str, Agent], backend: Backend | None,
                 mode: str | SchedulingPolicy = "async", *, seed: int | None = 0,
                 max_clusters: int | None = None, ready_order: str = "step",
                 dependencies: Callable[[int, int], Iterable[int]] | None = None,
                 models: Mapping[str, str] | None = None, progress: bool = False,
                 record_calls: bool = False, on_commit: Callable[[str, int, Any], None] | None = None,
                 checkpoint: Checkpointer | None = None, resume_state: dict | None = None,
                 executor: Executor | None = None, progress_position: int | None = None,
                 observers: Iterable[RunObserver] = (), speculation: Speculation | int | None = None):
        policy = mode if isinstance(mode, SchedulingPolicy) else policy_for(
            mode, max_clusters=max_clusters, dependencies=dependencies, ready_order=ready_order)
        missing = [a for a in env.possible_agents if a not in agents]
        if missing:
            raise ConfigError(f"no Agent given for {missing[:5]}: pass agents={{name: agent}} for every env agent")
        for name, ag in agents.items():
            if not callable(getattr(ag, "act", None)):
                raise ConfigError(f"agent {name!r} has no act(observation, ctx) method")
        if executor is None and backend is None:
            raise ConfigError("pass a backend (or an executor that builds its own backends)")
        if executor is not None and (checkpoint is not None or resume_state is not None):
            raise ConfigError("runs on an executor cannot checkpoint or resume yet: the agents live in its workers")
        if resume_state is not None and not policy.checkpointable:
            raise ConfigError(f"mode {policy.name!r} cannot be resumed (only async, sync and single runs checkpoint)")
        if checkpoint is not None and not policy.checkpointable:
            raise ConfigError(f"mode {policy.name!r} does not checkpoint; use async, sync or single")
        self.env = env
        self.agents = dict(agents)
        self.policy = policy
        self.mode = policy.name
        self.seed = seed
        self.models = dict(models or {})
        self.record_calls = record_calls
        self.runner: Executor = executor if executor is not None else LocalExecutor(backend)
        self.resume_state = resume_state
        self.observers: list[RunObserver] = list(observers)
        if on_commit is not None:
            self.observers.append(CommitCallback(on_commit))
        self._progress = (progress, progress_position)
        if isinstance(speculation, int) and not isinstance(speculation, bool):
            speculation = Speculation(depth=speculation)
        self.speculation = speculation
        if checkpoint is not None:
            # Speculation's settings, not its state: held chains are never saved, a resumed run
            # builds them again.
            spec = None if speculation is None else speculation.settings()
            settings = {"mode": self.mode, "seed": seed, "max_clusters": policy.max_inflight
                        if self.mode == "async" else None, "ready_order": policy.ready.order,
                        "models": self.models, "speculation": spec}
            self.observers.append(CheckpointObserver(checkpoint, env, self.agents, lambda: self.committed, settings))
        if speculation is not None:
            speculation.check(self)  # raises ConfigError for what it cannot run (policy, runner, agents)
        self.metrics: MetricsRecorder | None = None
        self.committed: dict[str, int] = {}
        self._controller_s = 0.0

    async def run(self) -> RunMetrics:
        loop = asyncio.get_running_loop()
        await self.runner.start(self.agents, self.models)  # workers up before the clock starts
        self.metrics = MetricsRecorder(loop.time, record_calls=self.record_calls)
        fresh = self.resume_state is None
        self.committed = ({a: 0 for a in self.env.possible_agents} if fresh
                          else dict(self.resume_state["committed"]))
        observers = list(self.observers)
        if self._progress[0]:
            total = len(self.env.possible_agents) * self.env.max_steps - sum(self.committed.values())
            observers.append(ProgressBar(total, self.mode, self._progress[1]))
        dispatcher = self._dispatch
        if self.speculation is not None:
            dispatcher = self.speculation.attach(self, dispatcher)
            observers.append(self.speculation)
        self._observers = observers
        wall0 = time.perf_counter()
        try:
            self.policy.start(self.env, self._mark, seed=self.seed, fresh=fresh)
            await self._drive(dispatcher)
        except AgentStepError as e:
            notes = [n for n in (o.failed(e) for o in observers) if n]
            if notes:
                e.args = (f"{e.args[0]} ({'; '.join(notes)})",)
            raise
        else:
            for o in observers:
                o.finished()
        finally:
            for o in observers:
                o.closed()
            if self.speculation is not None:
                await self.speculation.stop()
            backend_stats = await self.runner.stop()
        self.agents.update(self.runner.agents())
        deps, true_deps = self.policy.deps()
        m = self.metrics.finish(self.mode, deps, backend_stats, time.perf_counter() - wall0,
                                self._controller_s, true_deps)
        if self.speculation is not None:
            self.speculation.report(m)
        return m

    # -- dispatch and commit ----------------------------------------------------------------

    def _dispatch(self, cl: tuple[str, ...], step: int, obs: list[Any]):
        """Start an entry's agent-steps: eager.Done(actions) if they finished without waiting,
        else a Task."""
        return eager.start(self.runner.act_cluster(cl, step, obs, self.metrics), self.runner.inline)

    def _mark(self, agent: str, step: int, action: Any) -> None:
        # The ledger that proves no step is lost or run twice.
        if self.committed[agent] != step:
            raise RuntimeError(f"internal: {agent!r} committed step {step} but had done {self.committed[agent]}")
        self.committed[agent] = step + 1
        for o in self._observers:
            o.committed(agent, step, action)

    async def _drive(self, dispatch) -> None:
        """The one dispatch/ack loop of every policy.

        Pops ready entries (in the policy's ready order) while the policy's cap allows, starts each
        eagerly (a step that makes no LLM call commits at once), and commits the in-flight ones as
        they complete, in queue order when several complete at the same instant.
        """
        policy, ready, cap = self.policy, self.policy.ready, self.policy.max_inflight
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
                while ready and (cap is None or len(inflight) < cap):
                    t_ctrl = clock()
                    entry = ready.pop()
                    work = policy.work(entry)
                    # Observers hear of the dispatch before the dispatcher runs: speculation may
                    # swap in an adopted copy of the agent, and a checkpoint must keep the agent
                    # as it was before the step, never one halfway through or past it.
                    for o in self._observers:
                        for a in work[0]:
                            o.dispatched(a, work[1])
                    ctrl += clock() - t_ctrl
                    started = dispatch(*work)
                    t_ctrl = clock()
                    if isinstance(started, eager.Done):
                        policy.commit(entry, started.value)
                    else:
                        inflight[started] = entry
                        started.add_done_callback(on_done)
                    ctrl += clock() - t_ctrl
                t_ctrl = clock()
                lo, hi = policy.step_range()
                self.metrics.set_spread(hi - lo)
                for o in self._observers:
                    o.between_commits()
                self._controller_s += ctrl + clock() - t_ctrl
                if not inflight:
                    break
                await wake.wait()
                wake.clear()
                t_ctrl = clock()
                batch = sorted(completed, key=lambda t: inflight[t])
                completed.clear()
                for task in batch:
                    policy.commit(inflight.pop(task), task.result())
                self._controller_s += clock() - t_ctrl
        finally:
            await cancel_all(inflight)


def run(env: AsyncParallelEnv, agents: Mapping[str, Agent], backend: Backend, mode: str = "async",
        **kwargs: Any) -> RunMetrics:
    """Run a whole simulation and return its metrics; under the virtual clock when the backend's
    latencies are simulated (seconds of GPU time take microseconds of wall time)."""
    controller = Controller(env, agents, backend, mode, **kwargs)
    return clock.run(controller.run(), virtual=backend is not None and backend.virtual_time)
