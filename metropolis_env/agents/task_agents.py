"""Agents for the built-in tasks (metropolis_env.tasks): a scripted policy and an LLM agent.

`scripted_action(env, agent, info)` is a deterministic policy of an agent's task info and tile
(without a task it stays put):
- goto: walk the shortest way to `info["goal"]`;
- rendezvous: of each pair, the agent whose name sorts first waits where it started, the other
  walks to `info["partner_start"]` (an odd agent out may wait for someone who is walking away);
- relay: everybody walks to a meeting tile drawn from a hash of the source's name
  (`info["source"]`), and once an agent knows the message (`info["message"]`) it utters it
  every step.

Runtime agents (for `metropolis_env.runtime.run`) read their task info with `env.task_info(a)`
when their step starts: it changes only when their own step is evaluated, so it is the same in
sync and out-of-order runs. `LLMTaskAgent` asks the model for a JSON move; an answer that is not
valid JSON or moves into a wall falls back to the scripted action (counted in `fallbacks`). The
embedded simulated server answers filler text (it models time, not words), so offline every
answer falls back and the LLM agent scores what the script scores, at the LLM's pace.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from ..errors import InvalidActionError
from ..spaces import move_offsets, sanitize_text
from .village import DIRECTIONS, parse_action

if TYPE_CHECKING:  # pragma: no cover
    from ..env import AsyncParallelEnv
    from ..runtime.agent import StepContext

def _hash(*parts: Any) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little")


def scripted_action(env: "AsyncParallelEnv", agent: str, info: dict) -> dict:
    """The scripted policy's action of a ready `agent` with task info `info` (see module doc)."""
    task = env.task.name if env.task is not None else None
    if task == "goto":
        return env.move_to(agent, info["goal"])
    if task == "rendezvous":
        if agent < info["partner"]:
            return _stay(env)
        return env.move_to(agent, info["partner_start"])
    if task == "relay":
        action = _walk_to_drawn_tile(env, agent, info["source"])
        if info.get("message"):
            action["utterance"] = info["message"]
        return action
    return _stay(env)


def _stay(env: "AsyncParallelEnv") -> dict:
    return {"move": len(move_offsets(env.max_vel)) // 2}


def _walk_to_drawn_tile(env: "AsyncParallelEnv", agent: str, key: str) -> dict:
    tiles = env.world.walkable_tiles()
    for attempt in range(8):
        x, y = tiles[_hash(key, attempt) % len(tiles)]
        try:
            return env.move_to(agent, (int(x), int(y)))
        except InvalidActionError:  # unreachable from here: draw another
            continue
    return _stay(env)


class ScriptedTaskAgent:
    """`scripted_action` as a runtime agent (no LLM call)."""

    def __init__(self, env: "AsyncParallelEnv", name: str):
        self.env = env
        self.name = name

    async def act(self, observation: Any, ctx: "StepContext") -> dict:
        return scripted_action(self.env, self.name, self.env.task_info(self.name))


class LLMTaskAgent:
    """Asks the LLM for `{"move": "N|S|E|W|NE|NW|SE|SW|stay", "say": "..."}` given its tile, its
    task info and its legal moves, after asking what to say when it sees someone (full
    observations); falls back to the scripted action (see the module doc)."""

    def __init__(self, env: "AsyncParallelEnv", name: str, max_tokens: int = 32):
        self.env = env
        self.name = name
        self.max_tokens = max_tokens
        self.fallbacks = 0
        self._index = {off: k for k, off in enumerate(move_offsets(env.max_vel))}

    def prompt(self, info: dict, legal: list[str]) -> str:
        x, y = self.env.positions[self.name]
        task = {k: v for k, v in info.items() if k != "success"}
        return (f"You are {self.name} at ({x},{y}) on a tile map, step {self.env.agent_step(self.name)}. "
                f"Your task: {self.env.task.name} {task}. Legal moves: {', '.join(legal)}. "
                'Answer with JSON only, e.g. {"move": "N", "say": ""}.')

    async def act(self, observation: Any, ctx: "StepContext") -> dict:
        info = self.env.task_info(self.name)
        fallback = scripted_action(self.env, self.name, info)  # read before awaiting: our own state
        mask = self.env.legal_moves(self.name)
        legal = [d for d, off in DIRECTIONS.items() if off in self._index and mask[self._index[off]]]
        seen = observation.get("perceived", ()) if isinstance(observation, dict) else ()
        heard = ""
        if seen:  # someone in view: first decide what to say (a two-call chain, as VillagerAgent)
            talk = await ctx.llm.complete(f"You are {self.name}. You meet {', '.join(o['name'] for o in seen)}. "
                                          f"One short sentence to say:", max_tokens=self.max_tokens)
            heard = sanitize_text(talk.text.strip().split("\n")[0], 120)
        resp = await ctx.llm.complete(self.prompt(info, legal), max_tokens=self.max_tokens)
        parsed = parse_action(resp.text)
        if parsed is None or parsed[0] not in legal:
            self.fallbacks += 1
            return fallback
        move, say = parsed
        action: dict = {"move": self._index[DIRECTIONS[move]]}
        if say or heard:
            action["utterance"] = sanitize_text(say or heard)
        return action
