"""Shared test configuration: hypothesis profiles.

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
