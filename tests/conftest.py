"""Shared test configuration: hypothesis profiles, and the `needs` mark (tests/extras.py).

- "default": random examples, no deadline (env runs vary in length, and tests never time).
- "ci": the same examples on every run (derandomize), no example database on disk, no deadline;
  selected when the environment variable CI is set (any CI service sets it), or with
  `pytest --hypothesis-profile=ci`.
"""

from __future__ import annotations

import os
import sys

from hypothesis import settings

# Test helpers (reference.py, policies.py) are imported as top-level modules, whatever the
# rootdir and import mode.
sys.path.insert(0, os.path.dirname(__file__))

settings.register_profile("default", deadline=None)
settings.register_profile("ci", derandomize=True, deadline=None, database=None)
settings.load_profile("ci" if os.environ.get("CI") else "default")


def pytest_configure(config):
    config.addinivalue_line("markers", "needs(reason): the test needs an optional extra, missing when reason "
                                       "is not None: skipped, or failed under METROPOLIS_REQUIRE_ALL=1")


def pytest_runtest_setup(item):
    from extras import missing_extra

    for mark in item.iter_markers("needs"):
        if mark.args and mark.args[0] is not None:
            missing_extra(mark.args[0])
