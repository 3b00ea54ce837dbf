"""genagents-day: a synthetic, Generative-Agents-like full day of the 25 Smallville personas.

Each persona follows a daily routine on the_ville's real places (its home from the shipped run,
Hobbs Cafe, Oak Hill College, Johnson Park, the pub, the shops...), with times jittered by the
seed. Agents walk 4-connected shortest paths; two awake agents that perceive each other may
start a conversation: both stop for a few minutes while the initiator generates the dialogue.
LLM call chains come from these events through the shared call model (`calls.py`).

The day is simulated step by step (conversations stop agents, so trajectories depend on one
another) with numpy across agents; perception and call chains are computed afterwards over the
whole day at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..make import the_ville_personas
from ..world import Tile, TileMap, the_ville
from . import calls as C
from .perception import perceived_csr
from .plans import Plans
from .trace import Trace
from .walking import distance_field4, path4

STEPS_PER_DAY = 8640
SECONDS_PER_STEP = 10
RADIUS_P = 4
START_TIME = "2023-02-13T00:00:00"

#: Per step, the chance that a pair of available agents who perceive each other start to talk.
CHAT_PROB = 0.25
#: Conversation length in utterances [lo, hi]; it lasts one to two steps per utterance, and
#: ends on a whole minute (reverie's `_chat_react` rounds the chat's end up to the minute).
CHAT_TURNS = (8, 16)
#: Steps before the same pair talks again (reverie's `chatting_with_buffer`: 800 steps). This is
#: reverie's only limit: an agent may talk to someone else as soon as a conversation ends.
PAIR_BUFFER_STEPS = 800
#: The schedule's grid (minutes): reverie's plans are lists of (task, minutes) from midnight,
#: and its task decompositions use 5-minute multiples, so activities and sub-tasks start on
#: this grid (65% of the shipped run's changes fall on 5-minute marks, 91% on whole minutes).
GRID_MIN = 5
#: Sub-task durations (whole minutes) and their shares, after the shipped run: 113, 62 and 32
#: of its 311 activity changes came 5, 10 and 15 minutes after the previous one; the rest
#: after other whole (or, around conversations, partial) minutes.
SUBTASK_MIN = tuple(range(1, 16))
SUBTASK_P = tuple(0.5 if m == 5 else 0.25 if m == 10 else 0.1 if m == 15 else 0.15 / 12
                  for m in SUBTASK_MIN)
#: Jitter (minutes, +-, on the grid) of scheduled start times.
JITTER_MIN = 10
# A routine: wake window (hours), then (hour, place, activity) items. Places are resolved per
# persona by `_Places.tile`: bed/room/bath/kitchen/common/garden are in its home, the others are
# public, "lunch" is the persona's `_LUNCH` table. "+m" hours are offsets in minutes after
# waking. The persona's habitual time in its wake window is rounded to the hour: six wake at
# 06:00 (the shipped run: six at 06:00, four earlier), the others at 07:00 or 08:00.
_MORNING = (("+0", "bath", "waking up and getting ready"), ("+25", "kitchen", "having breakfast"))
_ROLES: dict[str, tuple[tuple[float, float], tuple, float]] = {
    # role: ((wake_from, wake_to), items, bedtime). A place "a|b": each persona has its habit.
    "student": ((6.75, 8.0), _MORNING + (
        (9.0, "classroom", "attending a lecture"), (10.5, "library", "studying for exams"),
        (12.0, "lunch", "having lunch"), (13.0, "library", "working on a research paper"),
        (15.0, "room", "studying"), (16.5, "park|dorm_common", "taking a break"),
        (18.0, "dorm_kitchen", "having dinner"), (19.25, "pub|room|dorm_common", "spending the evening"),
        (21.5, "room", "reading before bed")), 22.75),
    "music_student": ((7.0, 7.5), _MORNING + (
        (9.0, "classroom", "attending a music theory class"), (11.0, "hallway", "practicing the piano"),
        (12.0, "lunch", "having lunch"), (13.0, "library", "studying composition"),
        (15.0, "park", "composing music in the park"), (17.5, "kitchen", "having dinner with family"),
        (19.0, "room", "composing music"), (21.0, "common", "relaxing with family")), 22.5),
    "professor": ((6.0, 6.67), _MORNING + (
        (8.5, "library", "preparing the lecture"), (9.0, "classroom", "teaching philosophy"),
        (12.0, "lunch", "having lunch"), (13.0, "hallway", "holding office hours"),
        (15.0, "library", "reading philosophy papers"), (17.0, "common", "relaxing at home"),
        (18.0, "kitchen", "having dinner with family"), (19.5, "common", "reading a book")), 22.0),
    "pharmacist": ((6.0, 6.67), _MORNING + (
        (8.0, "market", "working at the pharmacy counter"), (12.0, "lunch", "having lunch"),
        (13.0, "market", "serving pharmacy customers"), (18.0, "kitchen", "having dinner with family"),
        (19.5, "common", "talking with family")), 22.0),
    "store_owner": ((6.25, 6.75), _MORNING + (
        (8.0, "supply", "running the supply store"), (12.0, "lunch", "having lunch"),
        (13.0, "supply", "restocking the shelves"), (17.5, "kitchen", "having dinner"),
        (19.5, "pub|common", "spending the evening"), (22.0, "common", "winding down")), 22.5),
    "homemaker": ((6.0, 6.5), _MORNING + (
        (8.0, "common", "doing housework"), (10.0, "market", "grocery shopping"),
        (11.0, "garden", "gardening"), (12.0, "lunch", "having lunch"),
        (13.5, "park", "walking in the park"), (15.0, "common", "reading a novel"),
        (17.0, "kitchen", "cooking dinner"), (19.5, "common", "watching a movie")), 22.5),
    "clerk": ((6.5, 7.0), _MORNING + (
        (8.5, "market", "working at the store"), (12.0, "lunch", "having lunch"),
        (13.0, "market", "working at the store"), (17.0, "common", "relaxing at home"),
        (18.0, "kitchen", "having dinner"), (19.5, "pub|common", "spending the evening")), 22.0),
    "writer": ((7.0, 7.75), _MORNING + (
        (8.5, "common", "writing a children's book"), (12.0, "lunch", "having lunch"),
        (13.0, "room", "writing a children's book"), (15.0, "park", "looking for inspiration in the park"),
        (16.5, "library", "researching stories"), (18.0, "kitchen", "having dinner"),
        (20.0, "common", "editing the manuscript")), 22.5),
    "artist": ((7.0, 8.5), _MORNING + (
        (9.0, "room", "working on an art project"), (11.5, "common", "chatting with housemates"),
        (12.25, "lunch", "having lunch"), (13.5, "room", "working on an art project"),
        (15.5, "park|room", "sketching"), (17.0, "market|room", "buying art supplies"),
        (18.0, "kitchen", "having dinner"), (19.5, "pub|common|room", "spending the evening"),
        (22.0, "room", "reading")), 23.0),
    "cafe_owner": ((6.0, 6.5), _MORNING + (
        (7.5, "cafe", "opening Hobbs Cafe"), (8.0, "cafe", "serving customers"),
        (12.0, "lunch", "having lunch at the counter"), (13.0, "cafe", "serving customers"),
        (20.0, "common", "closing up and heading home"), (21.0, "pub|common", "relaxing"),
        (22.5, "common", "getting ready for bed")), 23.0),
    "bartender": ((7.5, 8.5), _MORNING + (
        (9.5, "common", "reading the news"), (11.0, "market", "shopping for the pub"),
        (12.0, "lunch", "having lunch at the pub"), (13.0, "park", "taking a walk"),
        (14.5, "pub", "tending the bar")), 23.25),
    "engineer": ((7.0, 7.5), _MORNING + (
        (8.5, "common", "coding a new feature"), (12.0, "lunch", "having lunch"),
        (13.0, "library|common", "debugging code"), (17.0, "park", "going for a jog"),
        (18.0, "common", "having dinner"), (19.5, "pub|common", "spending the evening")), 22.0),
    "mathematician": ((6.5, 7.25), _MORNING + (
        (8.0, "common", "working on a proof"), (10.0, "library", "reading math papers"),
        (12.0, "lunch", "having lunch"), (13.5, "park", "thinking in the park"),
        (15.0, "common", "working on a proof"), (18.0, "common", "having dinner"),
        (19.5, "pub|common", "spending the evening")), 22.0),
    "poet": ((7.0, 8.0), (("+0", "bath", "waking up and getting ready"),
                          ("+25", "cafe", "having breakfast at the cafe"),
                          (9.5, "common", "writing poems"), (12.0, "lunch", "having lunch"),
                          (13.5, "park", "reading poetry in the park"), (15.0, "library", "researching poets"),
                          (17.0, "common", "writing poems"), (19.0, "pub|common", "reading poems")), 22.5),
    "politician": ((6.0, 6.5), _MORNING + (
        (7.5, "park", "taking a morning walk"), (9.0, "cafe", "talking to voters at the cafe"),
        (11.0, "market", "campaigning at the market"), (12.0, "lunch", "having lunch"),
        (13.5, "park", "campaigning in the park"), (17.0, "common", "planning the campaign"),
        (18.0, "common", "having dinner"), (19.5, "pub", "talking to voters at the pub")), 22.0),
    "painter": ((6.0, 6.67), _MORNING + (
        (8.5, "common", "painting"), (12.0, "lunch", "having lunch"),
        (13.5, "common", "painting"), (15.0, "park", "painting in the park"),
        (16.5, "market", "shopping"), (18.0, "common", "having dinner"),
        (19.5, "common", "reading")), 22.0),
    "lawyer": ((6.5, 7.0), _MORNING + (
        (8.0, "common", "preparing tax returns"), (12.0, "lunch", "having lunch"),
        (13.0, "common", "meeting clients online"), (17.0, "park", "walking in the park"),
        (18.0, "common", "having dinner"), (20.0, "common", "reading")), 22.0),
    "philosopher": ((7.0, 8.0), _MORNING + (
        (9.0, "common", "writing a book"), (12.0, "lunch", "having lunch"),
        (13.5, "library", "researching for the book"), (16.0, "park", "thinking in the park"),
        (18.0, "common", "having dinner"), (19.5, "pub|common", "spending the evening")), 23.0),
}

_PERSONA_ROLE = {
    "Latoya Williams": "artist", "Rajiv Patel": "artist", "Abigail Chen": "artist",
    "Francisco Lopez": "artist", "Hailey Johnson": "artist", "Arthur Burton": "bartender",
    "Ryan Park": "engineer", "Isabella Rodriguez": "cafe_owner", "Giorgio Rossi": "mathematician",
    "Carlos Gomez": "poet", "Klaus Mueller": "student", "Maria Lopez": "student",
    "Ayesha Khan": "student", "Wolfgang Schulz": "student", "Mei Lin": "professor",
    "John Lin": "pharmacist", "Eddy Lin": "music_student", "Tom Moreno": "store_owner",
    "Jane Moreno": "homemaker", "Tamara Taylor": "writer", "Carmen Ortiz": "clerk",
    "Sam Moore": "politician", "Jennifer Moore": "painter", "Yuriko Yamamoto": "lawyer",
    "Adam Smith": "philosopher",
}
#: Where each persona has lunch. Reverie's daily plans put lunch at a time ("have lunch at
#: 12:00 pm") and the LLM picks the place from what the persona knows: home, its workplace or
#: Hobbs Cafe. Families and housemates eat together at home, the students in the dorm, a few
#: regulars at the cafe and the pub: ten small tables around town (at most four people each)
#: rather than one crowd, which is what lets the paper's busy hour (its long conversations in
#: separate pairs and small groups) run 3.5x faster under the oracle than under global sync.
_LUNCH = {
    "Isabella Rodriguez": "cafe", "Carlos Gomez": "cafe", "Giorgio Rossi": "cafe", "Ryan Park": "cafe",
    "Arthur Burton": "pub", "Adam Smith": "pub", "Tom Moreno": "pub",
    "Klaus Mueller": "dorm_kitchen", "Maria Lopez": "dorm_kitchen", "Ayesha Khan": "dorm_kitchen",
    "Wolfgang Schulz": "dorm_kitchen",
    "Mei Lin": "kitchen", "John Lin": "kitchen", "Eddy Lin": "kitchen",
    "Latoya Williams": "kitchen", "Rajiv Patel": "kitchen", "Francisco Lopez": "kitchen",
    "Abigail Chen": "common", "Hailey Johnson": "common",
    "Jane Moreno": "kitchen",
    "Tamara Taylor": "kitchen", "Carmen Ortiz": "kitchen",
    "Sam Moore": "common", "Jennifer Moore": "common", "Yuriko Yamamoto": "pub",
}
_MEN_IN_DORM = {"Klaus Mueller", "Wolfgang Schulz"}

_PUBLIC = {
    "cafe": ("Hobbs Cafe", "cafe"), "classroom": ("Oak Hill College", "classroom"),
    "library": ("Oak Hill College", "library"), "hallway": ("Oak Hill College", "hallway"),
    "park": ("Johnson Park", "park"), "pub": ("The Rose and Crown Pub", "pub"),
    "market": ("The Willows Market and Pharmacy", "store"),
    "supply": ("Harvey Oak Supply Store", "supply store"),
    "dorm_common": ("Dorm for Oak Hill College", "common room"),
    "dorm_kitchen": ("Dorm for Oak Hill College", "kitchen"),
}


@dataclass(frozen=True)
class _Item:
    start: int          # step the item begins
    tile: Tile
    activity: str
    asleep: bool


class _Places:
    """Tiles of the_ville's arenas, limited to the part of town reachable on foot."""

    def __init__(self, world: TileMap, personas: dict[str, Tile]):
        self.world = world
        anchor = next(iter(personas.values()))
        self.reachable = distance_field4(world, anchor) >= 0
        self.sector_of = {n: int(world.sector[t[1], t[0]]) for n, t in personas.items()}
        self.personas = personas
        self._tiles: dict[int, np.ndarray] = {}
        self._by_name: dict[tuple[int, str], int] = {}
        for a_id, a_name in world.arena_names.items():
            ys, xs = np.nonzero((world.arena == a_id) & self.reachable)
            if xs.size:
                self._tiles[a_id] = np.stack([xs, ys], axis=1)
                self._by_name[(int(world.sector[ys[0], xs[0]]), a_name)] = a_id
        self._sector_index = {s: i for i, s in enumerate(world.sector_names)}

    def arena(self, sector: str | int, arena: str) -> int | None:
        s = self._sector_index[sector] if isinstance(sector, str) else sector
        return self._by_name.get((s, arena))

    def tile(self, persona: str, place: str, rng: np.random.Generator) -> Tile:
        bed = self.personas[persona]
        if place == "bed":
            return bed
        if place in _PUBLIC:
            a = self.arena(*_PUBLIC[place])
        else:
            a = self._home_arena(persona, place)
        tiles = self._tiles[a]
        x, y = tiles[rng.integers(len(tiles))]
        return int(x), int(y)

    def _home_arena(self, persona: str, place: str) -> int:
        bed = self.personas[persona]
        own = int(self.world.arena[bed[1], bed[0]])
        home = self.sector_of[persona]
        names = {
            "room": (),
            "bath": (f"{persona}'s bathroom",
                     "man's bathroom" if persona in _MEN_IN_DORM else "woman's bathroom", "bathroom"),
            "kitchen": ("kitchen", "common room", "main room"),
            "common": ("common room", "main room"),
            "garden": ("garden", "common room", "main room"),
        }[place]
        for name in names:
            a = self.arena(home, name)
            if a is not None:
                return a
        return own


