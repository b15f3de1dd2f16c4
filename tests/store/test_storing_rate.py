"""The sender's rate, its contacts and the push's NOTIFY in the storing transaction
(store/base.py notes, "Rate and contacts in the storing transaction"; issue 15, aim 3),
run against every store. Each rule is checked twice on PostgreSQL: in a batch its storing
function takes in one call, and in one it leaves to the general way (a reply to a message
of its own batch), whose Python must keep the same rules."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from store_helpers import ALICE, BOB, CAROL, SENDER, T0, envelope, incoming

from flux.store import Incoming, Store, StoreOutcome
from flux.store.base import Announcement, RateBucket, StrangerShare

STORED, DUPLICATE, CONFLICT = StoreOutcome.STORED, StoreOutcome.DUPLICATE, StoreOutcome.CONFLICT
LIMITED = StoreOutcome.RATE_LIMITED
RATE = RateBucket("send:" + SENDER, 60_000, 2)

#: "alone": one message per call; "general": each call's batch also holds a message and
#: its own reply, which PostgreSQL's storing function leaves to the general way
WAYS = ["alone", "general"]


async def store_one(store: Store, inc: Incoming, way: str) -> dict[str, StoreOutcome]:
    """`inc`'s outcomes, stored by `way`."""
    if way == "alone":
        return await store.store_message(inc)
    parent = envelope(**{"from": CAROL, "to": BOB})
    reply = envelope(**{"from": BOB, "to": CAROL, "re": parent["id"]})
    out = await store.store_many([incoming(parent, BOB), incoming(reply, CAROL), inc])
    assert out[:2] == [{BOB: STORED}, {CAROL: STORED}]
    return out[2]


@pytest.mark.parametrize("way", WAYS)
async def test_a_full_bucket_refuses_the_whole_message_and_stores_nothing(store: Store, way):
    sent = [envelope() for _ in range(3)]
    outs = [await store_one(store, incoming(e, ALICE, BOB, rate=RATE), way) for e in sent]
    assert outs == [{ALICE: STORED, BOB: STORED}] * 2 + [{ALICE: LIMITED, BOB: LIMITED}]
    assert await store.get(ALICE, sent[2]["id"], SENDER) is None
    assert await store.get(BOB, sent[2]["id"], SENDER) is None
    # one hit per message stored, whatever its number of recipients
    assert await store.hits_in_window(RATE.bucket, T0 + 10, RATE.window_ms) == 2


@pytest.mark.parametrize("way", WAYS)
async def test_a_replay_or_a_conflict_is_answered_as_such_and_counts_nothing(store: Store, way):
    first, second = envelope(), envelope()
    for e in (first, second):
        assert await store_one(store, incoming(e, rate=RATE), way) == {ALICE: STORED}
    assert await store_one(store, incoming(first, rate=RATE), way) == {ALICE: DUPLICATE}
    other = {**first, "content": "another body"}
    assert await store_one(store, incoming(other, rate=RATE), way) == {ALICE: CONFLICT}
    # a recipient already holding it, and a new one the full bucket refuses
    both = await store_one(store, incoming(first, ALICE, BOB, rate=RATE), way)
    assert both == {ALICE: DUPLICATE, BOB: LIMITED}
    assert await store.hits_in_window(RATE.bucket, T0 + 10, RATE.window_ms) == 2


async def test_a_message_stored_for_nobody_counts_no_hit(store: Store) -> None:
    full = envelope()
    assert await store.store_message(incoming(full, pending_quota=1)) == {ALICE: STORED}
    over = await store.store_message(incoming(envelope(), pending_quota=1, rate=RATE))
    assert over == {ALICE: StoreOutcome.OVER_QUOTA}
    assert await store.hits_in_window(RATE.bucket, T0 + 10, RATE.window_ms) == 0


async def test_the_window_slides_as_count_hit_slides_it(store: Store) -> None:
    for n in range(2):
        e = envelope()
        assert await store.store_message(incoming(e, at=T0 + n, rate=RATE)) == {ALICE: STORED}
    late = envelope()
    refused = await store.store_message(incoming(late, at=T0 + 59_999, rate=RATE))
    assert refused == {ALICE: LIMITED}
    # a hit at t counts while t > now - window (RateLimiter.hit): the one at T0 has left
    later = await store.store_message(incoming(late, at=T0 + 60_000, rate=RATE))
    assert later == {ALICE: STORED}
    # count_hit counts in the same bucket, by the same rule
    assert await store.count_hit(RATE.bucket, T0 + 60_000, RATE.window_ms, RATE.limit) is True


