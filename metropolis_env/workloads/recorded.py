"""Recorded runs on disk: the shipped run format and reverie's own storage folder.

Two layouts are read (docs/WORKLOADS.md, "Recorded runs"):

* **the shipped format** (`data/the_ville/runs/<run>/`): `meta.json` (`persona_names`,
  `n_steps`, `start_time`, `seconds_per_step`, optional `first_step`, `maze` and
  `step_time_exceptions`), `positions.csv.gz` (`step,agent,x,y`: the tile after the step) and
  `events.csv.gz` (`step,agent,description,chat_partner`), one row per agent and step;
* **reverie's storage folder** (Generative Agents' `environment/frontend_server/storage/<sim>/`):
  `reverie/meta.json` (`persona_names`, `sec_per_step`, `maze_name`) and one
  `movement/<step>.json` per step, `{"persona": {name: {"movement": [x, y], "description",
  "chat": [[speaker, line], ...] or null, ...}}, "meta": {"curr_time": "February 13, 2023,
  00:00:10"}}`. The conversation partner is the other speaker of the agent's chat transcript.

Both become a `RecordedRun`: what the personas did, step by step. Anything malformed is a
ConfigError that names the file and the row (or step) and says what was expected; nothing is
guessed. Only runs on the_ville are supported (the map shipped with the package).
"""

from __future__ import annotations

import csv
import datetime as _dt
import gzip
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..world import the_ville

#: The shipped format's files, and reverie's.
SHIPPED = ("meta.json", "positions.csv.gz", "events.csv.gz")
REVERIE_META = os.path.join("reverie", "meta.json")
_REVERIE_TIME = "%B %d, %Y, %H:%M:%S"


@dataclass(frozen=True, eq=False)
class RecordedRun:
    """One recorded run. N personas, T steps; `xy[a, t]` is the tile of persona a after step t
    (int16 (N, T, 2)); `activity[a, t]` indexes `activities` (the recorded description of step
    t); `partner[a, t]` is the persona it converses with in step t (-1: none; always mutual);
    `seconds[t]` the game seconds of step t since `start_time` (int64 (T + 1,), the last one
    `seconds_per_step` after step T - 1)."""

    name: str
    names: tuple[str, ...]
    xy: np.ndarray
    activity: np.ndarray
    activities: tuple[str, ...]
    partner: np.ndarray
    seconds: np.ndarray
    start_time: str
    seconds_per_step: int
    source: dict


