"""A rolling lease of the delivery queue (base.py `lease_more`, `settle(release=False)`):
the holder of a destination takes more of its mail, in the fair order of `lease`
(_memory_queue.py, "A fair queue"), as its lanes free up, settles each part and releases
the lease at the end. Run against every store through the `store` fixture."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from store_helpers import ALICE, BOB, T0, envelope

from flux.protocol import body_hash
from flux.store import MemoryStore
from flux.store.base import Outbound, SentMessage

B, C = "b.example", "c.example"
FLOOD, OTHER, THIRD = "fx1" + "f" * 40, "fx1" + "e" * 40, "fx1" + "d" * 40


def copy(sender: str, destination: str = B) -> Outbound:
    env = envelope(id=uuid.uuid4().hex, **{"from": sender, "to": BOB})
    return Outbound(destination, env, body_hash(env), (BOB,), "none", T0)


def ids(queued) -> list[str]:
    return [q.item.envelope["id"] for q in queued]


def want(*items: Outbound) -> list[str]:
    return [m.envelope["id"] for m in items]


async def state(store):
    (s,) = [s for s in await store.queue_state() if s.destination == B]
    return s


async def test_more_comes_in_the_fair_order_leaving_out_what_is_in_flight(store):
    a = [copy(FLOOD) for _ in range(4)]
    b = [copy(OTHER) for _ in range(2)]
    c = [copy(THIRD)]
    await store.enqueue([a[0], a[1], b[0], a[2], a[3], b[1], c[0]])
    lease = await store.lease("w1#1", T0, 60_000, 2)
    assert ids(lease.messages) == want(a[0], b[0])
    flight = [q.qid for q in lease.messages]
    more = await store.lease_more(lease, T0 + 10, 60_000, 10, exclude=flight)
    # the turns are counted after the exclusions: a1 is a's first turn now
    assert ids(more) == want(a[1], b[1], c[0], a[2], a[3])
    assert [q.item for q in more] == [a[1], b[1], c[0], a[2], a[3]]  # whole copies
    assert ids(await store.lease_more(lease, T0 + 10, 60_000, 2, exclude=flight)) == want(
        a[1], b[1])  # fmt: skip
    # settled copies leave; nothing excluded: the in-flight copies come again (the caller
    # says what is in flight)
    assert await store.settle(lease, flight, release=False) is True
    assert ids(await store.lease_more(lease, T0 + 20, 60_000, 3)) == want(a[1], b[1], c[0])
    assert await store.lease_more(lease, T0 + 20, 60_000, 0) == []


async def test_an_excluded_flood_still_yields_its_next_copies(store):
    size = 500 if isinstance(store, MemoryStore) else 10_000  # memory's enqueue is O(n) a copy
    flood = [copy(FLOOD) for _ in range(size)]
    other = [copy(OTHER) for _ in range(3)]
    await store.enqueue(flood + other)
    lease = await store.lease("w1#1", T0, 60_000, 200)
    assert ids(lease.messages[:4]) == want(flood[0], other[0], flood[1], other[1])
    # the flood's first 200 in flight (more than the limit): its next ones still come
    flight = [q.qid for q in (await store.queued(B, None, 200))]
    started = time.monotonic()
    more = await store.lease_more(lease, T0 + 1, 60_000, 100, exclude=flight)
    elapsed = time.monotonic() - started
    # turn 1 of each sender, by qid, then turn 2...: the flood's 201st copy is its turn 1
    assert ids(more) == want(flood[200], other[0], flood[201], other[1], flood[202], other[2],
                             *flood[203:297])  # fmt: skip
    assert elapsed < 1.0  # bounded like FAIR_LEASE: no numbering of the whole flood
    # the flood's sender skipped: only the others', and fast as well
    flight = [q.qid for q in more]
    rest = await store.lease_more(lease, T0 + 2, 60_000, 100, skip_senders=[OTHER])
    assert ids(rest) == want(*flood[:100])
    assert await store.lease_more(
        lease, T0 + 2, 60_000, 100, skip_senders=[FLOOD], exclude=flight) == []  # fmt: skip


async def test_skip_senders(store):
    a = [copy(FLOOD) for _ in range(3)]
    b = [copy(OTHER) for _ in range(2)]
    c = [copy(THIRD)]
    await store.enqueue([a[0], b[0], a[1], c[0], b[1], a[2]])
    lease = await store.lease("w1#1", T0, 60_000, 1)
    more = store.lease_more
    assert ids(await more(lease, T0, 60_000, 10, skip_senders=[FLOOD])) == want(b[0], c[0], b[1])
    assert ids(await more(lease, T0, 60_000, 10, skip_senders={FLOOD, THIRD})) == want(*b)
    assert await more(lease, T0, 60_000, 10, skip_senders=[FLOOD, OTHER, THIRD]) == []
    assert ids(await more(
        lease, T0, 60_000, 10, skip_senders=[OTHER, THIRD],
        exclude=[q.qid for q in lease.messages])) == want(a[1], a[2])  # fmt: skip
    assert ids(await more(lease, T0, 60_000, 10, skip_senders=["fx1" + "0" * 40])) == want(
        a[0], b[0], c[0], a[1], b[1], a[2])  # fmt: skip


async def test_held_messages_and_a_held_destination(store):
    a = [copy(FLOOD) for _ in range(3)]
    b = copy(OTHER)
    await store.enqueue([*a, b])
    lease = await store.lease("w1#1", T0, 1_000, 1)
    held = [q.qid for q in await store.queued(B, None, 10) if q.item in (a[1], b)]
    assert await store.hold_messages(held, True) == 2
    assert ids(await store.lease_more(lease, T0, 1_000, 10)) == want(a[0], a[2])
    # the operator holds the destination: nothing more goes, the lease is kept and renewed
    assert await store.hold(B, True) is True
    assert await store.lease_more(lease, T0 + 500, 1_000, 10) == []
    s = await state(store)
    assert s.held and s.leased_until == T0 + 1_500
    assert await store.lease("w2#1", T0 + 1_200, 1_000, 10) is None
    assert await store.settle(lease, [lease.messages[0].qid]) is True
    s = await state(store)
    assert (s.queued, s.leased_until, s.attempts) == (3, 0, 0)
    assert await store.lease_more(lease, T0 + 600, 1_000, 10) is None  # released


async def test_not_held_any_more_is_none_and_changes_nothing(store):
    await store.enqueue([copy(FLOOD), copy(OTHER)])
    stale = await store.lease("w1#1", T0, 1_000, 1)
    fresh = await store.lease("w2#1", T0 + 1_000, 60_000, 1)  # w1's lease lapsed
    assert fresh is not None and fresh.holder == "w2#1"
    assert await store.lease_more(stale, T0 + 1_001, 60_000, 10) is None
    s = await state(store)
    assert s.leased_until == T0 + 61_000  # still the new holder's, not renewed for w1
    assert len(await store.lease_more(fresh, T0 + 1_001, 60_000, 10)) == 2
    assert await store.settle(fresh, []) is True  # released
    assert await store.lease_more(fresh, T0 + 1_002, 60_000, 10) is None
    s = await state(store)
    assert (s.queued, s.leased_until) == (2, 0)
    taken = await store.lease("w3#1", T0 + 1_002, 60_000, 10)
    assert taken is not None and await store.lease_more(stale, T0 + 1_003, 60_000, 10) is None


async def test_lease_more_renews_the_lease(store):
    await store.enqueue([copy(FLOOD)])
    lease = await store.lease("w1#1", T0, 1_000, 10)
    assert ids(await store.lease_more(lease, T0 + 900, 1_000, 10)) == ids(lease.messages)
    assert (await state(store)).leased_until == T0 + 1_900
    assert await store.next_due() == T0 + 1_900
    assert await store.lease("w2#1", T0 + 1_500, 1_000, 10) is None  # renewed
    assert await store.lease_more(lease, T0 + 1_800, 1_000, 10) is not None
    assert await store.lease("w2#1", T0 + 2_500, 1_000, 10) is None
    taken = await store.lease("w2#1", T0 + 2_800, 1_000, 10)  # unrenewed, it lapses
    assert taken is not None and await store.lease_more(lease, T0 + 2_800, 1_000, 10) is None


def sent_record(env: dict) -> SentMessage:
    queued = {"state": "queued", "at": T0, "attempts": 0, "next_retry_at": T0, "error": None}
    return SentMessage(env["from"], env, T0, {env["to"]: queued}, T0)


async def test_a_partial_settle_keeps_the_lease_and_the_backoff(store):
    items = [copy(ALICE) for _ in range(3)]
    await store.enqueue(items, sent=[sent_record(dict(i.envelope)) for i in items])
    first = await store.lease("w1#1", T0, 60_000, 10)
    await store.settle(first, [], retry_at=T0 + 1_000, error="refused")  # a backoff to keep
    lease = await store.lease("w1#2", T0 + 1_000, 60_000, 1)
    assert lease.attempts == 1 and ids(lease.messages) == want(items[0])
    done = {BOB: {"state": "delivered", "at": T0 + 1_100}}
    key = (ALICE, items[0].envelope["id"])
    qid = lease.messages[0].qid
    assert await store.settle(lease, [qid], delivery={key: done}, release=False) is True
    s = await state(store)
    assert (s.queued, s.attempts, s.next_attempt_at, s.last_error, s.leased_until) == (
        2, 1, T0 + 1_000, "refused", T0 + 61_000)  # fmt: skip
    got = await store.sent_message(*key)
    assert got.delivery == done and got.updated_at == T0 + 1_100
    assert await store.lease("w2#1", T0 + 2_000, 60_000, 10) is None  # still held
    # a stale holder's partial settle changes nothing
    assert await store.settle(first, [q.qid for q in first.messages], release=False) is False
    assert (await state(store)).queued == 2
    more = await store.lease_more(lease, T0 + 2_000, 60_000, 10, exclude=[qid])
    assert ids(more) == want(items[1], items[2])  # the settled copy is gone
    assert await store.settle(lease, [more[0].qid], release=False) is True
    # the final settle releases, as today: the peer answered, so the backoff resets
    assert await store.settle(lease, [more[1].qid]) is True
    assert await store.queue_state() == []
    assert await store.settle(lease, [], release=False) is False  # settled already


async def test_a_final_retry_after_parts_counts_one_attempt(store):
    items = [copy(FLOOD) for _ in range(3)]
    await store.enqueue(items)
    lease = await store.lease("w1#1", T0, 60_000, 1)
    assert await store.settle(lease, [lease.messages[0].qid], release=False) is True
    more = await store.lease_more(lease, T0 + 1, 60_000, 10)
    assert ids(more) == want(items[1], items[2])
    assert await store.settle(lease, [more[0].qid], retry_at=T0 + 5_000, error="timeout") is True
    s = await state(store)
    assert (s.queued, s.attempts, s.next_attempt_at, s.last_error, s.leased_until) == (
        1, 1, T0 + 5_000, "timeout", 0)  # fmt: skip
    assert await store.lease("w2#1", T0 + 4_999, 60_000, 10) is None
    again = await store.lease("w2#1", T0 + 5_000, 60_000, 10)
    assert ids(again.messages) == want(items[2]) and again.attempts == 1


async def test_a_partial_settle_takes_no_retry(store):
    await store.enqueue([copy(FLOOD)])
    lease = await store.lease("w1#1", T0, 60_000, 10)
    qid = lease.messages[0].qid
    with pytest.raises(ValueError):
        await store.settle(lease, [qid], retry_at=T0 + 5_000, release=False)
    with pytest.raises(ValueError):
        await store.settle(lease, [qid], error="timeout", release=False)
    s = await state(store)  # nothing changed
    assert (s.queued, s.attempts, s.leased_until) == (1, 0, T0 + 60_000)


async def test_another_worker_never_claims_a_rolling_lease(store):
    """A rolling lease renewed by lease_more as it lapses, against other workers' leases at
    the same moment: each destination goes to one of them, never both."""
    n = 12
    for i in range(n):
        await store.enqueue([copy(FLOOD, f"d{i}.example"), copy(OTHER, f"d{i}.example")])
    rolling = []
    for i in range(n):
        rolling.append(await store.lease(f"r{i}#1", T0, 1_000, 1))
    assert len({r.destination for r in rolling}) == n
    # at T0 + 1_000 every lease has lapsed: a renewal and a claim race for each destination
    at = T0 + 1_000
    calls = [
        call for i, r in enumerate(rolling)
        for call in (store.lease_more(r, at, 60_000, 10), store.lease(f"w{i}#1", at, 60_000, 10))
    ]  # fmt: skip
    results = await asyncio.gather(*calls)
    mores, claims = results[0::2], results[1::2]
    renewed = {r.destination for r, more in zip(rolling, mores, strict=True) if more is not None}
    claimed = [lease.destination for lease in claims if lease is not None]
    assert len(set(claimed)) == len(claimed)
    assert renewed.isdisjoint(claimed) and renewed | set(claimed) == {
        r.destination for r in rolling}  # fmt: skip
    # a renewed rolling lease holds: later claims find nothing of it, and only its holder
    # settles it
    assert await store.lease("late#1", at + 30_000, 60_000, 10) is None
    for r, more in zip(rolling, mores, strict=True):
        assert await store.settle(r, [], release=False) is (more is not None)
    # renewed again and again (each time before it lapses) while other workers keep trying
    kept = [r for r in rolling if r.destination in renewed]
    for k in range(1, 4):
        now = at + k * 50_000  # the last renewal holds until now + 10_000
        got = await asyncio.gather(*(
            call for i, r in enumerate(kept)
            for call in (store.lease_more(r, now, 60_000, 10),
                         store.lease(f"x{k}.{i}#1", now + 5_000, 60_000, 10))
        ))  # fmt: skip
        assert None not in got[0::2]
        assert not renewed & {lease.destination for lease in got[1::2] if lease is not None}
