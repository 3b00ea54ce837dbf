"""Gymnasium spaces of one agent: the data contract of observations and actions.

Action: a dict `{"move": int, "activity": str, "utterance": str}` (`AgentActionSpace`). `move`
indexes an offset `(dx, dy)` with |dx|, |dy| <= max_vel (row-major, `stay` in the middle); a move
onto a blocked tile or off the map is *in* the space and leaves the agent where it is (flagged in
its info). `activity` and `utterance` are optional when stepping the env: a plain int is a move,
a missing activity keeps the old one, a missing utterance means silence.

Observation: a dict with the agent's `position` (x, y), `step`, `location` ("sector:arena"),
own `activity` and `utterance`, `perceived` (a tuple of dicts with `name`, `position`,
`activity`, `utterance` of every agent it perceives, in agent order) and `action_mask`, an int8
vector over `move` that is 1 for moves onto walkable tiles. Following PettingZoo's convention,
`action_space(agent).sample(mask=obs["action_mask"])` samples a legal action.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

#: Longest activity or utterance text.
TEXT_MAX = 500
#: Longest agent name and location string.
NAME_MAX = 128

#: Characters allowed in text fields: printable ASCII, newline, Latin-1 letters and the
#: typographic punctuation language models like to emit. `sanitize_text` maps the rest.
CHARSET = (
    "".join(chr(c) for c in range(32, 127))
    + "\n"
    + "".join(chr(c) for c in range(0xA1, 0x180) if chr(c).isprintable())
    + "\u2010\u2011\u2012\u2013\u2014\u2015\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f"
    + "\u2020\u2021\u2022\u2026\u2030\u2032\u2033\u2039\u203a\u20ac\u2122"
)
_CHARS = frozenset(CHARSET)


def sanitize_text(text: str, max_length: int = TEXT_MAX) -> str:
    """Make any string a valid action text: unsupported characters become '?', tabs spaces,
    and the result is cut to `max_length`. Use it on free-form LLM output."""
    text = text.replace("\t", " ").replace("\r", "")
    return "".join(c if c in _CHARS else "?" for c in text[:max_length])


def bad_chars(text: str) -> list[str]:
    """The distinct characters of `text` outside CHARSET (empty if it is valid)."""
    return sorted(set(text) - _CHARS)


def move_offsets(max_vel: int) -> tuple[tuple[int, int], ...]:
    """The (dx, dy) of each move index: every offset within Chebyshev `max_vel`, row-major."""
    v = int(max_vel)
    return tuple((dx, dy) for dy in range(-v, v + 1) for dx in range(-v, v + 1))


def stay_index(max_vel: int) -> int:
    """The move index of (0, 0)."""
    return len(move_offsets(max_vel)) // 2


class AgentActionSpace(spaces.Dict):
    """`Dict(move=Discrete, activity=Text, utterance=Text)` whose `sample` also takes the
    observation's flat `action_mask` (an int8 vector over `move`), as PettingZoo harnesses do."""

    def sample(self, mask=None, probability=None):
        if isinstance(mask, np.ndarray):
            mask = {"move": mask, "activity": None, "utterance": None}
        return super().sample(mask=mask, probability=probability)


def _text(max_length: int) -> spaces.Text:
    return spaces.Text(max_length=max_length, min_length=0, charset=CHARSET)


def action_space(max_vel: int) -> AgentActionSpace:
    """A new action space for a given `max_vel`.

    A fresh object per call: a space carries its own RNG, and agents (and environments) that
    shared one would perturb each other's seeded samples.
    """
    return AgentActionSpace({
        "move": spaces.Discrete(len(move_offsets(max_vel))),
        "activity": _text(TEXT_MAX),
        "utterance": _text(TEXT_MAX),
    })


def move_space(max_vel: int) -> spaces.Discrete:
    """The action space of `obs_type="vector"`: the move index alone (a new object per call)."""
    return spaces.Discrete(len(move_offsets(max_vel)))


def tile_space(width: int, height: int) -> spaces.Tuple:
    """What `observation_mode = "position"` hands out: the (x, y) tile as a tuple of ints."""
    return spaces.Tuple((spaces.Discrete(width), spaces.Discrete(height)))


def observation_space(width: int, height: int, max_steps: int, max_vel: int) -> spaces.Dict:
    """The observation space of an agent on a `width` x `height` map."""
    position = spaces.Box(low=np.array([0, 0]), high=np.array([width - 1, height - 1]),
                          shape=(2,), dtype=np.int64)
    other = spaces.Dict({
        "name": _text(NAME_MAX),
        "position": position,
        "activity": _text(TEXT_MAX),
        "utterance": _text(TEXT_MAX),
    })
    n_moves = len(move_offsets(max_vel))
    return spaces.Dict({
        "position": position,
        "step": spaces.Discrete(max_steps + 1),
        "location": _text(2 * NAME_MAX),
        "activity": _text(TEXT_MAX),
        "utterance": _text(TEXT_MAX),
        "perceived": spaces.Sequence(other, stack=False),
        "action_mask": spaces.Box(0, 1, shape=(n_moves,), dtype=np.int8),
    })
