"""Text tables of benchmark results."""

from __future__ import annotations

import resource
import sys

from ..backends import presets
from .runner import BenchResult


def peak_memory_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident memory of this process so far (MB); with RUSAGE_CHILDREN, of its largest
    finished child process (the bench's mode workers)."""
    rss = resource.getrusage(who).ru_maxrss
    return rss / (1 << 20) if sys.platform == "darwin" else rss / 1024


#: How to read the table (printed under it, and in `metropolis-env bench --help`).
LEGEND = """\
How to read the table:
  modes         single: one LLM call at a time (the original Generative Agents code); sync: global
                steps, every agent of a step in parallel; async: out of order (this project); oracle:
                out of order waiting only for the agents each agent really perceived; nodep: no waiting
  time (s)      virtual seconds: how long the run takes on the server (the simulated server's clock);
                wall (s) is how long this machine took to compute it
  vs sync       sync's time / this mode's time (speedup; vs single likewise)
  % of oracle   oracle's time / this mode's time: how close to waiting only for real interactions
  parallelism   LLM requests in flight, time-weighted mean
  deps/agent    agents each agent-step waited for, itself included (sync: every agent)
  spread        most advanced agent's step minus the furthest behind, time-weighted mean
  speculation   (async+spec, --speculate) hit rate: held steps whose prediction was exact;
                wasted_call_share: calls of discarded held steps / all calls issued; speculative
                share of tokens served; of busy GPU time: spec_gpu_share (speculative calls, adopted
                or discarded) and wasted_gpu_share (discarded only), each call charged its share of
                the batches it was in (simulated server; '-' where the backend cannot measure it)
  lower bounds  critical path: the longest chain of really dependent calls, each served alone
                (unlimited GPUs); gpu-limit: every call submitted at once (throughput). No mode
                that waits for real interactions can beat the larger; "async is Nx" how far it is
  answer cache  with speculation: calls answered from an identical call of a discarded speculative
                step, without the server (greedy calls with a prompt only; the trace workloads'
                calls carry token counts, no prompt, and are never reused)"""


def _f(x, fmt: str = "{:.2f}", none: str = "-") -> str:
    return none if x is None else fmt.format(x)


def table(result: BenchResult) -> str:
    """A markdown table: one row per mode, then the lower bounds."""
    cfg = result.config
    t, llm, tracking = cfg.trace, cfg.llm, cfg.tracking
    engine = presets.engine_of(llm.gpu)
    engine = {"": "", "roofline": " roofline"}.get(engine, f" {engine}-like")
    server = (f"{llm.gpus} x {llm.gpu} / {llm.model} (simulated{engine}"
              if llm.backend == "sim" else
              f"{llm.api_model or llm.model} on {len(llm.base_urls)} {llm.server} endpoint(s) (real")
    source = f"trace {t.trace_path}" if t.trace_path else f"workload {t.workload}, {t.agents} agents, window {t.window}"
    if t.first_step:
        source += f", steps {t.first_step}-{t.first_step + t.steps - 1}" if t.steps else f", from step {t.first_step}"
    elif t.steps:
        source += f", first {t.steps} steps"
    head = (f"{source}, "
            f"{server}, {llm.policy}{''.join(', ' + o for o in llm.server_options)}, "
            f"bound {tracking.bound}, rules {tracking.rules}"
            f"{f', lookahead {tracking.lookahead}' if tracking.lookahead != 'off' else ''})")
    lines = [head, "",
             "| mode | time (s) | vs sync | vs single | % of oracle | parallelism | deps/agent | "
             "spread | LLM calls | tokens in | tokens out | wall (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result.rows():
        lines.append(
            f"| {r['mode']} | {r['completion_time_s']:.1f} | {_f(r['speedup_vs_sync'], '{:.2f}x')} | "
            f"{_f(r['speedup_vs_single'], '{:.2f}x')} | {_f(r['pct_of_oracle'], '{:.1f}%')} | "
            f"{r['parallelism']:.2f} | {r['deps_per_agent_step']:.2f} | {r['step_spread_mean']:.1f} | "
            f"{r['llm_calls']} | {r['tokens_in']} | {r['tokens_out']} | {r['wall_time_s']:.1f} |")
    for r in result.rows():
        if r["wasted_call_share"] is not None:
            lines.append(f"speculation ({r['mode']}, depth {cfg.run.speculate}, horizon {cfg.run.speculate_horizon}, "
                         f"settle {cfg.run.speculate_settle}): hit rate "
                         f"{_f(r['spec_hit_rate'], '{:.3f}')}, wasted_call_share {r['wasted_call_share']:.3f} "
                         f"({r['wasted_calls']} calls, {r['wasted_tokens']} tokens), speculative share of "
                         f"tokens served {r['spec_token_share']:.2f}, of busy GPU time "
                         f"{_f(r['spec_gpu_share'])} (wasted {_f(r['wasted_gpu_share'], '{:.3f}')}); "
                         f"{r['recalled_steps']} dropped steps taken again from the shelf ({r['recalled_calls']} calls "
                         f"not made again)")
        if r.get("reused_calls") is not None:
            lines.append(f"answer cache ({r['mode']}): {r['reused_calls']} calls ({r['reused_tokens']} tokens) answered "
                         f"from discarded speculative calls")
    if result.critical_s is not None or result.gpu_limit_s is not None:
        lines.append("")
        lines.append(f"lower bounds: critical path {_f(result.critical_s, '{:.1f}')} s, "
                     f"gpu-limit {_f(result.gpu_limit_s, '{:.1f}')} s")
        best = max(x for x in (result.critical_s, result.gpu_limit_s) if x is not None)
        if "async" in result.runs and best > 0:
            lines.append(f"async is {result.runs['async'].completion_time_s / best:.2f}x the larger bound")
    ctrl = ", ".join(f"{mode} {m.controller_us_per_agent_step:.1f}" for mode, m in result.runs.items())
    lines.append(f"controller overhead (us per agent-step): {ctrl}")
    memory = f"peak memory {peak_memory_mb():.0f} MB"
    if result.jobs > 1:
        memory += (f" in this process, {peak_memory_mb(resource.RUSAGE_CHILDREN):.0f} MB in the largest of "
                   f"{result.jobs} mode workers run side by side")
    lines.append(f"benchmark wall time {result.wall_s:.1f} s, {memory}")
    return "\n".join(lines)
