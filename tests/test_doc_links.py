"""The repository stands on its own: every docs/ file the code and docs point at is in it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC_PATH = re.compile(r"(?<![\w/.])docs/[\w./-]*\w")


def _tracked_text_files() -> list[Path]:
    """The repository's sources and docs (no hidden folders: .git, .venv; no build outputs)."""
    return [p for p in ROOT.rglob("*") if p.suffix in (".py", ".md", ".toml", ".sh") and p.is_file()
            and not any(part.startswith(".") or part in ("build", "dist") or part.endswith(".egg-info")
                        for part in p.relative_to(ROOT).parts)]


def test_every_docs_path_mentioned_exists():
    files = _tracked_text_files()
    assert any(p.name == "README.md" for p in files)
    missing = {}
    for path in files:
        for ref in DOC_PATH.findall(path.read_text(errors="replace")):
            if not (ROOT / ref).exists() and not (ROOT / ref.rstrip(".")).exists():
                missing.setdefault(ref, []).append(str(path.relative_to(ROOT)))
    assert not missing, f"pointed at but not in the repository: {missing}"
