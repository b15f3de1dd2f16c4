"""Sent mail with per-recipient delivery state (issue 12; docs/API.md, "Sent mail"), and
fast failure (PROTOCOL.md §10.3): real FLUX servers in this process, real HTTP between
them, the sender's client reading GET /sent through flux.client.sent.

A domain that does not exist is a name under `.invalid` (RFC 6761 §6.4): the guarded
resolver answers it NXDOMAIN itself, so no DNS query leaves the host.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cli.cli_helpers import free_port
from federation.fed_helpers import local_servers, name
from flux.client import FluxClient
from flux.client.errors import FluxClientError
from flux.client.sent import delivery_state, sent
from flux.protocol import Identity
from flux.server.config import ServerConfig
from flux.server.runner import start_server

FAST = {"queue_retry_base_s": 0.2, "queue_retry_cap_s": 0.5, "queue_lease_s": 5.0}


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 30.0) -> Any:
    """Poll the API until `check()` is truthy (the state changes in a background worker;
    its answer is the event waited for). Fails naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)  # a polling interval, not synchronisation


def states(message: dict[str, Any]) -> dict[str, str]:
    return {r: s["state"] for r, s in message["_delivery"].items()}


async def test_sent_mail_lists_local_and_remote_recipients_until_delivered(tmp_path: Path) -> None:
    alice, bob, carol = Identity.generate(), Identity.generate(), Identity.generate()
    async with local_servers(tmp_path, ("a", "b"), **FAST) as servers:
        a, b = servers["a"], servers["b"]
        async with FluxClient(alice, a.url) as client:
            result = await client.send(
                bob.address, "hello both", cc=[f"{carol.address}@{name(b)}"], subject="hi"
            )
            first = await delivery_state(client, result.id)
            assert first["from"] == alice.address and first["subject"] == "hi"
            assert first["_delivery"][bob.address]["state"] == "stored"
            assert first["_delivery"][carol.address]["state"] in {"queued", "delivered"}

            async def delivered() -> dict[str, Any] | None:
                m = await delivery_state(client, result.id[:8])  # a short id works too
                return m if states(m)[carol.address] == "delivered" else None

            done = await until(delivered, "the remote copy to be delivered")
            assert states(done) == {bob.address: "stored", carol.address: "delivered"}
            assert done["_delivery"][carol.address]["at"] >= done["_sent_at"]
            items, more = await sent(client)
            assert [m["id"] for m in items] == [result.id] and more is None
        # the sent copy is not the sender's inbox mail: no pending, no unread
        assert await a.store.pending_count(alice.address) == 0
        assert (await a.store.inboxes(alice.address)) == {}
        assert await b.store.get(carol.address, result.id) is not None


async def test_a_domain_that_does_not_exist_bounces_at_once(tmp_path: Path) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    async with local_servers(tmp_path, ("a",), **FAST) as servers:
        a = servers["a"]
        async with FluxClient(alice, a.url) as client:
            result = await client.send(f"{bob.address}@nowhere.invalid", "into the void")

            async def bounced() -> dict[str, Any] | None:
                m = await delivery_state(client, result.id)
                return m if states(m)[bob.address] == "bounced" else None

            m = await until(bounced, "the bounce")
            reason = m["_delivery"][bob.address]["reason"]
            assert reason == "the domain nowhere.invalid does not exist (no such domain)"
            # the bounce names the recipient and the reason, and no attempt waited
            inbox = await until(lambda: a.store.fetch_pending(alice.address, 10), "the notice")
            (notice,) = inbox
            assert notice.envelope["re"] == result.id
            assert (
                bob.address in notice.envelope["content"] and reason in notice.envelope["content"]
            )
        assert await a.store.queue_state() == []


async def test_an_unknown_recipient_at_the_peer_bounces_at_once(tmp_path: Path) -> None:
    alice, nobody = Identity.generate(), Identity.generate()

    def hosted_b(label: str, names: dict[str, str]) -> dict[str, Any]:
        return {"open_mode": False} if label == "b" else {}

    async with local_servers(tmp_path, ("a", "b"), per_server=hosted_b, **FAST) as servers:
        a, b = servers["a"], servers["b"]
        async with FluxClient(alice, a.url) as client:
            result = await client.send(f"{nobody.address}@{name(b)}", "anyone there?")

            async def bounced() -> dict[str, Any] | None:
                m = await delivery_state(client, result.id)
                return m if states(m)[nobody.address] == "bounced" else None

            m = await until(bounced, "the bounce")
            assert m["_delivery"][nobody.address]["reason"] == (
                "the receiving server does not host this address"
            )


