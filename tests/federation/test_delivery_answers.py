"""Partial delivery (PROTOCOL.md §10.7, "Sender, reading the answer"): a message the peer
took for some recipients and not (yet) for others stays queued for those others, goes
again whole, and the peer's dedupe by (recipient, sender, id) makes that safe: a recipient
served before is answered `duplicate` and never gets a second copy. The sender's sent mail
says, per recipient, delivered, bounced or queued with why in words; a bounce names only
the recipients that did not get the message.

With a scripted peer (answers no FLUX server gives, attempt by attempt) and with two real
FLUX servers where one recipient is over its pending quota.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cli.cli_helpers import free_port
from federation.fed_helpers import local_servers
from flux.federation.delivery import _judge, delivery_changes
from flux.protocol import Identity, compose
from flux.server.config import ServerConfig
from flux.server.runner import RunningServer, start_server
from flux.store.base import Lease, ListQuery, MessageStatus, Outbound, Queued
from postgres_env import fresh_schema_url
from spec.test_answers import ScriptedPeer

ALICE = Identity(b"\x21" * 32)
BOB, CAROL, DAVE = (Identity(bytes([i]) * 32).address for i in (0x22, 0x23, 0x24))
FULL = "the recipient's mailbox is full"
GIVE_UP_S = 3.0  #: the sender's retry window in the tests that let it run out


def _now() -> int:
    return int(time.time() * 1000)


async def _send(server: RunningServer, to: list[str], domain: str) -> dict[str, Any]:
    """alice's message to `to` (the first in `to`, the rest in cc), all living at `domain`,
    submitted to `server`; returns the envelope."""
    message = compose(ALICE, to[0], "hello", cc=to[1:], subject="hi", now_ms=_now()).primary
    body = {"message": message, "domains": dict.fromkeys(to, domain)}
    async with aiohttp.ClientSession() as http, http.post(server.url + "/send", json=body) as r:
        assert r.status == 200, await r.text()
    return message


async def _until(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """`await check()` until it returns something true (bounded)."""
    async with asyncio.timeout(timeout):
        while not (got := await check()):
            await asyncio.sleep(0.05)  # polling a condition, bounded by the timeout
        return got


async def _states(server: RunningServer, msg_id: str) -> dict[str, dict[str, Any]]:
    sent = await server.store.sent_message(ALICE.address, msg_id)
    assert sent is not None
    return {r: dict(s) for r, s in sent.delivery.items()}


async def _bounces(server: RunningServer) -> list[dict[str, Any]]:
    page = await server.store.list(ALICE.address, ListQuery(limit=50))
    return [m.envelope for m in page.items if "bounce" in m.envelope.get("tags", [])]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def sender(request: Any, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """`await sender(peer, window_s=...)`: a FLUX server (open mode, fast retries) that
    reaches `peer` over plain HTTP, on each store backend (its sent mail and queue)."""
    backend = request.param
    async with contextlib.AsyncExitStack() as stack:
        store: dict[str, Any] = {"backend": backend}
        if backend == "postgres":
            store["db_url"] = await stack.enter_async_context(fresh_schema_url())
        started: list[RunningServer] = []

        async def start(peer: ScriptedPeer, window_s: float = 3600.0) -> RunningServer:
            port = free_port()
            config = ServerConfig.from_env(
                {}, host="127.0.0.1", port=port, domain=f"127.0.0.1:{port}",
                data_dir=tmp_path / str(port), open_mode=True,
                insecure_peers=frozenset({peer.name}), queue_retry_base_s=0.05,
                queue_retry_cap_s=0.2, queue_retry_window_s=window_s, **store,
            )  # fmt: skip
            started.append(await start_server(config))
            return started[-1]

        try:
            yield start
        finally:
            for server in started:
                await server.stop()


def _answer(outcomes: dict[str, Any]) -> dict[str, Any]:
    return {"recipients": outcomes}


async def test_a_recipient_over_quota_beside_one_served_is_retried_alone(sender: Any) -> None:
    """Attempt 1: bob stored, carol over quota, dave not hosted; attempt 2 the same (bob
    now `duplicate`); attempt 3 carol stored. Bob is delivered after the first attempt and
    stays so; dave is bounced once; carol waits, in words, then is delivered."""
    script = [
        {BOB: "stored", CAROL: "over_quota", DAVE: "not_hosted"},
        {BOB: "duplicate", CAROL: "over_quota", DAVE: "not_hosted"},
        {BOB: "duplicate", CAROL: "stored", DAVE: "not_hosted"},
    ]

    def answer(txn: str, msg_id: str) -> dict[str, Any]:
        outcomes = script[min(len(peer.deliveries), len(script)) - 1]
        return {"ok": True, "txn": txn, "results": [{"id": msg_id, **_answer(outcomes)}]}

    async with ScriptedPeer(answer) as peer:
        a = await sender(peer)
        message = await _send(a, [BOB, CAROL, DAVE], peer.name)

        async def after_first() -> dict[str, Any] | None:
            states = await _states(a, message["id"])
            return states if states[CAROL].get("attempts", 0) >= 1 else None

        first = await _until(after_first)
        assert first[BOB]["state"] == "delivered", first
        assert first[DAVE]["state"] == "bounced", first
        assert (first[CAROL]["state"], first[CAROL]["error"].split(";")[0]) == ("queued", FULL)

        async def all_final() -> dict[str, Any] | None:
            states = await _states(a, message["id"])
            return states if states[CAROL]["state"] != "queued" else None

        final = await _until(all_final)
        assert {r: s["state"] for r, s in final.items()} == {
            BOB: "delivered", CAROL: "delivered", DAVE: "bounced",
        }  # fmt: skip
        assert final[BOB]["at"] == first[BOB]["at"]  # delivered once, never touched again
        assert await a.store.queue_state() == []
        # the same message went again whole (the peer dedupes), with the same body
        sent = [d["messages"][0] for d in peer.deliveries]
        assert len(sent) == 3 and {m["id"] for m in sent} == {message["id"]}
        assert all(m["sig"] == message["sig"] for m in sent)
        # one bounce, for dave alone, though the peer answered not_hosted three times
        bounces = await _bounces(a)
    assert len(bounces) == 1, bounces
    assert DAVE in bounces[0]["content"] and BOB not in bounces[0]["content"]
    assert CAROL not in bounces[0]["content"]


async def test_a_bounce_after_a_partial_delivery_names_only_who_did_not_get_it(
    sender: Any,
) -> None:
    """Carol stays over quota until the retry window runs out: the bounce names carol, not
    bob, who got the message on the first attempt (his state stays delivered)."""

    def answer(txn: str, msg_id: str) -> dict[str, Any]:
        outcomes = {BOB: "stored" if len(peer.deliveries) == 1 else "duplicate", CAROL: "over_quota"}  # fmt: skip
        return {"ok": True, "txn": txn, "results": [{"id": msg_id, **_answer(outcomes)}]}

    async with ScriptedPeer(answer) as peer:
        a = await sender(peer, window_s=GIVE_UP_S)
        message = await _send(a, [BOB, CAROL], peer.name)
        bounces = await _until(lambda: _bounces(a))

        async def settled() -> dict[str, Any] | None:
            # the bounce is stored just before the settling transaction writes the states
            states = await _states(a, message["id"])
            return states if states[CAROL]["state"] != "queued" else None

        states = await _until(settled)
    assert [s["state"] for s in (states[BOB], states[CAROL])] == ["delivered", "bounced"]
    assert "not delivered within" in states[CAROL]["reason"], states
    assert len(bounces) == 1 and CAROL in bounces[0]["content"], bounces
    assert BOB not in bounces[0]["content"], bounces[0]["content"]


async def test_two_flux_servers_a_recipient_over_quota_gets_it_once_there_is_room(
    tmp_path: Path,
) -> None:
    """Real servers A and B (B: pending quota 1). Carol's quota at B is full; alice at A
    writes to bob and carol at B. B stores bob's copy and answers carol `over_quota`: A
    tells alice bob has it and carol's mailbox is full, and keeps trying. Once carol reads
    her mail, the next attempt reaches her; bob, answered `duplicate` on every retry, has
    exactly one copy."""

    def per_server(label: str, names: dict[str, str]) -> dict[str, Any]:
        return {"pending_quota": 1} if label == "b" else {}

    fast = {"queue_retry_base_s": 0.05, "queue_retry_cap_s": 0.2}
    async with local_servers(tmp_path, "ab", per_server=per_server, **fast) as s:
        a, b = s["a"], s["b"]
        b_name = f"127.0.0.1:{b.port}"
        # carol's one pending message, from someone else, straight at B
        zed = Identity(b"\x25" * 32)
        earlier = compose(zed, CAROL, "first", now_ms=_now()).primary
        async with aiohttp.ClientSession() as http, http.post(b.url + "/send", json={"message": earlier}) as r:  # fmt: skip
            assert r.status == 200, await r.text()
        message = await _send(a, [BOB, CAROL], b_name)

        async def carol_waits() -> dict[str, Any] | None:
            states = await _states(a, message["id"])
            return states if states[CAROL].get("attempts", 0) >= 2 else None

        waiting = await _until(carol_waits)
        assert waiting[BOB]["state"] == "delivered", waiting
        assert waiting[CAROL]["state"] == "queued", waiting
        assert waiting[CAROL]["error"].startswith(FULL + "; next try at "), waiting

        await b.store.mark(CAROL, [earlier["id"]], MessageStatus.READ)  # room for one more

        async def carol_has_it() -> dict[str, Any] | None:
            states = await _states(a, message["id"])
            return states if states[CAROL]["state"] == "delivered" else None

        done = await _until(carol_has_it)
        assert done[BOB] == waiting[BOB]  # delivered once, untouched by the retries
        assert await a.store.queue_state() == []
        copies = {
            who: [m.id for m in (await b.store.list(who, ListQuery())).items]
            for who in (BOB, CAROL)
        }  # fmt: skip
        bounces = await _bounces(a)
    assert copies == {BOB: [message["id"]], CAROL: [message["id"], earlier["id"]]}, copies
    assert bounces == []


def _queued(qid: int, recipients: list[str], via: str = "") -> Queued:
    envelope = {"id": f"{qid:032x}", "from": ALICE.address, "to": recipients[0]}
    return Queued(qid, Outbound("peer.example", envelope, "h", tuple(recipients), "none", 0, via))


def test_the_judgement_per_recipient_direct_and_through_a_mesh() -> None:
    """The rule of PROTOCOL.md §10.7 as `_judge` and `delivery_changes` apply it: served
    ones delivered, not-hosted ones bounced (directly) or settled (a mesh member: another
    may host them), the others queued with why; the message stays queued for them."""
    answer = [{"id": "x", "recipients": {BOB: "duplicate", CAROL: "over_stranger_share", DAVE: "not_hosted"}}]  # fmt: skip
    for mesh in (False, True):
        q = _queued(1, [BOB, CAROL, DAVE], via="m" if mesh else "")
        verdict = _judge([q], answer, mesh=mesh)
        assert verdict.done == [] and verdict.retry is not None
        assert verdict.bounces == ([] if mesh else [(q, [DAVE], "the receiving server does not host this address")])  # fmt: skip
        lease = Lease("peer.example", "w#1", [q], attempts=2)
        [states] = delivery_changes(lease, verdict, retry_at=60_000, now=1_000).values()
        assert states[BOB] == {"state": "delivered", "at": 1_000}
        assert states[DAVE]["state"] == ("delivered" if mesh else "bounced")
        assert states[CAROL]["state"] == "queued" and states[CAROL]["attempts"] == 3
        assert states[CAROL]["error"].startswith("the recipient has not written to you and its mail from strangers is full; next try at ")  # fmt: skip
    # every recipient settled: done; nothing waits
    q = _queued(2, [BOB, DAVE])
    done = _judge([q], [{"recipients": {BOB: "stored", DAVE: "not_hosted"}}], mesh=False)
    assert (done.done, done.retry, dict(done.kept)) == ([2], None, {})
