"""FLUX's own client as a stranger's weapon (issue 10 §2): a server (or proxy) that
authenticates the WebSocket and drops it at once must not get a reconnect, a /fetch and a
/changes every half second forever. The backoff starts afresh only after a socket stayed up.

The hostile server is a real aiohttp server on 127.0.0.1. Nothing here asserts a duration:
the client runs for a bounded window and the test counts what reached the server against
the most the backoff's *smallest* delays allow (a slow machine only makes fewer).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from flux import FluxIdentity
from flux.client import FluxClient
from flux.client.ws import backoff_step

WINDOW_S = 3.0
BASE, CAP = 0.1, 1.6


class HostileServer:
    """Answers auth, /fetch and /changes like FLUX, authenticates every WebSocket, then
    closes it (1000, or 1008 as the real server's slow-reader close)."""

    def __init__(self, close_code: int = 1000) -> None:
        self.close_code = close_code
        self.hits: Counter[str] = Counter()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.add_routes([
            web.get("/auth/challenge", self.challenge),
            web.post("/auth/session", self.session),
            web.get("/fetch/{address}", self.fetch),
            web.get("/changes", self.changes),
            web.get("/ws", self.ws),
        ])  # fmt: skip
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def challenge(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "challenge": "c", "domain": "evil.test",
                                  "expires": 2**41})  # fmt: skip

    async def session(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"ok": True, "address": body["address"], "token": "t",
                                  "expires": 2**41})  # fmt: skip

    async def fetch(self, request: web.Request) -> web.Response:
        self.hits["fetch"] += 1
        return web.json_response({"ok": True, "messages": []})

    async def changes(self, request: web.Request) -> web.Response:
        self.hits["changes"] += 1
        return web.json_response({"ok": True, "state": 0, "has_more": False,
                                  "created": [], "updated": []})  # fmt: skip

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        self.hits["ws"] += 1
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive(timeout=5)
        await ws.send_json({"ok": True, "action": "authed", "address": "x", "messages": [],
                            "state": 0})  # fmt: skip
        await ws.close(code=self.close_code, message=b"bye")
        return ws


@pytest.fixture
async def hostile(request: pytest.FixtureRequest) -> AsyncIterator[HostileServer]:
    server = HostileServer(getattr(request, "param", 1000))
    await server.start()
    yield server
    assert server.runner is not None
    await server.runner.cleanup()


def most_connections(window_s: float) -> int:
    """Connections the backoff allows in `window_s` at its shortest delays (half of each
    step's ceiling), counting the first one, which waits for nothing."""
    count, spent, attempt = 1, 0.0, 0
    while True:
        spent += min(CAP, BASE * 2**attempt) / 2
        if spent > window_s:
            return count
        count, attempt = count + 1, attempt + 1


@pytest.mark.parametrize("hostile", [1000, 1008], indirect=True)
async def test_a_server_that_drops_every_socket_gets_backed_off(hostile):
    client = FluxClient(
        FluxIdentity.generate(), hostile.url, reconnect_base=BASE, reconnect_cap=CAP
    )
    task = asyncio.create_task(client.connect_ws())
    await asyncio.sleep(WINDOW_S)  # the window being counted, not synchronisation
    await client.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 10)
    allowed = most_connections(WINDOW_S)  # 7 here; dozens before the fix
    assert 2 <= hostile.hits["ws"] <= allowed
    assert hostile.hits["fetch"] <= allowed and hostile.hits["changes"] <= allowed


def test_the_backoff_starts_afresh_only_after_a_socket_stayed_up():
    assert backoff_step(5, None, 30.0) == 5  # never authenticated
    assert backoff_step(5, 0.01, 30.0) == 5  # authenticated, then dropped at once
    assert backoff_step(5, 29.9, 30.0) == 5
    assert backoff_step(5, 30.0, 30.0) == 0  # stayed up: it worked
    assert backoff_step(0, 0.0, 30.0) == 0


async def test_a_socket_that_stayed_up_resets_the_backoff(hostile: Any):
    """With a tiny stable time, a socket that authenticated and lived past it counts as
    one that worked: after each drop the client is back at the shortest delay."""
    steps: list[int] = []
    client = FluxClient(
        FluxIdentity.generate(), hostile.url, reconnect_base=BASE, reconnect_cap=CAP,
        reconnect_stable=0.0,
    )  # fmt: skip
    delay = client._listener.backoff.delay
    client._listener.backoff.delay = lambda attempt: (steps.append(attempt), delay(attempt))[1]
    task = asyncio.create_task(client.connect_ws())
    for _ in range(100):  # until three reconnects were scheduled (bounded)
        if len(steps) >= 3:
            break
        await asyncio.sleep(0.05)
    await client.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 10)
    assert steps[:3] == [0, 0, 0]
