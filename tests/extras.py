"""Tests that need an optional extra (llama.cpp, Ray, ...): skipped where it is missing, and
failed instead under METROPOLIS_REQUIRE_ALL=1.

The README's test command sets METROPOLIS_REQUIRE_ALL=1 (it installs every extra first, and
`.ci/run` runs exactly that command), so in CI a missing extra is a failure, never a silent skip.
A plain `python -m pytest` on a partial install still skips, saying what to install.

- `pytestmark = pytest.mark.needs(reason_or_None)` on a module (handled in conftest.py);
- `import_or_skip(name, hint)` inside a test or fixture.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

REQUIRE_ALL = os.environ.get("METROPOLIS_REQUIRE_ALL", "") not in ("", "0")


def missing_extra(reason: str) -> None:
    """Skip the running test because `reason`; under METROPOLIS_REQUIRE_ALL=1, fail it."""
    if REQUIRE_ALL:
        pytest.fail(f"{reason} (METROPOLIS_REQUIRE_ALL=1: every test must run here)", pytrace=False)
    pytest.skip(reason)


def import_or_skip(name: str, hint: str) -> ModuleType:
    """`import name`, or `missing_extra` with `hint` (how to install it)."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        error = e  # reported outside the handler: one message, no chained traceback
    missing_extra(f"{hint} ({error})")
