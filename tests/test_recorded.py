"""Recorded run folders as workloads (`--workload recorded:PATH`): the shipped format and
reverie's storage folder, any persona count and multiples of it, and clear errors naming the
file and row for malformed folders."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from metropolis_env.errors import ConfigError
from metropolis_env.workloads import load_workload
from metropolis_env.workloads.walking import path4
from metropolis_env.world import data_path

NAMES = ["Ann Able", "Bob Baker", "Cy Cole"]
STEPS = 40
START = dt.datetime(2023, 2, 13, 7, 0, 0)


def _run():
    """A small run: Ann walks from her bed to Bob, they talk for 12 steps, Cy sleeps; the clock
    jumps 30 s at step 20."""
    ann = [tuple(map(int, p)) for p in path4(_ville(), (72, 14), (72, 24))]
    rows = []
    for t in range(STEPS):
        a = ann[min(t + 1, len(ann) - 1)]
        talk = 15 <= t < 27
        rows.append([
            (NAMES[0], a, "walking to the cafe @ the Ville:Hobbs Cafe:cafe:counter" if not talk else
             f"conversing about lunch @ <persona> {NAMES[1]}", NAMES[1] if talk else ""),
            (NAMES[1], (72, 25), "having coffee @ the Ville:Hobbs Cafe:cafe:table" if not talk else
             f"conversing about lunch @ <persona> {NAMES[0]}", NAMES[0] if talk else ""),
            (NAMES[2], (75, 14), "sleeping @ the Ville:Cy's house:bedroom:bed", ""),
        ])
    times = [START + dt.timedelta(seconds=10 * t + (20 if t >= 20 else 0)) for t in range(STEPS)]
    return rows, times


def _ville():
    from metropolis_env.world import the_ville
    return the_ville()


def write_shipped(folder: Path) -> Path:
    rows, times = _run()
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"run_name": "tiny", "maze": "the_ville", "start_time": START.isoformat(), "seconds_per_step": 10,
            "n_steps": STEPS, "persona_names": NAMES,
            "step_time_exceptions": [{"step": 20, "seconds_since_previous_step": 30}]}
    (folder / "meta.json").write_text(json.dumps(meta))
    with gzip.open(folder / "positions.csv.gz", "wt", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "agent", "x", "y"])
        for t, step in enumerate(rows):
            for name, (x, y), _, _ in step:
                w.writerow([t, name, x, y])
    with gzip.open(folder / "events.csv.gz", "wt", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "agent", "description", "chat_partner"])
        for t, step in enumerate(rows):
            for name, _, desc, partner in step:
                w.writerow([t, name, desc, partner])
    return folder


def write_reverie(folder: Path) -> Path:
    rows, times = _run()
    (folder / "reverie").mkdir(parents=True, exist_ok=True)
    (folder / "movement").mkdir(exist_ok=True)
    meta = {"fork_sim_code": "base", "start_date": "February 13, 2023", "curr_time": "February 13, 2023, 07:06:40",
            "sec_per_step": 10, "maze_name": "the_ville", "persona_names": NAMES, "step": STEPS}
    (folder / "reverie" / "meta.json").write_text(json.dumps(meta))
    for t, step in enumerate(rows):
        persona = {}
        for name, (x, y), desc, partner in step:
            chat = [[NAMES[0], "Hi!"], [NAMES[1], "Hello."]] if partner else None
            persona[name] = {"movement": [x, y], "pronunciatio": "*", "description": desc, "chat": chat}
        doc = {"persona": persona, "meta": {"curr_time": times[t].strftime("%B %d, %Y, %H:%M:%S")}}
        (folder / "movement" / f"{t}.json").write_text(json.dumps(doc))
    return folder


@pytest.fixture
def shipped(tmp_path):
    return write_shipped(tmp_path / "tiny")


def test_a_shipped_format_folder_loads_as_a_workload(shipped):
    rows, times = _run()
    trace = load_workload(f"recorded:{shipped}", agents=3)
    assert trace.agents == tuple(NAMES) and trace.n_steps == STEPS
    for t in (0, 5, 16, 39):
        for a, (name, tile, desc, partner) in enumerate(rows[t]):
            assert tuple(trace.positions[a, t + 1]) == tile  # the row of step t is the tile after it
            assert trace.activities[trace.activity[a, t]] == desc
            assert trace.partner[a, t] == (NAMES.index(partner) if partner else -1)
    assert tuple(trace.positions[0, 0]) == rows[0][0][1]  # the tile before step 0: row 0's
    assert list(trace.seconds[18:23]) == [180, 190, 220, 230, 240]  # the clock jump before step 20
    assert trace.meta["conversations"] == 1 and trace.stats().calls > 0
    assert trace.plans is None  # the format records no plans


def test_reverie_storage_folder_loads_as_the_same_run(shipped, tmp_path):
    a = load_workload(f"recorded:{shipped}", agents=3)
    b = load_workload(f"recorded:{write_reverie(tmp_path / 'sim')}", agents=3)
    for key in ("positions", "partner", "seconds", "n_calls", "input_tokens", "n_perceived"):
        assert np.array_equal(getattr(a, key), getattr(b, key)), key
    assert [a.activities[i] for i in a.activity.ravel()] == [b.activities[i] for i in b.activity.ravel()]
    assert b.start_time == START.isoformat()


@pytest.mark.parametrize("agents", [6, 9])
def test_any_multiple_of_the_persona_count_is_copies_side_by_side(shipped, agents):
    one = load_workload(f"recorded:{shipped}", agents=3)
    big = load_workload(f"recorded:{shipped}", agents=agents, seed=0)
    k = agents // 3
    assert big.n_agents == agents and big.world.width == 140 * k
    assert big.agents[3] == f"{NAMES[0]} #1"
    for c in range(k):
        assert np.array_equal(big.positions[3 * c:3 * c + 3, :, 0], one.positions[:, :, 0] + 140 * c)
        assert np.array_equal(big.partner[3 * c:3 * c + 3], np.where(one.partner >= 0, one.partner + 3 * c, -1))


@pytest.mark.parametrize("agents", [2, 4, 25, 0])
def test_agent_counts_must_be_multiples_of_the_persona_count(shipped, agents):
    with pytest.raises(ConfigError, match="has 3 personas: agents must be 3 or a multiple of 3"):
        load_workload(f"recorded:{shipped}", agents=agents)


def test_the_ville_morning_is_the_shipped_run_through_the_same_loader():
    named = load_workload("the_ville-morning", window="quiet")
    path = data_path("the_ville", "runs", "skip-morning-s-14")
    direct = load_workload(f"recorded:{path}", window="quiet")
    for key in ("positions", "activity", "partner", "n_calls", "input_tokens", "output_tokens", "perceived_ids"):
        assert np.array_equal(getattr(named, key), getattr(direct, key)), key


def _rewrite_csv(path: Path, edit) -> None:
    with gzip.open(path, "rt", newline="") as f:
        rows = list(csv.reader(f))
    rows = edit(rows)
    with gzip.open(path, "wt", newline="") as f:
        csv.writer(f).writerows(rows)


def _set(rows, line, col, value):
    rows[line - 1][col] = value
    return rows


def _meta(folder: Path, **changes) -> None:
    meta = json.loads((folder / "meta.json").read_text())
    meta.update(changes)
    (folder / "meta.json").write_text(json.dumps(meta))


SHIPPED_DEFECTS = {
    "no positions file": (lambda f: (f / "positions.csv.gz").unlink(), r"positions\.csv\.gz'?: missing"),
    "header": (lambda f: _rewrite_csv(f / "positions.csv.gz", lambda r: _set(r, 1, 2, "col")),
               r"positions\.csv\.gz'? line 1: the header must be step,agent,x,y"),
    "not an integer": (lambda f: _rewrite_csv(f / "positions.csv.gz", lambda r: _set(r, 5, 2, "7.5")),
                       r"positions\.csv\.gz'? line 5: a tile is two non-negative integers"),
    "unknown agent": (lambda f: _rewrite_csv(f / "events.csv.gz", lambda r: _set(r, 7, 1, "Nobody")),
                      r"events\.csv\.gz'? line 7: agent 'Nobody' is not in meta\.json persona_names"),
    "step past the end": (lambda f: _rewrite_csv(f / "positions.csv.gz", lambda r: _set(r, 9, 0, "40")),
                          r"positions\.csv\.gz'? line 9: step 40 is past the run's last step 39"),
    "duplicate row": (lambda f: _rewrite_csv(f / "positions.csv.gz", lambda r: r[:4] + [r[2]] + r[5:]),
                      r"positions\.csv\.gz'? line 5: a second row for agent 'Bob Baker' at step 0"),
    "missing row": (lambda f: _rewrite_csv(f / "events.csv.gz", lambda r: r[:-1]),
                    r"events\.csv\.gz'?: no row for agent 'Cy Cole' at step 39"),
    "blocked tile": (lambda f: _rewrite_csv(f / "positions.csv.gz", lambda r: _set(_set(r, 3, 2, "72"), 3, 3, "13")),
                     r"positions\.csv\.gz'? line 3: tile \(72, 13\) is not a walkable tile"),
    "unreachable jump": (lambda f: _rewrite_csv(f / "positions.csv.gz", lambda r: _set(_set(r, 3 * 30 + 3, 2, "0"), 3 * 30 + 3, 3, "0")),
                         r"recorded run 'tiny': agent 1 jumps at step 30 from \(72, 25\) to \(0, 0\), which no walk"),
    "one-sided conversation": (lambda f: _rewrite_csv(f / "events.csv.gz", lambda r: _set(r, 2 + 3 * 20 + 1, 3, "")),
                               r"events\.csv\.gz'? \(step 20\): 'Ann Able' converses with 'Bob Baker', who does not"),
    "partner is itself": (lambda f: _rewrite_csv(f / "events.csv.gz", lambda r: _set(r, 4, 3, "Cy Cole")),
                          r"events\.csv\.gz'? line 4: chat_partner 'Cy Cole' must be another persona"),
    "no persona names": (lambda f: _meta(f, persona_names=[]), r"meta\.json'?: 'persona_names' must be a non-empty"),
    "other maze": (lambda f: _meta(f, maze="the_city"), r"'maze' is 'the_city': only runs on the_ville"),
    "bad start time": (lambda f: _meta(f, start_time="7 am"), r"'start_time' must be an ISO time"),
    "bad meta json": (lambda f: (f / "meta.json").write_text("{"), r"meta\.json'?: not valid UTF-8 JSON"),
    "not gzip": (lambda f: (f / "events.csv.gz").write_bytes(b"step,agent\n"), r"events\.csv\.gz'?: not a readable gzip"),
}


@pytest.mark.parametrize("defect", sorted(SHIPPED_DEFECTS))
def test_malformed_shipped_folders_name_the_file_and_row(shipped, defect):
    spoil, message = SHIPPED_DEFECTS[defect]
    spoil(shipped)
    with pytest.raises(ConfigError, match=message):
        load_workload(f"recorded:{shipped}", agents=3)


def _movement(folder: Path, step: int, edit) -> None:
    path = folder / "movement" / f"{step}.json"
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))


def _drop(d, *keys):
    for k in keys[:-1]:
        d = d[k]
    del d[keys[-1]]


REVERIE_DEFECTS = {
    "missing step": (lambda f: (f / "movement" / "17.json").unlink(), r"movement'?: steps 0\.\.39 are recorded but 17\.json is missing"),
    "no movement": (lambda f: shutil.rmtree(f / "movement"), r"no movement/<step>\.json files"),
    "persona missing": (lambda f: _movement(f, 3, lambda d: (_drop(d, "persona", "Cy Cole"), d)[1]),
                        r"3\.json'?: 'persona' must hold exactly the personas"),
    "bad time": (lambda f: _movement(f, 4, lambda d: {**d, "meta": {"curr_time": "noon"}}), r"4\.json'?: 'meta'\.'curr_time'"),
    "bad tile": (lambda f: _movement(f, 5, lambda d: (d["persona"]["Ann Able"].update(movement=[1]), d)[1]),
                 r"5\.json'?: persona 'Ann Able' 'movement': a tile is two"),
    "bad chat": (lambda f: _movement(f, 6, lambda d: (d["persona"]["Cy Cole"].update(chat="hi"), d)[1]),
                 r"6\.json'?: persona 'Cy Cole': 'chat' must be null or a transcript"),
    "time goes back": (lambda f: _movement(f, 8, lambda d: {**d, "meta": {"curr_time": "February 13, 2023, 06:00:00"}}),
                       r"8\.json'?: 'curr_time' goes back in time"),
}


@pytest.mark.parametrize("defect", sorted(REVERIE_DEFECTS))
def test_malformed_reverie_folders_name_the_file(tmp_path, defect):
    folder = write_reverie(tmp_path / "sim")
    spoil, message = REVERIE_DEFECTS[defect]
    spoil(folder)
    with pytest.raises(ConfigError, match=message):
        load_workload(f"recorded:{folder}", agents=3)


@pytest.mark.parametrize("name,message", [
    ("recorded:", "needs the path of a run folder"),
    ("recorded:/no/such/run", "no such folder"),
    ("the_ville-evening", "unknown workload 'the_ville-evening'"),
])
def test_bad_workload_names_say_what_to_give(name, message):
    with pytest.raises(ConfigError, match=message):
        load_workload(name)


def test_a_folder_of_neither_format_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="found neither meta.json"):
        load_workload(f"recorded:{tmp_path}", agents=3)
