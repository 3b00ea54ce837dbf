"""Evaluate policies on the built-in tasks, in sync and out of order.

    python examples/evaluate.py                       # goto, rendezvous, relay; 3 seeds; 8 agents
    python examples/evaluate.py --tasks goto --seeds 10 --agents 25 --steps 120

For every task, policy and mode it prints the success rate (share of agents that succeeded), the
mean return per agent and the time the runs took, summed over the seeds:
- `scripted` (metropolis_env.agents.task_agents.scripted_action) in a plain loop: `sync` steps
  every agent together (SyncParallelWrapper), `async` submits random subsets of the ready
  clusters; wall seconds.
- `llm`: LLMTaskAgent through the runtime on the embedded simulated server (a GPU on a virtual
  clock); virtual seconds. Offline the server answers filler text, so every answer falls back
  to the scripted action (the `fallbacks` column): the time is the LLM's, the moves the script's.
  Pass --base-url to use a real OpenAI-compatible server instead (wall seconds).

Returns are equal in sync and async for each seed (the task is evaluated on committed steps,
and out-of-order runs equal the sync run): the script checks it and says so; only time differs.
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import dataclass

import metropolis_env as me
from metropolis_env.agents.task_agents import LLMTaskAgent, scripted_action
from metropolis_env.tasks import TASKS
from metropolis_env.wrappers import SyncParallelWrapper


@dataclass
class Score:
    returns: dict[str, float]
    success: float
    seconds: float
    fallbacks: int = 0


def make_env(task: str, agents: int, steps: int, seed: int) -> me.AsyncParallelEnv:
    personas = me.the_ville_personas()
    names = list(personas)[:agents]
    return me.make("the_ville", agents={n: personas[n] for n in names}, max_steps=steps, seed=seed, task=task)


def _score(env: me.AsyncParallelEnv, seconds: float, fallbacks: int = 0) -> Score:
    success = sum(env.task_info(a)["success"] for a in env.possible_agents) / len(env.possible_agents)
    return Score(dict(env.returns), success, seconds, fallbacks)


def scripted_sync(env: me.AsyncParallelEnv, seed: int) -> Score:
    t0 = time.perf_counter()
    sync = SyncParallelWrapper(env)
    _, infos = sync.reset(seed=seed)
    while sync.agents:
        _, _, _, _, new = sync.step({a: scripted_action(env, a, infos[a]) for a in sync.agents})
        infos.update(new)
    return _score(env, time.perf_counter() - t0)


def scripted_async(env: me.AsyncParallelEnv, seed: int) -> Score:
    t0 = time.perf_counter()
    rng = random.Random(seed)
    _, infos = env.reset(seed=seed)
    while env.agents:
        clusters = env.clusters()
        chosen = [a for cl in clusters if rng.random() < 0.5 for a in cl] or clusters[0]
        _, _, _, _, new = env.step({a: scripted_action(env, a, infos[a]) for a in chosen})
        infos.update(new)
    return _score(env, time.perf_counter() - t0)


def llm_run(env: me.AsyncParallelEnv, seed: int, mode: str, base_urls: list[str], model: str, gpus: int) -> Score:
    from metropolis_env.runtime import run

    if base_urls:
        from metropolis_env.backends import OpenAIBackend

        backend = OpenAIBackend(base_urls, model=model)
    else:
        from metropolis_env.backends import make_backend

        backend = make_backend("l4", "llama-3-8b", gpus=gpus)
    agents = {a: LLMTaskAgent(env, a) for a in env.possible_agents}
    m = run(env, agents, backend, mode, seed=seed)
    return _score(env, m.completion_time_s, sum(ag.fallbacks for ag in agents.values()))


def evaluate(task: str, policy: str, mode: str, seeds: range, agents: int, steps: int,
             base_urls: list[str] = (), model: str = "default", gpus: int = 4) -> list[Score]:
    out = []
    for seed in seeds:
        env = make_env(task, agents, steps, seed)
        if policy == "scripted":
            out.append((scripted_sync if mode == "sync" else scripted_async)(env, seed))
        else:
            out.append(llm_run(env, seed, mode, list(base_urls), model, gpus))
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    p.add_argument("--policies", default="scripted,llm", help="comma-separated: scripted, llm")
    p.add_argument("--seeds", type=int, default=3, help="episodes per task, policy and mode (seeds 0..N-1)")
    p.add_argument("--agents", type=int, default=8, help="the_ville personas (at most 25)")
    p.add_argument("--steps", type=int, default=60, help="max_steps of each episode")
    p.add_argument("--base-url", action="append", default=[], help="a real OpenAI-compatible server for 'llm'")
    p.add_argument("--model", default="default", help="model name on the real server")
    p.add_argument("--gpus", type=int, default=4, help="GPUs of the simulated server (L4s serving Llama-3-8B)")
    a = p.parse_args(argv)
    results = {}
    print(f"{'task':<11} {'policy':<8} {'mode':<5} {'success':>7} {'mean return':>11} {'time (s)':>9}  clock    fallbacks")
    for task in filter(None, a.tasks.split(",")):
        for policy in filter(None, a.policies.split(",")):
            for mode in ("sync", "async"):
                scores = evaluate(task, policy, mode, range(a.seeds), a.agents, a.steps, a.base_url, a.model, a.gpus)
                results[task, policy, mode] = scores
                returns = [r for s in scores for r in s.returns.values()]
                clock = "wall" if policy == "scripted" or a.base_url else "virtual"
                print(f"{task:<11} {policy:<8} {mode:<5} {sum(s.success for s in scores) / len(scores):>7.0%} "
                      f"{sum(returns) / len(returns):>11.3f} {sum(s.seconds for s in scores):>9.2f}  {clock:<8} "
                      f"{sum(s.fallbacks for s in scores) if policy == 'llm' else '-'}")
            same = all(x.returns == y.returns for x, y in zip(results[task, policy, "sync"], results[task, policy, "async"]))
            print(f"{'':<11} {policy:<8} returns in sync and async: {'equal' if same else 'DIFFERENT'} on every seed")
    return results


if __name__ == "__main__":
    main()
