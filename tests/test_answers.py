"""Re-run answer cache: a discarded speculation's answers, reused by identical later calls, leave
the run exactly equal to the sync run; keyed without the prompt, they would not.

The agents here prompt with only part of what they perceive (the names of those in view, not
their tiles), as LLM agents often summarise, while their actions hash everything they perceive
and their answers: a speculation missed on a neighbour's tile asks the same question again when
the step runs for real, and a wrongly reused answer changes the trajectory.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_speculation import Perceiver, _Answers, _env, _h, _run, _seen

from metropolis_env.agents.village import VillagerAgent
from metropolis_env.backends.base import LLMRequest, LLMResponse
from metropolis_env.backends.replay import RecordingBackend, ReplayBackend
from metropolis_env.runtime import answers as answers_module
from metropolis_env.runtime.answers import Answers
from metropolis_env.runtime.speculation import Speculation


class Namer(Perceiver):
    """Asks about whom it meets (names only), then about its answer; moves on all it sees."""

    async def act(self, obs, ctx):
        seen = _seen(obs)
        here = (int(obs["position"][0]), int(obs["position"][1]))
        names = sorted(s[0] for s in seen)
        text = (await ctx.llm.complete(f"{self.name} at {here} meets {names}", max_tokens=4)).text
        if _h(self.name, text) % 2:
            text += (await ctx.llm.complete(f"{self.name} said {text}", max_tokens=4)).text
        h = _h(self.name, seen, here, text, self.memory[-2:])
        legal = np.flatnonzero(obs["action_mask"])
        self.memory.append(h % 1000)
        out = {"move": int(legal[h % len(legal)])}
        if seen and (h >> 8) % 4 == 0:
            out["utterance"] = f"hi {seen[0][0]} {text}"
        return out


def _namers(world):
    return {a: Namer(a) for a in _env(world, "paper").possible_agents}


_SYNC: dict = {}


def _sync(world, rules):
    if (world, rules) not in _SYNC:
        _SYNC[world, rules] = _run(world, rules, "sync", 0, agents=_namers(world))[:2]
    return _SYNC[world, rules]


def _spec(world, rules, seed, depth=3, limit="auto"):
    return _run(world, rules, "async", seed, Speculation(depth=depth, max_inflight=limit), agents=_namers(world))


@pytest.mark.parametrize("world", ["grid", "the_ville"])
@pytest.mark.parametrize("rules", ["paper", "versioned"])
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), depth=st.sampled_from([1, 2, 4]), limit=st.sampled_from(["auto", None, 2]))
def test_speculation_with_reused_answers_equals_sync(world, rules, seed, depth, limit):
    trail, memories, m = _spec(world, rules, seed, depth, limit)
    assert (trail, memories) == _sync(world, rules)
    assert m.reused_calls is not None and m.reused_calls <= m.llm_calls


def test_answers_are_really_reused_and_bounded(monkeypatch):
    """Not vacuous: across seeds, later calls are answered from discarded steps' calls; and what
    is kept never outlives the steps the agent commits."""
    kept_after = []
    real_forget = Answers.forget

    def forget(self, agent, step):
        real_forget(self, agent, step)
        kept_after.append(max((s for held in self._kept.get(agent, {}).values() for s, _ in held), default=step + 1))
        assert kept_after[-1] > step

    monkeypatch.setattr(Answers, "forget", forget)
    reused = sum(_spec("grid", rules, seed)[2].reused_calls for seed in range(6) for rules in ("paper", "versioned"))
    assert reused > 0 and kept_after


@pytest.mark.parametrize("rules", ["paper", "versioned"])
def test_cache_keyed_without_the_prompt_breaks_equivalence(monkeypatch, rules):
    """Mutation check: a key blind to the prompt hands an agent answers to other questions, and
    the equivalence above catches it."""
    real_key = answers_module.request_key

    def blind(req):
        k = real_key(req)
        return None if k is None else (k[0],) + k[3:]

    monkeypatch.setattr(answers_module, "request_key", blind)
    sync = _sync("grid", rules)
    assert [seed for seed in range(8) if _spec("grid", rules, seed)[:2] != sync]


def test_reuse_off_asks_the_server_again():
    _, _, m = _run("grid", "versioned", "async", 1, Speculation(depth=3, reuse=False), agents=_namers("grid"))
    assert m.reused_calls is None


def test_llm_villagers_replayed_with_reused_answers_equal_sync(tmp_path):
    """VillagerAgent (first call: only the names it meets) recorded in sync, replayed with
    speculation and the cache on: equal to sync, with answers reused."""
    calls = tmp_path / "calls.jsonl"
    villagers = lambda: {a: VillagerAgent(a) for a in _env("grid", "versioned").possible_agents}  # noqa: E731
    sync_trail, sync_mem, _ = _run("grid", "versioned", "sync", 0, agents=villagers(),
                                   backend=RecordingBackend(_Answers(), str(calls)))
    reused = 0
    for seed in range(4):
        replay = ReplayBackend(str(calls), latency=lambda req, rec, seed=seed: 0.1 + _h(seed, req.key) % 9)
        trail, mem, m = _run("grid", "versioned", "async", seed, Speculation(depth=3), agents=villagers(),
                             backend=replay)
        assert (trail, mem) == (sync_trail, sync_mem)
        reused += m.reused_calls
    assert reused > 0


def _resp(text):
    return LLMResponse(text, 5, 3)


def test_only_greedy_calls_with_a_prompt_match_exactly_once():
    answers = Answers()
    prompt = LLMRequest("a", 3, 0, prompt="hello", max_tokens=8)
    trace = LLMRequest("a", 3, 1, input_tokens=50, output_tokens=10)  # a trace agent's call: counts only
    sampled = LLMRequest("a", 3, 2, prompt="hello", max_tokens=8, temperature=0.7)
    chat = LLMRequest("a", 3, 3, messages=({"role": "user", "content": "hi"},), max_tokens=8)
    answers.keep([(prompt, _resp("p")), (trace, _resp("t")), (sampled, _resp("s")), (chat, _resp("c"))])
    assert answers.take(LLMRequest("a", 3, 1, input_tokens=50, output_tokens=10)) is None
    assert answers.take(LLMRequest("a", 3, 0, prompt="hello", max_tokens=8, temperature=0.7)) is None
    for other in (LLMRequest("b", 3, 0, prompt="hello", max_tokens=8),  # another agent
                  LLMRequest("a", 3, 0, prompt="hello", max_tokens=9),  # another length
                  LLMRequest("a", 3, 0, prompt="hello", max_tokens=8, model="m2"),
                  LLMRequest("a", 3, 0, prompt="hello!", max_tokens=8),
                  LLMRequest("a", 3, 0, messages=({"role": "user", "content": "hi!"},), max_tokens=8),
                  LLMRequest("a", 3, 0, prompt="hello", max_tokens=8, extra={"extra_body": {"top_k": 1}})):
        assert answers.take(other) is None
    assert answers.take(LLMRequest("a", 4, 7, prompt="hello", max_tokens=8, speculative=True)).text == "p"
    assert answers.take(prompt) is None  # used once
    assert answers.take(LLMRequest("a", 3, 0, messages=({"role": "user", "content": "hi"},), max_tokens=8)).text == "c"
    assert (answers.reused_calls, answers.reused_tokens, answers.kept) == (2, 16, 0)


def test_forget_drops_committed_steps_only():
    answers = Answers()
    answers.keep([(LLMRequest("a", s, 0, prompt=f"q{s % 2}"), _resp(str(s))) for s in (5, 3, 6, 4)])
    answers.forget("a", 4)
    assert answers.kept == 2
    assert answers.take(LLMRequest("a", 9, 0, prompt="q1")).text == "5"
    assert answers.take(LLMRequest("a", 9, 0, prompt="q1")) is None
    assert answers.take(LLMRequest("a", 9, 0, prompt="q0")).text == "6"
