"""Bounces (server/submission.py `Submitter.bounce`, PROTOCOL.md §6): mail another server
refuses comes back to its sender as a message signed by the sender's own server.

A real FLUX server on 127.0.0.1 (the conftest harness, its delivery worker running) hands
mail to a real peer written for the test: an HTTP server that refuses every message as
spam, a final refusal, so the worker bounces at once. The sender waits for the bounce on
its WebSocket, as a client would.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from cli.cli_helpers import free_port
from flux.protocol import ServerSigner, append_hop
from flux.server.app import PARTS
from flux.store.base import Outbound

REFUSAL = "refused by the receiving server: spam"


@pytest.fixture
async def refusing_peer() -> AsyncIterator[str]:
    """A peer that refuses every message it is handed (`refused: spam`): its name."""

    async def deliver(request: web.Request) -> web.Response:
        batch = await request.json()
        results = [{"id": m["id"], "refused": "spam", "error": "no thanks"}
                   for m in batch["messages"]]  # fmt: skip
        body = json.dumps({"ok": True, "txn": batch["txn"], "results": results})
        return web.Response(text=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/federation/deliver", deliver)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def recording_peer() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A peer that takes every message it is handed: its name, and what it received."""
    received: list[dict[str, Any]] = []

    async def deliver(request: web.Request) -> web.Response:
        batch = await request.json()
        received.extend(batch["messages"])
        results = [{"id": m["id"], "recipients": {m["to"]: "stored"}} for m in batch["messages"]]
        body = json.dumps({"ok": True, "txn": batch["txn"], "results": results})
        return web.Response(text=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/federation/deliver", deliver)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"127.0.0.1:{port}", received
    await runner.cleanup()


async def start(make_server: Any, peer: str, **overrides: Any) -> Any:
    return await make_server(insecure_peers=frozenset({peer}), **overrides)


def metric(srv: Any, name: str, **labels: str) -> float:
    return srv.app[PARTS]["metrics"].registry.get_sample_value(name, labels or None) or 0.0


async def next_message(ws: Any) -> dict[str, Any]:
    """The next mail pushed to the socket (other frames skipped), bounded in time."""
    async with asyncio.timeout(10):
        while True:
            frame = await ws.receive_json()
            if frame.get("action") == "message":
                return frame["message"]


async def queue_drained(srv: Any) -> None:
    """Until the delivery worker has settled everything queued (bounded)."""
    async with asyncio.timeout(10):
        while await srv.store.queue_state():
            await asyncio.sleep(0.02)  # the worker settles in its own task: poll, bounded


async def test_refused_mail_comes_back_as_a_bounce_signed_by_the_senders_server(
    make_server, refusing_peer, alice, bob, caplog
):
    srv = await start(make_server, refusing_peer)
    await srv.register(alice)
    await srv.login(alice)
    ws = await srv.ws(alice)
    msg = srv.message(alice, bob, "to a peer that will refuse it")
    with caplog.at_level(logging.INFO, logger="flux.server"):
        answer = await srv.send({"message": msg, "domains": {bob.address: refusing_peer}})
        assert answer["recipients"] == {bob.address: "queued"}
        bounce = await next_message(ws)
    await ws.close()
    server = srv.key.signer.identity.address
    assert (bounce["from"], bounce["to"], bounce["re"]) == (server, alice.address, msg["id"])
    assert "bounce" in bounce["tags"] and bounce["t"] == srv.clock.now
    assert bob.address in bounce["content"] and REFUSAL in bounce["content"]
    hop = bounce["integrity_chain"][-1]
    assert (hop["server"], hop["next"], hop["cv"], hop["t"]) == (
        srv.config.domain, "local", "none", srv.clock.now)  # fmt: skip
    assert metric(srv, "flux_refusals_total", code="bounced") == 1
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("event=bounce ")]
    assert lines == [f"event=bounce id={bounce['id']} re={msg['id']} to={alice.address}"]


