"""Sent mail and its delivery state in the Store contract (base.py: SentMessage,
`enqueue(sent=)`, `record_sent`, `settle(delivery=)`, `sent`, `sent_message`,
`sent_prefix`), run against every implementation through the `store` fixture."""

from __future__ import annotations

import uuid

from store_helpers import ALICE, BOB, CAROL, T0, envelope, incoming

from flux.protocol import body_hash
from flux.store.base import ChangeKind, Outbound, SentMessage, StoreOutcome

B = "b.example"


def mail(to: str = BOB, sender: str = ALICE) -> dict:
    return envelope(to=to, id=uuid.uuid4().hex, **{"from": sender})


def queued(env: dict, at: int = T0) -> dict:
    return {"state": "queued", "at": at, "attempts": 0, "next_retry_at": at, "error": None}


def record(env: dict, at: int = T0, **delivery: dict) -> SentMessage:
    return SentMessage(env["from"], env, at, delivery or {env["to"]: queued(env, at)}, at)


def outbound(env: dict) -> Outbound:
    return Outbound(B, env, body_hash(env), (env["to"],), "none", T0)


async def test_the_sent_record_goes_in_with_the_queue_and_a_replay_keeps_the_first(store):
    env = mail()
    assert await store.enqueue([outbound(env)], sent=[record(env)]) == [True]
    # a replay of the submission queues nothing new and changes no state
    later = record(env, T0 + 5, **{BOB: {"state": "stored", "at": T0 + 5}})
    assert await store.enqueue([outbound(env)], sent=[later]) == [False]
    kept = await store.sent_message(ALICE, env["id"])
    assert kept == record(env)
    assert kept.to_wire()["_delivery"] == {BOB: queued(env)}
    assert kept.to_wire()["_sent_at"] == T0 and kept.to_wire()["id"] == env["id"]


async def test_settling_writes_the_delivery_state_in_the_same_transaction(store):
    env = mail()
    await store.enqueue([outbound(env)], sent=[record(env)])
    lease = await store.lease("w1", T0, 60_000, 10)
    retry = {BOB: {"state": "queued", "at": T0 + 1, "attempts": 1, "next_retry_at": T0 + 9,
                   "error": "the receiving server did not answer (connection refused)"}}  # fmt: skip
    key = (ALICE, env["id"])
    assert await store.settle(lease, [], retry_at=T0 + 9, error="x", delivery={key: retry})
    assert (await store.sent_message(ALICE, env["id"])).delivery == retry
    lease = await store.lease("w1", T0 + 10, 60_000, 10)
    done = {BOB: {"state": "delivered", "at": T0 + 11}}
    assert await store.settle(lease, [lease.messages[0].qid], delivery={key: done})
    got = await store.sent_message(ALICE, env["id"])
    assert got.delivery == done and got.updated_at == T0 + 11
    assert await store.queue_state() == []


async def test_a_stale_settlement_changes_no_state_and_final_states_stay_final(store):
    env = mail()
    await store.enqueue([outbound(env)], sent=[record(env)])
    lease = await store.lease("w1", T0, 1_000, 10)
    key = (ALICE, env["id"])
    bounced = {BOB: {"state": "bounced", "at": T0 + 1, "reason": "no such domain"}}
    late = {BOB: {"state": "queued", "at": T0 + 2, "attempts": 3, "next_retry_at": 0, "error": "x"}}
    taken = await store.lease("w2", T0 + 2_000, 1_000, 10)  # w1's lease lapsed
    assert not await store.settle(lease, [], retry_at=T0 + 5, delivery={key: late})
    assert (await store.sent_message(ALICE, env["id"])).delivery == {BOB: queued(env)}
    assert await store.settle(taken, [taken.messages[0].qid], delivery={key: bounced})
    await store.enqueue([outbound(env)])  # queued again (an operator retry, say)
    again = await store.lease("w3", T0 + 5_000, 1_000, 10)
    assert await store.settle(again, [], retry_at=T0 + 9, delivery={key: late})
    assert (await store.sent_message(ALICE, env["id"])).delivery == bounced


