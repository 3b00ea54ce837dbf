"""Scheduling policies: which agent-steps may run now, and what a completed one changes.

A policy owns the ready queue (`ReadyQueue`: smallest step first, or `ArrivalQueue`: first
ready first) and the commit of results; the controller's one drive loop pops entries while the
policy's cap allows, runs them on a step runner and hands each completed entry back to
`commit`. Policies:

- `DependencyPolicy` (mode "async"): the env's dependency tracking. Ready clusters enter the queue
  as the env makes them ready; each completed cluster is submitted to the env at once.
- `BarrierPolicy` (modes "sync" and "single"): the global barrier, through SyncParallelWrapper:
  every agent of step t, then t+1; "single" runs one agent at a time, as the original Generative
  Agents code.
- `DagPolicy` (modes "oracle" and "nodep"): trace replay without an env. Agent i's step t waits
  for the agents it perceived at t (`dependencies(i, t)`) to finish step t-1, or for nobody.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Any, Callable, Iterable, Mapping

from ..errors import ConfigError
from ..steps import StepRange
from ..wrappers import SyncParallelWrapper

#: A policy's ledger callback: mark(agent, step, action) once the step is committed.
Mark = Callable[[str, int, Any], None]


#: Orders of the ready queue: "step", smallest step first (ties by the entry: the paper's
#: priority, which it applies both here and at the LLM server); "arrival", first ready first
#: dispatched (the paper's ablation without priority).
READY_ORDERS = ("step", "arrival")


class ReadyQueue:
    """Ready entries (tuples whose first item is the step), smallest step first (ties by the
    entry). `ready_queue(order)` makes the queue of an order of `READY_ORDERS`.

    The order matters only while entries wait, i.e. under a cap on entries in flight
    (`max_clusters`): without one every ready entry is dispatched at once.
    """

    order = "step"

    def __init__(self) -> None:
        self._heap: list[tuple] = []

    def push(self, entry: tuple) -> None:
        heapq.heappush(self._heap, entry)

    def pop(self) -> tuple:
        return heapq.heappop(self._heap)

    def __len__(self) -> int:
        return len(self._heap)


class ArrivalQueue(ReadyQueue):
    """Ready entries first ready, first dispatched."""

    order = "arrival"

    def __init__(self) -> None:
        self._fifo: deque[tuple] = deque()

    def push(self, entry: tuple) -> None:
        self._fifo.append(entry)

    def pop(self) -> tuple:
        return self._fifo.popleft()

    def __len__(self) -> int:
        return len(self._fifo)


def ready_queue(order: str = "step") -> ReadyQueue:
    """An empty ready queue of `order` (READY_ORDERS)."""
    for kind in (ReadyQueue, ArrivalQueue):
        if kind.order == order:
            return kind()
    raise ConfigError(f"unknown ready-queue order {order!r}; choose one of {READY_ORDERS}")


class SchedulingPolicy:
    """The contract the drive loop relies on.

    name: the mode it implements (metrics and checkpoints carry it). max_inflight: cap on entries
    in flight at once (None: no cap). checkpointable: whether a run under it can be checkpointed
    and resumed (its state lives in the env). ready: the ready entries (`ReadyQueue`).
    """

    name = "?"
    max_inflight: int | None = None
    checkpointable = False

    def __init__(self, ready_order: str = "step") -> None:
        self.ready = ready_queue(ready_order)

    def start(self, env, mark: Mark, *, seed: int | None, fresh: bool) -> None:
        """Fill the queue: from `env.reset(seed)` when `fresh`, else from the env as it is."""
        raise NotImplementedError

    def work(self, entry: tuple) -> tuple[tuple[str, ...], int, list[Any]]:
        """(agents, step, their observations) of a popped entry."""
        raise NotImplementedError

    def commit(self, entry: tuple, actions: Mapping[str, Any]) -> None:
        """Take the actions of a completed entry; mark what is committed; queue what became ready."""
        raise NotImplementedError

    def step_range(self) -> tuple[int, int]:
        """(smallest, largest) committed step over the agents, for the step-spread metric."""
        raise NotImplementedError

    def deps(self) -> tuple[float, float | None]:
        """(agents each agent-step waited on, itself included; the truly needed ones or None)."""
        raise NotImplementedError


class DependencyPolicy(SchedulingPolicy):
    """Mode "async": dispatch each ready cluster at once, commit each as it completes."""

    name = "async"
    checkpointable = True

    def __init__(self, max_clusters: int | None = None, ready_order: str = "step"):
        super().__init__(ready_order)
        if max_clusters is not None and max_clusters < 1:
            raise ConfigError(f"max_clusters must be >= 1 or None, got {max_clusters}")
        self.max_inflight = max_clusters

    def start(self, env, mark: Mark, *, seed: int | None, fresh: bool) -> None:
        self.env, self.mark = env, mark
        self.ready_obs: dict[str, Any] = {}
        self.index = {a: i for i, a in enumerate(env.possible_agents)}
        obs = env.reset(seed=seed)[0] if fresh else {a: env.observe(a) for a in env.ready_agents()}
        self.enqueue(obs, {}, {})

    def enqueue(self, new_obs: Mapping[str, Any], truncs: Mapping[str, bool], terms: Mapping[str, bool]) -> None:
        # done agents (truncated, or terminated by the env's task) act no more
        env, seen = self.env, set()
        for a, o in new_obs.items():
            if not (truncs.get(a) or terms.get(a)):
                self.ready_obs[a] = o
        for a in new_obs:
            if truncs.get(a) or terms.get(a) or a in seen:
                continue
            cl = env.ready_cluster(a)
            seen.update(cl)
            self.ready.push((env.agent_step(a), self.index[cl[0]], cl))

    def work(self, entry):
        step, _, cl = entry
        return cl, step, [self.ready_obs.pop(a) for a in cl]

    def commit(self, entry, actions):
        step, _, cl = entry
        new_obs, _, terms, truncs, _ = self.env.step(actions)
        for a in cl:
            self.mark(a, step, actions[a])
        self.enqueue(new_obs, truncs, terms)

    def step_range(self):
        return self.env.step_range

    def deps(self):
        return self.env.stats.tracker_per_step, self.env.stats.true_per_step


class BarrierPolicy(SchedulingPolicy):
    """Modes "sync" (every agent of a step in one entry, acting together) and "single" (one agent
    per entry, one entry in flight); the env advances once all agents of the step are done."""

    checkpointable = True

    def __init__(self, sequential: bool = False):
        super().__init__()
        self.sequential = sequential
        self.name = "single" if sequential else "sync"
        self.max_inflight = 1 if sequential else None

    def start(self, env, mark: Mark, *, seed: int | None, fresh: bool) -> None:
        self.env, self.mark = env, mark
        self.sync = sync = SyncParallelWrapper(env)
        if fresh:
            obs, _ = sync.reset(seed=seed)
            step = 0
        else:
            sync.agents = list(env.agents)
            obs = {a: env.observe(a) for a in sync.agents}
            step = env.agent_step(sync.agents[0]) if sync.agents else env.max_steps
        self._begin(step, obs)

    def _begin(self, step: int, obs: Mapping[str, Any]) -> None:
        self.step, self.obs, self.done = step, obs, {}
        agents = self.sync.agents
        if not agents:
            return
        if self.sequential:
            for k, a in enumerate(agents):
                self.ready.push((step, k, (a,)))
        else:
            self.ready.push((step, 0, tuple(agents)))

    def work(self, entry):
        step, _, cl = entry
        return cl, step, [self.obs[a] for a in cl]

    def commit(self, entry, actions):
        self.done.update(actions)
        agents = list(self.sync.agents)
        if len(self.done) < len(agents):
            return
        actions = {a: self.done[a] for a in agents}
        obs, _, _, _, _ = self.sync.step(actions)
        for a in agents:
            self.mark(a, self.step, actions[a])
        self._begin(self.step + 1, obs)

    def step_range(self):
        return self.step, self.step  # everyone at one step: no spread, by construction

    def deps(self):
        return float(len(self.env.possible_agents)), self.env.stats.true_per_step


class DagPolicy(SchedulingPolicy):
    """Modes "oracle" (`dependencies` given: agent i's step t waits for the agents it perceived at
    t to finish t-1) and "nodep" (None: nobody waits). No env is stepped; an agent's observation
    is {"step": t}."""

    def __init__(self, dependencies: Callable[[int, int], Iterable[int]] | None = None,
                 ready_order: str = "step"):
        super().__init__(ready_order)
        self.dependencies = dependencies
        self.name = "oracle" if dependencies is not None else "nodep"

    def start(self, env, mark: Mark, *, seed: int | None, fresh: bool) -> None:
        self.names, self.mark = env.possible_agents, mark
        n, self.max_steps = len(self.names), env.max_steps
        self.done = [0] * n                  # steps completed per agent
        self.spread = StepRange([0] * n)
        self.waiting: dict[tuple[int, int], list[int]] = {}  # (agent, steps it must reach) -> waiters
        self.unmet = [0] * n
        self.dep_total = 0
        for i in range(n):
            self._try_ready(i)

    def _try_ready(self, i: int) -> None:
        t = self.done[i]
        if t >= self.max_steps:
            return
        deps = [j for j in self.dependencies(i, t) if j != i] if self.dependencies is not None else []
        self.dep_total += 1 + len(deps)
        blocking = [j for j in deps if self.done[j] < t]
        self.unmet[i] = len(blocking)
        for j in blocking:
            self.waiting.setdefault((j, t), []).append(i)
        if not blocking:
            self.ready.push((t, i))

    def work(self, entry):
        t, i = entry
        return (self.names[i],), t, [{"step": t}]

    def commit(self, entry, actions):
        t, i = entry
        self.mark(self.names[i], t, actions[self.names[i]])
        self.done[i] = t + 1
        self.spread.advance(t)
        for w in self.waiting.pop((i, t + 1), ()):
            self.unmet[w] -= 1
            if self.unmet[w] == 0:
                self.ready.push((self.done[w], w))
        self._try_ready(i)

    def step_range(self):
        return self.spread.range()

    def deps(self):
        return self.dep_total / (len(self.names) * self.max_steps), None


MODES = ("async", "sync", "single", "oracle", "nodep")


def policy_for(mode: str, *, max_clusters: int | None = None,
               dependencies: Callable[[int, int], Iterable[int]] | None = None,
               ready_order: str = "step") -> SchedulingPolicy:
    """The policy of a mode name (the strings of MODES); `ready_order` (READY_ORDERS) orders the
    ready queue of async, oracle and nodep (sync and single have one ready entry at a time, or
    one step's agents in a fixed order)."""
    if mode == "async":
        return DependencyPolicy(max_clusters, ready_order)
    if mode in ("sync", "single"):
        return BarrierPolicy(sequential=mode == "single")
    if mode == "oracle":
        if dependencies is None:
            raise ConfigError("mode 'oracle' needs dependencies=(agent_index, step) -> perceived agent indices")
        return DagPolicy(dependencies, ready_order)
    if mode == "nodep":
        return DagPolicy(None, ready_order)
    raise ConfigError(f"unknown mode {mode!r}; choose one of {MODES}")
