"""GPU time per request on the simulated server: every busy second charged to the requests it
served, so the shares add up to the busy time (backends/scheduling.py, "GPU time per request")."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metropolis_env import clock
from metropolis_env.backends.base import LLMRequest
from metropolis_env.backends.simulated import make_backend
from metropolis_env.runtime.metrics import gpu_shares

ENGINES = ["l4-vllm", "l4-sglang"]


def req(agent: str, n_in: int = 50, n_out: int = 20, speculative: bool = False) -> LLMRequest:
    return LLMRequest(agent, 0, input_tokens=n_in, output_tokens=n_out, speculative=speculative)


def serve(backend, *requests):
    """Send `requests` at once; their responses and the server's stats."""
    async def go():
        out = await asyncio.gather(*(backend.complete(r) for r in requests))
        return out, backend.stats()
    return clock.run(go(), virtual=True)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_request_alone_is_charged_its_whole_time_in_the_server(engine):
    (r,), stats = serve(make_backend(engine), req("a"))
    assert r.gpu_s == pytest.approx(r.end - r.start, rel=1e-9)
    assert stats["gpu_busy_s"] == pytest.approx(r.gpu_s, rel=1e-9) and stats["gpu_s_speculative"] == 0.0


@pytest.mark.parametrize("engine", ENGINES)
def test_two_requests_batched_split_the_time_and_each_costs_less_than_alone(engine):
    (solo,), _ = serve(make_backend(engine), req("a"))
    (a, b), stats = serve(make_backend(engine), req("a"), req("b", speculative=True))
    assert a.gpu_s == pytest.approx(b.gpu_s, rel=1e-9)  # the same work in the same iterations
    assert a.gpu_s + b.gpu_s == pytest.approx(stats["gpu_busy_s"], rel=1e-9)
    assert stats["gpu_s_speculative"] == pytest.approx(b.gpu_s, rel=1e-9)
    # batching shares the weights read: each pays less than alone, both together more
    assert a.gpu_s < solo.gpu_s < a.gpu_s + b.gpu_s


@pytest.mark.parametrize("engine", ENGINES)
def test_the_longer_request_alone_pays_for_the_iterations_after_the_shorter_one_left(engine):
    (a, b), stats = serve(make_backend(engine), req("a", n_out=20), req("b", n_out=80))
    assert b.end > a.end
    assert b.gpu_s - a.gpu_s == pytest.approx(b.end - a.end, rel=1e-6)
    assert a.gpu_s + b.gpu_s == pytest.approx(stats["gpu_busy_s"], rel=1e-9)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("overhead", [0.0, 0.02])
def test_a_prefill_iteration_charges_its_fixed_cost_per_request_and_the_rest_per_token(engine, overhead):
    # One output token: both requests are done after the one prefill iteration they share.
    (a, b), stats = serve(make_backend(engine, iteration_overhead_s=overhead), req("a", 100, 1), req("b", 300, 1))
    assert a.end == b.end and a.gpu_s + b.gpu_s == pytest.approx(a.end - a.start, rel=1e-9)
    assert (a.gpu_s - overhead / 2) / (b.gpu_s - overhead / 2) == pytest.approx(100 / 300, rel=1e-9)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_cancelled_request_is_charged_until_it_leaves_the_batch(engine):
    async def go():
        backend = make_backend(engine)
        loop = asyncio.get_running_loop()
        spec = asyncio.ensure_future(backend.complete(req("s", n_out=4000, speculative=True)))
        real = asyncio.ensure_future(backend.complete(req("r", n_out=200)))
        await asyncio.sleep(1.0)  # both decoding
        spec.cancel()
        t_cancel = loop.time()
        r = await real
        return r, t_cancel, backend.stats()

    r, t_cancel, stats = clock.run(go(), virtual=True)
    charged = stats["gpu_s_speculative"]
    assert stats["dropped"] == 1 and charged > 0
    assert r.gpu_s + charged == pytest.approx(stats["gpu_busy_s"], rel=1e-9)
    # Both shared the batch until the cancelled one left; then the other ran alone, so its extra
    # time is its time alone: that puts the drop within one decode iteration after the cancel.
    t_drop = r.end - (r.gpu_s - charged)
    assert t_cancel <= t_drop + 1e-9 and t_drop - t_cancel < 0.1


