"""A store that cannot reach its database: 503 `unavailable`, never a 500, and recovery.

`OutageStore` is a MemoryStore whose calls raise StoreUnavailable (as PostgresStore does
while its database is down) for as long as a test says so. The end-to-end version, with a
real PostgreSQL stopped and started under load, is tests/e2e/test_e2e_postgres_restart.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from flux.federation.delivery import DeliveryWorker, QueuePolicy
from flux.protocol import Identity, ServerSigner, compose
from flux.store import MemoryStore, Store, StoreUnavailable
from flux.store.base import Outbound

#: every store call (the Store protocol's methods but open/close)
STORE_CALLS = frozenset(n for n in vars(Store) if not n.startswith("_")) - {"open", "close"}
UNAVAILABLE = {
    "ok": False,
    "code": "unavailable",
    "error": "the database is unreachable; try again",
}


class OutageStore(MemoryStore):
    """`down`: every call fails; `failing`: just these calls fail."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.down = False
        self.failing: set[str] = set()

    def __getattribute__(self, name: str) -> Any:
        if name in STORE_CALLS and (
            object.__getattribute__(self, "down")
            or name in object.__getattribute__(self, "failing")
        ):

            async def fail(*args: Any, **kwargs: Any) -> Any:
                raise StoreUnavailable(
                    "PostgreSQL at db.example is unreachable: connection refused"
                )

            return fail
        return super().__getattribute__(name)


async def until(condition: Callable[[], Awaitable[bool] | bool], within_s: float = 10.0) -> None:
    """Poll `condition` (bounded) until it holds."""
    deadline = time.monotonic() + within_s
    while True:
        value = condition()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def queue_empty(store: Store) -> bool:
    return await store.queue_state() == []


@pytest.fixture
async def outage() -> Any:
    store = OutageStore()
    await store.open()
    yield store
    await store.close()


def _store_warnings(caplog: pytest.LogCaptureFixture, where: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if "event=store_unavailable" in r.getMessage() and f"where={where}" in r.getMessage()]  # fmt: skip


async def test_http_requests_get_503_while_the_store_is_down_and_work_after(
    make_server: Any, outage: OutageStore, alice: Any, bob: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    srv = await make_server(store=outage, open_mode=True)
    assert (await srv.get("/health"))["domain"] == srv.config.domain
    outage.down = True
    msg = srv.message(alice, bob, "Sent during the outage")
    resp = await srv.client.post("/send", json=msg)
    assert resp.status == 503 and await resp.json() == UNAVAILABLE
    resp = await srv.client.get("/health")
    assert resp.status == 503 and await resp.json() == UNAVAILABLE
    resp = await srv.client.get("/stats")
    assert resp.status == 503 and (await resp.json())["code"] == "unavailable"
    # one warning line per failed request, without a traceback; nothing logged as a bug
    sends = _store_warnings(caplog, "POST /send")
    assert len(sends) == 1 and sends[0].levelno == logging.WARNING and sends[0].exc_info is None
    assert "db.example" in sends[0].getMessage()
    assert not [r for r in caplog.records if "internal_error" in r.getMessage()]
    outage.down = False
    assert (await srv.get("/health"))["domain"] == srv.config.domain
    assert (await srv.send(msg))["id"] == msg["id"]  # the retry goes through
    metrics = await (await srv.client.get("/metrics")).text()
    assert 'flux_refusals_total{code="unavailable"} 3.0' in metrics


async def test_a_websocket_gets_an_unavailable_frame_and_stays_open(
    make_server: Any, outage: OutageStore, alice: Any, bob: Any
) -> None:
    srv = await make_server(store=outage)
    await srv.register(alice, bob)
    await srv.login(bob)
    ws = await srv.ws(bob)
    try:
        outage.down = True
        msg = srv.message(bob, alice, "From the socket")
        await ws.send_json({"action": "send", "message": msg, "rid": 7})
        frame = await ws.receive_json(timeout=5)
        assert frame == {**UNAVAILABLE, "action": "send", "rid": 7}
        outage.down = False
        await ws.send_json({"action": "send", "message": msg, "rid": 8})
        frame = await ws.receive_json(timeout=5)
        assert frame["ok"] is True and frame["rid"] == 8
    finally:
        await ws.close()


class FakePeers:
    """A peer that accepts every batch (and records it)."""

    def __init__(self) -> None:
        self.batches: list[dict[str, Any]] = []

    async def delegated_server(self, destination: str) -> str:
        return destination

    def mesh_headers(self, via: str, signed: Any) -> dict[str, str]:
        return {}

    async def post(self, server: str, path: str, body: bytes, headers: Any, *, timeout_s: float) -> tuple[int, Any]:  # fmt: skip
        doc = json.loads(body)
        self.batches.append(doc)
        results = [{"id": m["id"], "recipients": {m["to"]: "stored"}} for m in doc["messages"]]
        return 200, {"txn": doc["txn"], "results": results}


class NoBounces:
    async def bounce(self, item: Any, recipients: Any, reason: str) -> None:
        raise AssertionError("nothing should bounce here")


def _wall_ms() -> int:
    return int(time.time() * 1000)


async def _queue_one(store: MemoryStore, alice: Any) -> None:
    msg = compose(alice, Identity.generate().address, "Far away", now_ms=_wall_ms()).primary
    await store.enqueue([Outbound("far.test", msg, "h1", (msg["to"],), "pass", _wall_ms())])


def _worker(store: Store, peers: FakePeers) -> DeliveryWorker:
    return DeliveryWorker(
        store=store, signer=ServerSigner("flux.test", Identity.generate()), peers=peers,  # type: ignore[arg-type]
        clock=_wall_ms, bounces=NoBounces(), policy=QueuePolicy(retry_base_ms=20, retry_cap_ms=50),
    )  # fmt: skip


async def test_the_delivery_worker_outlives_an_outage(
    outage: OutageStore, alice: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    await _queue_one(outage, alice)
    outage.down = True
    peers = FakePeers()
    async with _worker(outage, peers).lifespan(None):
        # it polls, fails, waits about a second and polls again: still alive
        await until(lambda: len(_store_warnings(caplog, "delivery_poll")) >= 2, within_s=10)
        assert not peers.batches
        outage.down = False
        await until(lambda: queue_empty(outage), within_s=10)
    assert len(peers.batches) == 1
    assert not [r for r in caplog.records if r.exc_info is not None]


async def test_a_settlement_waits_for_the_store_instead_of_being_dropped(
    outage: OutageStore, alice: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    await _queue_one(outage, alice)
    outage.failing = {"settle"}
    peers = FakePeers()
    async with _worker(outage, peers).lifespan(None):
        await until(lambda: len(_store_warnings(caplog, "settle")) >= 1, within_s=10)
        assert len(peers.batches) == 1  # delivered; the lease is still held
        outage.failing = set()
        await until(lambda: queue_empty(outage), within_s=10)
    assert len(peers.batches) == 1  # settled once the store was back, not sent again
