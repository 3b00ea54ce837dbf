"""The checks on an AsyncParallelEnv's constructor arguments, and its agent names.

Each check raises a ConfigError that says what was wrong and how to fix it, before the env
holds any state; `AgentNames` also turns an unknown agent into an UnknownAgentError that lists
the env's agents.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Sequence

import numpy as np

from . import spaces as msp
from .errors import ConfigError, UnknownAgentError
from .perception import check_perception
from .rules import PaperRules, rule_set
from .tasks import Task, make_task


def check_int(name: str, value: Any, minimum: int) -> None:
    """ConfigError unless `value` is an int (not a bool) >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}, got {value!r}")


def check_env_args(radius_p: Any, max_vel: Any, max_steps: Any, perception: str, rules: Any,
                   render_mode: str | None, render_modes: Sequence[str], obs_type: str,
                   obs_types: Sequence[str], task: Any) -> tuple[PaperRules, Task | None]:
    """Check the env's parameters; returns (the rule set, the task or None) they name."""
    check_int("radius_p", radius_p, 0)
    check_int("max_vel", max_vel, 1)
    check_int("max_steps", max_steps, 1)
    check_perception(perception)
    try:
        rules = rule_set(rules)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if render_mode not in (None, *render_modes):
        raise ConfigError(f"render_mode must be None or one of {render_modes}, got {render_mode!r}")
    if obs_type not in obs_types:
        raise ConfigError(f"obs_type must be one of {obs_types}, got {obs_type!r}: 'full' (dicts with texts) "
                          f"or 'vector' (a float32 Box and a Discrete move, for RL harnesses)")
    return rules, None if task is None else make_task(task)


class AgentNames:
    """The env's agents in order (`names`), checked once: at least one, each a non-empty string
    of at most spaces.NAME_MAX characters from spaces.CHARSET, no two alike."""

    def __init__(self, agents: Iterable[Any]):
        names = list(agents)
        if not names:
            raise ConfigError("an environment needs at least one agent")
        for a in names:
            if not isinstance(a, str) or not a or len(a) > msp.NAME_MAX or msp.bad_chars(a):
                raise ConfigError(f"agent names must be non-empty strings of at most {msp.NAME_MAX} "
                                  f"characters from spaces.CHARSET, got {a!r}")
        dupes = sorted(a for a, c in Counter(names).items() if c > 1)
        if dupes:
            raise ConfigError(f"duplicate agent names {dupes}: every agent needs its own name")
        self.names: list[str] = names
        self._index = {a: i for i, a in enumerate(names)}

    def index(self, agent: Any) -> int:
        """The index of `agent`; UnknownAgentError (naming a few agents) if it is not one."""
        try:
            return self._index[agent]
        except (KeyError, TypeError):
            near = ", ".join(repr(a) for a in self.names[:5])
            more = ", ..." if len(self.names) > 5 else ""
            raise UnknownAgentError(f"unknown agent {agent!r}: this env's agents are {near}{more} "
                                    f"(see env.possible_agents)") from None
