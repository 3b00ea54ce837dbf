"""METROPOLIS_REQUIRE_ALL=1 turns the skip of a test whose optional extra is missing into a
failure (tests/extras.py); without it the test is skipped with its install hint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
NEEDS_MISSING = '''
import pytest
from extras import import_or_skip

pytestmark = pytest.mark.needs("the flux extra is not installed: pip install flux")

def test_marked():
    pass
'''
IMPORTS_MISSING = '''
from extras import import_or_skip

def test_imports():
    import_or_skip("no_such_module_for_metropolis", "pip install no-such-extra")
'''
AVAILABLE = '''
import pytest
from extras import import_or_skip

pytestmark = pytest.mark.needs(None)

def test_runs():
    assert import_or_skip("json", "stdlib").dumps(1) == "1"
'''


def _pytest(tmp_path: Path, require_all: str | None) -> tuple[int, str]:
    for name, text in (("test_a.py", NEEDS_MISSING), ("test_b.py", IMPORTS_MISSING), ("test_c.py", AVAILABLE)):
        (tmp_path / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "METROPOLIS_REQUIRE_ALL"}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    if require_all is not None:
        env["METROPOLIS_REQUIRE_ALL"] = require_all
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-q", "-rs", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("value", [None, "0"])
def test_without_the_switch_a_missing_extra_is_a_skip_with_its_hint(tmp_path, value):
    rc, out = _pytest(tmp_path, value)
    assert rc == 0 and "1 passed, 2 skipped" in out, out
    assert "pip install flux" in out and "pip install no-such-extra" in out


def test_with_the_switch_a_missing_extra_is_a_failure(tmp_path):
    rc, out = _pytest(tmp_path, "1")
    # the mark fails the test at setup (an error), the import inside the test a failure
    assert rc != 0 and "1 failed, 1 passed, 1 error" in out, out
    assert "METROPOLIS_REQUIRE_ALL=1" in out
