"""Mail another server hands on (server/submission.py `accept_batch`): one answer per
message, in the batch's order, each refused or accepted on its own, through real
POST /federation/deliver requests between FLUX servers running in this process.
"""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import pytest

from federation.fed_helpers import deliver, local_servers, name, signer
from flux.protocol import Identity, ServerSigner, append_hop, compose
from flux.server.submission import CHECKED_ALONE

ALICE, BOB, CAROL = Identity.generate(), Identity.generate(), Identity.generate()


@pytest.fixture
async def servers(tmp_path: Path):
    async with local_servers(tmp_path, ("a", "b")) as running:
        yield running


def now_ms() -> int:
    return int(time.time() * 1000)


def sealed(a, b, content: str, *, to: Identity = BOB, message_id: str | None = None) -> dict:
    msg = compose(ALICE, to.address, content, now_ms=now_ms(), message_id=message_id).primary
    return append_hop(msg, signer(a), next_hop=name(b), now_ms=now_ms())


async def test_one_batch_cannot_store_one_id_twice_with_two_bodies(servers) -> None:
    """The store's own dedupe decides between messages of one batch (they are planned
    together, then stored in one transaction): the second is the sender's conflict."""
    a, b = servers["a"], servers["b"]
    first = sealed(a, b, "the first body")
    second = sealed(a, b, "another body", message_id=first["id"])
    third = sealed(a, b, "after the conflict, another message")
    status, answer = await deliver(signer(a), b, [first, second, third])
    assert status == 200, answer
    stored, refused, after = answer["results"]
    assert stored["recipients"] == after["recipients"] == {BOB.address: "stored"}
    assert (refused["refused"], refused["error"], refused["struck"]) == (
        "conflict", "you already sent a message with this id and another body", False)  # fmt: skip
    row = await b.store.get(BOB.address, first["id"])
    assert row.envelope["content"] == "the first body"


async def test_each_message_of_a_batch_is_answered_in_order(servers) -> None:
    """Refused before planning (a seal for another server, a chain that is not a list),
    refused by the plan (already expired) or accepted: each on its own, in order."""
    a, b = servers["a"], servers["b"]
    good = sealed(a, b, "good one")
    for_someone_else = append_hop(
        compose(ALICE, BOB.address, "sealed for c", now_ms=now_ms()).primary,
        signer(a), next_hop="c.example", now_ms=now_ms(),
    )  # fmt: skip
    not_a_list = {**sealed(a, b, "a chain that is a string"), "integrity_chain": "abc"}
    expired = append_hop(
        compose(ALICE, BOB.address, "too late", now_ms=now_ms(), expires=now_ms() - 1).primary,
        signer(a), next_hop=name(b), now_ms=now_ms(),
    )  # fmt: skip
    also_good = sealed(a, b, "good two", to=CAROL)
    batch = [good, for_someone_else, not_a_list, expired, also_good]
    status, answer = await deliver(signer(a), b, batch)
    assert status == 200, answer
    results = answer["results"]
    assert [r["id"] for r in results] == [m["id"] for m in batch]
    assert results[0]["recipients"] == {BOB.address: "stored"}
    assert (results[1]["refused"], results[1]["error"]) == (
        "chain_invalid",
        f"the last hop is not {name(a)}'s seal handing this message to this server",
    )
    assert results[2]["refused"] and results[2]["struck"] is False
    assert (results[3]["refused"], results[3]["error"]) == (
        "invalid_value", "expires is already past: this message could never be read")  # fmt: skip
    assert results[4]["recipients"] == {CAROL.address: "stored"}
    # the stored copies carry b's own hop after a's seal
    row = await b.store.get(CAROL.address, also_good["id"])
    chain = row.envelope["integrity_chain"]
    assert [(h["server"], h["next"], h["cv"]) for h in chain[-1:]] == [(name(b), "local", "pass")]


async def test_a_batch_checked_in_two_halves_is_answered_in_order(servers) -> None:
    """A batch larger than CHECKED_ALONE is checked in two worker threads: refusals at
    either end of each half come back at their own places, and the accepted messages are
    stored in batch order."""
    a, b = servers["a"], servers["b"]
    size = 2 * CHECKED_ALONE + 3
    middle = (size + 1) // 2
    refused_at = {0, middle - 1, middle, size - 1}
    batch = [
        append_hop(
            compose(ALICE, BOB.address, f"sealed for c {i}", now_ms=now_ms()).primary,
            signer(a), next_hop="c.example", now_ms=now_ms(),
        ) if i in refused_at else sealed(a, b, f"message {i} of the batch")
        for i in range(size)
    ]  # fmt: skip
    status, answer = await deliver(signer(a), b, batch)
    assert status == 200, answer
    results = answer["results"]
    assert [r["id"] for r in results] == [m["id"] for m in batch]
    assert {i for i, r in enumerate(results) if r.get("refused")} == refused_at
    assert all(results[i]["refused"] == "chain_invalid" for i in refused_at)
    stored = [r for i, r in enumerate(results) if i not in refused_at]
    assert all(r["recipients"] == {BOB.address: "stored"} for r in stored)
    for i, msg in enumerate(batch):
        held = await b.store.get(BOB.address, msg["id"])
        assert (held is None) == (i in refused_at)


