"""A slow peer makes a delivery outlast the queue lease (issue 10 §5): real sockets, a
real aiohttp peer written for the test, two delivery workers on one SQLite file (two
processes sharing a store, as two server processes do).

Before the fix the second worker took the destination once the first worker's lease
lapsed mid-send: two batches in flight for one peer, and the first worker's settlement
written over the second's. Now the first worker renews its lease while it sends, so the
peer sees one transaction at a time and each message once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from cli.cli_helpers import free_port
from flux.federation.delivery import DeliveryWorker, QueuePolicy
from flux.federation.peers import PeerClient
from flux.protocol import Identity, ServerSigner, compose
from flux.store import SQLiteStore
from flux.store.base import Outbound

LEASE_MS = 600
DELAY_S = 2.0  #: the peer's answer time: more than three leases


def wall_ms() -> int:
    return int(time.time() * 1000)


class SlowPeer:
    """Answers deliveries correctly, `delay_s` late; counts transactions in flight."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.port = free_port()
        self.in_flight = 0
        self.most_in_flight = 0
        self.delivered: list[str] = []

    @property
    def name(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def deliver(self, request: web.Request) -> web.Response:
        doc = json.loads(await request.read())
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)  # the slow peer itself
        finally:
            self.in_flight -= 1
        self.delivered += [m["id"] for m in doc["messages"]]
        results = [{"id": m["id"], "recipients": {m["to"]: "stored"}} for m in doc["messages"]]
        return web.json_response({"ok": True, "txn": doc["txn"], "results": results})

    async def well_known(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "server": self.name})

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[SlowPeer]:
        app = web.Application()
        app.router.add_post("/federation/deliver", self.deliver)
        app.router.add_get("/.well-known/flux", self.well_known)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        try:
            yield self
        finally:
            await runner.cleanup()


class NoBounces:
    async def bounce(self, item, recipients, reason: str) -> None:
        raise AssertionError(f"nothing should bounce here: {reason}")


@contextlib.asynccontextmanager
async def worker(path: Path, peer: SlowPeer, signer: ServerSigner) -> AsyncIterator[SQLiteStore]:
    """One "process": its own store on the shared file, peer client and delivery worker."""
    store = SQLiteStore(path, clock=wall_ms)
    await store.open()
    peers = PeerClient(clock=wall_ms, insecure_peers=[peer.name], ca_file=None)
    delivery = DeliveryWorker(
        store=store, signer=signer, peers=peers, clock=wall_ms, bounces=NoBounces(),
        policy=QueuePolicy(lease_ms=LEASE_MS, timeout_s=DELAY_S * 3),
    )  # fmt: skip
    try:
        async with peers.lifespan(None), delivery.lifespan(None):
            yield store
    finally:
        await store.close()


async def until_empty(store: SQLiteStore, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while await store.queue_state():
        assert time.monotonic() < deadline, await store.queue_state()
        await asyncio.sleep(0.05)  # polling the store, bounded by the deadline


async def test_a_send_that_outlasts_the_lease_keeps_it(tmp_path: Path) -> None:
    signer = ServerSigner("flux.test", Identity.generate())
    path = tmp_path / "flux.db"
    async with SlowPeer(DELAY_S).running() as peer:
        first = SQLiteStore(path, clock=wall_ms)
        await first.open()
        alice = Identity.generate()
        msgs = [compose(alice, Identity.generate().address, f"m{i}", now_ms=wall_ms()).primary
                for i in range(3)]  # fmt: skip
        queued = [Outbound(peer.name, m, f"h{i}", (m["to"],), "pass", wall_ms())
                  for i, m in enumerate(msgs)]  # fmt: skip
        await first.enqueue(queued)
        await first.close()
        async with worker(path, peer, signer) as one, worker(path, peer, signer):
            await until_empty(one, within_s=DELAY_S * 4)
    assert peer.most_in_flight == 1  # never two batches in flight for one destination
    assert sorted(peer.delivered) == sorted(m["id"] for m in msgs)  # each message once
