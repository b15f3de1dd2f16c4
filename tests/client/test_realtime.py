"""WebSocket push, and reconnecting without losing mail (docs/API.md, "WebSocket")."""

from __future__ import annotations

import asyncio
import random
import socket
import string
from typing import Any

import aiohttp
from client_helpers import WAIT, Inbox, free_port, server_config

from flux import FluxIdentity
from flux.client import Backoff, FluxClient
from flux.server.runner import start_server
from flux.server.ws import AUTHED_MAX_BYTES


async def test_new_mail_is_pushed(make_client):
    alice, bob = await make_client(), await make_client()
    inbox = Inbox(bob)
    await bob.start_ws(timeout=WAIT)
    sent = await alice.send(bob.address, "live!")
    msg = await inbox.next()
    assert msg["id"] == sent.id
    assert bob.verify(msg).sender == alice.address
    assert bob.state is not None and bob.state > 0
    assert await marked_delivered(bob, [sent.id])  # once the client's pong acked the frame


async def marked_delivered(client: FluxClient, ids: list[str]) -> bool:
    """Whether every one of `ids` is delivered in the store within a bounded number of
    looks: the ack (a pong) travels after the frame, so it may land just after we ask."""
    for _ in range(100):
        statuses = [(await client.get(i))["_status"] for i in ids]
        if set(statuses) == {"delivered"}:
            return True
        await asyncio.sleep(0.05)  # a poll interval, not an assertion on time
    return False


async def test_pushed_and_waiting_mail_reaches_a_reading_client_once_and_is_delivered(tmp_path):
    server = await start_server(server_config(tmp_path / "acks", spam_rate_per_minute=1000))
    alice = FluxClient(FluxIdentity.generate(), server.url)
    bob = FluxClient(FluxIdentity.generate(), server.url, reconnect_base=0.05, reconnect_cap=0.5)
    try:
        await alice.register()
        await bob.register()
        await bob.send(alice.address, "write to me")
        waiting = [(await alice.send(bob.address, f"w{n}")).id for n in range(10)]
        got: list[str] = []
        bob.on_message(lambda msg: got.append(msg["id"]))
        inbox = Inbox(bob)
        await bob.start_ws(timeout=WAIT)
        pushed = [(await alice.send(bob.address, f"p{n}")).id for n in range(10)]
        for _ in range(len(waiting) + len(pushed)):
            await inbox.next()
        assert await marked_delivered(bob, waiting + pushed)
        assert sorted(got) == sorted(waiting + pushed)  # each once
        assert (await bob.peek()).pending == 0
    finally:
        await bob.close()
        await alice.close()
        await server.stop()


async def test_mail_waiting_before_connect_comes_with_the_auth_answer(make_client):
    alice, bob = await make_client(), await make_client()
    sent = await alice.send(bob.address, "waiting for you")
    inbox = Inbox(bob)
    await bob.start_ws(timeout=WAIT)
    assert (await inbox.next())["id"] == sent.id


async def test_sync_handlers_and_change_notifications(make_client):
    alice, bob = await make_client(), await make_client()
    seen: list[str] = []
    changed: asyncio.Queue[list[str]] = asyncio.Queue()
    bob.on_message(lambda msg: seen.append(msg["id"]))
    bob.on_change(changed.put)
    other_device = await make_client(bob.identity, register=False)
    inbox = Inbox(bob)
    await bob.start_ws(timeout=WAIT)
    sent = await alice.send(bob.address, "read me elsewhere")
    await inbox.next()
    assert seen == [sent.id]
    await other_device.read(sent.id)
    assert sent.id in await asyncio.wait_for(changed.get(), WAIT)


async def test_connect_ws_returns_when_the_client_closes(make_client):
    bob = await make_client()
    task = await bob.start_ws(timeout=WAIT)
    await bob.close()
    await asyncio.wait_for(task, WAIT)
    assert task.done() and task.exception() is None


