"""The shelf: completed speculative steps that were dropped, kept by what they were computed from.

A held step is dropped when what it was predicted from changes (a cut) or when its agent's
chain is discarded. Often the change is undone soon after: a laggard's chain is cut and
recomputed to the very same states, a guess flips and flips back. The step computed on the
first guess is then exactly the step the chain has to compute again, since an agent's step
depends only on its state before the step, its observation and its LLM answers (the
speculation contract; deterministic answers make equal inputs give equal results). So a
completed step is not thrown away when dropped: it is shelved under its inputs (the step,
the exact key of the observation it was computed on, a digest of the agent's pickled state
before it) and a chain that is about to compute the same step from equal inputs takes it off
the shelf instead. On recorded runs a step can take minutes of LLM calls (a conversation), and
computing it a second or third time put those minutes on the critical path. Steps without LLM
calls are not shelved: computing them again costs nothing worth the memory.

A shelved step counts as wasted only once it can no longer be taken: when its agent commits
that step (the real one was used) or the run ends. Memory: at most `per_agent` steps per
agent, the oldest shelved first out; an entry holds the agent's copy after the step.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Iterator

from .held import Ahead

#: Steps kept per agent (each holds an agent copy); the oldest shelved goes first.
PER_AGENT = 64


def state_digest(data: bytes) -> bytes:
    """A digest of an agent's pickled state (`checkpoint.snapshot`): equal states, equal
    digests; 256 bits, so unequal states never meet in practice."""
    return hashlib.blake2b(data, digest_size=32).digest()


class Shelf:
    """Completed, dropped held steps by agent, keyed by (step, observation key, state digest)."""

    def __init__(self, per_agent: int = PER_AGENT):
        if per_agent < 1:
            raise ValueError(f"per_agent must be >= 1, got {per_agent}")
        self.per_agent = per_agent
        self.kept: dict[str, OrderedDict[tuple, Ahead]] = {}
        self.taken = 0  # steps taken off the shelf
        self.taken_calls = 0  # their LLM calls, not made again

    def keep(self, agent: str, ahead: Ahead) -> list[Ahead]:
        """Shelve `ahead` if it completed (an action, no error) and made LLM calls; returns the steps that are
        now wasted for good: `ahead` itself if it cannot be shelved, or an older one pushed
        out (also one with the same inputs, which `ahead` replaces)."""
        action = ahead.action
        if not ahead.calls.started or not action.done() or action.cancelled() or action.exception() is not None:
            return [ahead]  # a step without LLM calls is cheap to compute again
        mine = self.kept.setdefault(agent, OrderedDict())
        key = (ahead.step, ahead.key, ahead.state)
        out = [mine.pop(key)] if key in mine else []
        mine[key] = ahead
        while len(mine) > self.per_agent:
            out.append(mine.popitem(last=False)[1])
        return out

    def take(self, agent: str, step: int, key: tuple, state: bytes | None) -> Ahead | None:
        """The shelved step of `agent` at `step` computed on observation key `key` from agent
        state `state` (a digest, None for agents that act() never changes), or None."""
        mine = self.kept.get(agent)
        ahead = mine.pop((step, key, state), None) if mine else None
        if ahead is not None:
            self.taken += 1
            self.taken_calls += ahead.calls.started
        return ahead

    def forget(self, agent: str, step: int) -> Iterator[Ahead]:
        """Drop (and yield) `agent`'s shelved steps at or before `step`: it has committed it."""
        mine = self.kept.get(agent)
        if not mine:
            return
        for key in [k for k in mine if k[0] <= step]:
            yield mine.pop(key)

    def clear(self) -> Iterator[Ahead]:
        """Drop (and yield) everything shelved: the run is over."""
        for mine in self.kept.values():
            yield from mine.values()
        self.kept.clear()
