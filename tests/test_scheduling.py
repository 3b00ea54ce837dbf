"""Admission inside one simulated replica: limits, KV blocks, preemption, priority, cancellation,
and the SGLang-like engine, as closed-form cases on the virtual clock and as invariants over
random loads."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metropolis_env import clock
from metropolis_env.backends.base import LLMRequest
from metropolis_env.backends.presets import GPU, ModelSpec
from metropolis_env.backends.simulated import ServerConfig, SimulatedBackend
from test_simulated_backend import serve_all

TOY_MODEL = ModelSpec("toy-1b", 1e9, layers=4, heads=8, kv_heads=2, head_dim=64)
KV = TOY_MODEL.kv_bytes_per_token


def toy(kv_tokens: float = 1e6, **kw) -> ServerConfig:
    """A toy server whose KV cache holds `kv_tokens` tokens."""
    gpu = GPU("toy", memory_bytes=TOY_MODEL.weight_bytes + kv_tokens * KV, mem_bw=1e12, peak_flops=1e14)
    kw.setdefault("iteration_overhead_s", 0.001)
    kw.setdefault("mem_efficiency", 1.0)
    kw.setdefault("compute_efficiency", 1.0)
    kw.setdefault("gpu_memory_utilization", 1.0)
    return ServerConfig(gpu, TOY_MODEL, **kw)


@dataclass(frozen=True)
class Recording(ServerConfig):
    """A server that records the tokens of every iteration with prompt tokens in it."""

    seen: list = field(default_factory=list, compare=False)

    def iteration_time(self, tokens, kv_tokens, attended):
        self.seen.append(tokens)
        return super().iteration_time(tokens, kv_tokens, attended)


def req(agent="a", step=0, n_in=100, n_out=10, **kw) -> LLMRequest:
    return LLMRequest(agent, step, input_tokens=n_in, output_tokens=n_out, max_tokens=n_out, **kw)


def serve(backend, requests, gaps=None, watch=None):
    """Serve `requests` (each after gaps[i] virtual seconds); `watch(replica)` runs at every
    replica boundary. Returns the responses in submission order."""
    rep = backend._replicas[0]
    if watch is not None:
        boundary = rep._boundary

        def watched():
            boundary()
            watch(rep)

        rep._boundary = watched
    return serve_all(backend, requests, gaps)


def seg(cfg, n, ctx, k):
    return cfg.decode_segment_time(n, ctx, k)


def prefill(cfg, *prompts):
    """One iteration that computes whole prompts (from position 0) and nothing else."""
    return cfg.iteration_time(sum(prompts), sum(prompts), sum(m * (m + 1) // 2 for m in prompts))


# -- limits ------------------------------------------------------------------------------------

@pytest.mark.parametrize("scheduler", ["vllm", "sglang"])
def test_running_requests_never_exceed_max_batch_and_reach_it(scheduler):
    backend = SimulatedBackend(toy(max_batch=3, scheduler=scheduler))
    running = []
    serve(backend, [req(f"a{i}", i, 50, 5 + i) for i in range(10)], watch=lambda r: running.append(r.n_running))
    assert max(running) == 3
    assert backend.stats()["requests"] == 10


def test_prompt_tokens_per_iteration_stay_within_the_token_budget():
    cfg = Recording(toy().gpu, TOY_MODEL, max_batched_tokens=256, max_batch=16, iteration_overhead_s=0.001)
    backend = SimulatedBackend(cfg)
    serve(backend, [req(f"a{i}", i, 100 + 37 * i, 8) for i in range(12)], gaps=[0.002 * i for i in range(12)])
    assert max(cfg.seen) == 256  # the budget is used in full, never exceeded
    assert backend.stats()["tokens_in"] == sum(100 + 37 * i for i in range(12))


def test_kv_blocks_in_use_never_exceed_the_cache_and_are_all_returned():
    cfg = toy(kv_tokens=64 * 16, block_size=16, max_batch=64)
    backend = SimulatedBackend(cfg)
    used = []
    reqs = [req(f"a{i}", i % 5, 120 + 13 * i, 20 + 7 * (i % 4)) for i in range(30)]
    out = serve(backend, reqs, gaps=[0.001 * (i % 6) for i in range(30)], watch=lambda r: used.append(r.blocks_used))
    rep = backend._replicas[0]
    assert max(used) <= rep.cap_blocks == 64
    assert backend.stats()["preemptions"] > 0  # the cache was too small for the load
    assert (rep.blocks_used, rep.context_sum, rep.n_running) == (0, 0, 0)
    assert [o.output_tokens for o in out] == [r.output_tokens for r in reqs]
    assert backend.stats()["tokens_out"] == sum(r.output_tokens for r in reqs)


# -- preemption --------------------------------------------------------------------------------

def preemption_case(a_step: int, b_step: int, policy: str = "priority", b_gap: float = 0.0):
    """Two requests of 8 prompt / 10 output tokens in 4-token blocks, 6 blocks in all: both run
    until their contexts reach 12 (4 decode iterations), when both need a third block and only
    one is free. Returns (cfg, stats, a, b)."""
    cfg = toy(kv_tokens=24, block_size=4, policy=policy)
    backend = SimulatedBackend(cfg)
    a, b = serve(backend, [req("a", a_step, 8, 10), req("b", b_step, 8, 10)], gaps=[0.0, b_gap])
    return cfg, backend.stats(), a, b


def test_preemption_frees_the_victims_blocks_and_it_recomputes_prompt_and_output():
    cfg, stats, a, b = preemption_case(0, 0)
    # Equal priority: the later arrival (b) is evicted after producing 5 tokens (1 at prefill,
    # 4 decoding); a finishes alone; b then recomputes 8 + 5 tokens and decodes its last 4.
    a_end = prefill(cfg, 8, 8) + seg(cfg, 2, 16, 4) + seg(cfg, 1, 12, 5)
    assert a.end == pytest.approx(a_end, rel=1e-12)
    assert b.end == pytest.approx(a_end + prefill(cfg, 13) + seg(cfg, 1, 13, 4), rel=1e-12)
    assert stats["preemptions"] == 1 and stats["recomputed_tokens"] == 5
    assert stats["tokens_in"] == 8 + 8 + 13 and stats["tokens_out"] == 20


def test_preemption_evicts_the_lowest_priority_request():
    # a is admitted first (b arrives during a's first decode iteration) but is further ahead.
    _, stats, a, b = preemption_case(5, 1, b_gap=0.0035)
    assert stats["preemptions"] >= 1 and b.end < a.end


def test_fcfs_preemption_evicts_the_last_admitted_request():
    _, stats, a, b = preemption_case(5, 1, policy="fcfs", b_gap=0.0035)
    assert stats["preemptions"] >= 1 and a.end < b.end


def test_reserved_kv_admits_only_whole_contexts_and_never_preempts():
    cfg = toy(kv_tokens=2.5 * 1100, reserve_kv=True)
    backend = SimulatedBackend(cfg)
    out = serve(backend, [req(f"a{i}", 0, 1000, 100) for i in range(3)])
    assert out[0].end == out[1].end < out[2].end  # two fit; the third waits for both to finish
    assert backend.stats()["preemptions"] == 0
    assert backend.stats()["queue_delay_max_s"] == out[0].end


# -- priority inside the budget ------------------------------------------------------------------

def test_priority_fills_the_token_budget_in_priority_order():
    # A long prompt takes the budget; the waiting requests get tokens in priority order, the
    # least urgent last, whatever their arrival order.
    backend = SimulatedBackend(toy(max_batched_tokens=128, max_batch=8))
    reqs = [req("long", 0, 1024, 2), req("c", 9, 100, 2), req("b", 4, 100, 2), req("a", 1, 100, 2)]
    out = serve(backend, reqs, gaps=[0.0, 1e-4, 2e-4, 3e-4])
    ends = {r.agent: o.end for r, o in zip(reqs, out)}
    assert ends["a"] < ends["b"] < ends["c"]


def test_speculative_requests_go_behind_every_other_request():
    backend = SimulatedBackend(toy(max_batch=1))
    reqs = [req("r0", 0), req("spec", 0, speculative=True), req("late", 50)]
    out = serve(backend, reqs, gaps=[0.0, 0.01, 0.02])
    assert out[2].end < out[1].end


# -- cancellation ------------------------------------------------------------------------------

@pytest.mark.parametrize("scheduler", ["vllm", "sglang"])
def test_a_cancelled_running_request_frees_its_slot_at_the_next_iteration_boundary(scheduler):
    cfg = toy(max_batch=1, scheduler=scheduler)
    backend = SimulatedBackend(cfg)
    cancel_at = 0.05  # inside the long request's decode run

    async def main():
        long = asyncio.ensure_future(backend.complete(req("long", 0, 50, 10_000)))
        waiting = asyncio.ensure_future(backend.complete(req("next", 1, 50, 3)))
        await asyncio.sleep(cancel_at)
        long.cancel()
        return await waiting

    nxt = clock.run(main())
    # The boundary: the end of the decode iteration in progress at cancel_at.
    k = 1
    while prefill(cfg, 50) + seg(cfg, 1, 50, k) < cancel_at:
        k += 1
    boundary = prefill(cfg, 50) + seg(cfg, 1, 50, k)
    assert nxt.end == pytest.approx(boundary + prefill(cfg, 50) + seg(cfg, 1, 50, 2), rel=1e-12)
    stats = backend.stats()
    assert stats["dropped"] == 1 and stats["requests"] == 1
    rep = backend._replicas[0]
    assert (rep.n_running, rep.kv_reserved, rep.blocks_used, rep.n_outstanding) == (0, 0, 0, 0)


# -- the SGLang-like engine --------------------------------------------------------------------

def test_sglang_prefill_runs_alone_after_the_decode_run_in_progress():
    cfg = toy(scheduler="sglang", decode_steps=10)
    backend = SimulatedBackend(cfg)
    first, second = serve(backend, [req("a", 0, 100, 30), req("b", 1, 60, 5)], gaps=[0.0, 0.01])
    # b arrives during a's first decode run and waits for its 10 iterations; its prefill runs
    # alone (a does not decode meanwhile); then both decode.
    run_end = prefill(cfg, 100) + seg(cfg, 1, 100, 10)
    assert backend.stats()["queue_delay_max_s"] == pytest.approx(run_end - 0.01, rel=1e-12)
    b_end = run_end + prefill(cfg, 60) + seg(cfg, 2, 110 + 60, 4)
    assert second.end == pytest.approx(b_end, rel=1e-12)
    # a: 19 decode iterations left after the first run; 4 shared with b (a 10-run holds all 4),
    # then 6 alone to finish that run, then 9 more.
    a_end = b_end + seg(cfg, 1, 114, 6) + seg(cfg, 1, 120, 9)
    assert first.end == pytest.approx(a_end, rel=1e-12)


def test_sglang_admits_a_prefill_batch_up_to_its_prompt_token_limit():
    cfg = Recording(toy().gpu, TOY_MODEL, scheduler="sglang", max_batched_tokens=300,
                    iteration_overhead_s=0.001)
    backend = SimulatedBackend(cfg)
    serve(backend, [req(f"a{i}", i, 100, 3) for i in range(5)] + [req("big", 9, 500, 3)])
    # 3 prompts of 100 fit 300 tokens, then 2; a prompt larger than the limit runs alone.
    assert [t for t in cfg.seen if t >= 100] == [300, 200, 500]


# -- invariants over random loads --------------------------------------------------------------

@given(st.lists(st.tuples(st.integers(1, 300), st.integers(1, 40), st.integers(0, 6),
                          st.integers(0, 20)), min_size=1, max_size=25),
       st.sampled_from(["vllm", "sglang"]), st.sampled_from(["priority", "fcfs"]),
       st.sampled_from([1, 4, 16]), st.integers(0, 2 ** 16))
def test_every_request_completes_with_its_tokens_and_the_server_ends_empty(shapes, scheduler, policy,
                                                                            block, cancel_seed):
    cfg = toy(kv_tokens=400, block_size=block, scheduler=scheduler, policy=policy, max_batch=6,
              max_batched_tokens=128, decode_steps=3)
    backend = SimulatedBackend(cfg)
    rep = backend._replicas[0]
    cancel = {i for i in range(len(shapes)) if (cancel_seed >> i) & 1 and i % 3 == 0}

    async def one(i, n_in, n_out, step, gap):
        await asyncio.sleep(gap * 0.003)
        task = asyncio.ensure_future(backend.complete(req(f"a{i}", step, n_in, n_out)))
        if i in cancel:
            asyncio.get_running_loop().call_later(0.004, task.cancel)
        try:
            return await task
        except asyncio.CancelledError:
            return None

    async def main():
        out = await asyncio.gather(*(one(i, *s) for i, s in enumerate(shapes)))
        await asyncio.sleep(60)  # the server drops the last cancelled requests at its next boundary
        return out

    out = clock.run(main())
    assert all(o is not None for i, o in enumerate(out) if i not in cancel)
    assert all(o.output_tokens == shapes[i][1] and o.end > o.start for i, o in enumerate(out) if o)
    stats = backend.stats()
    assert stats["requests"] + stats["dropped"] == len(shapes)
    assert (rep.n_running, rep.context_sum, rep.blocks_used, rep.kv_reserved, rep.n_outstanding) == (0, 0, 0, 0, 0)
    assert rep.timer is None and not rep.waiting


@given(st.lists(st.tuples(st.integers(1, 200), st.integers(1, 60), st.integers(0, 4), st.integers(0, 10)),
                min_size=1, max_size=20),
       st.sampled_from([1, 4, 16]), st.sampled_from(["priority", "fcfs"]))
def test_decode_segments_equal_iteration_by_iteration_planning(shapes, block, policy):
    # Reference: the same server planning every decode iteration at its own boundary (block need,
    # preemption and admission checked each time), against the closed-form multi-iteration segments.
    def run(one_iteration_segments):
        cfg = toy(kv_tokens=300, block_size=block, policy=policy, max_batch=5, max_batched_tokens=96)
        backend = SimulatedBackend(cfg)
        if one_iteration_segments:
            backend._replicas[0]._block_limit = lambda k: min(k, 1)
        reqs = [req(f"a{i}", step, n_in, n_out) for i, (n_in, n_out, step, _) in enumerate(shapes)]
        # distinct arrival times: asyncio orders timers due at the same instant arbitrarily
        out = serve(backend, reqs, gaps=[0.002 * gap + 1e-7 * i for i, (*_, gap) in enumerate(shapes)])
        return [o.end for o in out], backend.stats()["preemptions"]

    (segmented, pre_s), (stepped, pre_i) = run(False), run(True)
    assert pre_s == pre_i
    assert segmented == pytest.approx(stepped, rel=1e-9)
