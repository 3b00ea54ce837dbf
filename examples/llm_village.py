"""LLM villagers on the_ville, through any OpenAI-compatible server (or the offline echo model).

    # against a server (vLLM, SGLang, llama.cpp, OpenAI):
    python examples/llm_village.py --base-url http://127.0.0.1:8000/v1 --model my-model --mode async
    # offline, no server: a deterministic stand-in model on the virtual clock
    python examples/llm_village.py --agents 10 --steps 30

Prints a progress bar (on a terminal), then the run's metrics and how many answers were
malformed (those fall back to a safe action). Use --mode sync to compare with the global-step
baseline.
"""

from __future__ import annotations

import argparse
import os
import sys

import metropolis_env as me
from metropolis_env.agents import VillagerAgent
from metropolis_env.runtime import run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base-url", action="append", default=[], help="OpenAI-compatible endpoint (repeatable)")
    p.add_argument("--model", default=os.environ.get("METROPOLIS_MODEL", "default"))
    p.add_argument("--agents", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--mode", default="async", choices=["async", "sync", "single"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-priority", action="store_true", help="do not send request priorities")
    a = p.parse_args()

    personas = me.the_ville_personas()
    names = list(personas)[: a.agents]
    if a.agents > len(names):
        raise SystemExit(f"the_ville has {len(names)} personas; use --agents <= {len(names)}")
    env = me.make("the_ville", agents={n: personas[n] for n in names}, max_steps=a.steps, seed=a.seed)
    agents = {n: VillagerAgent(n) for n in names}
    if a.base_url:
        from metropolis_env.backends.openai_backend import OpenAIBackend

        backend = OpenAIBackend(a.base_url, model=a.model, priority="off" if a.no_priority else "low_first")
    else:
        from metropolis_env.backends.echo import EchoBackend

        backend = EchoBackend()
    m = run(env, agents, backend, a.mode, seed=a.seed, progress=sys.stderr.isatty())  # no bar in piped logs
    fallbacks = sum(ag.fallbacks for ag in agents.values())
    print(f"mode {m.mode}: {m.agent_steps} agent-steps in {m.completion_time_s:.2f} s "
          f"({'virtual' if backend.virtual_time else 'wall'} time)")
    print(f"LLM calls {m.llm_calls}, tokens in/out {m.tokens_in}/{m.tokens_out}, retries {m.retries}")
    print(f"parallelism {m.parallelism:.2f}, deps per agent-step {m.deps_per_agent_step:.2f}, "
          f"step spread mean/max {m.step_spread_mean:.1f}/{m.step_spread_max}")
    print(f"step latency p50/p90/p99 {m.step_latency_p50:.2f}/{m.step_latency_p90:.2f}/{m.step_latency_p99:.2f} s")
    print(f"malformed answers (fell back to a safe action): {fallbacks} of {m.agent_steps}")


if __name__ == "__main__":
    main()
