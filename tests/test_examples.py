"""The examples run: the scripted village, with and without declared routes (short runs)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("extra", [[], ["--routes"]])
def test_scripted_village_runs_to_the_end(monkeypatch, capsys, extra):
    # the example asserts liveness itself (every villager reaches max_steps)
    monkeypatch.setattr(sys, "argv", ["scripted_village.py", "--steps", "120", *extra])
    runpy.run_path(str(EXAMPLES / "scripted_village.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "virtual time: out of order" in out
    assert ("declared routes" in out) == bool(extra)
