"""Fixtures for the client tests: a real FLUX server in this process and real clients."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

# Test modules find their neighbours on sys.path; conftest is imported before them.
sys.path.insert(0, str(Path(__file__).parent))
from client_helpers import Proxy, server_config

from flux import FluxIdentity
from flux.client import FluxClient
from flux.server.runner import start_server


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Any]:
    running = await start_server(server_config(tmp_path / "server"))
    yield running
    await running.stop()


ClientFactory = Callable[..., Awaitable[FluxClient]]


@pytest.fixture
async def make_client(server: Any) -> AsyncIterator[ClientFactory]:
    """Registered clients on `server`, closed at the end; fast reconnects for tests."""
    clients: list[FluxClient] = []

    async def make(
        identity: FluxIdentity | None = None, *, url: str | None = None, register: bool = True
    ) -> FluxClient:
        client = FluxClient(
            identity or FluxIdentity.generate(),
            url or server.url,
            reconnect_base=0.05,
            reconnect_cap=0.5,
        )
        clients.append(client)
        if register:
            await client.register()
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def proxy(server: Any) -> AsyncIterator[Proxy]:
    relay = Proxy(server.port)
    await relay.start()
    yield relay
    with contextlib.suppress(Exception):
        await relay.cut()
