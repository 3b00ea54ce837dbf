"""A TCP proxy on 127.0.0.1 that holds the first connections back: a slow server for tests.

    proxy = DelayProxy(upstream_port, delay=5.0, slow_connections=2)
    await proxy.start()            # then point the client at proxy.base_url
    ...
    await proxy.close()

Each of the first `slow_connections` connections waits `delay` seconds before its bytes are
forwarded to the upstream server; later ones pass straight through. A client whose timeout is
below `delay` times out on those, closes the connection and retries on a fresh one, which is how
an HTTP client with keep-alive behaves against a server that stalls. Runs on the caller's event
loop (in the same process as the client under test).
"""

from __future__ import annotations

import asyncio
import contextlib


class DelayProxy:
    def __init__(self, upstream_port: int, *, delay: float, slow_connections: int,
                 upstream_host: str = "127.0.0.1", host: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.delay = delay
        self.slow_connections = slow_connections
        self.connections = 0
        self.delayed = 0
        self.port: int | None = None
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def start(self) -> "DelayProxy":
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        self.connections += 1
        try:
            if self.connections <= self.slow_connections:
                self.delayed += 1
                await asyncio.sleep(self.delay)
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            try:
                await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
            finally:
                up_writer.close()
        except (ConnectionError, asyncio.CancelledError, OSError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            with contextlib.suppress(Exception):
                writer.write_eof()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
