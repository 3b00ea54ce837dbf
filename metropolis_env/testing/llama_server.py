"""Run llama.cpp's OpenAI-compatible server (llama-cpp-python) as a subprocess, for tests.

    with LlamaServer(write_tiny_model(tmp / "m.gguf")) as server:
        backend = OpenAIBackend(server.base_url, model=server.model_alias)
        ...
        server.kill()       # SIGKILL, as a crash would
        server.restart()    # same port, so clients pointed at it recover by retrying

The server is started with ``--interrupt_requests False``: by default llama-cpp-python cuts the
streamed request in progress short when a new one arrives (llama_cpp/server/app.py, checked only
while streaming; OpenAIBackend streams speculative calls), and concurrent clients must see their
requests queue.
It serves one request at a time (no batching): it checks correctness and fault handling, not speed.
Binds 127.0.0.1 only. Needs the `llamacpp` extra; `llama_cpp_skip_reason()` says why it can't run.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence


def llama_cpp_skip_reason() -> str | None:
    """None when a llama.cpp server can be started here, else why not (for pytest.skip)."""
    def absent(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is None
        except (ImportError, ValueError):
            return True

    missing = [m for m in ("llama_cpp", "gguf", "uvicorn", "fastapi", "sse_starlette",
                           "pydantic_settings", "starlette_context") if absent(m)]
    if missing:
        return (f"llama.cpp server not installed (missing {', '.join(missing)}): "
                f"pip install 'metropolis-env[llamacpp]'")
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerError(RuntimeError):
    """The server did not come up (its log tail is in the message)."""


class LlamaServer:
    """A llama-cpp-python server process on 127.0.0.1.

    model_path: a GGUF file. port: fixed, or None for a free one (kept across restarts).
    n_ctx: the context window requests are checked against (prompt + max_tokens).
    n_threads: CPU threads per request; 1 keeps a 2-core machine responsive for the test itself.
    extra_args: more ``--flag value`` pairs for ``python -m llama_cpp.server``.
    """

    def __init__(self, model_path: str | os.PathLike, *, port: int | None = None,
                 host: str = "127.0.0.1", n_ctx: int = 256, seed: int = 0, n_threads: int = 1,
                 model_alias: str = "tiny", extra_args: Sequence[str] = (),
                 log_path: str | os.PathLike | None = None, startup_timeout: float = 60.0):
        self.model_path = Path(model_path)
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.n_ctx = n_ctx
        self.seed = seed
        self.n_threads = n_threads
        self.model_alias = model_alias
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"llama-server-{self.port}-", suffix=".log")
            os.close(fd)
            log_path = name
        self.log_path = Path(log_path)
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def command(self) -> list[str]:
        # -u: the server's own prints (e.g. "Disconnected from client") reach the log at once
        return [sys.executable, "-u", "-m", "llama_cpp.server",
                "--model", str(self.model_path), "--model_alias", self.model_alias,
                "--host", self.host, "--port", str(self.port),
                "--n_ctx", str(self.n_ctx), "--seed", str(self.seed),
                "--n_threads", str(self.n_threads), "--n_threads_batch", str(self.n_threads),
                "--interrupt_requests", "False", "--verbose", "False",
                *self.extra_args]

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> "LlamaServer":
        """Start the process and wait until it answers; raise ServerError if it can't."""
        if self.running:
            return self
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        self.starts += 1
        try:
            self.wait_ready(self.startup_timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        """Poll ``GET /v1/models`` (through the openai client) until it answers."""
        import openai

        deadline = time.monotonic() + timeout
        with openai.OpenAI(base_url=self.base_url, api_key="placeholder", max_retries=0,
                           timeout=2.0) as client:
            while True:
                if not self.running:
                    raise ServerError(f"llama.cpp server exited with code "
                                      f"{self.process.returncode if self.process else None} "
                                      f"during startup:\n{self.log_tail()}")
                try:
                    client.models.list()
                    return
                except openai.OpenAIError:
                    pass
                if time.monotonic() > deadline:
                    raise ServerError(f"llama.cpp server not ready on {self.base_url} after "
                                      f"{timeout:.0f} s:\n{self.log_tail()}")
                time.sleep(0.1)  # polling interval of a readiness probe, not a test wait

    def kill(self) -> None:
        """SIGKILL the server, as a crash would (in-flight requests see a dropped connection)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> "LlamaServer":
        """Kill (if running) and start again on the same port."""
        self.kill()
        return self.start()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> "LlamaServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
