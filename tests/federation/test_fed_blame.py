"""Blame only what the accused signed, between real in-process servers (PROTOCOL.md §7.4;
issue 9, section 1).

The case: a user of A submits a message whose unsigned `route` already holds 32 entries.
Before the rule A accepted it, added its entry (33) and sealed it to B; B refused it and
struck A for a `forged_body` it never committed, and anyone holding A's seal could replay
that as a report. Now A refuses it up front, a seal past the limit is refused by B without
blame, nobody can turn an honest seal into a report by changing what is outside it, and
A's delivery worker bounces (never seals) a queued message that has no room for its hop.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from federation.fed_helpers import deliver, local_servers, name, signer
from flux.protocol import (
    ChainVerdict,
    Identity,
    Offense,
    OffenseKind,
    append_hop,
    build_report,
    compose,
)
from flux.protocol.chain import make_hop
from flux.protocol.envelope import body_hash
from flux.protocol.limits import MAX_ROUTE_HOPS
from flux.server.app import PARTS
from flux.server.runner import RunningServer
from flux.store.base import Outbound

ALICE, BOB = Identity.generate(), Identity.generate()
Servers = dict[str, RunningServer]


@pytest.fixture
async def servers(tmp_path: Path):
    """Honest a (alice's server), the receiver b, and c, a server a never talked to."""
    async with local_servers(tmp_path, "abc") as running:
        yield running


def now_ms() -> int:
    return int(time.time() * 1000)


def with_route(entries: int, content: str = "lunch?") -> dict[str, Any]:
    """alice's signed message whose unsigned route holds `entries` entries already."""
    msg = compose(ALICE, BOB.address, content, now_ms=now_ms()).primary
    return {**msg, "route": [{"server": "far.example", "t": now_ms()}] * entries}


async def post(server: RunningServer, path: str, body: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.post(server.url + path, json=body) as r:
        return r.status, await r.json()


async def strikes(server: RunningServer) -> list[Any]:
    return await server.app[PARTS]["store"].strikes()


async def test_a_route_with_no_room_for_the_servers_hop_is_refused_at_submission(
    servers: Servers,
) -> None:
    a = servers["a"]
    full = with_route(MAX_ROUTE_HOPS)
    status, answer = await post(a, "/send", full)
    assert (status, answer["code"], answer["field"]) == (400, "too_large", "route")
    assert "exceed the limit of 32" in answer["error"], answer
    assert await a.store.get(BOB.address, full["id"]) is None
    room = with_route(MAX_ROUTE_HOPS - 1)  # a's own entry makes exactly 32: accepted
    status, answer = await post(a, "/send", room)
    assert status == 200, answer
    stored = await a.store.get(BOB.address, room["id"])
    assert stored is not None and len(stored.envelope["route"]) == MAX_ROUTE_HOPS


def sealed_past_the_limit(s: Servers) -> dict[str, Any]:
    """What A sealed to B before the rule: 32 route entries, then A's own (33)."""
    msg = with_route(MAX_ROUTE_HOPS)
    hop = make_hop(
        msg, signer(s["a"]), next_hop=name(s["b"]), now_ms=now_ms(), cv=ChainVerdict.NONE
    )
    entry = {"server": name(s["a"]), "t": hop["t"]}
    return {**msg, "route": [*msg["route"], entry], "integrity_chain": [hop]}


async def test_bs_refusal_of_as_seal_past_the_limit_strikes_nobody(servers: Servers) -> None:
    a, b = servers["a"], servers["b"]
    for _ in range(3):  # three of them used to quarantine honest A at B
        delivered = sealed_past_the_limit(servers)
        status, answer = await deliver(signer(a), b, [delivered])
        result = answer["results"][0]
        assert (status, result["refused"], result["struck"]) == (200, "too_large", False)
    assert await strikes(b) == []
    assert not b.app[PARTS]["reports"].pending


def replayed_report(s: Servers, envelope: dict[str, Any], kind: OffenseKind) -> dict[str, Any]:
    """B's signed report accusing A, built from A's genuine seal (B is the seal's `next`)."""
    claim = Offense(kind, name(s["a"]), envelope["id"], "", envelope, "")
    return build_report(claim, signer(s["b"]), now_ms=now_ms())


def honest_delivery(s: Servers) -> dict[str, Any]:
    msg = compose(ALICE, BOB.address, "an honest note", now_ms=now_ms()).primary
    return append_hop(msg, signer(s["a"]), next_hop=name(s["b"]), now_ms=now_ms())


CHANGES_OUTSIDE_THE_SEAL = {
    "route-past-limit": lambda m: {**m, "route": m["route"] * 40},
    "route-garbage": lambda m: {**m, "route": "not a list"},
    "retrieval-fields": lambda m: {**m, "_status": 7, "_inbox": {"x": 1}, "_tags": None},
    "chain-past-limit": lambda m: {**m, "integrity_chain": m["integrity_chain"] * 33},
}


@pytest.mark.parametrize("change", sorted(CHANGES_OUTSIDE_THE_SEAL))
async def test_reports_built_from_as_genuine_seal_never_strike_a(
    servers: Servers, change: str
) -> None:
    a, c = servers["a"], servers["c"]
    for envelope in (
        sealed_past_the_limit(servers),
        CHANGES_OUTSIDE_THE_SEAL[change](honest_delivery(servers)),
    ):
        for kind in OffenseKind:
            status, answer = await post(
                c, "/integrity/tamper_report", replayed_report(servers, envelope, kind)
            )
            assert (status, answer["code"]) == (400, "invalid_proof"), answer
    assert await strikes(c) == []
    assert await strikes(a) == []


async def test_the_delivery_worker_bounces_a_message_it_may_not_seal(servers: Servers) -> None:
    # A message already in the queue (e.g. queued before the rule) with no room for A's hop
    # is bounced to its sender in words, not sealed and sent for B to refuse.
    a, b = servers["a"], servers["b"]
    full = with_route(MAX_ROUTE_HOPS, content="queued before the rule")
    item = Outbound(
        name(b), full, body_hash(full), (BOB.address,), str(ChainVerdict.NONE), now_ms()
    )
    assert await a.store.enqueue([item]) == [True]
    a.app[PARTS]["delivery"].kick()
    async with asyncio.timeout(10):
        while await a.store.pending_count(ALICE.address) == 0:
            await asyncio.sleep(0.02)  # polling a condition, bounded by the timeout
    (bounce,) = await a.store.fetch_pending(ALICE.address, 10)
    assert bounce.envelope["re"] == full["id"] and "not sent: route" in bounce.envelope["content"]
    assert await b.store.get(BOB.address, full["id"]) is None
    assert await strikes(b) == []
    assert all(not state.queued for state in await a.store.queue_state())
