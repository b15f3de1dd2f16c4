"""Fair shares between peers, on real in-process servers (issue 10 §2, fair.py).

* A peer past its budget of messages (`peer_messages_per_minute`) is refused with 429
  `rate_limited` and `Retry-After`, while another peer is still served.
* One peer's batches take turns (fair.py PeerTurns): past those in work and waiting, 503
  `unavailable` with `Retry-After`.
* Mail whose signed `expires` is already past, handed on by a peer, is refused for good
  (`invalid_value` naming `expires`), and the sending server's queue bounces it once
  instead of retrying: a real A -> B delivery through A's queue.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from federation.fed_helpers import deliver, local_servers, name, signer
from flux.federation.signing import sign_request
from flux.protocol import ChainVerdict, Identity, ServerSigner, append_hop, compose
from flux.protocol.envelope import body_hash
from flux.server.app import PARTS
from flux.server.fair import SMALL_BATCH, PeerBusy, PeerTurns
from flux.server.runner import RunningServer
from flux.store.base import Outbound

ALICE, BOB = Identity.generate(), Identity.generate()


def sealed(frm: ServerSigner, to: RunningServer, content: str, **fields: Any) -> dict:
    """A message from ALICE to BOB, sealed by `frm` to `to`."""
    now = int(time.time() * 1000)
    msg = compose(ALICE, BOB.address, content, now_ms=now, **fields).primary
    return append_hop(msg, frm, next_hop=name(to), now_ms=now)


async def deliver_with_headers(
    frm: ServerSigner, to: RunningServer, messages: list[dict]
) -> tuple[int, dict[str, str], Any]:
    """As fed_helpers.deliver, with the answer's headers (for Retry-After)."""
    body = json.dumps({"txn": uuid.uuid4().hex, "from_server": frm.name, "messages": messages})
    signed = sign_request(frm, "POST", name(to), "/federation/deliver", body.encode(),
                          now_s=int(time.time()))  # fmt: skip
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{to.url}/federation/deliver", data=body.encode(), headers=signed) as r,
    ):
        return r.status, dict(r.headers), await r.json()


async def test_a_peer_past_its_budget_gets_429_while_another_peer_is_served(
    tmp_path: Path,
) -> None:
    async with local_servers(tmp_path, "acb", peer_messages_per_minute=3) as s:
        a, c, b = signer(s["a"]), signer(s["c"]), s["b"]
        status, answer = await deliver(a, b, [sealed(a, b, f"within budget {n}") for n in range(3)])
        assert status == 200, answer
        assert all("refused" not in r for r in answer["results"])

        status, headers, answer = await deliver_with_headers(a, b, [sealed(a, b, "one more")])
        assert status == 429, answer
        assert answer["code"] == "rate_limited" and answer["field"] == "messages"
        assert int(headers["Retry-After"]) >= 1

        status, answer = await deliver(c, b, [sealed(c, b, "from another peer")])
        assert status == 200, answer
        assert "refused" not in answer["results"][0]
        store = b.app[PARTS]["store"]
        assert len(await store.fetch_pending(BOB.address, 10)) == 4  # a's 3 and c's one


async def test_one_peers_batches_take_turns_and_the_excess_is_told_to_retry() -> None:
    turns = PeerTurns(in_work=1, waiting=1)
    inside = asyncio.Event()
    release = asyncio.Event()

    async def batch() -> None:
        async with turns.turn("peer.example"):
            inside.set()
            await release.wait()

    first = asyncio.create_task(batch())
    await inside.wait()
    second = asyncio.create_task(batch())  # waits its turn
    await asyncio.sleep(0)
    with pytest.raises(PeerBusy) as refused:
        async with turns.turn("peer.example"):
            pytest.fail("a third batch of one peer got a turn")
    assert refused.value.retry_after_s >= 1 and refused.value.code == "unavailable"
    async with turns.turn("other.example"):  # another peer is not kept waiting
        pass
    release.set()
    await asyncio.gather(first, second)
    assert not turns._holders and not turns._turns  # nothing kept for a peer gone quiet


async def test_a_small_batch_is_checked_beside_a_large_one_of_the_same_peer() -> None:
    """Another sender's few messages, sent by the peer's queue in a lane of their own
    while a flood's batch is checked, are not held behind it; a second small batch, and a
    second large one, wait their turn; every batch counts against the waiting cap."""
    turns = PeerTurns(in_work=1, waiting=3)
    inside: dict[str, asyncio.Event] = {}
    release = asyncio.Event()

    async def batch(label: str, size: int | None) -> None:
        async with turns.turn("peer.example", size):
            inside[label].set()
            await release.wait()

    tasks = []
    for label, size in [("large", 100), ("small", SMALL_BATCH), ("small 2", 1), ("large 2", None)]:
        inside[label] = asyncio.Event()
        tasks.append(asyncio.create_task(batch(label, size)))
    async with asyncio.timeout(5):
        await inside["large"].wait()
        await inside["small"].wait()  # beside the large one in work
    await asyncio.sleep(0.05)  # time for a wrong turn to be taken (none may)
    assert not inside["small 2"].is_set() and not inside["large 2"].is_set()
    with pytest.raises(PeerBusy):  # 4 in work or waiting: in_work + waiting
        async with turns.turn("peer.example", 1):
            pytest.fail("past the cap")
    release.set()
    await asyncio.gather(*tasks)
    assert not turns._holders and not turns._turns


async def test_expired_mail_from_a_peer_is_refused_for_good_and_bounced_once(
    tmp_path: Path,
) -> None:
    fast = {"queue_retry_base_s": 0.1, "queue_retry_cap_s": 0.5}
    async with local_servers(tmp_path, "ab", **fast) as s:
        a, b = s["a"], s["b"]
        past = int(time.time() * 1000) - 60_000
        msg = compose(ALICE, BOB.address, "too late", expires=past, now_ms=past - 1000).primary

        # straight from a peer: a final refusal naming `expires`
        status, answer = await deliver(signer(a), b, [append_hop(
            msg, signer(a), next_hop=name(b), now_ms=int(time.time() * 1000))])  # fmt: skip
        assert status == 200, answer
        (result,) = answer["results"]
        assert result["refused"] == "invalid_value" and "expires" in result["error"]
        assert result["struck"] is False  # the sender's own expiry proves nothing of A

        # through A's queue: bounced to ALICE once, never retried
        store_a = a.app[PARTS]["store"]
        item = Outbound(name(b), msg, body_hash(msg), (BOB.address,), str(ChainVerdict.NONE),
                        int(time.time() * 1000))  # fmt: skip
        assert await store_a.enqueue([item]) == [True]
        a.app[PARTS]["delivery"].kick()
        async with asyncio.timeout(20):
            while not (bounces := await store_a.fetch_pending(ALICE.address, 10)):
                await asyncio.sleep(0.05)  # polling the store, bounded by the timeout
        await asyncio.sleep(1.5)  # several retry intervals of this queue: none may bounce again
        bounces += await store_a.fetch_pending(ALICE.address, 10)
        assert len(bounces) == 1
        assert "expires is already past" in bounces[0].envelope["content"]  # B's own words
        assert not any(d.queued for d in await store_a.queue_state())
        assert await b.app[PARTS]["store"].fetch_pending(BOB.address, 10) == []