def read_run(path: str | os.PathLike) -> RecordedRun:
    """The run in folder `path`, in the shipped format or reverie's storage layout (cached by
    folder and modification time). ConfigError naming the file and row for anything malformed."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"recorded run {str(path)!r}: no such folder; give a run folder in the shipped "
                          f"format ({', '.join(SHIPPED)}) or a reverie storage folder (reverie/meta.json, "
                          f"movement/<step>.json)")
    folder = folder.resolve()
    if (folder / "meta.json").is_file():
        stamp = tuple((folder / f).stat().st_mtime_ns if (folder / f).exists() else 0 for f in SHIPPED)
        return _read_shipped(str(folder), stamp)
    if (folder / REVERIE_META).is_file():
        movement = folder / "movement"
        stamp = (movement.stat().st_mtime_ns if movement.is_dir() else 0,)
        return _read_reverie(str(folder), stamp)
    raise ConfigError(f"recorded run {str(folder)!r}: found neither meta.json (the shipped format: "
                      f"{', '.join(SHIPPED)}) nor {REVERIE_META} (a reverie storage folder)")


# -- the shipped format --------------------------------------------------------------------

@lru_cache(maxsize=4)
def _read_shipped(folder: str, stamp: tuple) -> RecordedRun:
    base = Path(folder)
    meta = _json(base / "meta.json")
    where = _where(base / "meta.json")
    names = _names(meta.get("persona_names"), where + ": 'persona_names'")
    steps = _int(meta.get("n_steps"), where + ": 'n_steps'", lo=1)
    first = _int(meta.get("first_step", 0), where + ": 'first_step'", lo=0)
    dt = _int(meta.get("seconds_per_step"), where + ": 'seconds_per_step'", lo=1)
    start = _iso(meta.get("start_time"), where + ": 'start_time'")
    _maze(meta.get("maze", "the_ville"), where + ": 'maze'")
    index = {n: i for i, n in enumerate(names)}
    n = len(names)

    xy = np.zeros((n, steps, 2), dtype=np.int16)
    seen = np.zeros((n, steps), dtype=bool)
    f = base / "positions.csv.gz"
    for line, (t, a, rest) in _table(f, ("step", "agent", "x", "y"), index, first, steps, seen):
        xy[a, t] = _tile(rest, f"{_where(f)} line {line}")
    seen[:] = False
    table: dict[str, int] = {}
    activity = np.zeros((n, steps), dtype=np.int32)
    partner = np.full((n, steps), -1, dtype=np.int32)
    f = base / "events.csv.gz"
    for line, (t, a, (description, chat)) in _table(f, ("step", "agent", "description", "chat_partner"),
                                                    index, first, steps, seen):
        activity[a, t] = table.setdefault(description, len(table))
        if chat:
            if chat not in index or chat == names[a]:
                raise ConfigError(f"{_where(f)} line {line}: chat_partner {chat!r} must be another persona of "
                                  f"persona_names, or empty")
            partner[a, t] = index[chat]
    _mutual(partner, names, lambda t: f"{_where(f)} (step {first + t})")

    # seconds[t] is the game time of step t; a clock jump listed at step s lies between steps
    # s - 1 and s.
    gaps = np.full(steps, dt, dtype=np.int64)
    jumps = meta.get("step_time_exceptions", [])
    if not isinstance(jumps, list):
        raise ConfigError(f"{where}: 'step_time_exceptions' must be a list of {{'step', "
                          f"'seconds_since_previous_step'}}, got {jumps!r}")
    for k, e in enumerate(jumps):
        what = f"{where}: step_time_exceptions[{k}]"
        if not isinstance(e, dict):
            raise ConfigError(f"{what} must be an object with 'step' and 'seconds_since_previous_step'")
        s = _int(e.get("step"), what + ".step", lo=first) - first
        sec = _int(e.get("seconds_since_previous_step"), what + ".seconds_since_previous_step", lo=0)
        if 1 <= s < steps:
            gaps[s - 1] = sec
    seconds = np.zeros(steps + 1, dtype=np.int64)
    seconds[1:] = np.cumsum(gaps)
    return RecordedRun(str(meta.get("run_name", base.name)), names, xy, activity,
                       tuple(sorted(table, key=table.get)), partner, seconds, start.isoformat(), dt,
                       {"format": "shipped", "folder": base.name, "first_step": first,
                        "source": meta.get("source")})


def _table(path: Path, header: tuple[str, ...], index: dict, first: int, steps: int, seen: np.ndarray):
    """(line, (step - first, agent index, other columns)) per row of a gzipped CSV with exactly
    `header`; every (step, agent) once (`seen` is filled in)."""
    where = _where(path)
    if not path.is_file():
        raise ConfigError(f"{where}: missing; a run folder in the shipped format holds {', '.join(SHIPPED)}")
    try:
        with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as e:
        raise ConfigError(f"{where}: not a readable gzip-compressed UTF-8 CSV file ({e})") from None
    if not rows or tuple(rows[0]) != header:
        got = rows[0] if rows else "nothing"
        raise ConfigError(f"{where} line 1: the header must be {','.join(header)}, got {got}")
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ConfigError(f"{where} line {line}: {len(row)} columns, expected {len(header)} "
                              f"({','.join(header)}): {row}")
        t = _int(row[0], f"{where} line {line}: step", lo=first) - first
        if t >= steps:
            raise ConfigError(f"{where} line {line}: step {row[0]} is past the run's last step "
                              f"{first + steps - 1} (meta.json n_steps = {steps})")
        a = index.get(row[1])
        if a is None:
            raise ConfigError(f"{where} line {line}: agent {row[1]!r} is not in meta.json persona_names")
        if seen[a, t]:
            raise ConfigError(f"{where} line {line}: a second row for agent {row[1]!r} at step {row[0]}")
        seen[a, t] = True
        yield line, (t, a, row[2:])
    if not seen.all():
        a, t = np.argwhere(~seen)[0]
        names = list(index)
        raise ConfigError(f"{where}: no row for agent {names[a]!r} at step {first + t} ({int((~seen).sum())} "
                          f"agent-steps missing); the file needs one row per agent and step")


# -- reverie's storage folder --------------------------------------------------------------

@lru_cache(maxsize=4)
def _read_reverie(folder: str, stamp: tuple) -> RecordedRun:
    base = Path(folder)
    meta_path = base / REVERIE_META
    meta = _json(meta_path)
    where = _where(meta_path)
    names = _names(meta.get("persona_names"), where + ": 'persona_names'")
    dt = _int(meta.get("sec_per_step"), where + ": 'sec_per_step'", lo=1)
    _maze(meta.get("maze_name", "the_ville"), where + ": 'maze_name'")
    movement = base / "movement"
    files = {}
    for p in movement.glob("*.json") if movement.is_dir() else ():
        if p.stem.isdigit():
            files[int(p.stem)] = p
    if not files:
        raise ConfigError(f"{_where(movement)}: no movement/<step>.json files; a reverie storage folder "
                          f"holds one per simulated step")
    first, last = min(files), max(files)
    missing = sorted(set(range(first, last + 1)) - set(files))
    if missing:
        raise ConfigError(f"{_where(movement)}: steps {first}..{last} are recorded but {missing[0]}.json is "
                          f"missing ({len(missing)} steps missing); a run must be contiguous")
    index = {n: i for i, n in enumerate(names)}
    n, steps = len(names), last - first + 1
    xy = np.zeros((n, steps, 2), dtype=np.int16)
    table: dict[str, int] = {}
    activity = np.zeros((n, steps), dtype=np.int32)
    partner = np.full((n, steps), -1, dtype=np.int32)
    times = []
    for t in range(steps):
        path = files[first + t]
        fw = _where(path)
        step = _json(path)
        personas = step.get("persona")
        if not isinstance(personas, dict) or set(personas) != set(names):
            got = sorted(personas) if isinstance(personas, dict) else personas
            raise ConfigError(f"{fw}: 'persona' must hold exactly the personas of {REVERIE_META} "
                              f"{list(names)}, got {got}")
        try:
            times.append(_dt.datetime.strptime(step["meta"]["curr_time"], _REVERIE_TIME))
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{fw}: 'meta'.'curr_time' must be a time like 'February 13, 2023, 00:00:10'") from None
        for name, rec in personas.items():
            a, what = index[name], f"{fw}: persona {name!r}"
            if not isinstance(rec, dict) or not isinstance(rec.get("description"), str):
                raise ConfigError(f"{what}: needs 'movement' [x, y] and a 'description' string")
            xy[a, t] = _tile(rec.get("movement"), what + " 'movement'")
            activity[a, t] = table.setdefault(rec["description"], len(table))
            partner[a, t] = _chat_partner(rec.get("chat"), name, index, what)
    _mutual(partner, names, lambda t: _where(files[first + t]))
    seconds = np.zeros(steps + 1, dtype=np.int64)
    seconds[:steps] = [(x - times[0]).total_seconds() for x in times]
    seconds[steps] = seconds[steps - 1] + dt
    bad = np.flatnonzero(np.diff(seconds) < 0)
    if bad.size:
        raise ConfigError(f"{_where(files[first + int(bad[0]) + 1])}: 'curr_time' goes back in time")
    return RecordedRun(base.name, names, xy, activity, tuple(sorted(table, key=table.get)), partner,
                       seconds, times[0].isoformat(), dt,
                       {"format": "reverie", "folder": base.name, "first_step": first,
                        "fork_sim_code": meta.get("fork_sim_code")})


def _chat_partner(chat, name: str, index: dict, what: str) -> int:
    """The other speaker of a reverie chat transcript ([[speaker, line], ...]), -1 for none."""
    if chat is None:
        return -1
    if not isinstance(chat, list) or not all(isinstance(x, list) and len(x) == 2 for x in chat):
        raise ConfigError(f"{what}: 'chat' must be null or a transcript [[speaker, line], ...], got {chat!r}")
    others = {x[0] for x in chat} - {name}
    if not others:
        return -1
    if len(others) > 1 or not others <= set(index):
        raise ConfigError(f"{what}: its chat transcript must have one other speaker among the personas, "
                          f"got {sorted(map(str, others))}")
    return index[others.pop()]


# -- shared checks -------------------------------------------------------------------------

def _where(path: Path) -> str:
    return f"recorded run file {str(path)!r}"


def _json(path: Path) -> dict:
    try:
        with path.open(encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{_where(path)}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{_where(path)}: not valid UTF-8 JSON ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{_where(path)}: must hold a JSON object, got {type(data).__name__}")
    return data


def _names(value, what: str) -> tuple[str, ...]:
    if (not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value)
            or len(set(value)) != len(value)):
        raise ConfigError(f"{what} must be a non-empty list of distinct persona names, got {value!r}")
    return tuple(value)


def _int(value, what: str, lo: int) -> int:
    try:
        v = int(value) if isinstance(value, str) else value
    except ValueError:
        v = None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ConfigError(f"{what} must be an integer >= {lo}, got {value!r}")
    return v


def _iso(value, what: str) -> _dt.datetime:
    try:
        return _dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be an ISO time like '2023-02-13T00:00:00', got {value!r}") from None


def _maze(value, what: str) -> None:
    if value != "the_ville":
        raise ConfigError(f"{what} is {value!r}: only runs on the_ville (the map shipped with the package) "
                          f"can be replayed")


def _tile(value, what: str) -> tuple[int, int]:
    world = the_ville()
    try:
        x, y = (_int(v, what, lo=0) for v in value)
    except (TypeError, ValueError, ConfigError):
        raise ConfigError(f"{what}: a tile is two non-negative integers x, y; got {value!r}") from None
    if not world.is_walkable((x, y)):
        raise ConfigError(f"{what}: tile {(x, y)} is not a walkable tile of the_ville "
                          f"({world.width} x {world.height})")
    return x, y


def _mutual(partner: np.ndarray, names: tuple[str, ...], where) -> None:
    a, t = np.nonzero(partner >= 0)
    back = partner[partner[a, t], t]
    bad = np.flatnonzero(back != a)
    if bad.size:
        i, s = int(a[bad[0]]), int(t[bad[0]])
        raise ConfigError(f"{where(s)}: {names[i]!r} converses with {names[partner[i, s]]!r}, who does not "
                          f"converse with {names[i]!r} at that step; conversations must be mutual")
