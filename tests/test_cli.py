"""`metropolis-env bench`: the JSON schema, self-consistent ratios, figures, clear errors."""

from __future__ import annotations

import json

import pytest

from metropolis_env.cli import main

SCHEMA = {"mode", "completion_time_s", "speedup_vs_sync", "speedup_vs_single", "pct_of_oracle",
          "parallelism", "deps_per_agent_step", "llm_calls", "tokens_in", "tokens_out"}


@pytest.fixture(scope="module")
def bench_json(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    rc = main(["bench", "--window", "busy", "--steps", "40", "--gpus", "2", "--no-progress",
               "--modes", "single,sync,async,oracle,nodep", "--json", str(out / "r.json"),
               "--plot", str(out / "figs")])
    assert rc == 0
    return json.loads((out / "r.json").read_text()), out


def test_bench_json_has_one_run_per_mode_in_the_documented_schema(bench_json):
    data, _ = bench_json
    assert {"config", "runs"} <= set(data)
    assert [r["mode"] for r in data["runs"]] == ["single", "sync", "async", "oracle", "nodep"]
    for r in data["runs"]:
        assert SCHEMA <= set(r)


def test_every_mode_replays_the_same_calls_and_respects_the_critical_path(bench_json):
    data, _ = bench_json
    runs = {r["mode"]: r for r in data["runs"]}
    assert len({(r["llm_calls"], r["tokens_in"], r["tokens_out"]) for r in runs.values()}) == 1
    # No mode that waits for the real dependencies beats the critical path (nodep ignores them).
    critical = data["bounds"]["critical_s"]
    assert critical > 0
    for mode in ("single", "sync", "async", "oracle"):
        assert runs[mode]["completion_time_s"] >= critical * (1 - 1e-9), mode
    # Global steps keep every agent at one step; out of order really lets them apart.
    assert runs["sync"]["step_spread_mean"] == runs["single"]["step_spread_mean"] == 0
    assert runs["async"]["step_spread_mean"] > 1 and runs["oracle"]["step_spread_mean"] > 1
    assert runs["single"]["parallelism"] == pytest.approx(1.0, abs=0.02)


def test_single_thread_takes_the_sum_of_every_calls_latency_alone():
    """One call at a time on an idle server: the run's virtual time is the sum of each call's
    latency served alone, measured one by one by the bounds module (another code path)."""
    from metropolis_env.bench.bounds import step_costs
    from metropolis_env.bench.config import BenchConfig
    from metropolis_env.bench.runner import load_trace, make_backend, run_bench

    cfg = BenchConfig.of(steps=15, gpus=2, progress=False, lower_bounds=False, modes=("single",))
    trace = load_trace(cfg)
    single = run_bench(cfg, trace=trace).runs["single"].completion_time_s
    assert single == pytest.approx(step_costs(trace, make_backend(cfg.llm)).sum(), rel=1e-9)


def test_bench_writes_figures(bench_json):
    _, out = bench_json
    names = {p.name for p in (out / "figs").iterdir()}
    assert {"parallelism.png", "gantt_sync.png", "gantt_async.png"} <= names


def test_bad_bench_arguments_are_clear_errors(capsys):
    assert main(["bench", "--modes", "turbo", "--no-progress"]) == 2
    assert "unknown modes" in capsys.readouterr().err
    assert main(["bench", "--backend", "openai", "--no-progress"]) == 2
    assert "--base-url" in capsys.readouterr().err
    assert main(["bench", "--gpu", "tpu-v9", "--steps", "2", "--no-progress", "--no-bounds"]) == 2
    assert "unknown GPU" in capsys.readouterr().err
    assert main(["bench", "--first-step", "-1", "--no-progress"]) == 2
    assert "first step must be >= 0" in capsys.readouterr().err
    assert main(["bench", "--window", "quiet", "--first-step", "360", "--steps", "2", "--no-progress",
                 "--no-bounds"]) == 2
    assert "--first-step 360 is past the end: this trace has 360 steps" in capsys.readouterr().err


def test_best_sets_our_settings_and_refuses_to_mix_with_them(tmp_path, capsys):
    out = tmp_path / "best.json"
    assert main(["bench", "--best", "--window", "busy", "--steps", "40", "--modes", "async", "--no-progress",
                 "--no-bounds", "--json", str(out)]) == 0
    config = json.loads(out.read_text())["config"]
    assert (config["bound"], config["rules"], config["lookahead"]) == ("map", "versioned", "persona")
    assert main(["bench", "--best", "--rules", "paper", "--no-progress"]) == 2
    assert "drop --rules paper" in capsys.readouterr().err
    assert main(["bench", "--lookahead", "--steps", "2", "--no-progress", "--no-bounds"]) == 2
    assert "needs --rules versioned" in capsys.readouterr().err


def test_speculation_settings_reach_the_run_and_need_speculate(tmp_path, capsys):
    out = tmp_path / "spec.json"
    assert main(["bench", "--window", "busy", "--steps", "30", "--modes", "async", "--speculate", "2",
                 "--speculate-horizon", "16", "--speculate-settle", "none", "--no-progress", "--no-bounds",
                 "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert (data["config"]["speculate"], data["config"]["speculate_horizon"], data["config"]["speculate_settle"]) \
        == (2, 16, None)
    assert [r["mode"] for r in data["runs"]] == ["async", "async+spec"]
    assert "depth 2, horizon 16, settle None" in capsys.readouterr().out
    from metropolis_env.bench.config import BenchConfig

    settings = BenchConfig.of(speculate=3, speculate_horizon=40, speculate_settle=2).run.speculation().settings()
    assert (settings["depth"], settings["horizon"], settings["settle"]) == (3, 40, 2)
    # Tuning without speculation, or a bad value: a clear error, nothing run.
    assert main(["bench", "--speculate-horizon", "8", "--no-progress", "--json", str(tmp_path / "x.json")]) == 2
    assert "add --speculate" in capsys.readouterr().err
    assert main(["bench", "--speculate", "--speculate-settle", "-1", "--no-progress"]) == 2
    assert "settle must be an int >= 0" in capsys.readouterr().err
    assert main(["bench", "--speculate", "--speculate-horizon", "0", "--no-progress"]) == 2
    assert "horizon must be an int >= 1" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_server_options_reach_the_simulated_server_typed_and_bad_ones_are_clear_errors(tmp_path, capsys):
    from metropolis_env.bench.config import BenchConfig
    from metropolis_env.bench.runner import make_backend

    cfg = BenchConfig.of(gpus=2, server_options=("max_batch=3", "routing=round-robin", "reserve_kv=true",
                                                 "iteration_overhead_s=0.004"))
    server = make_backend(cfg.llm).config
    assert (server.max_batch, server.routing, server.reserve_kv, server.iteration_overhead_s) == \
        (3, "round-robin", True, 0.004)
    out = tmp_path / "opt.json"
    args = ["bench", "--window", "busy", "--steps", "20", "--modes", "sync", "--no-progress", "--no-bounds"]
    assert main(args + ["--server-option", "max_batch=1", "--json", str(out)]) == 0
    assert "max_batch=1" in capsys.readouterr().out.splitlines()[0]
    narrow = json.loads(out.read_text())
    assert narrow["config"]["server_options"] == ["max_batch=1"]
    assert main(args + ["--json", str(out)]) == 0
    capsys.readouterr()
    wide = json.loads(out.read_text())
    # one request at a time per replica is slower than the preset's batches on the same calls
    assert narrow["runs"][0]["completion_time_s"] > wide["runs"][0]["completion_time_s"]
    for bad, says in [("max_batch", "expected KEY=VALUE"), ("max_batch=x", "expected an integer"),
                      ("reserve_kv=maybe", "expected true or false"), ("gpu=a100", "set gpu with --gpu"),
                      ("policy=fcfs", "with --policy"), ("warp=9", "no setting 'warp'"),
                      ("max_batch=0", "max_batch must be >= 1"), ("routing=random", "unknown routing")]:
        assert main(args + ["--server-option", bad, "--json", str(tmp_path / "bad.json")]) == 2, bad
        assert says in capsys.readouterr().err, bad
    assert main(["bench", "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--server-option",
                 "max_batch=2", "--no-progress"]) == 2
    assert "sets the simulated server" in capsys.readouterr().err
    assert not (tmp_path / "bad.json").exists()
