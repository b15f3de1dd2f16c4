"""Operator control of the delivery queue, part of the Store contract (base.py, `hold`,
`hold_messages`, `queued`, `remove_queued`), run against every implementation through the
`store` fixture of conftest.py."""

from __future__ import annotations

from store_helpers import ALICE, BOB, T0, envelope

from flux.protocol import body_hash
from flux.store.base import Outbound, SentMessage

B, C = "b.example", "c.example"


def outbound(destination: str = B, **fields) -> Outbound:
    env = envelope(to=BOB, **fields)
    return Outbound(destination, env, body_hash(env), (BOB,), "none", T0)


async def test_a_held_destination_is_never_leased_until_released(store):
    await store.enqueue([outbound(), outbound(C)])
    assert await store.hold(B, True)
    lease = await store.lease("w1", T0, 60_000, 10)
    assert lease.destination == C
    assert await store.lease("w2", T0, 60_000, 10) is None  # B is held, C is leased
    states = {s.destination: s for s in await store.queue_state()}
    assert states[B].held and not states[C].held and states[B].queued == 1
    await store.settle(lease, [q.qid for q in lease.messages])
    assert await store.next_due() is None  # a held destination is never due
    assert await store.hold(B, False)
    assert await store.next_due() is not None
    assert (await store.lease("w3", T0, 60_000, 10)).destination == B


async def test_hold_of_a_destination_without_mail_is_refused(store):
    assert not await store.hold("nowhere.example", True)


async def test_a_held_message_does_not_block_the_rest_of_its_destination(store):
    items = [outbound() for _ in range(3)]
    await store.enqueue(items)
    first = (await store.queued(B))[0]
    assert await store.hold_messages([first.qid], True) == 1
    lease = await store.lease("w1", T0, 60_000, 10)
    assert [q.item.envelope["id"] for q in lease.messages] == [i.envelope["id"] for i in items[1:]]
    await store.settle(lease, [q.qid for q in lease.messages])
    (state,) = await store.queue_state()
    assert (state.queued, state.held_messages) == (1, 1)  # the operator still sees it
    assert await store.next_due() is None  # only held mail left: nothing is due
    assert await store.lease("w2", T0, 60_000, 10) is None
    assert await store.hold_messages([first.qid], False) == 1
    again = await store.lease("w2", T0, 60_000, 10)
    assert [q.qid for q in again.messages] == [first.qid]


async def test_queued_lists_by_destination_and_by_id_prefix(store):
    items = [outbound(), outbound(C), outbound(C)]
    await store.enqueue(items)
    everything = await store.queued()
    assert [m.item.envelope["id"] for m in everything] == [i.envelope["id"] for i in items]
    assert [m.item.destination for m in await store.queued(C)] == [C, C]
    wanted = items[1].envelope["id"]
    (found,) = await store.queued(id_prefix=wanted)  # the test ids share long prefixes
    assert len(await store.queued(id_prefix=wanted[:8])) == 3
    assert found.item == items[1] and not found.held
    assert await store.queued(id_prefix="ffffffffffffffff") == []
    assert len(await store.queued(limit=2)) == 2


async def test_remove_queued_writes_the_sent_state_and_skips_a_live_lease(store):
    mine = outbound(B, **{"from": ALICE})
    other = outbound(C)
    msg_id = mine.envelope["id"]
    record = SentMessage(ALICE, mine.envelope, T0,
                         {BOB: {"state": "queued", "at": T0, "attempts": 0}}, T0)  # fmt: skip
    await store.enqueue([mine, other], sent=[record])
    qids = {m.item.destination: m.qid for m in await store.queued()}
    lease = await store.lease("w1", T0, 60_000, 10)  # one destination is being sent now
    busy, free = (B, C) if lease.destination == B else (C, B)
    bounced = {BOB: {"state": "bounced", "at": T0 + 1, "reason": "failed by the operator"}}
    removals = [(qids[B], {(ALICE, msg_id): bounced}), (qids[C], {})]
    assert await store.remove_queued(removals, T0 + 1) == [qids[free]]
    await store.settle(lease, [])
    assert await store.remove_queued(removals, T0 + 2) == [qids[busy]]  # lease settled
    assert await store.queue_state() == [] and await store.queued() == []
    assert await store.remove_queued(removals, T0 + 3) == []  # gone already
    sent = await store.sent_message(ALICE, msg_id)
    assert sent.delivery[BOB]["state"] == "bounced"
    assert sent.delivery[BOB]["reason"] == "failed by the operator"