@lru_cache(maxsize=2)
def _places() -> _Places:
    return _Places(the_ville(), the_ville_personas())


def _step_of(hour: float) -> int:
    return int(round(hour * 3600 / SECONDS_PER_STEP))


def _habit(persona: str, n: int) -> int:
    return sum(map(ord, persona)) % n


def _schedule(persona: str, places: _Places, rng: np.random.Generator) -> list[_Item]:
    wake_range, items, bedtime = _ROLES[_PERSONA_ROLE[persona]]
    bed = places.tile(persona, "bed", rng)
    grid = _step_of(GRID_MIN / 60)
    # Reverie asks the LLM for a wake-up *hour* from the persona's lifestyle (every agent of the
    # shipped run wakes at hh:00): the persona's habitual hour within its role's window.
    lo, hi = wake_range
    wake = _step_of(round(lo + (hi - lo) * _habit(persona, 97) / 96))
    out = [_Item(0, bed, "sleeping", True)]
    last = 0
    spread = JITTER_MIN // GRID_MIN
    for when, place, activity in items:
        if isinstance(when, str):
            start = wake + _step_of(float(when[1:]) / 60)
        else:
            start = _step_of(when) + grid * int(rng.integers(-spread, spread + 1))
        start = max(start, last + grid)
        # Habits, not dice: a persona always picks the same option, so that the day's crowds
        # (and with them the calibrated statistics) vary little from seed to seed.
        options = (_LUNCH[persona] if place == "lunch" else place).split("|")
        place = options[_habit(persona, len(options))]
        out.append(_Item(start, places.tile(persona, place, rng), activity, False))
        last = start
    sleep = max(_step_of(bedtime) + grid * int(rng.integers(-spread, spread + 1)), last + grid)
    out.append(_Item(min(sleep, STEPS_PER_DAY - grid), bed, "sleeping", True))
    return out


