"""The LLM call model: which chain of calls an agent makes in a step, and how long each call is.

Generative Agents calls its LLM only when something happens to an agent; the chains below follow
its reverie loop (Park et al. 2023). In one step, in chain order:

* `plan_day` at the first step of a day (midnight; reverie's `_long_term_planning` on a new
  day): wake-up hour, identity revision, daily plan, one call per hour of the hourly schedule.
* `perceive`: one poignancy rating per new event it perceives (someone comes into view, or a
  perceived agent changes activity), at most `ATTENTION` per step (its attention bandwidth).
* `react`: whether to react to / talk with a newly perceived agent.
* `chat`: a conversation is generated at its first step by the initiator, turn by turn:
  per utterance a relationship/context summary and the utterance itself (the long sequential
  chains of the busy hour). Its partner rates that it is being spoken to (one `react`).
* `chat_summary`: both agents summarise the conversation and revise their plan when it ends.
* `plan_action`: a new activity: its task decomposition, then the sub-task's action as below.
* `subtask`: every new sub-task is a new action in reverie (`_determine_action`): sector,
  arena, object, emoji, event triple, object description, object emoji, object event triple.
* `reflect`: once enough importance has accumulated: focal points, insights, evidence.

Token lengths are lognormal per call kind, clipped. The constants are calibrated so that the
genagents-day workload reproduces the paper's trace statistics (docs/WORKLOADS.md): 56.7k calls
per day for 25 agents, 642.6 input / 21.9 output tokens per call on average.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

import numpy as np

#: Call kinds, in the order they appear inside one agent-step's chain.
CALL_KINDS = ("plan_day", "perceive", "react", "chat", "chat_summary", "plan_action", "subtask", "reflect")

#: Most new events one step rates (Generative Agents' attention bandwidth).
ATTENTION = 3
#: New object events (a coffee machine starts brewing, a bed is made...) an awake agent
#: perceives per step, on average, when alone, plus per agent in view (people use objects;
#: counted up to AMBIENT_CROWD agents): the bulk of Generative Agents' poignancy calls.
#: An object's state is set by the action that uses it, and actions start on whole minutes,
#: so these events are perceived at whole minutes (see `ambient_events`).
AMBIENT_ALONE = 0.0
AMBIENT_PER_AGENT = 0.13
AMBIENT_CROWD = 3
#: Chain length ranges [lo, hi] (inclusive) of the fixed chains.
PLAN_DAY_CALLS = (20, 24)
PLAN_ACTION_CALLS = (8, 9)
SUBTASK_CALLS = (7, 8)
CHAT_SUMMARY_CALLS = 2
REFLECT_CALLS = (8, 12)
#: Calls per conversation utterance (context summary + the utterance).
CALLS_PER_UTTERANCE = 2
#: Importance accumulated before an agent reflects (new events count 1, conversations 10).
REFLECT_THRESHOLD = 250

#: Per kind: (mean input tokens, mean output tokens) before clipping.
TOKENS = {
    "plan_day": (895.0, 40.0),
    "perceive": (597.0, 10.0),
    "react": (716.0, 20.0),
    "chat": (776.0, 57.0),
    "chat_summary": (756.0, 76.0),
    "plan_action": (716.0, 31.0),
    "subtask": (610.0, 19.0),
    "reflect": (895.0, 76.0),
}
#: Lognormal sigma of input and output tokens (skewed: a long tail of large prompts).
SIGMA_IN, SIGMA_OUT = 0.35, 0.7
#: Clipping bounds [lo, hi] of input and output tokens.
CLIP_IN, CLIP_OUT = (64, 4096), (1, 512)


@dataclass
class StepEvents:
    """What happened to every agent in every step; all arrays are (N, T).

    awake: the agent is not asleep (asleep agents make no calls, but plan their day).
    new_day: the first step of a day (midnight): the agent plans its day.
    new_activity / new_subtask: an activity (sub-task) begins in this step.
    n_perceived: agents it perceives at this step's time.
    new_events: perceived agents that are news to it (see `new_perceived_events`).
    chat_initiator: it starts a conversation in this step and generates it (`chat_turns`
    utterances); chat_partner_start: it is the one spoken to; chat_end: its conversation ends.
    whole_minute: bool (T,): steps whose time is a whole minute.
    """

    awake: np.ndarray
    new_day: np.ndarray
    new_activity: np.ndarray
    new_subtask: np.ndarray
    n_perceived: np.ndarray
    new_events: np.ndarray
    chat_initiator: np.ndarray
    chat_turns: np.ndarray
    chat_partner_start: np.ndarray
    chat_end: np.ndarray
    whole_minute: np.ndarray


@dataclass(frozen=True)
class CallChains:
    """Sampled chains: `n_calls` uint16 (N, T) and flat per-call arrays in step-major order."""

    n_calls: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    call_kind: np.ndarray


def new_perceived_events(n_perceived: np.ndarray, perceived_ids: np.ndarray,
                         activity: np.ndarray) -> np.ndarray:
    """int32 (N, T): per agent-step, how many perceived agents are news to it.

    j is news to a at time t when a perceives j at t and did not at t - 1, or j's activity at
    step t differs from its activity at step t - 1 (all perceived agents are news at t = 0).
    Inputs are a trace's perception CSR (step-major) and activity ids.
    """
    n, t_steps = n_perceived.shape
    counts = n_perceived.T.ravel().astype(np.int64)
    cell = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
    t = cell // n
    a = cell % n
    j = perceived_ids.astype(np.int64)
    key = (t * n + a) * n + j
    # The same pair one step earlier has key - n * n; keys are sorted (step-major, ascending j).
    prev = key - n * n
    pos = np.searchsorted(key, prev)
    seen = (pos < key.size) & (key[np.minimum(pos, key.size - 1)] == prev) & (t > 0)
    changed = np.zeros(key.size, dtype=bool)
    if t_steps > 1:
        act_changed = np.zeros((n, t_steps), dtype=bool)
        act_changed[:, 1:] = activity[:, 1:] != activity[:, :-1]
        changed = act_changed[j, t]
    news = ~seen | changed
    out = np.bincount(cell[news], minlength=counts.size).reshape(t_steps, n).T
    return np.ascontiguousarray(out.astype(np.int32))


def reflections(events: StepEvents, perceive: np.ndarray) -> np.ndarray:
    """bool (N, T): steps in which an agent reflects: the importance of what it perceived
    (`perceive` events rated per step) and of its conversations crossed a threshold."""
    importance = (perceive + 10 * (events.chat_initiator | events.chat_partner_start)) * events.awake
    total = np.cumsum(importance, axis=1)
    level = total // REFLECT_THRESHOLD
    out = np.zeros_like(events.awake, dtype=bool)
    out[:, 1:] = level[:, 1:] > level[:, :-1]
    out[:, 0] = level[:, 0] > 0
    return out & events.awake


def ambient_events(events: StepEvents, rng: np.random.Generator) -> np.ndarray:
    """int (N, T): object events each agent perceives per step (see AMBIENT_ALONE).

    A regular process, not a Poisson one: each agent accumulates its rate while awake and
    perceives an event whenever the sum passes a whole number (from a random phase). The
    count in any hour then follows the rate closely, so one seed's hourly calls stay near
    the calibrated figures instead of scattering with Poisson noise. What accumulates during
    a minute is perceived at the next whole minute, when the actions that set objects' states
    start (`whole_minute`); a trace without whole minutes perceives them at every step.
    """
    rate = AMBIENT_ALONE + AMBIENT_PER_AGENT * np.minimum(events.n_perceived, AMBIENT_CROWD)
    total = np.cumsum(np.where(events.awake, rate, 0.0), axis=1) + rng.random((rate.shape[0], 1))
    marks = np.nonzero(events.whole_minute)[0]
    if marks.size == 0:
        marks = np.arange(rate.shape[1])
    level = np.floor(total[:, marks]).astype(np.int64)
    out = np.zeros(rate.shape, dtype=np.int64)
    out[:, marks] = np.diff(level, axis=1, prepend=np.floor(total[:, :1] - rate[:, :1] * events.awake[:, :1]))
    return out


def whole_minutes(start_time: str, seconds: np.ndarray) -> np.ndarray:
    """bool (T,): which steps' times (ISO `start_time` plus `seconds`, a trace's clock of T + 1
    entries) are whole minutes."""
    start = _dt.datetime.fromisoformat(start_time)
    return (start.second + np.asarray(seconds[:-1], dtype=np.int64)) % 60 == 0


def new_days(start_time: str, seconds: np.ndarray, n_agents: int) -> np.ndarray:
    """bool (N, T): the first step of every day (its time is midnight, or the date changes
    during the step before), for every agent."""
    start = _dt.datetime.fromisoformat(start_time)
    t0 = start.hour * 3600 + start.minute * 60 + start.second
    day = (t0 + np.asarray(seconds[:-1], dtype=np.int64)) // 86400
    first = np.zeros(day.size, dtype=bool)
    first[1:] = day[1:] != day[:-1]
    first[0] = (t0 + int(seconds[0])) % 86400 == 0
    return np.broadcast_to(first, (n_agents, day.size)).copy()


def sample_chains(events: StepEvents, rng: np.random.Generator) -> CallChains:
    """Draw the chain of every agent-step from its events (see the module docstring)."""
    awake = events.awake.astype(bool)
    shape = awake.shape
    # News an agent rates: agents that are news to it, its own new action, objects in view.
    own = events.new_activity.astype(bool) | events.new_subtask.astype(bool)
    news = events.new_events + own + ambient_events(events, rng)
    perceive = np.where(awake, np.minimum(news, ATTENTION), 0)

    def span(lo_hi: tuple[int, int], mask: np.ndarray) -> np.ndarray:
        return np.where(mask, rng.integers(lo_hi[0], lo_hi[1] + 1, size=shape), 0)

    chatting_start = events.chat_initiator.astype(bool)
    per_kind = {
        "plan_day": span(PLAN_DAY_CALLS, events.new_day.astype(bool)),
        "perceive": perceive,
        # One reaction decision when something new is in view, and for the one spoken to.
        "react": np.where(awake & ((events.new_events > 0) | chatting_start
                                   | events.chat_partner_start.astype(bool)), 1, 0),
        "chat": np.where(chatting_start, CALLS_PER_UTTERANCE * events.chat_turns, 0),
        "chat_summary": np.where(events.chat_end.astype(bool), CHAT_SUMMARY_CALLS, 0),
        "plan_action": span(PLAN_ACTION_CALLS, events.new_activity.astype(bool) & awake),
        "subtask": span(SUBTASK_CALLS, events.new_subtask.astype(bool) & awake),
        "reflect": span(REFLECT_CALLS, reflections(events, perceive)),
    }
    # (T * N, kinds) in step-major order; ravelled row by row it lists every call in chain order.
    table = np.stack([per_kind[k].T.ravel() for k in CALL_KINDS], axis=1).astype(np.int64)
    n_calls = table.sum(axis=1).reshape(shape[1], shape[0]).T
    if n_calls.size and n_calls.max() > np.iinfo(np.uint16).max:
        raise ValueError("a chain longer than 65535 calls")
    kind = np.repeat(np.tile(np.arange(len(CALL_KINDS), dtype=np.uint8), table.shape[0]), table.ravel())
    inp, out = sample_tokens(kind, rng)
    return CallChains(np.ascontiguousarray(n_calls.astype(np.uint16)), inp, out, kind)


def sample_tokens(kind: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Input and output token counts (int32) of calls of the given kinds (indices of CALL_KINDS)."""
    mean_in = np.array([TOKENS[k][0] for k in CALL_KINDS])[kind]
    mean_out = np.array([TOKENS[k][1] for k in CALL_KINDS])[kind]
    # Lognormal with the given mean: mu = ln(mean) - sigma^2 / 2.
    inp = rng.lognormal(np.log(mean_in) - SIGMA_IN ** 2 / 2, SIGMA_IN)
    out = rng.lognormal(np.log(mean_out) - SIGMA_OUT ** 2 / 2, SIGMA_OUT)
    inp = np.clip(np.rint(inp), *CLIP_IN).astype(np.int32)
    out = np.clip(np.rint(out), *CLIP_OUT).astype(np.int32)
    return inp, out
