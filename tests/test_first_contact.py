"""First contact with `metropolis-env`: the help shows every default and explains the table,
`--version` answers, a missing optional extra is a one-line error, and progress bars leave no
trace in piped logs nor in the table."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from importlib.metadata import version

import pytest

from metropolis_env.bench.config import BEST, BenchConfig, RunConfig, ServerConfig, TraceConfig, TrackingConfig
from metropolis_env.bench.report import LEGEND
from metropolis_env.cli import BenchOutputs, _config, build_parser, main

SECTIONS = (TraceConfig, ServerConfig, TrackingConfig, RunConfig)
TINY = ["bench", "--steps", "30", "--gpus", "8", "--no-bounds", "--modes", "sync,async,oracle", "--jobs", "2"]


def _bench_help(capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping inside words like genagents-day
    with pytest.raises(SystemExit) as e:
        main(["bench", "--help"])
    assert e.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_help_shows_every_default_and_every_option_has_help(capsys, monkeypatch):
    text = _bench_help(capsys, monkeypatch)
    for cls in SECTIONS:
        for f in dataclasses.fields(cls):
            if "help" not in f.metadata:
                continue
            flag = f.metadata["flag"] or "--" + f.name.replace("_", "-")
            assert re.search(rf"{re.escape(flag)}\b", text), flag
            if f.default not in (None, ()) and not isinstance(f.default, bool):
                assert f"default: {f.default}" in text, flag
    assert "--gpus GPUS data-parallel GPU replicas" in text and "(default: 1)" in text
    assert re.search(r"--seed SEED \w+", text)  # --seed says what it seeds
    assert "--best: versioned" in text  # the preset beside the default


def test_the_command_line_defaults_are_the_configs_defaults():
    cfg = _config(build_parser().parse_args(["bench"]), BenchOutputs())
    assert dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, progress=True)) == BenchConfig()
    assert cfg.resolved().run.modes == ("single", "sync", "async", "oracle")
    assert cfg.replace(agents=1000).resolved().run.modes == ("sync", "async", "oracle")
    assert cfg.replace(agents=1000).resolved().run.lower_bounds
    assert not cfg.replace(agents=1025).resolved().run.lower_bounds


def test_every_flag_lands_in_its_section():
    a = build_parser().parse_args([
        "bench", "--workload", "the_ville-morning", "--agents", "50", "--window", "full", "--seed", "3",
        "--steps", "9", "--first-step", "5", "--trace", "t.npz", "--backend", "openai", "--base-url", "http://a", "--base-url",
        "http://b", "--api-model", "m", "--server", "sglang", "--timeout", "7", "--rules", "versioned",
        "--lookahead", "--bound", "map", "--modes", "sync,async", "--max-clusters", "4", "--actors", "2",
        "--address", "auto", "--jobs", "1", "--no-progress", "--no-bounds", "--policy", "fcfs",
        "--server-option", "max_batch=8", "--server-option", "routing=round-robin"])
    cfg = _config(a, BenchOutputs())
    assert cfg.trace == TraceConfig("the_ville-morning", 50, "full", 3, 9, "t.npz", first_step=5)
    assert (cfg.llm.backend, cfg.llm.base_urls, cfg.llm.api_model, cfg.llm.server, cfg.llm.timeout_s) == (
        "openai", ("http://a", "http://b"), "m", "sglang", 7.0)
    assert (cfg.llm.policy, cfg.llm.server_options) == ("fcfs", ("max_batch=8", "routing=round-robin"))
    assert cfg.tracking == BEST  # a bare --lookahead means persona
    assert cfg.run == RunConfig(modes=("sync", "async"), max_clusters=4, ray_address="auto", ray_actors=2,
                                jobs=1, progress=False, lower_bounds=False)


def test_version_is_the_installed_distributions(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"metropolis-env {version('metropolis-env')}"


def test_plot_without_matplotlib_is_a_one_line_error_before_anything_runs(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the [plot] extra were not installed
    out = tmp_path / "r.json"
    assert main([*TINY, "--json", str(out), "--plot", str(tmp_path / "figs")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'metropolis-env[plot]'" in err
    assert not out.exists() and not (tmp_path / "figs").exists()


def test_the_legend_explains_every_measured_column(capsys):
    assert main([*TINY]) == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("| mode |"))
    explained = {"mode", "LLM calls", "tokens in", "tokens out", "vs single"}  # self-explaining
    for column in (c.strip() for c in header.strip("|").split("|")):
        assert column in explained or column in LEGEND, column
    assert printed.index(LEGEND) > printed.index("benchmark wall time")  # under the table
    assert "lower bounds" in LEGEND


def _bench_cmd() -> list[str]:
    return [sys.executable, "-m", "metropolis_env.cli", *TINY]


def test_piped_logs_have_no_progress_bars_nor_escape_codes():
    done = subprocess.run(_bench_cmd(), capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    for stream in (done.stdout, done.stderr):
        assert b"\x1b" not in stream and b"agent-step/s" not in stream
    assert done.stdout.startswith(b"workload genagents-day")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pseudo-terminal test written for Linux")
def test_on_a_terminal_bars_show_and_the_table_starts_at_column_zero():
    import fcntl
    import pty
    import struct
    import termios

    pid, fd = pty.fork()
    if pid == 0:  # the child: a 40 x 120 terminal (tqdm draws nothing on a 0-column one)
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        os.execv(sys.executable, _bench_cmd())
    out = b""
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    assert os.waitpid(pid, 0)[1] == 0
    assert b"agent-step" in out  # the bars were drawn
    before = out[:out.index(b"workload genagents-day")]
    # the header starts a fresh line: after a newline, a carriage return or a clear-below
    assert before.endswith((b"\n", b"\r", b"\x1b[J")), before[-40:]
