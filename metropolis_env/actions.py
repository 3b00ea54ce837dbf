"""Actions as the env takes them: a submitted action dict (or a bare move index) parsed into an
`Action`, or a clear InvalidActionError saying what was wrong and how to fix it.

The keys an action dict may hold (docs/RULES.md for the promises): "move" (an index into
`spaces.move_offsets`), "activity", "utterance", and "path" or "route" with "until" and "depart"
(promises.py parses those).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import spaces as msp
from .errors import InvalidActionError

#: Keys an action dict may hold.
ACTION_KEYS = frozenset({"move", "activity", "utterance", "path", "route", "until", "depart"})
PROMISE_KEYS = ("path", "route")


@dataclass(frozen=True)
class Action:
    """One agent's parsed action: a move index, the new activity (None keeps the current one)
    and the utterance of this step ("" says nothing)."""

    move: int
    activity: str | None = None
    utterance: str = ""


class ActionParser:
    """Parses actions for moves within `max_vel`; plain moves are shared Action values."""

    def __init__(self, max_vel: int):
        self.max_vel = max_vel
        self.n_moves = len(msp.move_offsets(max_vel))
        self.stay = msp.stay_index(max_vel)
        self._plain = [Action(k) for k in range(self.n_moves)]

    def parse(self, action: Any, agent: str, step: int) -> Action:
        """The Action of a valid `action` of `agent` at `step` (named in errors)."""
        if type(action) is dict and len(action) == 1:
            # the common {"move": int} in range, checked without building an error context
            move = action.get("move")
            if type(move) is int and 0 <= move < self.n_moves:
                return self._plain[move]
        where = f"action of agent {agent!r} at step {step}"
        activity: str | None = None
        utterance = ""
        if isinstance(action, Mapping):
            extra = set(action) - ACTION_KEYS
            if extra:
                raise InvalidActionError(f"{where} has unknown keys {sorted(map(str, extra))}; "
                                         f"allowed: {', '.join(map(repr, sorted(ACTION_KEYS)))}")
            if "move" not in action:
                raise InvalidActionError(f"{where} needs a 'move' (an int in 0..{self.n_moves - 1}; "
                                         f"{self.stay} stays put)")
            move = action["move"]
            if action.get("activity") is not None:
                activity = check_text(where, "activity", action["activity"])
            if action.get("utterance") is not None:
                utterance = check_text(where, "utterance", action["utterance"])
        else:
            move = action
        if isinstance(move, np.ndarray) and move.shape == ():
            move = move.item()
        if isinstance(move, bool) or not isinstance(move, (int, np.integer)):
            raise InvalidActionError(f"{where}: 'move' must be an int, got {type(move).__name__} {move!r}; "
                                     f"use env.move_to(agent, tile) to get one")
        if not 0 <= int(move) < self.n_moves:
            raise InvalidActionError(f"{where}: move {int(move)} is out of range 0..{self.n_moves - 1} "
                                     f"(offsets within max_vel={self.max_vel}; {self.stay} stays put)")
        if activity is None and not utterance:
            return self._plain[int(move)]
        return Action(int(move), activity, utterance)


def declares_promise(action: Any) -> bool:
    """Whether a raw action declares a path or a route."""
    return isinstance(action, Mapping) and any(action.get(k) is not None for k in PROMISE_KEYS)


def check_text(where: str, key: str, text: Any) -> str:
    if not isinstance(text, str):
        raise InvalidActionError(f"{where}: {key!r} must be a str, got {type(text).__name__}")
    if len(text) > msp.TEXT_MAX:
        raise InvalidActionError(f"{where}: {key!r} has {len(text)} characters, at most {msp.TEXT_MAX}; "
                                 f"shorten it (metropolis_env.sanitize_text cuts and cleans)")
    bad = msp.bad_chars(text)
    if bad:
        raise InvalidActionError(f"{where}: {key!r} holds characters outside the text charset "
                                 f"{bad[:5]!r}; clean it with metropolis_env.sanitize_text")
    return text