async def test_the_limit_holds_exactly_under_concurrent_stores_and_hits(store: Store) -> None:
    rate = RateBucket("send:" + SENDER, 60_000, 7)
    stores = [store.store_message(incoming(envelope(), at=T0, rate=rate)) for _ in range(20)]
    hits = [store.count_hit(rate.bucket, T0, rate.window_ms, rate.limit) for _ in range(10)]
    results = await asyncio.gather(*stores, *hits)
    stored = sum(r == {ALICE: STORED} for r in results[:20])
    counted = results[20:].count(False)
    assert stored + counted == 7
    assert all(r in ({ALICE: STORED}, {ALICE: LIMITED}) for r in results[:20])


@pytest.mark.parametrize("way", WAYS)
async def test_contacts_are_kept_when_something_is_stored(store: Store, way) -> None:
    refused = incoming(envelope(**{"from": ALICE, "to": BOB}), BOB, pending_quota=0,
                       contacts=(BOB,))  # fmt: skip
    assert await store_one(store, refused, way) == {BOB: StoreOutcome.OVER_QUOTA}
    assert not await store.is_contact(ALICE, BOB)
    kept = incoming(envelope(**{"from": ALICE, "to": BOB}), BOB, contacts=(BOB, CAROL, BOB))
    assert await store_one(store, kept, way) == {BOB: STORED}
    assert await store.is_contact(ALICE, BOB) and await store.is_contact(ALICE, CAROL)
    assert not await store.is_contact(BOB, ALICE)


async def test_contacts_count_for_the_next_message_of_the_same_batch(store: Store) -> None:
    """BOB writes to ALICE; in the same batch, ALICE's mail to BOB is no stranger's."""
    share = StrangerShare(total=0, per_sender=0)  # a stranger gets nothing in
    to_alice = incoming(envelope(**{"from": BOB, "to": ALICE}), ALICE, contacts=(ALICE,))
    to_bob = incoming(envelope(**{"from": ALICE, "to": BOB}), BOB, stranger_share=share)
    assert await store.store_many([to_alice, to_bob]) == [{ALICE: STORED}, {BOB: STORED}]
    stranger = incoming(envelope(**{"from": CAROL, "to": BOB}), BOB, stranger_share=share)
    assert await store.store_message(stranger) == {BOB: StoreOutcome.OVER_STRANGER_SHARE}


@pytest.mark.parametrize("way", WAYS)
async def test_the_announcement_is_ignored_where_no_other_process_listens(store, way) -> None:
    """Memory and SQLite serve one process: the fanout there makes no announcement, and a
    store handed one anyway stores as without it (PostgreSQL NOTIFYs it: next test)."""
    announce = Announcement("flux_test_unheard", {ALICE: "{}"})
    inc = incoming(envelope(), announce=announce)
    assert await store_one(store, inc, way) == {ALICE: STORED}


@pytest.mark.postgres
@pytest.mark.parametrize("way", WAYS)
async def test_postgres_notifies_each_recipient_stored_at_commit(pg_dsn, way) -> None:
    import asyncpg

    from flux.store.postgres import PostgresStore

    channel = "flux_test_" + uuid.uuid4().hex[:16]
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(pg_dsn)
    await listener.add_listener(channel, lambda *args: heard.put_nowait(args[-1]))
    store = PostgresStore(pg_dsn, fresh_schema=True)
    await store.open()
    try:
        payloads = {r: json.dumps({"a": r}) for r in (ALICE, BOB)}
        first = envelope()
        held = await store_one(store, incoming(first, ALICE), way)
        assert held == {ALICE: STORED}
        inc = incoming(first, ALICE, BOB, announce=Announcement(channel, payloads))
        assert await store_one(store, inc, way) == {ALICE: DUPLICATE, BOB: STORED}
        # the call returns after COMMIT, when the NOTIFY is sent: BOB's only
        assert json.loads(await asyncio.wait_for(heard.get(), 10)) == {"a": BOB}
        limited = incoming(
            envelope(), ALICE, announce=Announcement(channel, payloads),
            rate=RateBucket("b", 60_000, 0),
        )  # fmt: skip
        assert await store_one(store, limited, way) == {ALICE: LIMITED}
        await listener.execute("SELECT 1")  # a round trip: a NOTIFY sent would be in by now
        assert heard.empty()
    finally:
        await store.close()
        await listener.close()
