"""The delivery queue part of the Store contract (base.py, "the delivery queue"), run
against every implementation through the `store` fixture of conftest.py."""

from __future__ import annotations

import asyncio

from store_helpers import BOB, T0, envelope

from flux.protocol import body_hash
from flux.store.base import Outbound

B, C = "b.example", "c.example"


def outbound(destination: str = B, at: int = T0, **fields) -> Outbound:
    env = envelope(to=BOB, **fields)
    return Outbound(destination, env, body_hash(env), (BOB,), "none", at)


async def test_enqueue_then_lease_in_queue_order(store):
    items = [outbound() for _ in range(5)]
    assert await store.enqueue(items) == [True] * 5
    lease = await store.lease("w1", T0, 60_000, 3)
    assert lease.destination == B and lease.holder == "w1" and lease.attempts == 0
    assert [q.item.envelope["id"] for q in lease.messages] == [i.envelope["id"] for i in items[:3]]
    assert lease.messages[0].item == items[0]  # the row comes back as it went in


async def test_the_same_copy_is_queued_once_per_destination(store):
    item = outbound()
    assert await store.enqueue([item]) == [True]
    assert await store.enqueue([item]) == [False]
    other = Outbound(C, item.envelope, item.body_hash, item.recipients, "none", T0)
    assert await store.enqueue([other, other]) == [True, False]
    assert {s.destination: s.queued for s in await store.queue_state()} == {B: 1, C: 1}


async def test_a_destination_is_held_by_one_worker_until_settled_or_lapsed(store):
    await store.enqueue([outbound(), outbound(C)])
    first = await store.lease("w1", T0, 1_000, 10)
    second = await store.lease("w2", T0, 1_000, 10)
    assert {first.destination, second.destination} == {B, C}
    assert await store.lease("w3", T0, 1_000, 10) is None  # both held
    assert await store.lease("w1", T0, 1_000, 10) is None  # by their own holder too
    lapsed = await store.lease("w3", T0 + 1_000, 1_000, 10)  # a dead worker's lease lapses
    assert lapsed is not None and lapsed.holder == "w3"


async def test_settle_removes_done_and_resets_backoff(store):
    items = [outbound() for _ in range(3)]
    await store.enqueue(items)
    lease = await store.lease("w1", T0, 60_000, 10)
    await store.settle(lease, [lease.messages[0].qid])
    again = await store.lease("w2", T0, 60_000, 10)  # released: another worker may take it
    assert [q.item.envelope["id"] for q in again.messages] == [i.envelope["id"] for i in items[1:]]
    await store.settle(again, [q.qid for q in again.messages])
    assert await store.queue_state() == []
    assert await store.lease("w1", T0, 60_000, 10) is None
    assert await store.next_due() is None


async def test_a_failed_attempt_waits_until_retry_at_and_counts(store):
    await store.enqueue([outbound()])
    lease = await store.lease("w1", T0, 60_000, 10)
    await store.settle(lease, [], retry_at=T0 + 5_000, error="connection refused")
    assert await store.lease("w1", T0 + 4_999, 60_000, 10) is None
    assert await store.next_due() == T0 + 5_000
    (state,) = await store.queue_state()
    assert (state.queued, state.attempts, state.next_attempt_at, state.last_error) == (
        1, 1, T0 + 5_000, "connection refused")  # fmt: skip
    assert state.leased_until == 0 and state.oldest_at == T0
    lease = await store.lease("w1", T0 + 5_000, 60_000, 10)
    assert lease.attempts == 1
    await store.settle(lease, [], retry_at=T0 + 9_000, error="timeout")
    (state,) = await store.queue_state()
    assert state.attempts == 2
    await store.settle(await store.lease("w1", T0 + 9_000, 60_000, 10), [])  # peer answered
    (state,) = await store.queue_state()
    assert (state.attempts, state.next_attempt_at, state.last_error) == (0, 0, None)


async def test_wake_makes_a_waiting_destination_due_now(store):
    await store.enqueue([outbound()])
    await store.settle(await store.lease("w1", T0, 60_000, 10), [], retry_at=T0 + 3_600_000)
    assert await store.lease("w1", T0, 60_000, 10) is None
    assert await store.wake(B) is True
    assert await store.wake(C) is False  # nothing queued there
    assert (await store.lease("w1", T0, 60_000, 10)).destination == B


async def test_concurrent_workers_never_share_a_destination(store):
    await store.enqueue([outbound(f"d{i}.example") for i in range(20)])
    leases = await asyncio.gather(*(store.lease(f"w{i}", T0, 60_000, 10) for i in range(30)))
    taken = [lease.destination for lease in leases if lease is not None]
    assert len(taken) == 20 and len(set(taken)) == 20


async def test_only_the_lease_holder_settles(store):
    """A worker whose lease lapsed and went to another worker changes nothing when it
    settles: not the queue, not the backoff, not the new holder's lease (issue 10 §5)."""
    await store.enqueue([outbound(), outbound()])
    stale = await store.lease("w1#1", T0, 1_000, 10)
    fresh = await store.lease("w2#1", T0 + 1_000, 60_000, 10)  # w1's lease lapsed
    assert fresh is not None
    done = [q.qid for q in stale.messages]
    assert await store.settle(stale, done, retry_at=T0 + 3_600_000, error="timeout") is False
    (state,) = await store.queue_state()
    assert (state.queued, state.attempts, state.next_attempt_at, state.last_error) == (
        2, 0, 0, None)  # fmt: skip
    assert state.leased_until == T0 + 61_000  # still the new holder's
    assert await store.renew(stale, T0 + 2_000, 60_000) is False
    assert await store.settle(fresh, [q.qid for q in fresh.messages]) is True
    assert await store.queue_state() == []
    assert await store.settle(fresh, []) is False  # settled already: once only


async def test_a_renewed_lease_does_not_lapse(store):
    await store.enqueue([outbound()])
    lease = await store.lease("w1#1", T0, 1_000, 10)
    assert await store.renew(lease, T0 + 900, 1_000) is True
    assert await store.lease("w2#1", T0 + 1_500, 1_000, 10) is None  # renewed to T0 + 1_900
    (state,) = await store.queue_state()
    assert state.leased_until == T0 + 1_900
    assert await store.next_due() == T0 + 1_900
    taken = await store.lease("w2#1", T0 + 1_900, 1_000, 10)  # unrenewed, it lapses
    assert taken is not None and taken.holder == "w2#1"
    assert await store.renew(lease, T0 + 2_000, 1_000) is False
    assert await store.settle(lease, [], retry_at=T0 + 9_000, error="x") is False
    assert await store.settle(taken, [], retry_at=T0 + 5_000, error="refused") is True
    (state,) = await store.queue_state()
    assert (state.attempts, state.next_attempt_at, state.last_error) == (1, T0 + 5_000, "refused")