def test_gpu_shares_are_none_where_the_backend_does_not_measure():
    assert gpu_shares({}, 0.0) == (None, None)
    assert gpu_shares({"gpu_busy_s": 10.0, "gpu_s_speculative": 4.0}, 1.0) == (0.4, 0.3)


_request = st.tuples(st.integers(1, 600), st.integers(1, 120), st.booleans(), st.floats(0, 3),
                     st.one_of(st.none(), st.floats(0, 6)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(engine=st.sampled_from(ENGINES), replicas=st.integers(1, 2), max_batch=st.integers(1, 6),
       small_kv=st.booleans(), requests=st.lists(_request, min_size=1, max_size=10))
def test_charges_add_up_to_the_busy_time(engine, replicas, max_batch, small_kv, requests):
    """Any mix (arrival times, sizes, speculative flags, cancellations of speculative requests,
    preemption for want of KV with a small cache): the completed requests' charges plus the
    speculative ones' add up to the busy time, and nobody is charged more than its time in the
    server."""
    overrides = {"max_batch": max_batch, "max_batched_tokens": 512}
    if small_kv:  # room for about 1,200 tokens of KV: vLLM preempts, SGLang queues
        base = make_backend(engine, **overrides).config
        kv = base.model.kv_bytes_per_token
        overrides["reserved_memory_bytes"] = (base.kv_capacity_tokens - 1200) * kv
    backend = make_backend(engine, gpus=replicas, **overrides)

    async def one(i, n_in, n_out, speculative, at, cancel_at):
        await asyncio.sleep(at)
        task = asyncio.ensure_future(backend.complete(req(f"a{i}", n_in, n_out, speculative)))
        if speculative and cancel_at is not None:
            await asyncio.sleep(cancel_at)
            task.cancel()
        try:
            return await task
        except asyncio.CancelledError:
            return None

    async def go():
        out = await asyncio.gather(*(one(i, *r) for i, r in enumerate(requests)))
        return out, backend.stats()

    out, stats = clock.run(go(), virtual=True)
    done = [(r, resp) for r, resp in zip(requests, out) if resp is not None]
    ordinary = sum(resp.gpu_s for r, resp in done if not r[2])
    assert ordinary + stats["gpu_s_speculative"] == pytest.approx(stats["gpu_busy_s"], rel=1e-9, abs=1e-12)
    assert stats["gpu_s_speculative"] >= sum(resp.gpu_s for r, resp in done if r[2]) - 1e-9
    for _, resp in done:
        assert 0 < resp.gpu_s <= resp.end - resp.start + 1e-9
    spec, wasted = gpu_shares(stats, sum(resp.gpu_s for r, resp in done if r[2]))
    assert 0 <= wasted <= spec <= 1 + 1e-12
    if len(done) == len(requests):
        assert wasted == pytest.approx(0.0, abs=1e-9)


def test_a_speculative_bench_run_reports_its_gpu_shares_and_other_runs_none():
    from metropolis_env.bench.report import table
    from metropolis_env.bench.runner import BenchConfig, run_bench

    result = run_bench(BenchConfig.of(window="busy", steps=40, modes=("async",), speculate=4, progress=False,
                                      lower_bounds=False, jobs=1))
    spec, plain = result.runs["async+spec"], result.runs["async"]
    assert plain.spec_gpu_share is None and plain.wasted_gpu_share is None
    assert 0 < spec.wasted_gpu_share < spec.spec_gpu_share < 1  # some speculation adopted, some discarded
    line = next(l for l in table(result).splitlines() if l.startswith("speculation ("))
    assert f"of busy GPU time {spec.spec_gpu_share:.2f} (wasted {spec.wasted_gpu_share:.3f})" in line


def test_gpu_time_counts_as_used_for_adopted_speculative_calls_and_reused_answers_only():
    from metropolis_env.backends.base import LLMResponse
    from metropolis_env.runtime.answers import REUSED
    from metropolis_env.runtime.metrics import MetricsRecorder

    rec = MetricsRecorder(lambda: 0.0)
    rec.record_call(req("a"), LLMResponse("x", 5, 1, gpu_s=1.0))  # ordinary
    rec.record_call(req("a", speculative=True), LLMResponse("x", 5, 1, gpu_s=2.0))  # adopted speculation
    rec.record_call(req("a"), LLMResponse("x", 5, 1, endpoint=REUSED, gpu_s=4.0))  # a discarded call's answer
    rec.record_call(req("a", speculative=True), LLMResponse("x", 5, 1))  # not measured
    assert rec.spec_gpu_used_s == 6.0