async def test_a_peers_mail_neither_counts_nor_is_held_to_the_senders_rate_budget(
    tmp_path,
) -> None:
    """Rate-limited by the sender's own server when it was submitted: a queue that
    flushes after an outage is not a burst (PROTOCOL.md §8.2). Handed on by a peer, the
    sender's mail is not counted here, and not refused when its budget here is spent."""
    async with local_servers(tmp_path, ("a", "b"), spam_rate_per_minute=2) as running:
        a, b = running["a"], running["b"]

        async def relayed(n: int) -> list:
            batch = [sealed(a, b, f"queued message {n}.{i}") for i in range(n)]
            status, answer = await deliver(signer(a), b, batch)
            assert status == 200, answer
            return [r.get("recipients") for r in answer["results"]]

        assert await relayed(3) == [{BOB.address: "stored"}] * 3

        async def direct(content: str) -> tuple[int, dict]:
            msg = compose(ALICE, BOB.address, content, now_ms=now_ms()).primary
            async with aiohttp.ClientSession() as http, http.post(b.url + "/send", json=msg) as r:
                return r.status, await r.json()

        for n in range(2):  # the budget here is intact: alice's own two submissions fit
            assert (await direct(f"direct {n}"))[0] == 200
        status, body = await direct("one too many")
        assert (status, body["reasons"]) == (451, ["rate limit exceeded"])
        assert await relayed(2) == [{BOB.address: "stored"}] * 2  # spent here: still taken


async def test_a_chain_that_is_a_number_is_refused_for_that_message_only(servers) -> None:
    a, b = servers["a"], servers["b"]
    number = {**sealed(a, b, "a chain that is a number"), "integrity_chain": 5}
    good = sealed(a, b, "good")
    status, answer = await deliver(signer(a), b, [number, good])
    assert status == 200, answer
    assert answer["results"][0]["refused"]
    assert answer["results"][1]["recipients"] == {BOB.address: "stored"}


async def test_a_last_seal_under_a_key_the_peer_does_not_publish_is_not_its_seal(servers) -> None:
    """The peer's seal counts only under the keys it publishes (PROTOCOL.md §7.4 step 1):
    a hop in its name signed with another key is refused as not its seal."""
    a, b = servers["a"], servers["b"]
    impostor = ServerSigner(name(a), Identity.generate())
    msg = compose(ALICE, BOB.address, "sealed by an impostor", now_ms=now_ms()).primary
    forged = append_hop(msg, impostor, next_hop=name(b), now_ms=now_ms())
    status, answer = await deliver(signer(a), b, [forged])
    assert status == 200, answer
    (result,) = answer["results"]
    assert (result["refused"], result["error"]) == (
        "chain_invalid",
        f"the last hop is not {name(a)}'s seal handing this message to this server",
    )
    assert await b.store.get(BOB.address, forged["id"]) is None


async def test_every_earlier_seal_must_verify_under_its_servers_published_key(
    tmp_path: Path,
) -> None:
    """x's own seal is genuine, but the earlier hop in a's name was signed with another
    key: the chain does not verify under the keys each server publishes, refused."""
    async with local_servers(tmp_path, ("a", "x", "b")) as running:
        a, x, b = running["a"], running["x"], running["b"]
        impostor = ServerSigner(name(a), Identity.generate())
        msg = compose(ALICE, BOB.address, "a's name, not a's key", now_ms=now_ms()).primary
        via_fake_a = append_hop(msg, impostor, next_hop=name(x), now_ms=now_ms())
        via_x = append_hop(via_fake_a, signer(x), next_hop=name(b), now_ms=now_ms())
        status, answer = await deliver(signer(x), b, [via_x])
        assert status == 200, answer
        assert answer["results"][0]["refused"] == "chain_invalid"
        assert await b.store.get(BOB.address, via_x["id"]) is None


async def test_a_peer_is_blamed_only_by_its_own_seal_not_by_one_it_copied(
    tmp_path: Path,
) -> None:
    """a sealed a forgery to b; x copies that sealed message and hands it to b itself.
    Refused (its signature fails), and nobody is struck: a's seal would prove a's
    offense only to the server a handed it to, and x is not a (a copied record can only be
    refused, never make b blame its sealer; PROTOCOL.md §7.4)."""
    async with local_servers(tmp_path, ("a", "x", "b")) as running:
        a, x, b = running["a"], running["x"], running["b"]
        msg = compose(ALICE, BOB.address, "pay 10", now_ms=now_ms()).primary
        forged_by_a = append_hop({**msg, "content": "pay 1000"}, signer(a), next_hop=name(b),
                                 now_ms=now_ms())  # fmt: skip
        status, answer = await deliver(signer(x), b, [forged_by_a])
        assert status == 200, answer
        (result,) = answer["results"]
        assert (result["refused"], result["struck"]) == ("bad_signature", False)
        assert await b.store.strikes() == []
        # handed on by a itself, the same seal proves a's offense
        status, answer = await deliver(signer(a), b, [forged_by_a])
        assert answer["results"][0]["struck"] is True
        assert [s.offender for s in await b.store.strikes()] == [name(a)]
