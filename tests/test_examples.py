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


def test_evaluate_prints_equal_returns_and_both_clocks(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["evaluate.py", "--seeds", "2", "--agents", "6", "--steps", "25", "--gpus", "2"])
    runpy.run_path(str(EXAMPLES / "evaluate.py"), run_name="__main__")
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["goto"], ["rendezvous"], ["relay"])]
    assert {(r[0], r[1], r[2]) for r in rows} == {(t, p, m) for t in ("goto", "rendezvous", "relay")
                                                  for p in ("scripted", "llm") for m in ("sync", "async")}
    for r in rows:
        assert r[6] == ("wall" if r[1] == "scripted" else "virtual")
    assert out.count("returns in sync and async: equal on every seed") == 6 and "DIFFERENT" not in out
    # the same success and mean return in both modes; the LLM's virtual time differs between them
    by = {(r[0], r[1], r[2]): r for r in rows}
    for t in ("goto", "rendezvous", "relay"):
        for p in ("scripted", "llm"):
            assert by[t, p, "sync"][3:5] == by[t, p, "async"][3:5]
        assert by[t, "llm", "sync"][5] != by[t, "llm", "async"][5]
