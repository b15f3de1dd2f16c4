"""The `delivery` frame across processes (issue 12): two servers of one domain share one
PostgreSQL schema (and one data directory: one server key, as processes behind a load
balancer), and the sender has a socket on each. Whichever process's delivery worker
settles the delivery to a third server, both sockets hear the same frame: the one on
the other process through the fan-out's DELIVERY event (server/fanout.py). Real servers
in this process, real HTTP and WebSockets between them; skipped without PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cli.cli_helpers import free_port
from flux.client import FluxClient
from flux.protocol import Identity
from flux.server.app import PARTS
from flux.server.config import ServerConfig
from flux.server.fanout import DELIVERY, MailEvent, _decode, _encode, _split
from flux.server.runner import start_server
from flux.store import MessageRef
from postgres_env import fresh_schema_url

FAST = {"queue_retry_base_s": 0.2, "queue_retry_cap_s": 0.5, "queue_lease_s": 5.0}
A = "fx1" + "a" * 40


def test_a_delivery_event_round_trips_with_its_recipients() -> None:
    event = MailEvent(A, DELIVERY, (MessageRef("0" * 32, A),), recipients=("fx1" + "b" * 40,))
    assert _decode(_encode(event, "p1")) == ("p1", event)


def test_a_delivery_event_naming_too_many_recipients_names_none() -> None:
    many = tuple(f"fx1{n:040d}" for n in range(400))
    (part,) = _split(MailEvent(A, DELIVERY, (MessageRef("0" * 32, A),), recipients=many))
    assert part.recipients == () and part.ids == (MessageRef("0" * 32, A),)
    assert len(_encode(part, "p" * 16).encode()) < 8000


async def _socket(http: aiohttp.ClientSession, url: str, token: str, address: str) -> Any:
    ws = await http.ws_connect(f"{url}/ws")
    await ws.send_json({"action": "auth", "token": token, "address": address})
    authed = await ws.receive_json(timeout=30)
    assert authed["action"] == "authed", authed
    return ws


async def _delivery_frame(ws: Any) -> dict[str, Any]:
    while True:
        frame = await ws.receive_json(timeout=30)
        if frame.get("action") == "delivery":
            return frame


@pytest.mark.postgres
@pytest.mark.timeout(120)
async def test_both_processes_sockets_hear_the_delivery(tmp_path: Path) -> None:
    ports = [free_port(), free_port(), free_port()]
    name, b_name = f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[2]}"
    peers = frozenset({name, b_name})
    alice, bob = Identity.generate(), Identity.generate()
    async with fresh_schema_url("flux_delivery") as dsn:
        servers = []
        try:
            for port in ports[:2]:  # the domain's two processes
                config = ServerConfig.from_env(
                    {}, host="127.0.0.1", port=port, domain=name, data_dir=tmp_path / "a",
                    db_url=dsn, insecure_peers=peers, open_mode=True, **FAST,
                )  # fmt: skip
                servers.append(await start_server(config))
            b_config = ServerConfig.from_env(
                {}, host="127.0.0.1", port=ports[2], domain=b_name, data_dir=tmp_path / "b",
                backend="memory", insecure_peers=peers, open_mode=True, **FAST,
            )  # fmt: skip
            servers.append(await start_server(b_config))
            p1, p2 = servers[0], servers[1]
            for server in (p1, p2):
                fanout = server.app[PARTS]["fanout"]
                await asyncio.wait_for(fanout.connected.wait(), 10)
            async with (
                FluxClient(alice, p1.url) as client,
                FluxClient(alice, p2.url) as other,
                aiohttp.ClientSession() as http,
            ):
                sockets = [
                    await _socket(http, p1.url, await client._ensure_token(), alice.address),
                    await _socket(http, p2.url, await other._ensure_token(), alice.address),
                ]
                result = await client.send(f"{bob.address}@{b_name}", "tell both of my sockets")
                frames = [await _delivery_frame(ws) for ws in sockets]
                for ws in sockets:
                    await ws.close()
        finally:
            for server in reversed(servers):
                await server.stop()
    for frame in frames:
        assert frame["id"] == result.id and list(frame["delivery"]) == [bob.address]
        assert frame["delivery"][bob.address]["state"] == "delivered"
    assert frames[0] == frames[1]