async def test_a_bounce_is_no_strangers_mail(make_server, refusing_peer, alice, bob, mallory):
    """The sender's own server speaking: a full stranger share does not keep it out."""
    srv = await start(make_server, refusing_peer, stranger_pending_total=1,
                      stranger_pending_per_sender=1)  # fmt: skip
    await srv.register(alice, mallory)
    await srv.login(alice)
    await srv.send(srv.message(mallory, alice, "a stranger fills the share"))
    await srv.send(srv.message(mallory, alice, "no room"), expect=429)
    msg = srv.message(alice, bob, "refused over there")
    await srv.send({"message": msg, "domains": {bob.address: refusing_peer}})
    await queue_drained(srv)
    # listed, not fetched: mallory's message stays pending, the share stays full
    inbox = (await srv.get(f"/inbox/{alice.address}", alice))["messages"]
    assert sorted(m.get("re") or "" for m in inbox) == sorted(["", msg["id"]])
    assert all(m["_status"] == "pending" for m in inbox)


async def test_a_bounce_for_a_full_mailbox_is_dropped_and_logged(
    make_server, refusing_peer, alice, bob, carol, caplog
):
    srv = await start(make_server, refusing_peer, pending_quota=1)
    await srv.register(alice, carol)
    await srv.send(srv.message(carol, alice, "fills alice's one pending place"))
    msg = srv.message(alice, bob, "refused over there")
    with caplog.at_level(logging.INFO, logger="flux.server"):
        await srv.send({"message": msg, "domains": {bob.address: refusing_peer}})
        await queue_drained(srv)
    lines = [r.getMessage() for r in caplog.records if "bounce" in r.getMessage()]
    assert f"event=bounce_dropped id={msg['id']} reason=quota_exceeded" in lines
    assert not [line for line in lines if line.startswith("event=bounce ")]
    assert metric(srv, "flux_refusals_total", code="bounced") == 0
    assert await srv.store.pending_count(alice.address) == 1


async def test_a_bounce_for_a_sender_no_longer_hosted_is_dropped(make_server, alice, bob, caplog):
    """What the delivery worker hands `bounce` for a sender this server does not host
    (an account removed while its mail was queued) is logged and dropped, not stored."""
    srv = await make_server()
    await srv.register(bob)
    msg = srv.message(alice, bob, "queued, then alice was gone")
    item = Outbound("elsewhere.example", msg, "h", (bob.address,), "none", srv.clock.now)
    with caplog.at_level(logging.WARNING, logger="flux.server"):
        await srv.app[PARTS]["submitter"].bounce(item, [bob.address], "no such host")
    lines = [r.getMessage() for r in caplog.records if "bounce" in r.getMessage()]
    assert lines == [f"event=bounce_dropped id={msg['id']} reason=sender_not_hosted"]
    assert await srv.store.pending_count(alice.address) == 0


async def test_in_open_mode_every_sender_gets_its_bounce(make_server, alice, bob):
    srv = await make_server(open_mode=True)
    msg = srv.message(alice, bob, "queued by an unregistered sender")
    item = Outbound("elsewhere.example", msg, "h", (bob.address,), "none", srv.clock.now)
    await srv.app[PARTS]["submitter"].bounce(item, [bob.address], "no such host")
    assert await srv.store.pending_count(alice.address) == 1


async def test_queued_mail_reaches_the_peer_as_sent_with_this_servers_seal(
    make_server, recording_peer, alice, bob, mallory
):
    """What the queue keeps is what was verified: the envelope, its chain, and the verdict
    this server reached on it (`cv` in its own hop, sealed to the server reached)."""
    peer, received = recording_peer
    srv = await start(make_server, peer)
    await srv.register(alice)
    relay = ServerSigner("relay.example", mallory)
    msg = append_hop(srv.message(alice, bob, "via a relay, then on"), relay,
                     next_hop=srv.config.domain, now_ms=srv.clock.now)  # fmt: skip
    answer = await srv.send({"message": msg, "domains": {bob.address: peer}})
    assert answer["recipients"] == {bob.address: "queued"}
    await queue_drained(srv)
    (got,) = received
    assert {k: got[k] for k in ("id", "from", "to", "content")} == {
        k: msg[k] for k in ("id", "from", "to", "content")}  # fmt: skip
    hops = [(h["server"], h["next"], h["cv"]) for h in got["integrity_chain"]]
    assert hops == [("relay.example", srv.config.domain, "none"),
                    (srv.config.domain, peer, "pass")]  # fmt: skip
