"""VillagerAgent: an LLM-driven villager for the_ville, through any backend.

Each step it builds a prompt from its observation (where it is, whom it perceives, what they
said), asks the LLM for a JSON action `{"move": "N|S|E|W|NE|NW|SE|SW|stay", "say": "..."}` and
parses it. When it perceives someone it first asks what to say (a two-call chain, like
Generative Agents' perceive -> plan). Output that is not valid JSON, or a move onto a wall,
falls back to a safe action (stay, saying what it meant to say) and is counted in `fallbacks`.

State changes only after the last LLM call of a step (the checkpoint contract).
"""

from __future__ import annotations

import json
import re

from ..runtime.agent import StepContext
from ..spaces import TEXT_MAX, move_offsets, sanitize_text

DIRECTIONS = {"N": (0, -1), "S": (0, 1), "E": (1, 0), "W": (-1, 0),
              "NE": (1, -1), "NW": (-1, -1), "SE": (1, 1), "SW": (-1, 1), "STAY": (0, 0)}
_JSON = re.compile(r"\{.*?\}", re.S)


def parse_action(text: str) -> tuple[str, str] | None:
    """(direction, utterance) from the first JSON object in `text`, or None if there is none."""
    m = _JSON.search(text or "")
    if not m:
        return None
    try:
        data = json.loads(m.group(0))
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    move = str(data.get("move", "")).strip().upper()
    if move not in DIRECTIONS:
        return None
    say = data.get("say", "")
    return move, sanitize_text(say if isinstance(say, str) else "", TEXT_MAX)


class VillagerAgent:
    """An LLM villager. `persona`: a one-line description used in the prompts."""

    def __init__(self, name: str, persona: str = "", max_tokens: int = 48, memory: int = 5):
        self.name = name
        self.persona = persona or f"{name}, a resident of the village"
        self.max_tokens = max_tokens
        self.memory_size = memory
        self.memory: list[str] = []
        self.fallbacks = 0
        self.steps = 0
        self._index = {off: k for k, off in enumerate(move_offsets(1))}

    def prompt(self, obs: dict, heard: str | None = None) -> str:
        x, y = (int(v) for v in obs["position"])
        seen = "; ".join(f"{o['name']} at ({int(o['position'][0])},{int(o['position'][1])})"
                         + (f" saying \"{o['utterance']}\"" if o["utterance"] else "")
                         for o in obs["perceived"]) or "nobody"
        legal = [d for d, off in DIRECTIONS.items() if obs["action_mask"][self._index[off]]]
        lines = [f"You are {self.persona}.", f"It is step {obs['step']}. You are at ({x},{y}) in {obs['location']}.",
                 f"You see: {seen}."]
        if self.memory:
            lines.append("Recently: " + " | ".join(self.memory))
        if heard:
            lines.append(f"You decided to say: {heard}")
        lines.append(f"Legal moves: {', '.join(legal)}.")
        lines.append('Answer with JSON only, e.g. {"move": "N", "say": ""}.')
        return "\n".join(lines)

    async def act(self, observation: dict, ctx: StepContext) -> dict:
        heard = None
        if observation["perceived"]:
            talk = await ctx.llm.complete(
                f"You are {self.persona}. You meet "
                f"{', '.join(o['name'] for o in observation['perceived'])}. One short sentence to say:",
                max_tokens=self.max_tokens)
            heard = sanitize_text(talk.text.strip().splitlines()[0] if talk.text.strip() else "", 120)
        resp = await ctx.llm.complete(self.prompt(observation, heard), max_tokens=self.max_tokens)
        parsed = parse_action(resp.text)
        # Everything below runs without awaiting: the agent's state changes atomically.
        fallback = parsed is None or not observation["action_mask"][self._index[DIRECTIONS[parsed[0]]]]
        if fallback:
            self.fallbacks += 1
            move, say = "STAY", heard or ""
        else:
            move, say = parsed
        self.steps += 1
        self.memory = (self.memory + [f"step {observation['step']}: {move} {say}".strip()])[-self.memory_size:]
        return {"move": self._index[DIRECTIONS[move]], "utterance": say}
