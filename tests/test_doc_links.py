"""The repository stands on its own: every docs/ file the code and docs point at is in it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC_PATH = re.compile(r"(?<![\w/.])docs/[\w./-]*\w")


def _tracked_text_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "*.py", "*.md", "*.toml", "*.sh"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    return [ROOT / p for p in listed]


def test_every_docs_path_mentioned_exists():
    files = _tracked_text_files()
    assert any(p.name == "README.md" for p in files)
    missing = {}
    for path in files:
        for ref in DOC_PATH.findall(path.read_text(errors="replace")):
            if not (ROOT / ref).exists() and not (ROOT / ref.rstrip(".")).exists():
                missing.setdefault(ref, []).append(str(path.relative_to(ROOT)))
    assert not missing, f"pointed at but not in the repository: {missing}"