async def test_after_a_reconnect_mail_handled_elsewhere_meanwhile_is_caught_up(make_client, proxy):
    """The socket drops; meanwhile a message arrives and another device reads it, so it is
    no longer pending. After reconnecting, the client still gets it, through /changes."""
    alice = await make_client()
    bob = await make_client(url=proxy.url)
    other_device = await make_client(bob.identity, register=False)
    inbox = Inbox(bob)
    await bob.start_ws(timeout=WAIT)
    before = await alice.send(bob.address, "before the outage")
    assert (await inbox.next())["id"] == before.id

    await proxy.cut()
    missed = await alice.send(bob.address, "sent during the outage")
    assert await other_device.read(missed.id) == [missed.id]  # not pending any more
    await proxy.start()  # same port

    msg = await inbox.next()
    assert msg["id"] == missed.id
    bob.verify(msg)
    await bob.wait_connected(WAIT)
    assert bob.connections == 2
    after = await alice.send(bob.address, "after the outage")
    assert (await inbox.next())["id"] == after.id
    assert inbox.queue.empty()  # nothing delivered twice


async def test_reconnects_after_the_server_restarts(tmp_path):
    """A real restart on the same port and data directory (SQLite)."""
    port = free_port()
    config = server_config(tmp_path / "server", port=port, backend="sqlite")
    server = await start_server(config)
    alice = FluxClient(FluxIdentity.generate(), server.url)
    bob = FluxClient(FluxIdentity.generate(), server.url, reconnect_base=0.05, reconnect_cap=0.5)
    try:
        await alice.register()
        await bob.register()
        inbox = Inbox(bob)
        await bob.start_ws(timeout=WAIT)
        first = await alice.send(bob.address, "one")
        assert (await inbox.next())["id"] == first.id

        await server.stop()
        server = await start_server(config)
        second = await alice.send(bob.address, "two, after the restart")
        assert (await inbox.next())["id"] == second.id
        await bob.wait_connected(WAIT)
        assert bob.connections >= 2
    finally:
        await alice.close()
        await bob.close()
        await server.stop()


def test_backoff_is_capped_and_jittered():
    low, high = Backoff(0.5, 8.0, rand=lambda: 0.0), Backoff(0.5, 8.0, rand=lambda: 1.0)
    assert [low.delay(n) for n in range(6)] == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0]
    assert [high.delay(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert high.delay(10_000) == 8.0


async def _hundred_big_messages(tmp_path: Any) -> tuple[Any, FluxClient, FluxClient, list[str]]:
    server = await start_server(
        server_config(tmp_path / "big", spam_rate_per_minute=1000, pending_quota=500)
    )
    alice = FluxClient(FluxIdentity.generate(), server.url)
    bob = FluxClient(FluxIdentity.generate(), server.url, reconnect_base=0.05, reconnect_cap=0.5)
    await alice.register()
    await bob.register()
    await bob.send(alice.address, "write to me")  # a correspondent, not a stranger
    rng = random.Random(10)
    words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 9)))
             for _ in range(5000)]  # fmt: skip
    ids = []
    for n in range(100):  # ~64 KiB each: 6.4 MB pending, over any single frame
        content = " ".join(rng.choice(words) for _ in range(10_000))[:63_000]
        ids.append((await alice.send(bob.address, f"{n} {content}")).id)
    return server, alice, bob, ids


async def test_a_hundred_64k_messages_pending_all_arrive_and_none_is_lost(tmp_path):
    """The `authed` frame used to carry all 100 (6.4 MB, over the client's frame limit)
    and mark them delivered first: the client failed to connect and never saw them."""
    server, alice, bob, ids = await _hundred_big_messages(tmp_path)
    try:
        got: list[str] = []
        bob.on_message(lambda msg: got.append(msg["id"]))
        await bob.start_ws(timeout=WAIT)
        assert sorted(got) == sorted(ids)  # authed's first batch, then /fetch, all of them
        assert (await bob.peek()).pending == 0
    finally:
        await bob.close()
        await alice.close()
        await server.stop()


async def test_a_client_gone_before_reading_authed_leaves_the_mail_pending(tmp_path):
    server, alice, bob, ids = await _hundred_big_messages(tmp_path)
    try:
        token = await bob.authenticate()
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"{server.url}/ws")  # authenticates, then is gone
            await ws.send_json({"action": "auth", "token": token})
            transport = ws.get_extra_info("socket")
            assert transport is not None
            transport.shutdown(socket.SHUT_RDWR)  # not even a close frame
            await ws.close()
        # Had the server written `authed` before it saw the reset, that one batch (and
        # nothing more) would be delivered; everything else stays pending.
        pending = (await bob.peek()).pending
        delivered = (await bob.inbox(status="delivered", limit=500)).messages
        assert pending + len(delivered) == len(ids)
        assert len(delivered) <= AUTHED_MAX_BYTES // 63_000
    finally:
        await bob.close()
        await alice.close()
        await server.stop()
