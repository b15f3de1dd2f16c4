"""Review of issue 11: a hostile server that says it is the prototype (real aiohttp
servers on 127.0.0.1). The prototype takes one envelope per POST, so a batch to it is
many requests: together they get one transaction's time, not one each."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
from aiohttp import web

from compat.test_review_attacks import hostile
from flux.compat.federation import ProtoRoute
from flux.protocol import Identity
from flux.protocol.outgoing import compose


class HttpPeers:
    """The transport the route needs (compat.federation._Peers), over plain HTTP."""

    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.http = http

    async def post(
        self, server: str, path: str, body: bytes, headers: dict[str, str], *,
        timeout_s: float, base: str | None = None,
    ) -> tuple[int, Any]:  # fmt: skip
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        url = f"{base or 'http://' + server}{path}"
        async with self.http.post(url, data=body, headers=headers, timeout=timeout) as r:
            return r.status, json.loads(await r.read())

    async def get_json(self, server: str, path: str, *, timeout_s: float, max_bytes: int) -> tuple[int, Any]:  # fmt: skip
        raise AssertionError("not asked")


async def test_a_slow_prototype_peer_holds_a_slot_for_one_transactions_time() -> None:
    """Each POST answered after 0.4 s, 20 messages, a 1 s budget: the batch returns in
    about a second, the first messages stored, the rest kept for later (`unavailable`)."""

    async def slow_send(request: web.Request) -> web.Response:
        await asyncio.sleep(0.4)
        return web.json_response({"ok": True, "delivery": "queued", "mesh": {}})

    async with hostile([web.post("/send", slow_send)]) as (name, seen):
        now = int(time.time() * 1000)
        sender = Identity.generate()
        envelopes, recipients = [], []
        for i in range(20):
            rcpt = Identity.generate().address
            envelopes.append(compose(sender, rcpt, f"m{i}", now_ms=now).primary)
            recipients.append([rcpt])
        async with aiohttp.ClientSession() as http:
            route = ProtoRoute(HttpPeers(http), name)
            started = time.monotonic()
            results = await route.deliver(envelopes, recipients, now_ms=now, timeout_s=1.0)
            took = time.monotonic() - started
    assert took < 2.0, f"one batch held the slot {took:.1f} s"
    stored = [r for r in results if "recipients" in r]
    later = [r for r in results if r.get("refused") == "unavailable"]
    assert 1 <= len(stored) <= 3 and len(stored) + len(later) == 20, results
    assert len(seen) == len(stored) or len(seen) == len(stored) + 1
