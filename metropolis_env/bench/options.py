"""Command-line options generated from config dataclasses (fields made with `config.option`).

Every option defaults to "not given" (argparse.SUPPRESS), so `given(namespace, cls)` returns
exactly what the user typed and the dataclass keeps the one default; the help shows that
default. A hand-rolled generator rather than a library (tyro, simple-parsing): the flags predate
it (`--trace` for `trace_path`, `--no-progress`, a bare `--lookahead`) and must stay as they are.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, Field, fields
from typing import Any


def _flag(f: Field) -> str:
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


def _shown_default(f: Field, also: dict[str, Any]) -> str:
    """' (default: X)' unless the help already says it, the option is a switch, or X is empty."""
    kw = f.metadata["argparse"]
    parts = []
    if (kw.get("action") not in ("store_true", "store_false", "append") and f.default not in (None, MISSING)
            and "default" not in f.metadata["help"]):
        parts.append(f"default: {f.default}")
    parts += [f"{flag}: {getattr(preset, f.name)}" for flag, preset in also.items()]
    return f" ({'; '.join(parts)})" if parts else ""


def comma_list(s: str) -> tuple[str, ...]:
    """An option's value 'a, b,c' as ('a', 'b', 'c')."""
    return tuple(x.strip() for x in s.split(",") if x.strip())


def int_or_none(s: str) -> int | None:
    """An option's value: an int, or 'none' for None."""
    if s.strip().lower() == "none":
        return None
    try:
        return int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'none', got {s!r}") from None


def add_options(parser: argparse.ArgumentParser, cls: type, title: str,
                also: dict[str, Any] | None = None) -> argparse._ArgumentGroup:
    """An argument group `title` with one option per documented field of dataclass `cls`.
    `also` maps a preset's flag to a preset instance whose values the help shows beside the
    defaults (e.g. {"--best": BEST}). Returns the group, for options that are no field."""
    doc = (cls.__doc__ or "").split("\n\n")[0].strip()
    group = parser.add_argument_group(title, " ".join(doc.split()))
    for f in fields(cls):
        if "help" not in f.metadata:
            continue  # not a command-line setting
        help_text = f.metadata["help"].replace("%", "%%") + _shown_default(f, also or {}).replace("%", "%%")
        kw = dict(f.metadata["argparse"])
        if kw.get("action") not in ("store_true", "store_false") and "choices" not in kw:
            kw["metavar"] = _flag(f).lstrip("-").replace("-", "_").upper()
        group.add_argument(_flag(f), dest=f.name, default=argparse.SUPPRESS, help=help_text, **kw)
    return group


def given(namespace: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of `cls` the command line set, by field name (repeated options as tuples)."""
    out = {}
    for f in fields(cls):
        if "help" in f.metadata and hasattr(namespace, f.name):
            v = getattr(namespace, f.name)
            out[f.name] = tuple(v) if f.metadata["argparse"].get("action") == "append" else v
    return out


def as_flags(cls: type, values: dict[str, Any]) -> str:
    """`values` (by field name of `cls`) as the command line that sets them: '--rules paper'."""
    by_name = {f.name: f for f in fields(cls)}
    return " ".join(f"{_flag(by_name[k])} {v}" for k, v in values.items())