def genagents_day(seed: int = 0) -> Trace:
    """The genagents-day workload for one seed: 25 personas, 8,640 steps of 10 s from midnight.

    Reproducible: one seed, one trace (cached; the arrays are read-only).
    """
    return _day(int(seed))


@lru_cache(maxsize=64)
def _day(seed: int) -> Trace:
    rng = np.random.default_rng([seed, 0x6A6E])
    places = _places()
    world = places.world
    names = list(places.personas)
    n, steps = len(names), STEPS_PER_DAY
    sim = _simulate(names, places, rng, steps)
    seconds = np.arange(steps + 1, dtype=np.int64) * SECONDS_PER_STEP
    counts, ids = perceived_csr(world, sim.positions, steps, RADIUS_P, True)
    events = C.StepEvents(
        awake=sim.awake, new_day=C.new_days(START_TIME, seconds, n), new_activity=sim.new_activity, new_subtask=sim.new_subtask,
        n_perceived=counts,
        new_events=C.new_perceived_events(counts, ids, sim.activity),
        chat_initiator=sim.chat_initiator, chat_turns=sim.chat_turns,
        chat_partner_start=sim.chat_partner_start, chat_end=sim.chat_end,
        whole_minute=C.whole_minutes(START_TIME, seconds))
    chains = C.sample_chains(events, rng)
    trace = Trace(
        name="genagents-day", agents=tuple(names), world=world, positions=sim.positions,
        activity=sim.activity, activities=sim.activities, partner=sim.partner,
        utterance=sim.utterance, n_calls=chains.n_calls, input_tokens=chains.input_tokens,
        output_tokens=chains.output_tokens, call_kind=chains.call_kind, call_kinds=C.CALL_KINDS,
        n_perceived=counts, perceived_ids=ids,
        seconds=seconds, radius_p=RADIUS_P,
        same_zone=True, start_time=START_TIME, seconds_per_step=SECONDS_PER_STEP,
        meta={"workload": "genagents-day", "seed": seed, "world": {"map": "the_ville"},
              "conversations": sim.conversations},
        plans=sim.plans.freeze())
    _freeze(trace)
    return trace


