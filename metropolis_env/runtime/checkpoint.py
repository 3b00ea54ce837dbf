"""Checkpoint and resume: a run that dies (kill -9, a server that never comes back) goes on later
with no agent step lost or repeated.

What a checkpoint holds: the env (world state, every agent's step, the tracker), the agents
(their own memory), the controller's ledger of committed steps and its settings, and a factory
that rebuilds the backend. It is written to a temporary file, fsynced and renamed over the last
one, so a crash leaves either the old or the new checkpoint, never half of one.

Calls completed since the checkpoint are not lost either: every call is appended to
`calls.jsonl` as it completes (RecordingBackend), and a resumed run serves them from there
(ReplayBackend), so re-running an interrupted step costs no LLM time and gets the same answers.

Agents in the middle of a step when a checkpoint is taken (or when the run fails) are saved as
they were when the step was dispatched: the controller pickles each agent as it dispatches it,
so a checkpoint never holds half a step, whatever the agent mutates while it acts. References
from an agent to the env are kept as references (not copies) through pickle's persistent ids.
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import AgentStepError, ConfigError, MetropolisError
from .observers import RunObserver

CHECKPOINT = "checkpoint.pkl"
CALLS = "calls.jsonl"


class CheckpointError(MetropolisError, RuntimeError):
    """A checkpoint directory that cannot be resumed."""


@dataclass
class Checkpointer:
    """Where and how often to checkpoint a run.

    directory: the run directory (created). every: checkpoint after this many committed
    agent-steps (and always on error and at the end). backend_factory: a picklable
    zero-argument callable (e.g. a module-level function or functools.partial of one) that builds
    the run's backend; it is stored in the checkpoint so that `resume` can rebuild it.
    """

    directory: str | os.PathLike
    backend_factory: Callable[[], Any]
    every: int = 1000

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ConfigError(f"checkpoint every must be >= 1 agent-step, got {self.every}")
        self.directory = Path(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            pickle.dumps(self.backend_factory)
        except Exception as e:
            raise ConfigError(f"backend_factory must be picklable (a module-level function or a "
                              f"functools.partial of one) so that resume can rebuild it: {e}") from None
        self.since_last = 0

    @property
    def calls_path(self) -> Path:
        return Path(self.directory) / CALLS

    def build_backend(self):
        """The backend of a fresh or resumed run: recorded calls first, then the live backend,
        whose every completed call is recorded."""
        from ..backends.replay import RecordingBackend, ReplayBackend

        live = RecordingBackend(self.backend_factory(), str(self.calls_path))
        if self.calls_path.exists():
            return ReplayBackend(str(self.calls_path), fallback=live)
        return live

    def save(self, state: dict[str, Any]) -> Path:
        """Atomically replace the checkpoint with `state` (write, fsync, rename, fsync dir)."""
        d = Path(self.directory)
        state = dict(state, backend_factory=self.backend_factory, every=self.every)
        fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", dir=d)
        try:
            with os.fdopen(fd, "wb") as f:
                pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, d / CHECKPOINT)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        dfd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self.since_last = 0
        return d / CHECKPOINT


class CheckpointObserver(RunObserver):
    """Checkpointing as an observer of a run: pickles each agent as it is dispatched (so a
    checkpoint never holds half a step), and saves env, agents, ledger and `settings` every
    `checkpointer.every` commits (between commits), on failure and at the end.

    agents: the run's {name: agent} (the live dict); ledger: () -> {agent: committed steps}.
    """

    def __init__(self, checkpointer: Checkpointer, env: Any, agents: dict, ledger: Callable[[], dict],
                 settings: dict[str, Any]):
        self.checkpointer, self.env, self.agents = checkpointer, env, agents
        self.ledger, self.settings = ledger, dict(settings)
        self._snapshots: dict[str, bytes] = {}  # agents now acting, as they were at dispatch

    def dispatched(self, agent: str, step: int) -> None:
        self._snapshots[agent] = snapshot(self.agents[agent], self.env)

    def committed(self, agent: str, step: int, action: Any) -> None:
        self.checkpointer.since_last += 1
        self._snapshots.pop(agent, None)

    def between_commits(self) -> None:
        if self.checkpointer.since_last >= self.checkpointer.every:
            self.save()

    def failed(self, error: BaseException) -> str | None:
        if not isinstance(error, AgentStepError):
            return None
        path = self.save()
        return f"run checkpointed in {path.parent}; fix the cause and `metropolis-env resume {path.parent}`"

    def finished(self) -> None:
        self.save()

    def save(self) -> Path:
        snapshots = dict(self._snapshots)
        return self.checkpointer.save(dict(
            self.settings, env=self.env, snapshots=snapshots, committed=self.ledger(),
            agents={n: a for n, a in self.agents.items() if n not in snapshots}))


class _EnvRefPickler(pickle.Pickler):
    def __init__(self, f, env):
        super().__init__(f, protocol=pickle.HIGHEST_PROTOCOL)
        self._env = env

    def persistent_id(self, obj):
        return "env" if obj is self._env else None


class _EnvRefUnpickler(pickle.Unpickler):
    def __init__(self, f, env):
        super().__init__(f)
        self._env = env

    def persistent_load(self, pid):
        if pid != "env":
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        return self._env


def snapshot(agent: Any, env: Any) -> bytes:
    """Pickle an agent as it is now, keeping its references to `env` as references."""
    f = io.BytesIO()
    _EnvRefPickler(f, env).dump(agent)
    return f.getvalue()


def restore(data: bytes, env: Any) -> Any:
    """The agent of `snapshot`, its env references pointing at `env`."""
    return _EnvRefUnpickler(io.BytesIO(data), env).load()


def load(directory: str | os.PathLike) -> dict[str, Any]:
    """The last checkpoint of a run directory."""
    path = Path(directory) / CHECKPOINT
    if not path.exists():
        raise CheckpointError(f"no checkpoint in {directory}: run with Checkpointer(directory, ...) first")
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
