"""Speculation: a run that computes blocked agents ahead equals the sync run, exactly.

Agents here read what they perceive (names, tiles, activities, utterances of others) and their
LLM answers, so a held step used on a wrong prediction changes the trajectory. Call latencies are
drawn per (seed, agent, step, call), so each seed is another interleaving of commits, predictions,
hits, misses and cancellations.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import metropolis_env as me
from metropolis_env import clock
from metropolis_env.agents.village import VillagerAgent
from metropolis_env.backends.base import Backend, LLMResponse
from metropolis_env.backends.replay import RecordingBackend, ReplayBackend
from metropolis_env.prediction import plain_observation, predict_observation
from metropolis_env.runtime import Controller
from metropolis_env.runtime import speculation as spec_module
from metropolis_env.runtime.speculation import Speculation


def _h(*parts) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little")


def _seen(obs) -> tuple:
    return tuple((p["name"], int(p["position"][0]), int(p["position"][1]), p["activity"], p["utterance"])
                 for p in obs["perceived"])


class Perceiver:
    """Deterministic in (name, its observations, its LLM answers): 0-2 calls whose prompts name
    what it perceives; a legal move, an activity and an utterance hashed from all of it."""

    def __init__(self, name: str):
        self.name = name
        self.memory: list[int] = []

    async def act(self, obs, ctx):
        seen = _seen(obs)
        here = (int(obs["position"][0]), int(obs["position"][1]))
        h = _h(self.name, seen, here, obs["activity"], obs["utterance"], self.memory[-3:])
        text = ""
        for _ in range(h % 3):
            text += (await ctx.llm.complete(f"{self.name} at {here} sees {seen} {text}", max_tokens=4)).text
        h = _h(h, text)
        legal = np.flatnonzero(obs["action_mask"])
        self.memory.append(h % 1000)
        out = {"move": int(legal[h % len(legal)])}
        if (h >> 32) % 6 == 0:  # now and then, so that a neighbour's move is often its only change
            out["activity"] = f"mood {h % 5}"
        if seen and (h >> 8) % 5 == 0:
            out["utterance"] = f"hi {seen[(h >> 16) % len(seen)][0]} {(h >> 24) % 7}"
        return out


class JitterBackend(Backend):
    """Answers a hash of the prompt after a latency drawn from (seed, agent, step, call);
    counts calls cancelled in flight."""

    virtual_time = True

    def __init__(self, seed: int):
        self.seed = seed
        self.cancelled = 0

    async def complete(self, request):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            await asyncio.sleep(0.1 + (_h(self.seed, request.key) % 40) / 8)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        text = f"w{_h(request.prompt) % 97}"
        return LLMResponse(text, 8, 2, t0, loop.time())


def _env(world: str, rules: str):
    if world == "grid":
        tiles = {f"g{k}": (5 * (k % 4), 6 * (k // 4)) for k in range(7)}
        return me.make("grid", agents=tiles, width=22, height=8, max_steps=14, rules=rules)
    tiles = {f"v{k}": (55 + 5 * (k % 3), 10 + 5 * (k // 3)) for k in range(6)}
    return me.make("the_ville", agents=tiles, max_steps=14, rules=rules)


def _run(world, rules, mode, seed, speculation=None, agents=None, backend=None):
    env = _env(world, rules)
    agents = agents or {a: Perceiver(a) for a in env.possible_agents}
    trail = {}
    c = Controller(env, agents, backend or JitterBackend(seed), mode, seed=0, speculation=speculation,
                   on_commit=lambda a, s, act: trail.__setitem__((a, s), (env.positions[a], repr(act))))
    m = clock.run(c.run(), virtual=True)
    return trail, {a: getattr(ag, "memory", None) for a, ag in c.agents.items()}, m


_SYNC: dict = {}


def _sync(world, rules):
    if (world, rules) not in _SYNC:
        _SYNC[world, rules] = _run(world, rules, "sync", 0)[:2]
    return _SYNC[world, rules]


@pytest.mark.parametrize("world", ["grid", "the_ville"])
@pytest.mark.parametrize("rules", ["paper", "versioned"])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), depth=st.sampled_from([1, 2, 3, 6]),
       limit=st.sampled_from(["auto", None, 1, 3]), horizon=st.sampled_from([2, 16, 512]),
       settle=st.sampled_from([None, 0, 1, 4]))
def test_speculative_run_equals_sync(world, rules, seed, depth, limit, horizon, settle):
    spec = Speculation(depth=depth, max_inflight=limit, horizon=horizon, settle=settle)
    trail, memories, m = _run(world, rules, "async", seed, spec)
    assert (trail, memories) == _sync(world, rules)
    assert m.wasted_calls is not None and 0.0 <= m.wasted_call_share <= 1.0
    # nothing held, guessed or shelved outlives the run
    assert not spec.chains and spec.guesses.empty() and not spec.shelf.kept


def test_speculation_holds_hits_and_misses_and_cancels():
    """The property above is not vacuous: held steps are used, wrong ones are thrown away, and
    calls of discarded steps are cancelled in flight."""
    hits = misses = cancelled = wasted = 0
    for seed in range(6):
        backend = JitterBackend(seed)
        _, _, m = _run("grid", "versioned", "async", seed, Speculation(depth=3), backend=backend)
        hits += m.spec_hit_rate is not None and m.spec_hit_rate > 0
        misses += m.spec_hit_rate is not None and m.spec_hit_rate < 1
        cancelled += backend.cancelled
        wasted += m.wasted_calls
    assert hits and misses and cancelled and wasted


@pytest.mark.parametrize("rules", ["paper", "versioned"])
def test_loosened_hit_test_breaks_equivalence(monkeypatch, rules):
    """Mutation check: a hit test blind to one perceived field (others' tiles) accepts held
    steps computed on a wrong observation, and the equivalence above catches it."""
    real_key = spec_module.observation_key

    def blind(obs):
        k = real_key(obs)
        return k[:5] + (tuple((name, act, utt) for name, _x, _y, act, utt in k[5]),)

    monkeypatch.setattr(spec_module, "observation_key", blind)
    sync = _sync("grid", rules)
    # settle=None: chains guess every laggard unchanged, so wrong predictions reach the hit test
    diverged = [seed for seed in range(8)
                if _run("grid", rules, "async", seed, Speculation(depth=3, settle=None))[:2] != sync]
    assert diverged


class _Answers(Backend):
    """A deterministic stand-in LLM for villagers: a JSON move hashed from the prompt."""

    virtual_time = True

    async def complete(self, request):
        loop = asyncio.get_running_loop()
        h = _h(request.prompt)
        text = '{"move": "%s", "say": "%s"}' % ("NSEW"[h % 4] if h % 5 else "STAY", f"w{h % 13}" if h % 3 else "")
        await asyncio.sleep(0.5)
        return LLMResponse(text, 20, 8, loop.time() - 0.5, loop.time())


def test_llm_villagers_replayed_with_speculation_equal_sync(tmp_path):
    """LLM agents: a sync run recorded, then replayed with speculation under shuffled latencies;
    every real call's prompt matches the recording (the replay backend checks its hash), and the
    trajectories are equal. Speculative calls on wrong predictions ask other questions, which the
    replay cannot answer: those steps are thrown away, as they must be."""
    calls = tmp_path / "calls.jsonl"
    villagers = lambda env: {a: VillagerAgent(a) for a in env.possible_agents}  # noqa: E731
    env = _env("grid", "versioned")
    recorded = RecordingBackend(_Answers(), str(calls))
    sync_trail, _, _ = _run("grid", "versioned", "sync", 0, agents=villagers(env), backend=recorded)
    for seed in range(3):
        replay = ReplayBackend(str(calls), latency=lambda req, rec, seed=seed: 0.1 + _h(seed, req.key) % 9)
        env = _env("grid", "versioned")
        trail, _, m = _run("grid", "versioned", "async", seed, Speculation(depth=2), agents=villagers(env),
                           backend=replay)
        assert trail == sync_trail
        assert m.spec_hit_rate is not None


class Uncopyable:
    def __init__(self):
        self.lock = threading.Lock()

    async def act(self, obs, ctx):
        return 4


def test_agents_that_cannot_be_copied_are_a_clear_error_at_start():
    env = _env("grid", "paper")
    agents = {a: Perceiver(a) for a in env.possible_agents}
    agents["g3"] = Uncopyable()
    with pytest.raises(me.ConfigError, match=r"agent 'g3' cannot be copied.*lock"):
        Controller(env, agents, JitterBackend(0), "async", speculation=2)


def test_speculation_needs_the_dependency_policy():
    env = _env("grid", "paper")
    agents = {a: Perceiver(a) for a in env.possible_agents}
    with pytest.raises(me.ConfigError, match="mode 'async' only"):
        Controller(env, agents, JitterBackend(0), "sync", speculation=2)
    with pytest.raises(me.ConfigError, match="depth"):
        Speculation(depth=0)


def test_simulated_server_frees_a_cancelled_running_request_slot():
    """A speculative request cancelled while in the batch leaves it at the next iteration: a
    request waiting for its slot (max_batch=1) then runs as if it had been alone."""
    from metropolis_env.backends.base import LLMRequest
    from metropolis_env.backends.simulated import make_backend

    def req(agent, n_out, speculative=False):
        return LLMRequest(agent, 0, input_tokens=50, output_tokens=n_out, speculative=speculative)

    async def alone():
        backend = make_backend(max_batch=1, max_batched_tokens=512)
        r = await backend.complete(req("b", 20))
        return r.end - r.start

    async def behind_cancelled():
        backend = make_backend(max_batch=1, max_batched_tokens=512)
        long = asyncio.ensure_future(backend.complete(req("a", 4000, speculative=True)))
        await asyncio.sleep(0.5)  # admitted and decoding
        short = asyncio.ensure_future(backend.complete(req("b", 20)))
        await asyncio.sleep(0)
        long.cancel()
        t0 = asyncio.get_running_loop().time()
        r = await short
        return r.end - t0, backend.stats()["requests"]

    solo = clock.run(alone(), virtual=True)
    waited, served = clock.run(behind_cancelled(), virtual=True)
    assert served == 1  # the cancelled request never completed
    assert waited < solo + 1.0  # not the ~100 s the 4000-token answer would have held the slot


@pytest.mark.parametrize("rules", ["paper", "versioned"])
def test_predict_observation_reads_only_and_is_exact_for_ready_agents(rules):
    env = _env("the_ville", rules)
    env.reset(seed=0)
    for k in range(5):  # a few out-of-order commits: some agents ahead, some blocked
        actions = {}
        for a in env.ready_agents()[:2]:
            for m in env.ready_cluster(a):
                legal = np.flatnonzero(env.observe(m)["action_mask"])
                actions[m] = {"move": int(legal[(k + len(m)) % len(legal)]), "utterance": f"{m} {k}"}
        env.step(actions)
    before = repr(env.snapshot())
    blocked = [a for a in env.possible_agents if not env.is_ready(a)]
    assert blocked
    for a in env.possible_agents:
        predicted = predict_observation(env, a)
        if env.is_ready(a):
            assert spec_module.observation_key(predicted) == spec_module.observation_key(env.observe(a))
            # the hit test's cheap observation: the real one's key, values, tiles as tuples
            plain, real = plain_observation(env, a), env.observe(a)
            assert spec_module.observation_key(plain) == spec_module.observation_key(real)
            assert plain["position"] == tuple(real["position"]) and _seen(plain) == _seen(real)
        after = predict_observation(env, a, [{"move": 0, "activity": "x", "utterance": "y"}])
        assert (after["step"], after["activity"], after["utterance"]) == (env.agent_step(a) + 1, "x", "y")
        # the env's method is the same read-only prediction
        assert spec_module.observation_key(env.predict_observation(a)) == spec_module.observation_key(predicted)
        assert spec_module.observation_key(env.predict_observation(
            a, [{"move": 0, "activity": "x", "utterance": "y"}])) == spec_module.observation_key(after)
    assert repr(env.snapshot()) == before


def test_cancelled_speculative_call_closes_its_http_request():
    """Through the official openai client over real HTTP: a speculative request goes out behind
    every normal one (its priority number), and cancelling the call's task closes the request at
    the server, which sees the connection end before it answered."""
    import json

    from metropolis_env.backends.base import SPECULATIVE_PRIORITY_OFFSET, LLMRequest
    from metropolis_env.backends.openai_backend import OpenAIBackend

    async def scenario():
        received, closed = asyncio.Event(), asyncio.Event()
        bodies = []

        async def handle(reader, writer):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            bodies.append(json.loads(await reader.readexactly(length)))
            received.set()
            if await reader.read() == b"":  # never answered: wait for the client to hang up
                closed.set()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        backend = OpenAIBackend(f"http://127.0.0.1:{port}/v1", model="m", timeout=60.0, max_retries=0)
        call = asyncio.ensure_future(backend.complete(LLMRequest("a", 7, prompt="x", speculative=True)))
        await asyncio.wait_for(received.wait(), 30)
        call.cancel()
        await asyncio.wait_for(closed.wait(), 30)
        await backend.aclose()
        server.close()
        return bodies[0], call.cancelled()

    body, cancelled = asyncio.run(scenario())
    assert cancelled
    assert body["priority"] == 7 + SPECULATIVE_PRIORITY_OFFSET


def test_dropped_steps_are_taken_again_from_the_shelf_and_runs_stay_equal():
    """The shelf is used (dropped steps taken again instead of computed again) in runs that
    equal sync: the property above covers it, this shows it is not vacuous."""
    recalled = 0
    for seed in range(6):
        trail, memories, m = _run("grid", "versioned", "async", seed, Speculation(depth=3))
        assert (trail, memories) == _sync("grid", "versioned")
        recalled += m.recalled_steps
        assert 0 <= m.recalled_calls and m.recalled_steps <= m.spec_hit_rate * 10 ** 6
    assert recalled


@pytest.mark.parametrize("blind_to", ["observation", "state"])
def test_shelf_blind_to_its_inputs_breaks_equivalence(monkeypatch, blind_to):
    """Mutation check: a shelf that hands back a dropped step computed on another observation
    (or from another agent state) as if computed on this one changes the trajectory, and the
    equivalence catches it."""
    from metropolis_env.runtime.shelf import Shelf

    def take(self, agent, step, key, state):
        for k in list(self.kept.get(agent, ())):
            if k[0] == step and (k[2] == state if blind_to == "observation" else k[1] == key):
                self.taken += 1
                ahead = self.kept[agent].pop(k)
                ahead.key, ahead.state = key, state  # taken for what was asked
                return ahead
        return None

    monkeypatch.setattr(Shelf, "take", take)
    diverged = [seed for seed in range(10)
                if _run("grid", "versioned", "async", seed, Speculation(depth=3, settle=None))[:2]
                != _sync("grid", "versioned")]
    assert diverged


def test_a_laggard_guessed_far_from_where_it_is_is_seen_where_it_is_guessed():
    """A guess can put a laggard many steps (tiles) from where it is now: a prediction at its
    guessed tile must perceive it there when told it may be near (`nearby`), and never where
    it is now."""
    from metropolis_env.prediction import OwnState, own_state, predict

    env = me.make("grid", agents={"far": (1, 1), "here": (20, 6), "lag": (2, 1)}, width=22, height=8,
                  max_steps=40, rules="paper")
    env.reset(seed=0)
    lag = env._idx("lag")
    me_now = own_state(env, "here")
    ahead = OwnState(me_now.step + 30, me_now.position, me_now.activity, me_now.utterance)
    guessed = OwnState(ahead.step, (19, 6), "walking", "hello")

    def guess(j, step):
        return guessed if j == lag else None

    alone = predict(env, "here", ahead, guess)[0]
    assert [p["name"] for p in alone["perceived"]] == []  # not near now: not looked at
    told = predict(env, "here", ahead, guess, nearby=[lag])[0]
    assert [(p["name"], tuple(int(v) for v in p["position"]), p["activity"], p["utterance"])
            for p in told["perceived"]] == [("lag", (19, 6), "walking", "hello")]
