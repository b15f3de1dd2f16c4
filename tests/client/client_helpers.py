"""Helpers for the client tests: a real TCP proxy that can cut the connection between a
client and the server, a handler queue, server settings."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from cli.cli_helpers import free_port  # noqa: F401  (re-exported for the client tests)
from flux.client import FluxClient
from flux.server.config import ServerConfig

WAIT = 10.0  # seconds any single awaited event may take before the test fails


def server_config(data_dir: Path, **overrides: Any) -> ServerConfig:
    settings: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "backend": "memory"}
    settings.update(overrides)
    return ServerConfig.from_env({}, data_dir=data_dir, **settings)


class Inbox:
    """Collects what a client's handlers receive; `next()` waits for the next one."""

    def __init__(self, client: FluxClient) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        client.on_message(self.queue.put)

    async def next(self) -> dict[str, Any]:
        return await asyncio.wait_for(self.queue.get(), WAIT)


class Proxy:
    """A TCP relay between clients and the server that the test can cut and restore."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.accepted = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and drop every open one."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
