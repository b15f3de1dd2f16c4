"""POST /federation/deliver between real servers on 127.0.0.1 (HTTP, peers listed insecure;
tests/federation/test_fed_keys.py covers verified HTTPS)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest

from federation.fed_helpers import deliver, local_servers, name, signer
from flux.federation.delivery import _by_size
from flux.protocol import (
    ChainVerdict,
    Identity,
    Offense,
    PublishedKey,
    ServerSigner,
    append_hop,
    build_report,
    compose,
    find_offense,
    verify_chain,
    verify_envelope,
)
from flux.server.app import PARTS
from flux.server.runner import RunningServer

ALICE, BOB = Identity.generate(), Identity.generate()


@pytest.fixture
async def servers(tmp_path: Path):
    """Three servers that know each other as insecure (plain HTTP) peers: a, x (a relay), b."""
    async with local_servers(tmp_path, ("a", "x", "b")) as running:
        yield running


def message(content: str = "hello across servers") -> dict:
    return compose(ALICE, BOB.address, content, now_ms=int(time.time() * 1000)).primary


async def stored(server: RunningServer, msg_id: str):
    return await server.store.get(BOB.address, msg_id)


async def test_a_sealed_message_is_delivered_once_and_verifies(servers) -> None:
    a, b = servers["a"], servers["b"]
    sealed = append_hop(message(), signer(a), next_hop=name(b), now_ms=int(time.time() * 1000))
    status, answer = await deliver(signer(a), b, [sealed])
    assert status == 200, answer
    assert answer["results"][0]["recipients"] == {BOB.address: "stored"}
    row = await stored(b, sealed["id"])
    assert [h["server"] for h in row.envelope["integrity_chain"]] == [name(a), name(b)]
    keys = {name(s): [PublishedKey(signer(s).identity.public_key)] for s in (a, b)}
    verify_envelope(row.envelope)
    assert verify_chain(row.envelope, lambda n: keys.get(n, [])).verdict is ChainVerdict.PASS
    # The same transaction again (a retry after a lost answer) changes nothing.
    status, again = await deliver(signer(a), b, [sealed])
    assert again["results"][0]["recipients"] == {BOB.address: "duplicate"}


def forged_by_x(servers: dict[str, RunningServer], content: str) -> dict:
    """a seals a message to x; x alters its content and seals it on to b."""
    a, x, b = servers["a"], servers["x"], servers["b"]
    now = int(time.time() * 1000)
    via_a = append_hop(message(), signer(a), next_hop=name(x), now_ms=now)
    return append_hop({**via_a, "content": content}, signer(x), next_hop=name(b), now_ms=now + 1)


async def test_a_relay_that_alters_content_is_refused_and_struck(servers) -> None:
    a, x, b = servers["a"], servers["x"], servers["b"]
    forged = forged_by_x(servers, "pay mallory instead")
    status, answer = await deliver(signer(x), b, [forged])
    assert status == 200
    result = answer["results"][0]
    assert result["refused"] == "bad_signature" and result["struck"] is True
    assert await stored(b, forged["id"]) is None
    assert (await reputation(b))["strikes"] == {name(x): 1}  # x, and only x
    # b reported it to a (a sealed record of the chain), never to x; a re-proved and counted it.
    sent = list(b.app[PARTS]["reports"].pending)
    assert len(sent) == 1
    await asyncio.gather(*sent)
    assert (await reputation(a))["strikes"] == {name(x): 1}
    assert (await reputation(x))["strikes"] == {}
    await deliver(signer(x), b, [forged])  # the same proof again does not count twice
    assert (await reputation(b))["strikes"] == {name(x): 1}
    assert not b.app[PARTS]["reports"].pending  # nor is it reported again


async def test_a_message_sealed_for_another_server_is_refused_without_blame(servers) -> None:
    a, x, b = servers["a"], servers["x"], servers["b"]
    for_x = append_hop(message(), signer(a), next_hop=name(x), now_ms=int(time.time() * 1000))
    _, answer = await deliver(signer(a), b, [for_x])  # replayed to b
    assert answer["results"][0]["refused"] == "chain_invalid"
    assert answer["results"][0]["struck"] is False
    assert await stored(b, for_x["id"]) is None


async def test_an_unsigned_or_forged_request_is_401_and_stores_nothing(servers) -> None:
    a, b = servers["a"], servers["b"]
    sealed = append_hop(message(), signer(a), next_hop=name(b), now_ms=int(time.time() * 1000))
    impostor = ServerSigner(name(a), Identity.generate())  # a's name, not a's key
    status, answer = await deliver(impostor, b, [sealed])
    assert status == 401 and answer["code"] == "bad_request_signature"
    body = json.dumps({"txn": "1", "from_server": name(a), "messages": [sealed]})
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{b.url}/federation/deliver", data=body) as r,
    ):
        assert r.status == 401 and (await r.json())["code"] == "bad_request_signature"
    assert await stored(b, sealed["id"]) is None


@pytest.mark.parametrize(
    "batch",
    [[], "x", [1] * 101],
)
async def test_a_malformed_batch_is_a_400(servers, batch) -> None:
    a, b = servers["a"], servers["b"]
    status, answer = await deliver(signer(a), b, batch)  # type: ignore[arg-type]
    assert status == 400 and answer["field"] == "messages"


async def reputation(server: RunningServer) -> dict:
    async with aiohttp.ClientSession() as http, http.get(f"{server.url}/integrity/reputation") as r:
        return await r.json()


async def post_report(server: RunningServer, report: dict) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{server.url}/integrity/tamper_report", json=report) as r,
    ):
        return r.status, await r.json()


async def test_a_tamper_report_is_re_proven_before_it_counts(servers) -> None:
    a, x, b = servers["a"], servers["x"], servers["b"]
    now = int(time.time() * 1000)
    forged = forged_by_x(servers, "altered by x")
    offense = find_offense(forged, lambda n: published(servers, n), receiver=name(b))
    report = build_report(offense, signer(b), now_ms=now + 2)
    # a fetches b's and x's keys from their own servers, re-proves it, and counts it once.
    status, answer = await post_report(a, report)
    assert status == 200 and answer["offender"] == name(x) and answer["counted"] is True
    status, again = await post_report(a, report)
    assert again["counted"] is False
    assert (await reputation(a))["strikes"] == {name(x): 1}
    # A report that blames the honest server a for x's seal is refused and counts nothing.
    framed = build_report(
        Offense(offense.kind, name(a), offense.msg_id, offense.proof_id, forged, ""),
        signer(b), now_ms=now + 3,
    )  # fmt: skip
    status, refused = await post_report(x, framed)
    assert status == 400 and refused["code"] == "invalid_proof"
    assert (await reputation(x))["strikes"] == {}


def published(servers: dict[str, RunningServer], server_name: str) -> list[PublishedKey]:
    return [
        PublishedKey(signer(s).identity.public_key)
        for s in servers.values()
        if name(s) == server_name
    ]


async def test_a_batch_larger_than_a_client_request_is_taken_whole(servers) -> None:
    """Up to 100 messages and 8 MiB per transaction, beyond the 256 KiB client limit."""
    a, b = servers["a"], servers["b"]
    now = int(time.time() * 1000)
    words = " ".join(f"word{i}" for i in range(7_000))  # ~60 KB of text that is not spam
    messages = [compose(ALICE, BOB.address, f"{n} {words}", now_ms=now) for n in range(6)]
    big = [append_hop(m.primary, signer(a), next_hop=name(b), now_ms=now) for m in messages]
    status, answer = await deliver(signer(a), b, big)
    assert status == 200, answer
    assert [r.get("recipients") for r in answer["results"]] == [{BOB.address: "stored"}] * 6, (
        answer["results"][-1]
    )


def test_the_sender_splits_transactions_by_size() -> None:
    parts = [b"x" * 400, b"y" * 400, b"z" * 400, b"w" * 2000]
    assert [len(g) for g in _by_size(parts, 1000)] == [2, 1, 1]  # the big one goes alone
    assert b"".join(p for g in _by_size(parts, 1000) for p in g) == b"".join(parts)
