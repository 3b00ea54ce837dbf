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


def test_every_mode_replays_the_same_calls_and_ratios_are_consistent(bench_json):
    runs = {r["mode"]: r for r in bench_json[0]["runs"]}
    assert len({(r["llm_calls"], r["tokens_in"], r["tokens_out"]) for r in runs.values()}) == 1
    for r in runs.values():
        assert r["speedup_vs_sync"] == pytest.approx(runs["sync"]["completion_time_s"] / r["completion_time_s"])
        assert r["pct_of_oracle"] == pytest.approx(100 * runs["oracle"]["completion_time_s"] / r["completion_time_s"])
    assert runs["sync"]["deps_per_agent_step"] == 25
    assert runs["nodep"]["deps_per_agent_step"] == 1
    # fewer dependencies, shorter schedule (list scheduling has no such theorem, but this trace shows it)
    assert runs["nodep"]["completion_time_s"] <= runs["oracle"]["completion_time_s"] <= runs["async"]["completion_time_s"]
    assert runs["single"]["parallelism"] == pytest.approx(1.0, abs=0.02)


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