def _freeze(trace: Trace) -> None:
    # Cached traces are shared between callers: make accidental writes fail loudly.
    for key in ("positions", "activity", "partner", "utterance", "n_calls", "input_tokens",
                "output_tokens", "call_kind", "n_perceived", "perceived_ids", "seconds"):
        getattr(trace, key).setflags(write=False)


@dataclass
class _Sim:
    positions: np.ndarray
    activity: np.ndarray
    activities: tuple[str, ...]
    partner: np.ndarray
    utterance: np.ndarray
    awake: np.ndarray
    new_activity: np.ndarray
    new_subtask: np.ndarray
    chat_initiator: np.ndarray
    chat_turns: np.ndarray
    chat_partner_start: np.ndarray
    chat_end: np.ndarray
    conversations: int
    plans: Plans


def _simulate(names: list[str], places: _Places, rng: np.random.Generator, steps: int) -> _Sim:
    world = places.world
    n = len(names)
    minute = 60 // SECONDS_PER_STEP
    sched = [_schedule(a, places, rng) for a in names]

    def next_subtask_after(t: int) -> int:
        # A decomposed task's sub-tasks follow each other by whole minutes.
        return t + int(rng.choice(SUBTASK_MIN, p=SUBTASK_P)) * minute

    table: dict[str, int] = {}

    def act_id(text: str) -> int:
        return table.setdefault(text, len(table))

    positions = np.empty((n, steps + 1, 2), dtype=np.int16)
    pos = np.array([s[0].tile for s in sched], dtype=np.int64)
    positions[:, 0] = pos
    activity = np.empty((n, steps), dtype=np.int32)
    partner = np.full((n, steps), -1, dtype=np.int32)
    utterance = np.zeros((n, steps), dtype=bool)
    awake_rec = np.zeros((n, steps), dtype=bool)
    flags = {k: np.zeros((n, steps), dtype=bool) for k in
             ("new_activity", "new_subtask", "chat_initiator", "chat_partner_start", "chat_end")}
    chat_turns = np.zeros((n, steps), dtype=np.int32)

    item = np.zeros(n, dtype=np.int64)
    next_start = np.array([s[1].start for s in sched], dtype=np.int64)
    asleep = np.ones(n, dtype=bool)
    paths: list[np.ndarray] = [pos[a:a + 1].copy() for a in range(n)]
    ptr = np.zeros(n, dtype=np.int64)
    path_len = np.ones(n, dtype=np.int64)
    base_text = [sched[a][0].activity for a in range(n)]
    part = np.zeros(n, dtype=np.int64)
    cur_act = np.array([act_id(t) for t in base_text], dtype=np.int64)
    next_subtask = np.full(n, np.iinfo(np.int64).max)
    chat_until = np.full(n, -1, dtype=np.int64)
    chat_from = np.zeros(n, dtype=np.int64)
    chat_with = np.full(n, -1, dtype=np.int64)
    initiator = np.zeros(n, dtype=bool)
    pair_ok = np.zeros((n, n), dtype=np.int64)  # step from which the pair may talk again
    zone = world.zone
    upper = np.triu(np.ones((n, n), dtype=bool), 1)
    conversations = 0
    # What each persona has planned (plans.py), recorded as it is planned: its current and next
    # activity's places and planned starts. Planned starts are steps of the whole day, whatever
    # `steps` is simulated.
    plan_rows = np.empty((n, steps, 8), dtype=np.int32)  # plans.COLUMNS of every agent-step
    target = pos.copy()
    next_target = np.full((n, 2), -1, dtype=np.int64)
    next_until = np.full(n, -1, dtype=np.int64)

    def plan_next(a: int) -> None:
        s, k = sched[a], item[a]
        next_target[a] = s[k + 1].tile if k + 1 < len(s) else (-1, -1)
        next_until[a] = -1 if k + 1 >= len(s) else s[k + 2].start if k + 2 < len(s) else STEPS_PER_DAY

    for a in range(n):
        plan_next(a)

    for t in range(steps):
        chatting = chat_until >= t
        # 1. Scheduled activities begin (postponed while the agent is in a conversation).
        for a in np.nonzero((next_start <= t) & ~chatting)[0]:
            s = sched[a]
            while item[a] + 1 < len(s) and s[item[a] + 1].start <= t:
                item[a] += 1
            it = s[item[a]]
            next_start[a] = s[item[a] + 1].start if item[a] + 1 < len(s) else np.iinfo(np.int64).max
            asleep[a] = it.asleep
            flags["new_activity"][a, t] = True
            paths[a] = path4(world, (int(pos[a, 0]), int(pos[a, 1])), it.tile)
            ptr[a], path_len[a] = 0, len(paths[a])
            base_text[a] = f"{it.activity} @ {world.location(it.tile)}"
            part[a] = 1
            cur_act[a] = act_id(base_text[a] if it.asleep else f"{base_text[a]} (part 1)")
            next_subtask[a] = np.iinfo(np.int64).max if it.asleep else next_subtask_after(t)
            target[a] = it.tile
            plan_next(a)
        # 2. Sub-tasks of the current activity.
        for a in np.nonzero((next_subtask <= t) & ~chatting)[0]:
            flags["new_subtask"][a, t] = True
            part[a] += 1
            cur_act[a] = act_id(f"{base_text[a]} (part {part[a]})")
            next_subtask[a] = next_subtask_after(t)
        # 3. Conversations start between available agents who perceive each other now.
        free = ~asleep & ~chatting
        if np.count_nonzero(free) >= 2:
            x, y = pos[:, 0], pos[:, 1]
            z = zone[y, x]
            near = ((np.abs(x[:, None] - x[None, :]) <= RADIUS_P) & (np.abs(y[:, None] - y[None, :]) <= RADIUS_P)
                    & (z[:, None] == z[None, :]) & upper & free[:, None] & free[None, :] & (pair_ok <= t))
            cand = np.argwhere(near)
            if len(cand):
                cand = cand[rng.random(len(cand)) < CHAT_PROB]
                for i, j in cand[rng.permutation(len(cand))]:
                    if chat_until[i] >= t or chat_until[j] >= t:
                        continue
                    if rng.random() < 0.5:
                        i, j = j, i
                    turns = int(rng.integers(CHAT_TURNS[0], CHAT_TURNS[1] + 1))
                    length = turns + int(rng.integers(0, turns + 1))
                    chat_from[[i, j]] = t
                    # It ends just before a whole minute: both resume their schedules on it.
                    chat_until[[i, j]] = -(-(t + length) // minute) * minute - 1
                    chat_with[i], chat_with[j] = j, i
                    initiator[i], initiator[j] = True, False
                    flags["chat_initiator"][i, t] = True
                    flags["chat_partner_start"][j, t] = True
                    chat_turns[i, t] = turns
                    conversations += 1
                chatting = chat_until >= t
        # 4. Record the step, and the plans as they stand now.
        plan_rows[:, t] = np.column_stack((target, np.minimum(next_start, STEPS_PER_DAY), asleep,
                                           np.where(chatting, chat_until, -1), next_target, next_until))
        awake_rec[:, t] = ~asleep
        activity[:, t] = cur_act
        if chatting.any():
            for a in np.nonzero(chatting)[0]:
                b = chat_with[a]
                partner[a, t] = b
                activity[a, t] = act_id(f"conversing with {names[b]}")
                utterance[a, t] = ((t - chat_from[a]) % 2 == 0) == initiator[a]
                if chat_until[a] == t:
                    flags["chat_end"][a, t] = True
                    pair_ok[a, b] = pair_ok[b, a] = t + 1 + PAIR_BUFFER_STEPS
        # 5. Walk one tile along the path (agents in a conversation stand still).
        for a in np.nonzero(~chatting & (ptr < path_len - 1))[0]:
            ptr[a] += 1
            pos[a] = paths[a][ptr[a]]
        positions[:, t + 1] = pos

    activities = tuple(sorted(table, key=table.get))
    return _Sim(positions, activity, activities, partner, utterance, awake_rec,
                flags["new_activity"], flags["new_subtask"], flags["chat_initiator"], chat_turns,
                flags["chat_partner_start"], flags["chat_end"], conversations, Plans.from_dense(plan_rows))
