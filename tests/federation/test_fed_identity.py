"""Message identity across servers (PROTOCOL.md §4.5; issue 9 §3, "No oracles, no
squatting"): B names a message by (recipient, sender, id), so a stranger who plants an id
at bob@B first, directly or through another server, blocks nothing. alice@A's real message
with that id, delivered from A's queue, is stored beside the planted one (no 409, no
bounce to alice), and the two stay distinct when bob reads them. Retried batches are still
`duplicate`: idempotency is kept, keyed by sender. Real in-process servers with their
delivery workers (fed_helpers.local_servers)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from federation.fed_helpers import deliver, local_servers, name, signer
from flux.client import AmbiguousId, FluxClient
from flux.protocol import Identity, append_hop, compose
from flux.server.runner import RunningServer

X = "ef" * 16  #: the id the stranger squats
Servers = dict[str, RunningServer]


@pytest.fixture
async def servers(tmp_path: Path):
    """a (alice's server), m (the stranger's server) and b (bob's)."""
    async with local_servers(tmp_path, "amb") as running:
        yield running


@pytest.fixture
def people() -> dict[str, Identity]:
    return {who: Identity.generate() for who in ("alice", "bob", "mallory")}


def now_ms() -> int:
    return int(time.time() * 1000)


def message(sender: Identity, to: Identity, content: str) -> dict[str, Any]:
    return compose(sender, to.address, content, now_ms=now_ms(), message_id=X).primary


async def submit(server: RunningServer, body: dict[str, Any]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.post(server.url + "/send", json=body) as r:
        return r.status, await r.json()


async def queue_settled(server: RunningServer) -> None:
    """Until `server`'s delivery queue holds nothing (its peer answered every batch)."""
    async with asyncio.timeout(20):
        while any(state.queued for state in await server.store.queue_state()):
            await asyncio.sleep(0.02)  # polling a condition, bounded by the timeout


async def through_queue(origin: RunningServer, to: RunningServer, msg: dict, rcpt: str) -> None:
    status, answer = await submit(origin, {"message": msg, "domains": {rcpt: name(to)}})
    assert (status, answer["recipients"]) == (200, {rcpt: "queued"}), answer
    await queue_settled(origin)


async def plant(s: Servers, how: str, planted: dict, bob: Identity) -> None:
    if how == "direct":  # the stranger submits at b itself
        status, answer = await submit(s["b"], planted)
        assert (status, answer["recipients"]) == (200, {bob.address: "stored"}), answer
    else:  # through the stranger's own server m and its queue
        await through_queue(s["m"], s["b"], planted, bob.address)


@pytest.mark.parametrize("how", ["direct", "via_server"])
async def test_a_squatted_id_does_not_block_federated_mail(
    servers: Servers, people: dict[str, Identity], how: str
) -> None:
    a, b = servers["a"], servers["b"]
    alice, bob, mallory = people["alice"], people["bob"], people["mallory"]
    await plant(servers, how, message(mallory, bob, "planted first"), bob)
    await through_queue(a, b, message(alice, bob, "the real one"), bob.address)
    # delivered, not refused: nothing bounced to alice, nothing left or failing in a's queue
    assert await a.store.pending_count(alice.address) == 0
    assert await a.store.queue_state() == []
    real = await b.store.get(bob.address, X, alice.address)
    fake = await b.store.get(bob.address, X, mallory.address)
    assert real is not None and real.envelope["content"] == "the real one"
    assert fake is not None and fake.envelope["content"] == "planted first"
    assert [h["server"] for h in real.envelope["integrity_chain"]] == [name(a), name(b)]
    # bob reads them as two messages: the bare id is ambiguous, `from` chooses
    async with FluxClient(bob, b.url, plain_http_domains=()) as client:
        await client.register()
        with pytest.raises(AmbiguousId) as caught:
            await client.get(X)
        assert caught.value.status == 409 and caught.value.field == "from"
        assert caught.value.candidates == {X: sorted([alice.address, mallory.address])}
        assert (await client.get(X, sender=alice.address))["content"] == "the real one"
        assert (await client.get(X, sender=mallory.address))["content"] == "planted first"


async def test_a_retried_batch_is_still_a_duplicate_per_sender(
    servers: Servers, people: dict[str, Identity]
) -> None:
    a, m, b = servers["a"], servers["m"], servers["b"]
    alice, bob, mallory = people["alice"], people["bob"], people["mallory"]
    original = message(alice, bob, "the real one")
    planted = message(mallory, bob, "planted first")
    await through_queue(m, b, planted, bob.address)
    await through_queue(a, b, original, bob.address)
    # a's answer was lost; it sends the same message again (sealed anew): a duplicate, even
    # though another sender's message under the same id sits in the same mailbox
    for sender, envelope in ((a, original), (m, planted)):
        again = append_hop(envelope, signer(sender), next_hop=name(b), now_ms=now_ms())
        status, answer = await deliver(signer(sender), b, [again])
        assert status == 200, answer
        assert answer["results"][0]["recipients"] == {bob.address: "duplicate"}, answer
    # alice's other body under her own id is still a conflict, refused without blame
    changed = append_hop(
        message(alice, bob, "changed"), signer(a), next_hop=name(b), now_ms=now_ms()
    )
    status, answer = await deliver(signer(a), b, [changed])
    result = answer["results"][0]
    assert (status, result["refused"], result["struck"]) == (200, "conflict", False), answer
    assert (await b.store.get(bob.address, X, alice.address)).envelope["content"] == "the real one"
    assert await b.store.strikes() == []
