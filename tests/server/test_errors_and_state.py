"""The error table covers every error class; servers in one process share nothing."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import pytest
from aiohttp import web

import flux.protocol
from flux.protocol.errors import FluxError, all_error_classes
from flux.server import errors as server_errors
from flux.server.app import PARTS
from flux.server.errors import SERVER_ERROR_CLASSES, TABLE, error_body, row_for


def _import_all(package: Any) -> None:
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)


def test_every_error_class_has_a_row() -> None:
    import flux.server

    _import_all(flux.protocol)
    _import_all(flux.server)
    ours = [c for c in all_error_classes() if c.__module__.startswith(("flux.protocol", "flux.server"))]  # fmt: skip
    assert set(SERVER_ERROR_CLASSES) <= set(ours)
    missing = sorted({c.__name__ for c in ours if c.code not in TABLE})
    assert missing == []


def test_table_statuses_are_refusals_or_5xx() -> None:
    for code, row in TABLE.items():
        assert 400 <= row.status < 600, code
    assert row_for(flux.protocol.errors.TooLarge("x")).status == 400
    assert row_for(server_errors.PayloadTooLarge("x")).status == 413
    assert row_for(server_errors.SpamRefused(["a"])).status == 451


def test_unmapped_error_becomes_a_generic_500() -> None:
    class Strange(FluxError):
        code = "strange_and_unmapped"

    assert row_for(Strange("secret detail")).status == 500
    assert error_body(Strange("secret detail")) == {
        "ok": False, "code": "internal_error", "error": "internal server error"}  # fmt: skip


async def test_a_bug_is_a_logged_generic_500(make_server: Any, caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    srv = await make_server()

    class ExplodingStore:
        def __getattr__(self, name: str) -> Any:
            raise RuntimeError("the disk is on fire: /secret/path")

    # break one route's view of the store (the real store stays untouched)
    ops = next(
        r for r in srv.app.router.routes() if r.resource and r.resource.canonical == "/stats"
    )
    handler_owner = ops.handler.__self__
    real, handler_owner.store = handler_owner.store, ExplodingStore()
    try:
        resp = await srv.client.get("/stats")
        body = await resp.json()
    finally:
        handler_owner.store = real
    assert resp.status == 500
    assert body == {"ok": False, "code": "internal_error", "error": "internal server error"}
    assert "the disk is on fire" in caplog.text


async def test_two_servers_share_nothing(make_server: Any, alice: Any, bob: Any) -> None:
    one = await make_server(open_mode=True, spam_rate_per_minute=2)
    two = await make_server(open_mode=True, spam_rate_per_minute=2)
    p1, p2 = one.app[PARTS], two.app[PARTS]
    for name in ("metrics", "hub", "limiter", "auth", "submitter"):
        assert p1[name] is not p2[name], name
    assert p1["metrics"].registry is not p2["metrics"].registry
    for n in range(2):
        await one.send(one.message(alice, bob, f"Ordinary message {n}"))
    # the rate limiter of server one is full; server two's is untouched
    assert (await one.send(one.message(alice, bob, "third"), expect=451))["code"] == "spam"
    await two.send(two.message(alice, bob, "first on two"))
    text1 = await (await one.client.get("/metrics")).text()
    text2 = await (await two.client.get("/metrics")).text()
    assert 'flux_submissions_total{outcome="stored"} 2.0' in text1
    assert 'flux_submissions_total{outcome="stored"} 1.0' in text2
    assert 'flux_refusals_total{code="spam"} 1.0' in text1
    assert "flux_refusals_total{" not in text2
    # a socket on one does not get pushes from two
    await one.register(bob)
    await one.login(bob)
    ws = await one.ws(bob)
    await two.send(two.message(alice, bob, "only on two"))
    await ws.send_json({"action": "ping", "rid": 1})
    assert (await ws.receive_json(timeout=5))["action"] == "pong"
    await ws.close()


async def test_metrics_endpoint(pair: Any, alice: Any, bob: Any) -> None:
    ws = await pair.ws(bob)
    await pair.send(pair.message(alice, bob))
    await ws.receive_json(timeout=5)
    resp = await pair.client.get("/metrics")
    text = await resp.text()
    assert resp.status == 200 and resp.content_type == "text/plain"
    assert "flux_ws_connections 1.0" in text
    assert "flux_submit_seconds_count 1.0" in text
    assert "flux_pushed_frames_total" in text
    await ws.close()


def test_app_builds_without_a_loop_and_rejects_a_foreign_signer(server_key: Any) -> None:
    from flux.protocol import ServerSigner
    from flux.server import ServerConfig, create_app
    from flux.store import MemoryStore

    config = ServerConfig(domain="flux.test")
    app = create_app(config, MemoryStore(), server_key, lambda: 0)
    assert isinstance(app, web.Application)
    other = ServerSigner("other.test", server_key.signer.identity)
    with pytest.raises(ValueError):
        create_app(config, MemoryStore(), other, lambda: 0)


async def test_a_full_database_is_503_and_health_drains_until_there_is_room(
    make_server, clock, tmp_path, alice, bob
) -> None:
    """Issue 10 §6: a full disk answered 500 while /health said 200. A real SQLITE_FULL
    (the `max_bytes` cap, SQLite's max_page_count): sends answer 503 `unavailable`,
    /health answers 503 so a load balancer drains the process, every message that was
    acknowledged is still there, and both recover once there is room."""
    from flux.store import SQLiteStore

    store = SQLiteStore(tmp_path / "small.db", clock=clock, max_bytes=256 * 1024)
    await store.open()
    try:
        srv = await make_server(store=store)
        await srv.register(alice, bob)
        await srv.login(bob)
        acknowledged: list[str] = []
        refused = None
        for n in range(40):
            words = " ".join(f"w{n}x{i * 7919 % 100003}" for i in range(2500))  # ~20 KB, not spam
            msg = srv.message(alice, bob, words)
            resp = await srv.client.post("/send", json=msg)
            body = await resp.json()
            if resp.status != 200:
                refused = (resp.status, body)
                break
            acknowledged.append(msg["id"])
        assert refused is not None and acknowledged, "the cap was never reached"
        assert refused[0] == 503 and refused[1]["code"] == "unavailable", refused
        health = await srv.client.get("/health")
        assert health.status == 503 and (await health.json())["code"] == "unavailable"
        listed = await srv.get(f"/inbox/{bob.address}", bob, limit=500)
        assert set(acknowledged) <= {m["id"] for m in listed["messages"]}
        # Room again (the operator raises the cap on the live connection): recovers.
        store.max_bytes = 64 << 20
        await store._write(lambda c: c.execute("PRAGMA max_page_count=16384"))
        assert (await srv.client.get("/health")).status == 200
        await srv.send(srv.message(alice, bob, "after the disk was freed"))
    finally:
        await srv.client.close()
        await store.close()
