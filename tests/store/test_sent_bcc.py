"""One sent record per message, BCC copies included (base.py, "One sent record per
message", `merge_sent`), against every store through the `store` fixture.

A message with BCC is submitted as the primary (to + cc, no `bcc`) and one copy per BCC
address, all sharing one id (PROTOCOL.md §5.2). Whichever copy comes first creates the
record; the others add their recipients to its delivery state, the primary's envelope is
the one kept, a replay changes nothing, and the delivery worker's settlements reach the
BCC recipients' entries too.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from store_helpers import ALICE, BOB, CAROL, T0, envelope, incoming

from flux.protocol import body_hash
from flux.store.base import ChangeKind, Outbound, SentMessage, StoreOutcome, merge_sent

DAVE = "fx1" + "d" * 40
B, C = "b.example", "c.example"


def message(*, cc: tuple[str, ...] = ()) -> dict:
    """A primary envelope from ALICE to BOB (and `cc`)."""
    fields = {"from": ALICE, "to": BOB, "id": uuid.uuid4().hex}
    if cc:
        fields["cc"] = list(cc)
    return envelope(**fields)


def bcc_copy(primary: dict, address: str) -> dict:
    """The copy of `primary` for one BCC address: its fields plus `bcc`, signed again."""
    return {**primary, "bcc": [address], "sig": f"sig-for-{address[:8]}"}


def queued(at: int) -> dict:
    return {"state": "queued", "at": at, "attempts": 0, "next_retry_at": at, "error": None}


def stored(at: int) -> dict:
    return {"state": "stored", "at": at}


def record(env: dict, at: int, **delivery: dict) -> SentMessage:
    return SentMessage(ALICE, env, at, delivery, at)


def outbound(env: dict, destination: str, *recipients: str) -> Outbound:
    return Outbound(destination, env, body_hash(env), recipients, "none", T0)


async def test_bcc_copies_after_the_primary_join_its_record(store):
    primary = message(cc=(DAVE,))
    copy = bcc_copy(primary, CAROL)
    await store.enqueue([outbound(primary, B, BOB, DAVE)],
                        sent=[record(primary, T0, **{BOB: queued(T0), DAVE: queued(T0)})])  # fmt: skip
    state = await store.state(ALICE)
    assert await store.enqueue([outbound(copy, C, CAROL)], sent=[record(copy, T0 + 3, **{CAROL: queued(T0 + 3)})]) == [True]  # fmt: skip
    kept = await store.sent_message(ALICE, primary["id"])
    assert kept.delivery == {BOB: queued(T0), DAVE: queued(T0), CAROL: queued(T0 + 3)}
    assert dict(kept.envelope) == primary  # the primary's: no `bcc`
    assert (kept.sent_at, kept.updated_at) == (T0, T0 + 3)
    # one message in the sent list, its change in the sender's /changes
    assert [m.id for m in await store.sent(ALICE, 10)] == [primary["id"]]
    found = await store.changes(ALICE, state, 10)
    assert [(c.msg_id, c.kind, c.sender) for c in found.changes] == [
        (primary["id"], ChangeKind.SENT, ALICE)
    ]


async def test_a_bcc_copy_first_stands_in_until_the_primary_arrives(store):
    primary = message()
    carol, dave = bcc_copy(primary, CAROL), bcc_copy(primary, DAVE)
    await store.enqueue([outbound(carol, C, CAROL)], sent=[record(carol, T0, **{CAROL: queued(T0)})])  # fmt: skip
    first = await store.sent_message(ALICE, primary["id"])
    assert dict(first.envelope) == carol and first.delivery == {CAROL: queued(T0)}
    # a second BCC copy: its recipient joins, the first copy's envelope stays for now
    await store.enqueue([outbound(dave, B, DAVE)], sent=[record(dave, T0 + 1, **{DAVE: queued(T0 + 1)})])  # fmt: skip
    second = await store.sent_message(ALICE, primary["id"])
    assert dict(second.envelope) == carol
    assert second.delivery == {CAROL: queued(T0), DAVE: queued(T0 + 1)}
    # the primary, stored here for BOB (the storing transaction's path): its envelope is kept
    sent = record(primary, T0 + 2, **{BOB: stored(T0 + 2)})
    (outcome,) = await store.store_many([incoming(primary, BOB, sent=sent)])
    assert outcome == {BOB: StoreOutcome.STORED}
    kept = await store.sent_message(ALICE, primary["id"])
    assert dict(kept.envelope) == primary and "bcc" not in kept.to_wire()
    assert kept.delivery == {CAROL: queued(T0), DAVE: queued(T0 + 1), BOB: stored(T0 + 2)}
    assert (kept.sent_at, kept.updated_at) == (T0, T0 + 2)
    assert [m.id for m in await store.sent(ALICE, 10)] == [primary["id"]]


async def test_a_replay_of_any_copy_changes_nothing(store):
    primary = message()
    copy = bcc_copy(primary, CAROL)
    await store.record_sent([record(primary, T0, **{BOB: stored(T0)})])
    await store.enqueue([outbound(copy, C, CAROL)], sent=[record(copy, T0 + 1, **{CAROL: queued(T0 + 1)})])  # fmt: skip
    before = await store.sent_message(ALICE, primary["id"])
    state = await store.state(ALICE)
    # the same copies again, with other states: none overwrites a kept recipient's
    await store.enqueue([outbound(copy, C, CAROL)], sent=[record(copy, T0 + 9, **{CAROL: stored(T0 + 9)})])  # fmt: skip
    await store.record_sent([record(primary, T0 + 9, **{BOB: queued(T0 + 9)})])
    await store.record_sent([record(copy, T0 + 9, **{BOB: queued(T0 + 9)})])
    assert await store.sent_message(ALICE, primary["id"]) == before
    assert await store.state(ALICE) == state  # and no change was written


async def test_another_message_under_the_same_id_is_not_merged(store):
    primary = message()
    await store.record_sent([record(primary, T0, **{BOB: stored(T0)})])
    other = {**bcc_copy(primary, CAROL), "content": "another message, same id"}
    await store.record_sent([record(other, T0 + 1, **{CAROL: stored(T0 + 1)})])
    kept = await store.sent_message(ALICE, primary["id"])
    assert dict(kept.envelope) == primary and kept.delivery == {BOB: stored(T0)}


async def test_settlements_move_a_bcc_recipient_from_queued_to_delivered_or_bounced(store):
    primary = message()
    carol, dave = bcc_copy(primary, CAROL), bcc_copy(primary, DAVE)
    await store.enqueue([outbound(primary, B, BOB)], sent=[record(primary, T0, **{BOB: queued(T0)})])  # fmt: skip
    await store.enqueue(
        [outbound(carol, C, CAROL), outbound(dave, B, DAVE)],
        sent=[record(carol, T0, **{CAROL: queued(T0)}), record(dave, T0, **{DAVE: queued(T0)})],
    )
    key = (ALICE, primary["id"])
    # C first: CAROL's copy is delivered
    state = await store.state(ALICE)
    lease = await store.lease("w1", T0, 60_000, 10)
    assert lease.destination == B  # B's mail came first; take it back and settle C first
    assert await store.settle(lease, [], retry_at=T0 + 50, error="down", delivery={key: {
        BOB: {"state": "queued", "at": T0 + 1, "attempts": 1, "next_retry_at": T0 + 50,
              "error": "down"},
        DAVE: {"state": "queued", "at": T0 + 1, "attempts": 1, "next_retry_at": T0 + 50,
               "error": "down"},
    }})  # fmt: skip
    lease = await store.lease("w2", T0 + 2, 60_000, 10)
    assert lease.destination == C
    delivered = {"state": "delivered", "at": T0 + 2}
    assert await store.settle(lease, [q.qid for q in lease.messages], delivery={key: {CAROL: delivered}})  # fmt: skip
    got = await store.sent_message(ALICE, primary["id"])
    assert got.delivery[CAROL] == delivered and got.delivery[DAVE]["attempts"] == 1
    assert got.updated_at == T0 + 2
    # then B answers: BOB delivered, DAVE (a BCC copy there) bounced
    lease = await store.lease("w3", T0 + 60, 60_000, 10)
    assert lease.destination == B and len(lease.messages) == 2
    bounced = {"state": "bounced", "at": T0 + 60, "reason": "the receiving server does not host this address"}  # fmt: skip
    assert await store.settle(lease, [q.qid for q in lease.messages], delivery={key: {
        BOB: {"state": "delivered", "at": T0 + 60}, DAVE: bounced,
    }})  # fmt: skip
    got = await store.sent_message(ALICE, primary["id"])
    assert got.delivery == {BOB: {"state": "delivered", "at": T0 + 60}, CAROL: delivered, DAVE: bounced}  # fmt: skip
    # every settlement is a `sent` change of the sender's mailbox
    found = await store.changes(ALICE, state, 10)
    assert [c.kind for c in found.changes] == [ChangeKind.SENT] * 3
    # a late replay of CAROL's copy does not undo its delivery
    await store.enqueue([], sent=[record(carol, T0 + 70, **{CAROL: queued(T0 + 70)})])
    assert (await store.sent_message(ALICE, primary["id"])).delivery[CAROL] == delivered


async def test_a_local_bcc_recipient_is_kept_from_the_storing_transaction(store):
    primary = message()
    copy = bcc_copy(primary, CAROL)
    await store.store_many([incoming(primary, BOB, sent=record(primary, T0, **{BOB: stored(T0)}))])  # fmt: skip
    full = envelope(to=DAVE)
    await store.store_many([incoming(full, DAVE)])  # DAVE holds one pending message
    dave = bcc_copy(primary, DAVE)
    outcomes = await store.store_many([
        incoming(copy, CAROL, sent=record(copy, T0 + 1, **{CAROL: stored(T0 + 1)})),
        incoming(dave, DAVE, pending_quota=1, sent=record(dave, T0 + 1, **{DAVE: stored(T0 + 1)})),
    ])  # fmt: skip
    assert outcomes == [{CAROL: StoreOutcome.STORED}, {DAVE: StoreOutcome.OVER_QUOTA}]
    kept = await store.sent_message(ALICE, primary["id"])
    # DAVE's copy was refused as a whole (nothing was sent him): no entry, as for any message
    assert kept.delivery == {BOB: stored(T0), CAROL: stored(T0 + 1)}
    assert dict(kept.envelope) == primary


async def test_racing_copies_and_a_settlement_lose_no_entry(store):
    # PostgreSQL runs these on several connections at once, SQLite on its one writer
    primary = message()
    addresses = ["fx1" + f"{n:02x}" * 20 for n in range(12)]
    copies = [bcc_copy(primary, a) for a in addresses]
    await store.enqueue([outbound(primary, B, BOB)], sent=[record(primary, T0, **{BOB: queued(T0)})])  # fmt: skip
    lease = await store.lease("w1", T0, 60_000, 10)
    delivered = {"state": "delivered", "at": T0 + 1}
    key = (ALICE, primary["id"])
    await asyncio.gather(
        store.settle(lease, [lease.messages[0].qid], delivery={key: {BOB: delivered}}),
        *(store.enqueue([outbound(c, C, a)], sent=[record(c, T0 + 1, **{a: queued(T0 + 1)})])
          for c, a in zip(copies, addresses, strict=True)),
    )  # fmt: skip
    kept = await store.sent_message(ALICE, primary["id"])
    assert kept.delivery == {BOB: delivered, **{a: queued(T0 + 1) for a in addresses}}
    assert dict(kept.envelope) == primary


@pytest.mark.parametrize("order", ["primary first", "copy first"])
def test_merge_sent_is_the_same_either_way_but_for_who_came_first(order) -> None:
    primary = message()
    copy = bcc_copy(primary, CAROL)
    a, b = record(primary, T0, **{BOB: stored(T0)}), record(copy, T0, **{CAROL: queued(T0)})
    first, then = (a, b) if order == "primary first" else (b, a)
    merged = merge_sent(first, then)
    assert merged is not None and dict(merged.envelope) == primary
    assert merged.delivery == {BOB: stored(T0), CAROL: queued(T0)}
    assert merge_sent(merged, then) is None and merge_sent(merged, first) is None
