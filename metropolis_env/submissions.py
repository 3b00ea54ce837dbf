"""Submission bookkeeping: which agents may act, which have submitted, which are done.

An agent is *ready* when its whole cluster (tracker.py) is free; it then submits an action, and
the cluster commits once every member has submitted. Agents index 0..n-1; names are the env's.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from .actions import Action
from .errors import AgentDoneError, AgentNotReadyError
from .tracker import Blocker


class Submissions:
    """`ready[i]`: the ready cluster of agent i (a tuple, shared by its members), while it has
    not committed; `pending[cluster]`: the actions submitted so far; `done[i]`: i is truncated;
    `terminated`: agents the task ended, whose stays the env submits itself (tasks.py)."""

    def __init__(self, names: Sequence[str], max_steps: int):
        n = len(names)
        self.names = names
        self.max_steps = max_steps
        self.ready: dict[int, tuple[int, ...]] = {}
        self.pending: dict[tuple[int, ...], dict[int, Action]] = {}
        self.done = [False] * n
        self.terminated: set[int] = set()
        # Whether each agent's current step was ready the moment its previous one committed.
        self.free_start = [True] * n

    def waiting(self, step: Sequence[int]) -> list[int]:
        """Ready agents that have not submitted, smallest step first."""
        pend = self.pending
        out = [i for i, cl in self.ready.items() if i not in pend.get(cl, ())]
        out.sort(key=lambda i: (step[i], i))
        return out

    def submitted(self, step: Sequence[int]) -> list[int]:
        """Agents that submitted and wait for cluster mates, smallest step first."""
        return sorted((i for sub in self.pending.values() for i in sub), key=lambda i: (step[i], i))

    def clusters(self, step: Sequence[int]) -> list[tuple[int, ...]]:
        """The ready clusters, smallest step first, without terminated agents (the env submits
        for them)."""
        out = sorted(dict.fromkeys(self.ready.values()), key=lambda c: (step[c[0]], c))
        if self.terminated:
            out = [c for c in (tuple(m for m in cl if m not in self.terminated) for cl in out) if c]
        return out

    def check_may_submit(self, i: int, tracker) -> None:
        """Raise (AgentDoneError, AgentNotReadyError) unless agent i may submit now."""
        name = self.names[i]
        if i in self.terminated:
            raise AgentDoneError(f"agent {name!r} was terminated by the task; it takes no more actions (the env "
                                 f"keeps it standing still): drop it from the dict")
        if self.done[i]:
            raise AgentDoneError(f"agent {name!r} is truncated at step {tracker.step[i]} (max_steps="
                                 f"{self.max_steps}); it takes no more actions: drop it from the dict")
        cl = self.ready.get(i)
        if cl is None:
            raise AgentNotReadyError(self.not_ready_message(i, tracker, "it may not act yet"))
        if i in self.pending.get(cl, ()):
            waiting = [self.names[j] for j in cl if j not in self.pending[cl]]
            raise AgentNotReadyError(
                f"agent {name!r} already submitted its action for step {tracker.step[i]}; it waits for "
                f"its cluster mates {waiting} to submit theirs, then appears again in a step() result")

    def not_ready_message(self, i: int, tracker, what: str) -> str:
        names = self.names
        why = "; ".join(f"{names[b.other]!r} ({b.rule}, {b.gap} steps behind)"
                        if b.rule == "blocked" else f"{names[b.other]!r} ({b.rule})"
                        for b in tracker.blocked_by(i)[:3])
        return (f"agent {names[i]!r} is not ready at step {tracker.step[i]}: {what}; held back by "
                f"{why or 'nothing (internal error)'}. Submit only agents in env.ready_agents(); "
                f"env.blocked_by(agent) explains the wait")

    def blocked_by(self, i: int, tracker) -> list[Blocker]:
        """Who holds i back: its cluster mates that have not submitted when i is ready and
        submitted ([] when it has not: it may act), else the tracker's blockers."""
        cl = self.ready.get(i)
        if cl is None:
            return tracker.blocked_by(i)
        sub = self.pending.get(cl, {})
        if i not in sub:
            return []
        pos, hazard = tracker.pos, tracker.bound.hazard
        return [Blocker(j, "submission", 0, hazard(pos[i], pos[j])) for j in cl if j not in sub]

    def snapshot(self) -> dict:
        """A plain-data copy (env.snapshot's part)."""
        return {"done": list(self.done), "ready": dict(self.ready),
                "pending": {cl: dict(sub) for cl, sub in self.pending.items()},
                "terminated": frozenset(self.terminated)}

    def submit(self, i: int, action: Action) -> tuple[int, ...] | None:
        """Record i's action; its cluster if that completed it, else None."""
        cl = self.ready[i]
        sub = self.pending.setdefault(cl, {})
        sub[i] = action
        return cl if len(sub) == len(cl) else None

    def take(self, cl: tuple[int, ...]) -> dict[int, Action]:
        """The actions of a complete cluster, which is no longer ready (it commits)."""
        for m in cl:
            del self.ready[m]
        return self.pending.pop(cl)

    def register(self, tracker, candidates: Iterable[int], committed: set[int]) -> list[int]:
        """Register the ready clusters among `candidates`; returns the agents that became ready
        (done agents included: that is when their final observation is due)."""
        ready, done = self.ready, self.done
        became: list[int] = []
        for c in candidates:
            if c in ready or done[c]:
                continue
            cl = tracker.ready_cluster(c)
            if cl is None:
                continue
            cl = tuple(cl)
            for m in cl:
                if done[m] or m in ready:
                    continue
                if tracker.step[m] >= self.max_steps:
                    done[m] = True
                else:
                    ready[m] = cl
                # Ready in the same call that committed its previous step: it never waited.
                self.free_start[m] = m in committed and not tracker.initial_blockers[m]
                became.append(m)
        became.sort()
        return became