async def test_mail_without_a_sent_record_is_settled_as_before(store):
    env = mail()  # handed on by another server: no sent record here
    await store.enqueue([outbound(env)])
    lease = await store.lease("w1", T0, 60_000, 10)
    delivery = {(ALICE, env["id"]): {BOB: {"state": "delivered", "at": T0}}}
    assert await store.settle(lease, [lease.messages[0].qid], delivery=delivery)
    assert await store.sent_message(ALICE, env["id"]) is None
    assert await store.sent(ALICE, 10) == []


async def test_sent_lists_newest_first_by_pages_and_finds_prefixes(store):
    envs = [mail() for _ in range(5)]
    await store.record_sent([record(e, T0 + n) for n, e in enumerate(envs)])
    await store.record_sent([record(mail(ALICE, BOB))])  # another sender's
    first = await store.sent(ALICE, 3)
    assert [m.id for m in first] == [e["id"] for e in reversed(envs)][:3]
    rest = await store.sent(ALICE, 3, before=(first[-1].sent_at, first[-1].id))
    assert [m.id for m in rest] == [envs[1]["id"], envs[0]["id"]]
    # sent in one millisecond: pages by (sent_at, id) skip none of them
    same = [mail() for _ in range(3)]
    await store.record_sent([record(e, T0 + 100) for e in same])
    ids = sorted((e["id"] for e in same), reverse=True)
    pages, before = [], None
    for _ in range(3):
        (one,) = await store.sent(ALICE, 1, before=before)
        pages.append(one.id)
        before = (one.sent_at, one.id)
    assert pages == ids
    target = envs[2]["id"]
    assert [m.id for m in await store.sent_prefix(ALICE, target[:12], 5)] == [target]
    assert await store.sent_prefix(BOB, target[:12], 5) == []
    assert await store.sent_message(BOB, target) is None


async def test_a_delivery_state_change_is_a_change_of_the_senders_mailbox(store):
    env = mail()
    await store.enqueue([outbound(env)], sent=[record(env)])
    state = await store.state(ALICE)  # the sent record alone writes no change (hot path)
    lease = await store.lease("w1", T0, 60_000, 10)
    delivered = {BOB: {"state": "delivered", "at": T0 + 1}}
    await store.settle(lease, [lease.messages[0].qid], delivery={(ALICE, env["id"]): delivered})
    found = await store.changes(ALICE, state, 10)
    assert [(c.msg_id, c.kind, c.sender) for c in found.changes] == [
        (env["id"], ChangeKind.SENT, ALICE)
    ]
    assert await store.state(ALICE) == found.state > state
    assert (await store.changes(BOB, 0, 10)).changes == []


async def test_the_sent_record_of_local_mail_is_kept_in_the_storing_transaction(store):
    full = mail(to=CAROL)
    await store.store_many([incoming(full, CAROL)])  # CAROL now holds one pending message
    env = {**mail(), "cc": [CAROL]}
    local = SentMessage(ALICE, env, T0, {BOB: {"state": "stored", "at": T0},
                                         CAROL: {"state": "stored", "at": T0}}, T0)  # fmt: skip
    (outcome,) = await store.store_many([incoming(env, BOB, CAROL, pending_quota=1, sent=local)])
    assert outcome == {BOB: StoreOutcome.STORED, CAROL: StoreOutcome.OVER_QUOTA}
    kept = await store.sent_message(ALICE, env["id"])
    assert kept.delivery == {
        BOB: {"state": "stored", "at": T0},
        CAROL: {"state": "bounced", "at": T0, "reason": "the recipient's mailbox is full"},
    }
    # refused for every recipient: the submission failed, so nothing was sent
    none = mail(to=CAROL)
    lost = SentMessage(ALICE, none, T0, {CAROL: {"state": "stored", "at": T0}}, T0)
    await store.store_many([incoming(none, CAROL, pending_quota=1, sent=lost)])
    assert await store.sent_message(ALICE, none["id"]) is None
    # and the sent copy is no mail of the sender's: nothing pending, no mailbox
    assert await store.pending_count(ALICE) == 0 and await store.inboxes(ALICE) == {}