async def test_a_down_peer_shows_queued_with_attempts_then_delivered(tmp_path: Path) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    port = free_port()
    down = f"127.0.0.1:{port}"
    async with local_servers(tmp_path, ("a",), extra_insecure=[down], **FAST) as servers:
        a = servers["a"]
        async with FluxClient(alice, a.url) as client:
            result = await client.send(f"{bob.address}@{down}", "are you up?")

            async def retried() -> dict[str, Any] | None:
                m = await delivery_state(client, result.id)
                s = m["_delivery"][bob.address]
                return s if s["state"] == "queued" and s["attempts"] >= 1 else None

            s = await until(retried, "a failed attempt")
            assert s["next_retry_at"] > s["at"] - 1
            assert s["error"].startswith("the receiving server did not answer (connection refused)")
            assert "; next try at " in s["error"] and s["error"].endswith(" UTC")
            config = ServerConfig.from_env(
                {}, host="127.0.0.1", port=port, domain=down, data_dir=tmp_path / "b",
                backend="memory", insecure_peers=frozenset({name(a)}), open_mode=True,
            )  # fmt: skip
            b = await start_server(config)
            try:

                async def delivered() -> dict[str, Any] | None:
                    m = await delivery_state(client, result.id)
                    return m if states(m)[bob.address] == "delivered" else None

                m = await until(delivered, "the delivery once the peer is up")
                assert set(m["_delivery"][bob.address]) == {"state", "at"}
            finally:
                await b.stop()


async def test_only_the_owner_reads_sent_mail_and_bad_ids_are_refused(tmp_path: Path) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    async with local_servers(tmp_path, ("a",)) as servers:
        a = servers["a"]
        async with FluxClient(alice, a.url) as client, FluxClient(bob, a.url) as other:
            result = await client.send(bob.address, "mine")
            with pytest.raises(FluxClientError) as missing:
                await delivery_state(other, result.id)  # bob sent nothing with this id
            assert missing.value.status == 404
            with pytest.raises(FluxClientError) as bad:
                await delivery_state(client, "xyz")
            assert bad.value.status == 400 and bad.value.field == "id"
            with pytest.raises(FluxClientError) as forbidden:
                await other._request("GET", f"/sent/{alice.address}")
            assert forbidden.value.status == 403
            with pytest.raises(FluxClientError) as limit:
                await client._request("GET", f"/sent/{alice.address}", params={"limit": 0})
            assert limit.value.status == 400 and limit.value.field == "limit"
            with pytest.raises(FluxClientError) as cursor:
                await sent(client, cursor="12.not-an-id")
            assert cursor.value.status == 400 and cursor.value.field == "cursor"
            second = await client.send(bob.address, "mine too")
            page, more = await sent(client, limit=1)
            assert [m["id"] for m in page] == [second.id] and more is not None
            page, more = await sent(client, limit=1, cursor=more)
            assert [m["id"] for m in page] == [result.id]
            assert (await sent(client, limit=1, cursor=more))[0] == []
            # bob's inbox copy is his; alice's sent list has it, bob's has nothing
            assert [m["id"] for m in (await sent(client))[0]] == [second.id, result.id]
            assert (await sent(other))[0] == []


async def test_delivery_changes_are_pushed_and_listed_in_changes(tmp_path: Path) -> None:
    """The sender's socket hears each delivery state change (`delivery` frame), and
    /changes lists the sent message as it now stands under `sent`."""
    alice, bob = Identity.generate(), Identity.generate()
    async with local_servers(tmp_path, ("a", "b"), **FAST) as servers:
        a, b = servers["a"], servers["b"]
        async with FluxClient(alice, a.url) as client, aiohttp.ClientSession() as http:
            token = await client._ensure_token()
            before = await client._request("GET", "/changes", params={"address": alice.address})
            async with http.ws_connect(f"{a.url}/ws") as ws:
                await ws.send_json({"action": "auth", "token": token, "address": alice.address})
                authed = await ws.receive_json(timeout=30)
                assert authed["action"] == "authed", authed
                result = await client.send(f"{bob.address}@{name(b)}", "tell me when")
                while True:
                    frame = await ws.receive_json(timeout=30)
                    if frame.get("action") == "delivery":
                        break
                assert frame == {
                    "action": "delivery", "id": result.id,
                    "delivery": {bob.address: {"state": "delivered", "at": ANY_INT}},
                }  # fmt: skip
            changes = await client._request(
                "GET", "/changes", params={"address": alice.address, "since": before["state"]}
            )
            assert changes["created"] == changes["updated"] == []
            (listed,) = changes["sent"]
            assert listed["id"] == result.id and states(listed) == {bob.address: "delivered"}
            assert changes["state"] > before["state"]


class _AnyInt:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, int)


ANY_INT = _AnyInt()
