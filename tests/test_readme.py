"""Every fenced python and bash snippet of README.md runs on its own, as written, in an empty
folder with a fresh interpreter. A snippet that cannot (a real server, minutes of work, the test
command itself) says so in the README source, on the line before its fence:
`<!-- readme-test: skip: REASON -->`; only those are skipped. `pip install ...` prefixes are not
run (the suite runs on the installed package)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
SKIP = re.compile(r"<!-- readme-test: skip: (.+?) -->\s*$")
PIP_INSTALL = re.compile(r"^pip install [^&\n]*&&\s*", re.M)


def snippets() -> list:
    out = []
    for m in FENCE.finditer(README):
        lang, code = m.group(1), m.group(2)
        if lang not in ("python", "bash"):
            continue
        line = README.count("\n", 0, m.start()) + 1
        before = README[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = SKIP.search(before)
        marks = [pytest.mark.skip(reason=f"README.md:{line}: {skip.group(1)}")] if skip else []
        out.append(pytest.param(lang, code, id=f"{lang}-line{line}", marks=marks))
    return out


def _env() -> dict:
    env = dict(os.environ)
    # `python` and `metropolis-env` as installed with this interpreter
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["MPLBACKEND"] = "Agg"
    return env


def test_the_readme_has_runnable_snippets_of_both_kinds():
    kinds = [p.values[0] for p in snippets() if not p.marks]
    assert kinds.count("python") >= 2 and kinds.count("bash") >= 2


@pytest.mark.parametrize("lang, code", snippets())
def test_readme_snippet_runs(lang, code, tmp_path):
    if lang == "python":
        cmd = [sys.executable, "-c", code]
    else:
        cmd = ["bash", "-euo", "pipefail", "-c", PIP_INSTALL.sub("", code)]
    done = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}"


def test_ci_runs_exactly_the_readmes_test_command():
    block = re.search(r"Install the test extras and run the tests.*?```bash\n(.*?)```", README, re.S)
    command = block.group(1).strip()
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1].strip()
    assert ci == command
    assert "METROPOLIS_REQUIRE_ALL=1" in command  # CI runs every test or fails (tests/extras.py)
