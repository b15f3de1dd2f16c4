"""The delivery queue is fair between senders (store/_memory_queue.py, "A fair queue";
delivery.py, "Rolling lease"), on real servers on 127.0.0.1 (in this process: the test reads A's
worker), with a memory and a SQLite store.

One sender's flood is queued at A for B, then one message of another sender. The first
lease already carries the other sender's message (second place, not behind the flood),
in a transaction of its own lane, sent beside the flood's instead of after it; the flood
goes in queue order, and every message reaches B exactly once. Order and composition are
asserted, never time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import pytest

from federation.fed_helpers import local_servers, name
from flux.federation.delivery import MAX_BATCH, DeliveryWorker, Settlement, sender_lanes
from flux.protocol import ChainVerdict, Identity, compose
from flux.protocol.envelope import body_hash
from flux.server.app import PARTS
from flux.store.base import Lease, Outbound, Queued

FLOOD = 150  #: more than one lease (and transaction) takes: the single message is 151st


def queued(message: dict, destination: str) -> Outbound:
    return Outbound(destination, message, body_hash(message), (message["to"],),
                    str(ChainVerdict.NONE), int(time.time() * 1000))  # fmt: skip


def watch(worker: DeliveryWorker) -> tuple[list[Lease], list[list[str]]]:
    """The leases `worker` settles and the message ids of each transaction it posts."""
    leases: list[Lease] = []
    transactions: list[list[str]] = []
    counted = worker.on_settled
    post = worker.peers.post

    def settled(lease: Lease, verdict: Settlement) -> None:
        leases.append(lease)
        if counted is not None:
            counted(lease, verdict)

    async def posted(server: str, path: str, body: bytes, *args: Any, **kw: Any) -> Any:
        transactions.append([m["id"] for m in json.loads(body)["messages"]])
        return await post(server, path, body, *args, **kw)

    worker.on_settled = settled
    worker.peers.post = posted  # type: ignore[method-assign]
    return leases, transactions


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_another_senders_message_is_not_queued_behind_a_flood(
    tmp_path: Path, backend: str
) -> None:
    async with local_servers(tmp_path, "ab", backend=backend) as s:
        a, b = s["a"], s["b"]
        worker: DeliveryWorker = a.app[PARTS]["delivery"]
        leases, transactions = watch(worker)
        flooder, other = Identity.generate(), Identity.generate()
        now = int(time.time() * 1000)
        recipients = [Identity.generate().address for _ in range(FLOOD + 1)]  # strangers' share
        flood = [compose(flooder, to, f"bulk {i}", now_ms=now).primary
                 for i, to in enumerate(recipients[:FLOOD])]  # fmt: skip
        single = compose(other, recipients[-1], "just one", now_ms=now).primary
        # one transaction: the whole flood is queued before the other sender's message
        store_a = a.app[PARTS]["store"]
        items = [queued(m, name(b)) for m in [*flood, single]]
        assert await store_a.enqueue(items) == [True] * (FLOOD + 1)
        worker.kick()
        async with asyncio.timeout(60):
            while any(d.queued for d in await store_a.queue_state()):
                await asyncio.sleep(0.05)  # polling the store, bounded by the timeout

        parts = [[q.item.envelope["id"] for q in lease.messages] for lease in leases]
        flood_ids = [m["id"] for m in flood]
        # the first lease takes turns (the flood's oldest, the other sender's one, then the
        # flood: tests/store/test_fair_lease.py), so the other sender's message is in it,
        # in a part (lane) and a transaction of its own, not behind the flood's
        assert [single["id"]] in parts and [single["id"]] in transactions
        assert len({lease.holder for lease in leases}) == 1  # one lease, rolled
        # the flood in order, in transactions of at most MAX_BATCH
        flood_sent = [i for t in transactions if single["id"] not in t for i in t]
        assert flood_sent == flood_ids and all(len(t) <= MAX_BATCH for t in transactions)
        # and B has every message once
        store_b = b.app[PARTS]["store"]
        for message in [*flood, single]:
            (got,) = await store_b.fetch_pending(message["to"], 10)
            assert got.envelope["id"] == message["id"]


def test_sender_lanes_keep_each_sender_in_one_lane_in_order() -> None:
    def q(qid: int, sender: str) -> Queued:
        env = {"from": sender, "id": f"{qid:032x}"}
        return Queued(qid, Outbound("b.example", env, f"h{qid}", ("x",), "none", 0))

    batch = [q(1, "flood"), q(2, "one"), q(3, "flood"), q(4, "two"), q(5, "flood"), q(6, "two")]
    lanes = sender_lanes(batch, 2)
    assert lanes == [[0, 2, 4], [1, 3, 5]]  # the flood alone; the others share a lane
    assert sender_lanes(batch, 1) == [[0, 1, 2, 3, 4, 5]]  # one lane: the lease's order
    assert sender_lanes(batch[:1], 3) == [[0]]  # no empty lane


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_a_failed_lane_does_not_hold_or_bounce_what_the_other_lane_delivered(
    tmp_path: Path, backend: str
) -> None:
    """B answers the other sender's transaction and refuses the flood's (503, answered
    last): the lease settles the delivered message as done and only the flood waits; when
    the flood's retry window runs out, only the flood bounces."""
    async with local_servers(tmp_path, "ab", backend=backend) as s:
        a, b = s["a"], s["b"]
        worker: DeliveryWorker = a.app[PARTS]["delivery"]
        flooder, other = Identity.generate(), Identity.generate()
        now = int(time.time() * 1000)
        flood = [compose(flooder, Identity.generate().address, f"bulk {i}", now_ms=now).primary
                 for i in range(5)]  # fmt: skip
        single = compose(other, Identity.generate().address, "just one", now_ms=now).primary
        flood_ids = {m["id"] for m in flood}
        post = worker.peers.post
        other_lane_answered = asyncio.Event()

        async def refuse_the_flood(server: str, path: str, body: bytes, *args: Any, **kw: Any):
            if flood_ids & {m["id"] for m in json.loads(body)["messages"]}:
                await other_lane_answered.wait()  # B answers the other lane first
                return 503, {"ok": False, "error": "busy", "code": "unavailable"}
            try:
                return await post(server, path, body, *args, **kw)
            finally:
                other_lane_answered.set()

        worker.peers.post = refuse_the_flood  # type: ignore[method-assign]
        settled: list[Settlement] = []
        worker.on_settled = lambda lease, verdict: settled.append(verdict)
        bounced: list[str] = []

        async def bounce(item: Outbound, recipients: Any, reason: str) -> None:
            bounced.append(item.envelope["id"])

        worker.bounces.bounce = bounce  # type: ignore[method-assign]
        store_a = a.app[PARTS]["store"]
        items = [queued(m, name(b)) for m in [*flood, single]]
        assert await store_a.enqueue(items) == [True] * 6
        worker.kick()
        async with asyncio.timeout(30):
            while not any(verdict.retry is not None for verdict in settled):
                await asyncio.sleep(0.05)  # polling, bounded by the timeout
        (got,) = await b.app[PARTS]["store"].fetch_pending(single["to"], 10)
        assert got.envelope["id"] == single["id"]
        # the other lane's part is settled on its own, the flood's with the release
        delivered, waiting = settled
        assert delivered.retry is None and len(delivered.done) == 1 and not delivered.bounces
        assert waiting.retry is not None and not waiting.bounces and not waiting.done
        (queue,) = [d for d in await store_a.queue_state() if d.destination == name(b)]
        assert queue.queued == len(flood)  # the delivered message left the queue

        # the flood's retry window runs out while B still refuses it: the flood bounces,
        # and the message B has is not bounced with it
        worker.policy = dataclasses.replace(worker.policy, retry_window_ms=1)
        await store_a.wake(name(b))
        worker.kick()
        async with asyncio.timeout(30):
            while len(settled) < 3:
                await asyncio.sleep(0.05)
        assert sorted(bounced) == sorted(flood_ids) and single["id"] not in bounced
