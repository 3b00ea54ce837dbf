"""Resume: continue a checkpointed run (runtime/checkpoint.py) to its end, above the controller."""

from __future__ import annotations

import os

from .. import clock
from .checkpoint import Checkpointer, load, restore
from .controller import Controller
from .metrics import RunMetrics
from .speculation import Speculation


def resume(directory: str | os.PathLike, progress: bool = False) -> RunMetrics:
    """Continue a checkpointed run to the end; returns the metrics of the resumed part.

    The env, agents and ledger come from the checkpoint; steps that were in flight when the run
    died are run again (their completed LLM calls are served from calls.jsonl). A run with
    speculation resumes with the same speculation settings; its held steps were never saved, and
    chains start again as agents commit.
    """
    state = load(directory)
    ck = Checkpointer(directory, state["backend_factory"], every=state["every"])
    backend = ck.build_backend()
    agents = dict(state["agents"])
    agents.update({name: restore(data, state["env"]) for name, data in state["snapshots"].items()})
    spec = state.get("speculation")  # its settings; the held chains were never saved
    controller = Controller(state["env"], agents, backend, state["mode"],
                            seed=state["seed"], max_clusters=state["max_clusters"],
                            ready_order=state.get("ready_order", "step"),
                            models=state["models"], progress=progress, checkpoint=ck,
                            resume_state=state, speculation=Speculation(**spec) if spec else None)
    return clock.run(controller.run(), virtual=backend.virtual_time)
