"""LLM villagers end to end against a real llama.cpp server on 127.0.0.1 (issue: real LLM agents).

Sync recorded and async replayed are identical; live async at temperature 0 equals live sync;
the server killed and restarted mid-run loses and repeats no step; a prompt over the context
length stops the run with an error naming the agent and step, checkpointed.
"""

from __future__ import annotations

import asyncio
import functools

import pytest

from metropolis_env.testing import llama_cpp_skip_reason

pytestmark = pytest.mark.needs(llama_cpp_skip_reason())  # skipped without the extra, failed in CI

import metropolis_env as me  # noqa: E402
from metropolis_env import clock  # noqa: E402
from metropolis_env.agents import VillagerAgent  # noqa: E402
from metropolis_env.backends import OpenAIBackend, RecordingBackend, ReplayBackend  # noqa: E402
from metropolis_env.runtime import AgentStepError, Controller  # noqa: E402
from metropolis_env.runtime.checkpoint import Checkpointer, load  # noqa: E402
from metropolis_env.testing import LlamaServer, write_tiny_model  # noqa: E402

AGENTS, STEPS = 8, 20


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model = write_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.gguf", seed=1)
    srv = LlamaServer(model, n_ctx=2048, log_path=tmp_path_factory.mktemp("log") / "server.log")
    srv.start()
    yield srv
    srv.stop()


def backend(url: str) -> OpenAIBackend:
    return OpenAIBackend(url, model="tiny", priority="off", timeout=30.0, backoff_base=0.05, backoff_max=0.5)


def village(max_tokens: int = 12):
    personas = me.the_ville_personas()
    # Eight personas who live close together (the Lin and Moreno houses and their neighbours)
    # so that some of them meet and talk within 20 steps.
    names = list(personas)[10:18]
    env = me.make("the_ville", agents={n: personas[n] for n in names}, max_steps=STEPS, seed=0)
    return env, {n: VillagerAgent(n, max_tokens=max_tokens) for n in names}


def run_village(mode: str, be, on_commit=None, **kw):
    env, agents = village(kw.pop("max_tokens", 12))
    trajectory: list = []

    def record(a, s, act):
        trajectory.append((a, s, env.positions[a], act.get("utterance")))
        if on_commit is not None:
            on_commit(a, s, act)

    controller = Controller(env, agents, be, mode, seed=0, on_commit=record, **kw)
    metrics = clock.run(controller.run(), virtual=False)
    return sorted(trajectory), metrics, controller, agents


def test_sync_recorded_equals_async_replayed_and_live_async(server, tmp_path):
    path = tmp_path / "calls.jsonl"
    sync_traj, sync_m, _, _ = run_village("sync", RecordingBackend(backend(server.base_url), str(path)))
    assert sync_m.agent_steps == AGENTS * STEPS and sync_m.llm_calls >= AGENTS * STEPS
    assert sum(1 for *_, said in sync_traj if said) >= STEPS  # the model's words are in the trajectory
    replay_traj, replay_m, _, _ = run_village("async", ReplayBackend(str(path)))
    assert replay_traj == sync_traj
    assert replay_m.llm_calls == sync_m.llm_calls
    live_traj, live_m, _, _ = run_village("async", backend(server.base_url))
    assert live_traj == sync_traj
    assert live_m.step_spread_max > 0  # it really ran out of order: agents were at different steps


def test_server_killed_mid_run_loses_and_repeats_no_step(server):
    expected, _, _, _ = run_village("async", backend(server.base_url))
    commits = 0
    restart: list = []

    def kill_once(agent, step, action):
        nonlocal commits
        commits += 1
        if commits == AGENTS * STEPS // 3:
            server.kill()
            # restart in a thread while the run's requests fail and retry with backoff
            restart.append(asyncio.get_running_loop().run_in_executor(None, server.restart))

    got, metrics, controller, _ = run_village("async", backend(server.base_url), on_commit=kill_once)
    assert restart and restart[0].done()
    assert got == expected
    assert controller.committed == {a: STEPS for a in controller.committed}
    assert metrics.retries > 0 and metrics.backend["retries"] == metrics.retries


class LongWinded(VillagerAgent):
    """Asks with a prompt far over the server's context at step 5."""

    async def act(self, observation, ctx):
        if ctx.step == 5:
            await ctx.llm.complete("word " * 5000, max_tokens=4)
        return await super().act(observation, ctx)


def build_backend(url: str) -> OpenAIBackend:
    return backend(url)


def test_prompt_over_context_names_agent_and_step_and_checkpoints(server, tmp_path):
    env, agents = village()
    name = env.possible_agents[3]
    agents[name] = LongWinded(name, max_tokens=12)
    ck = Checkpointer(tmp_path / "run", functools.partial(build_backend, server.base_url), every=10_000)
    controller = Controller(env, agents, ck.build_backend(), "async", seed=0, checkpoint=ck)
    with pytest.raises(AgentStepError) as err:
        clock.run(controller.run(), virtual=False)
    message = str(err.value)
    assert f"{name!r} failed at step 5" in message and "checkpointed" in message
    state = load(tmp_path / "run")
    assert state["committed"][name] == 5  # steps 0-4 committed, step 5 not
    assert all(s <= STEPS for s in state["committed"].values())
