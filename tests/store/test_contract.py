"""The Store contract (src/flux/store/base.py), run against every implementation.

The `store` fixture (conftest.py) yields an opened MemoryStore, an opened SQLiteStore on a
real file, and — when FLUX_TEST_POSTGRES_DSN is set — PostgreSQL. A rule belongs here when
it holds for all of them; SQLite-only properties (durability, group commit, migrations)
are in test_sqlite.py.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from store_helpers import ALICE, BOB, CAROL, T0, envelope, incoming

from flux.protocol.errors import InvalidValue
from flux.store import (
    ChangeKind,
    Incoming,
    ListQuery,
    MessageStatus,
    StoreOutcome,
    Strike,
)
from flux.store.base import Override

P, D, R, X = (MessageStatus.PENDING, MessageStatus.DELIVERED, MessageStatus.READ,
              MessageStatus.DELETED)  # fmt: skip


async def put(store, *recipients, at=None, tags=(), inbox="inbox", **fields) -> dict:
    env = envelope(**fields)
    inc = incoming(env, *recipients, at=at, tags=tuple(tags), inbox=inbox)
    out = await store.store_message(inc)
    assert set(out.values()) == {StoreOutcome.STORED}
    return env


async def all_pages(store, address, limit, **filters) -> list[str]:
    ids, cursor = [], None
    while True:
        page = await store.list(address, ListQuery(limit=limit, cursor=cursor, **filters))
        assert len(page.items) <= limit
        ids += [m.id for m in page.items]
        if page.next_cursor is None:
            return ids
        assert page.items, "a page with a cursor must not be empty"
        cursor = page.next_cursor


# -- hosted addresses -----------------------------------------------------------------------
async def test_register_address_once(store):
    assert await store.hosted(ALICE) is None
    assert await store.register_address(ALICE, "pubA", T0) is True
    assert await store.register_address(ALICE, "other", T0 + 1) is False
    hosted = await store.hosted(ALICE)
    assert (hosted.address, hosted.pub, hosted.registered_at) == (ALICE, "pubA", T0)
    assert (await store.stats())["hosted_addresses"] == 1


# -- storing --------------------------------------------------------------------------------
async def test_stored_once_with_one_row_per_recipient(store):
    env = envelope(to=ALICE, cc=[BOB])
    out = await store.store_message(incoming(env, ALICE, BOB, ALICE))
    assert out == {ALICE: StoreOutcome.STORED, BOB: StoreOutcome.STORED}
    stats = await store.stats()
    assert (stats["messages"], stats["deliveries"], stats["pending"]) == (1, 2, 2)
    for who in (ALICE, BOB):
        m = await store.get(who, env["id"])
        assert m.recipient == who and m.status == P and m.inbox == "inbox"
        assert dict(m.envelope) == env
    assert await store.get(CAROL, env["id"]) is None
    a, b = await store.get(ALICE, env["id"]), await store.get(BOB, env["id"])
    assert a.seq != b.seq  # each delivery is its own change


async def test_duplicate_is_a_no_op_and_conflict_never_overwrites(store):
    env = envelope()
    await store.store_message(incoming(env, ALICE))
    before = await store.state(ALICE)
    again = await store.store_message(incoming(dict(env), ALICE))
    assert again == {ALICE: StoreOutcome.DUPLICATE}
    forged = {**env, "content": "something else"}
    out = await store.store_message(incoming(forged, ALICE, BOB))
    assert out == {ALICE: StoreOutcome.CONFLICT, BOB: StoreOutcome.STORED}
    assert (await store.get(ALICE, env["id"])).envelope["content"] == env["content"]
    assert (await store.get(BOB, env["id"])).envelope["content"] == "something else"
    assert await store.state(ALICE) == before  # nothing changed for alice
    assert (await store.stats())["messages"] == 2  # two bodies, one id (like BCC copies)


async def test_pending_quota_is_decided_in_the_storing_transaction(store):
    # 12 concurrent submissions against a quota of 5: exactly 5 stored, whatever the race.
    outs = await asyncio.gather(
        *(store.store_message(incoming(envelope(), ALICE, BOB, pending_quota=5)) for _ in range(12))
    )
    alice = [o[ALICE] for o in outs]
    assert alice.count(StoreOutcome.STORED) == 5
    assert alice.count(StoreOutcome.OVER_QUOTA) == 7
    assert await store.pending_count(ALICE) == 5
    # Reading one frees room: the quota counts pending messages only.
    first = (await store.list(ALICE, ListQuery(limit=1))).items[0]
    await store.mark(ALICE, [first.id], MessageStatus.READ)
    out = await store.store_message(incoming(envelope(), ALICE, pending_quota=5))
    assert out == {ALICE: StoreOutcome.STORED}


async def test_a_later_recipient_of_the_same_message_reuses_the_body(store):
    env = envelope()
    await store.store_message(incoming(env, ALICE))
    out = await store.store_message(incoming(env, ALICE, BOB))
    assert out == {ALICE: StoreOutcome.DUPLICATE, BOB: StoreOutcome.STORED}
    assert (await store.stats())["messages"] == 1


async def test_store_many_in_one_call(store):
    envs = [envelope() for _ in range(5)]
    batch = [incoming(e, ALICE, BOB) for e in envs] + [incoming(envs[0], ALICE)]
    outs = await store.store_many(batch)
    assert outs[:5] == [{ALICE: StoreOutcome.STORED, BOB: StoreOutcome.STORED}] * 5
    assert outs[5] == {ALICE: StoreOutcome.DUPLICATE}
    assert await store.pending_count(ALICE) == 5
    assert await store.store_many([]) == []


async def test_initial_tags_and_inbox(store):
    env = await put(store, ALICE, tags=("work", "important", "work"), inbox="projects")
    m = await store.get(ALICE, env["id"])
    assert m.tags == ("important", "work") and m.inbox == "projects"
    assert m.to_wire() == {**env, "_status": "pending", "_inbox": "projects",
                           "_tags": ["important", "work"]}  # fmt: skip


async def test_returned_envelopes_are_copies(store):
    env = await put(store, ALICE)
    m = await store.get(ALICE, env["id"])
    m.envelope["content"] = "mutated"  # type: ignore[index]
    env["content"] = "mutated too"
    assert (await store.get(ALICE, env["id"])).envelope["content"] != "mutated"
    assert (await store.get(ALICE, env["id"])).envelope["content"] != "mutated too"


async def test_non_ascii_envelopes_round_trip(store):
    env = await put(store, ALICE, content="héllo ✉ 😀", subject="ümlaut", tags=["x"])
    assert dict((await store.get(ALICE, env["id"])).envelope) == env


# -- lifecycle ------------------------------------------------------------------------------
async def test_status_moves_forward_only(store):
    env = await put(store, ALICE)
    i = env["id"]
    assert [m.status for m in await store.mark(ALICE, [i], R)] == [R]  # may skip delivered
    assert await store.mark(ALICE, [i], D) == []
    assert await store.mark(ALICE, [i], P) == []
    assert await store.mark(ALICE, [i], R) == []
    assert [m.status for m in await store.mark(ALICE, [i], X)] == [X]
    for s in (P, D, R, X):
        assert await store.mark(ALICE, [i], s) == []  # deleted is final
    assert (await store.get(ALICE, i)).status == X


async def test_mark_several_ignores_unknown_and_other_mailboxes(store):
    a, b = await put(store, ALICE), await put(store, ALICE)
    c = await put(store, BOB)
    changed = await store.mark(ALICE, [b["id"], "f" * 32, c["id"], a["id"], b["id"]], D)
    assert [m.id for m in changed] == [b["id"], a["id"]]
    assert (await store.get(BOB, c["id"])).status == P


async def test_fetch_pending_marks_delivered_oldest_first(store):
    envs = [await put(store, ALICE, at=T0 + n) for n in (3, 1, 2, 5, 4)]
    assert await store.pending_count(ALICE) == 5
    first = await store.fetch_pending(ALICE, 2)
    expected = [envs[1]["id"], envs[2]["id"], envs[0]["id"], envs[4]["id"], envs[3]["id"]]
    assert [m.id for m in first] == expected[:2]
    assert all(m.status == D for m in first)
    assert await store.pending_count(ALICE) == 3
    rest = await store.fetch_pending(ALICE, 100)
    assert [m.id for m in rest] == expected[2:]
    assert await store.fetch_pending(ALICE, 100) == []
    assert await store.pending_count(ALICE) == 0
    assert (await store.get(ALICE, expected[0])).status == D


async def test_expires_zero_is_deleted_on_first_read(store):
    env = await put(store, ALICE, expires=0)
    assert [m.status for m in await store.fetch_pending(ALICE, 10)] == [D]
    changed = await store.mark(ALICE, [env["id"]], R)
    assert [m.status for m in changed] == [X]
    assert (await all_pages(store, ALICE, 10)) == []
    assert (await all_pages(store, ALICE, 10, status=X)) == [env["id"]]


async def test_expires_time_hides_then_expire_sweeps(store, clock):
    soon = await put(store, ALICE, expires=clock.now + 1000)
    kept = await put(store, ALICE)
    later = await put(store, ALICE, expires=clock.now + 5000)
    assert await store.pending_count(ALICE) == 3
    clock.now += 1000  # `soon` reaches its time: hidden from here on
    assert await store.pending_count(ALICE) == 2
    assert set(await all_pages(store, ALICE, 10)) == {kept["id"], later["id"]}
    assert await all_pages(store, ALICE, 10, status=X) == [soon["id"]]
    assert set(await all_pages(store, ALICE, 10, include_deleted=True)) == {
        soon["id"], kept["id"], later["id"]}  # fmt: skip
    assert (await store.get(ALICE, soon["id"])).status == X
    assert (await store.inboxes(ALICE))["inbox"]["pending"] == 2
    assert [m.id for m in await store.fetch_pending(ALICE, 10)] == [kept["id"], later["id"]]
    state = await store.state(ALICE)
    assert await store.expire(clock.now) == 1
    assert await store.expire(clock.now) == 0  # once
    ch = await store.changes(ALICE, state, 10)
    assert [(c.msg_id, c.kind) for c in ch.changes] == [(soon["id"], ChangeKind.UPDATED)]
    assert (await store.stats())["deleted"] == 1
    # reading a hidden message deletes it too; an earlier status cannot apply to it
    clock.now += 5000
    assert await store.mark(ALICE, [later["id"]], D) == []
    assert [m.status for m in await store.mark(ALICE, [later["id"]], R)] == [X]


async def test_expires_in_the_future_reads_normally(store, clock):
    env = await put(store, ALICE, expires=clock.now + 60_000)
    assert [m.status for m in await store.mark(ALICE, [env["id"]], R)] == [R]
    assert await store.expire(clock.now) == 0
    assert await store.expire(clock.now + 60_000) == 1


# -- tags, move, inboxes --------------------------------------------------------------------
async def test_tags_add_and_remove(store):
    env = await put(store, ALICE, tags=["a"])
    i = env["id"]
    m = await store.tag(ALICE, i, ["c", "b"], [])
    assert m.tags == ("a", "b", "c")
    seq = m.seq
    m = await store.tag(ALICE, i, ["b"], ["a", "zz"])
    assert m.tags == ("b", "c") and m.seq > seq
    same = await store.tag(ALICE, i, ["c"], ["a"])
    assert same.tags == ("b", "c") and same.seq == m.seq  # nothing changed, no change
    assert (await store.tag(ALICE, i, ["d"], ["d"])).tags == ("b", "c")  # removal wins
    assert await store.tag(ALICE, "f" * 32, ["x"], []) is None
    assert await store.tag(BOB, i, ["x"], []) is None
    assert await all_pages(store, ALICE, 10, tag="b") == [i]
    assert await all_pages(store, ALICE, 10, tag="a") == []


async def test_move_and_inbox_counts(store):
    a = await put(store, ALICE)
    b = await put(store, ALICE)
    c = await put(store, ALICE)
    d = await put(store, ALICE, inbox="old")
    await store.mark(ALICE, [b["id"]], R)
    m = await store.move(ALICE, a["id"], "work")
    assert m.inbox == "work"
    assert (await store.move(ALICE, a["id"], "work")).seq == m.seq
    assert await store.move(ALICE, "f" * 32, "work") is None
    await store.mark(ALICE, [c["id"]], D)
    await store.mark(ALICE, [d["id"]], X)  # only message of "old": the inbox disappears
    assert await store.inboxes(ALICE) == {
        "inbox": {"pending": 0, "delivered": 1, "read": 1},
        "work": {"pending": 1, "delivered": 0, "read": 0},
    }
    assert await store.inboxes(BOB) == {}
    assert await all_pages(store, ALICE, 10, inbox="work") == [a["id"]]


# -- listing --------------------------------------------------------------------------------
async def test_list_newest_first_excluding_deleted(store):
    envs = [await put(store, ALICE, at=T0 + n) for n in range(5)]
    await store.mark(ALICE, [envs[2]["id"]], X)
    await put(store, BOB)
    ids = [e["id"] for e in reversed(envs) if e is not envs[2]]
    assert await all_pages(store, ALICE, 50) == ids
    assert await all_pages(store, ALICE, 1) == ids
    assert await all_pages(store, ALICE, 50, status=X) == [envs[2]["id"]]


async def test_list_limit_is_clamped(store):
    for _ in range(3):
        await put(store, ALICE)
    assert len((await store.list(ALICE, ListQuery(limit=0))).items) == 1
    assert len((await store.list(ALICE, ListQuery(limit=-5))).items) == 1


async def test_bad_cursor_is_refused(store):
    await put(store, ALICE)
    for bad in ("nope", "!!!", "bm9wZQ==", "MTI6YWI="):
        with pytest.raises(InvalidValue) as exc:
            await store.list(ALICE, ListQuery(cursor=bad))
        assert exc.value.field == "cursor"


FILTERS = [
    {}, {"inbox": "inbox"}, {"inbox": "work"}, {"status": P}, {"status": R},
    {"status": X}, {"tag": "t1"}, {"tag": "t2", "inbox": "work"}, {"tag": "t1", "status": D},
    {"include_deleted": True}, {"include_deleted": True, "tag": "t2"},
]  # fmt: skip


def expected_ids(model: dict, f: dict) -> list[str]:
    def keep(row) -> bool:
        if f.get("status") is not None:
            if row["status"] != f["status"]:
                return False
        elif row["status"] == X and not f.get("include_deleted"):
            return False
        if "inbox" in f and row["inbox"] != f["inbox"]:
            return False
        return "tag" not in f or f["tag"] in row["tags"]

    rows = sorted(model.values(), key=lambda r: r["order"], reverse=True)
    return [r["id"] for r in rows if keep(r)]


@pytest.mark.parametrize("limit", [1, 3, 7, 50])
async def test_pagination_with_filters_loses_and_repeats_nothing(store, limit):
    rnd = random.Random(limit)
    model: dict[str, dict] = {}
    for n in range(40):
        at = T0 + rnd.randrange(10)  # many equal received_at: the tie-break must hold
        tags = tuple(t for t in ("t1", "t2") if rnd.random() < 0.5)
        inbox = rnd.choice(["inbox", "work"])
        env = await put(store, ALICE, at=at, tags=tags, inbox=inbox)
        model[env["id"]] = {"id": env["id"], "order": (at, n), "status": P, "inbox": inbox,
                            "tags": set(tags)}  # fmt: skip
    for row in model.values():
        status = rnd.choice([P, D, R, X])
        if status != P:
            await store.mark(ALICE, [row["id"]], status)
        row["status"] = status
    for f in FILTERS:
        assert await all_pages(store, ALICE, limit, **f) == expected_ids(model, f), f


async def test_changes_during_pagination_do_not_move_the_boundary(store):
    envs = [await put(store, ALICE, at=T0 + n, tags=["t"]) for n in range(10)]
    first = await store.list(ALICE, ListQuery(limit=4))
    seen = [m.id for m in first.items]
    # rows on both sides of the cursor change status, tags and inbox
    for e in envs:
        await store.mark(ALICE, [e["id"]], R)
        await store.tag(ALICE, e["id"], ["new"], [])
    rest = await all_pages_from(store, ALICE, 4, first.next_cursor)
    assert seen + rest == [e["id"] for e in reversed(envs)]


async def all_pages_from(store, address, limit, cursor) -> list[str]:
    ids = []
    while cursor is not None:
        page = await store.list(address, ListQuery(limit=limit, cursor=cursor))
        ids += [m.id for m in page.items]
        cursor = page.next_cursor
    return ids


# -- threads --------------------------------------------------------------------------------
async def test_thread_by_re_oldest_first(store):
    a = await put(store, ALICE, BOB, at=T0 + 1)
    b = await put(store, ALICE, at=T0 + 2, re=a["id"])
    c = await put(store, ALICE, at=T0 + 3, re=b["id"])
    other = await put(store, ALICE, at=T0 + 4)
    expected = [a["id"], b["id"], c["id"]]
    for start in expected:
        assert [m.id for m in await store.thread(ALICE, start)] == expected
    assert [m.id for m in await store.thread(ALICE, other["id"])] == [other["id"]]
    assert [m.id for m in await store.thread(BOB, c["id"])] == []  # not bob's message
    assert [m.id for m in await store.thread(BOB, a["id"])] == [a["id"]]
    await store.mark(ALICE, [b["id"]], X)
    assert [m.id for m in await store.thread(ALICE, a["id"])] == [a["id"], c["id"]]


async def test_thread_when_replies_arrive_before_what_they_answer(store):
    a, b, c = envelope(), envelope(), envelope()
    b["re"], c["re"] = a["id"], b["id"]
    for env, at in ((c, 3), (b, 2), (a, 1)):  # newest first
        await store.store_message(incoming(env, ALICE, at=T0 + at))
    ids = [a["id"], b["id"], c["id"]]
    for start in ids:
        assert [m.id for m in await store.thread(ALICE, start)] == ids


async def test_thread_of_a_reply_to_an_unknown_message(store):
    root_id = "e" * 32
    x = await put(store, ALICE, at=T0 + 1, re=root_id)
    y = await put(store, ALICE, at=T0 + 2, re=root_id)
    assert [m.id for m in await store.thread(ALICE, x["id"])] == [x["id"], y["id"]]
    assert await store.thread(ALICE, root_id) == []


# -- changes --------------------------------------------------------------------------------
async def test_changes_replay_in_seq_order_with_state_and_limit(store):
    assert await store.state(ALICE) == 0
    empty = await store.changes(ALICE, 0, 10)
    assert (list(empty.changes), empty.state, empty.has_more) == ([], 0, False)
    a = await put(store, ALICE, BOB)
    b = await put(store, ALICE)
    await store.mark(ALICE, [a["id"]], R)
    await store.tag(ALICE, b["id"], ["x"], [])
    await store.move(ALICE, b["id"], "work")
    await store.fetch_pending(ALICE, 10)  # only b is still pending
    expected = [(a["id"], "created"), (b["id"], "created"), (a["id"], "updated"),
                (b["id"], "updated"), (b["id"], "updated"), (b["id"], "updated")]  # fmt: skip
    full = await store.changes(ALICE, 0, 100)
    assert [(c.msg_id, c.kind) for c in full.changes] == expected
    seqs = [c.seq for c in full.changes]
    assert seqs == sorted(set(seqs)) and full.state == seqs[-1] and not full.has_more
    assert await store.state(ALICE) == full.state
    got, since = [], 0
    while True:
        page = await store.changes(ALICE, since, 4)
        got += page.changes
        since = page.state
        if not page.has_more:
            break
    assert got == list(full.changes)
    assert (await store.changes(ALICE, full.state, 10)).changes == []
    assert (await store.changes(ALICE, full.state, 10)).state == full.state
    assert (await store.get(ALICE, b["id"])).seq == seqs[-1]
    bob = await store.changes(BOB, 0, 10)
    assert [(c.msg_id, c.kind) for c in bob.changes] == [(a["id"], "created")]


async def test_seq_is_store_wide_and_strictly_increasing(store):
    seqs = []
    for who in (ALICE, BOB, ALICE, CAROL):
        env = await put(store, who)
        seqs.append((await store.get(who, env["id"])).seq)
        seqs.append((await store.tag(who, env["id"], ["x"], [])).seq)
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


# -- stats ----------------------------------------------------------------------------------
async def test_stats(store, clock):
    assert await store.stats() == {
        "messages": 0, "deliveries": 0, "pending": 0, "delivered": 0, "read": 0,
        "deleted": 0, "hosted_addresses": 0, "sessions": 0,
    }  # fmt: skip
    a = await put(store, ALICE, BOB)
    await put(store, ALICE)
    await store.mark(ALICE, [a["id"]], R)
    await store.mark(BOB, [a["id"]], X)
    await store.register_address(ALICE, "p", T0)
    await store.create_session("h1", ALICE, clock.now + 10)
    await store.create_session("h2", ALICE, clock.now - 10)
    stats = await store.stats()
    assert stats == {
        "messages": 2, "deliveries": 3, "pending": 1, "delivered": 0, "read": 1,
        "deleted": 1, "hosted_addresses": 1, "sessions": 1,
    }  # fmt: skip


# -- sessions, nonces -----------------------------------------------------------------------
async def test_sessions_expire_and_revoke(store):
    await store.create_session("hash1", ALICE, T0 + 1000)
    s = await store.session("hash1", T0)
    assert (s.address, s.expires_at) == (ALICE, T0 + 1000)
    assert await store.session("hash1", T0 + 999) is not None
    assert await store.session("hash1", T0 + 1000) is None  # expired at expires_at
    assert await store.session("nope", T0) is None
    await store.create_session("hash2", BOB, T0 + 1000)
    assert await store.revoke_session("hash2") is True
    assert await store.revoke_session("hash2") is False
    assert await store.revoke_session("nope") is False
    assert await store.session("hash2", T0) is None
    assert (await store.session("hash1", T0)).address == ALICE  # others untouched


async def test_nonces_are_single_use(store):
    assert await store.use_nonce("n1", T0 + 300_000, T0) is True
    assert await store.use_nonce("n1", T0 + 300_000, T0 + 1) is False
    assert await store.use_nonce("n2", T0 + 300_000, T0 + 2) is True
    assert await store.use_nonce("n1", T0 + 300_000, T0 + 299_999) is False


# -- reputation -----------------------------------------------------------------------------
def strike(proof: str, offender: str = "evil.example") -> Strike:
    return Strike(offender=offender, proof_id=proof, kind="bad_signature",
                  reporter="good.example", msg_id="a" * 32, t=T0)  # fmt: skip


async def test_strikes_counted_once_per_proof(store):
    assert await store.add_strike(strike("p1")) is True
    assert await store.add_strike(strike("p1")) is False
    assert await store.add_strike(strike("p2")) is True
    assert await store.add_strike(strike("p3", "other.example")) is True
    assert [s.proof_id for s in await store.strikes()] == ["p1", "p2", "p3"]
    assert (await store.strikes())[0] == strike("p1")


async def test_quarantine_overrides(store):
    assert await store.quarantine_overrides() == {}
    await store.set_quarantine_override("evil.example", True, T0)
    await store.set_quarantine_override("bad.example", False, T0)
    await store.set_quarantine_override("evil.example", False, T0 + 1)
    assert await store.quarantine_overrides() == {
        "evil.example": Override(False, T0 + 1), "bad.example": Override(False, T0)}  # fmt: skip


# -- a random walk against a reference model ------------------------------------------------
async def test_random_operations_agree_with_memory_store(store, clock):
    """The same random operations on this store and on a fresh MemoryStore agree."""
    from flux.store import MemoryStore

    ref = MemoryStore(clock=clock)
    rnd = random.Random(7)
    ids: list[str] = []
    for step in range(150):
        op = rnd.random()
        if op < 0.35 or not ids:
            exp = rnd.choice([None, None, 0, clock.now + rnd.randrange(1, 50)])
            env = envelope(**({} if exp is None else {"expires": exp}))
            if ids and rnd.random() < 0.3:
                env["re"] = rnd.choice(ids)
            inc = incoming(env, *rnd.sample([ALICE, BOB], rnd.randint(1, 2)), at=clock.now,
                           tags=tuple(rnd.sample(["x", "y"], rnd.randint(0, 2))))  # fmt: skip
            assert await store.store_message(inc) == await ref.store_message(inc)
            ids.append(env["id"])
        elif op < 0.55:
            sel, st = rnd.sample(ids, min(3, len(ids))), rnd.choice(list(MessageStatus))
            assert await store.mark(ALICE, sel, st) == await ref.mark(ALICE, sel, st)
        elif op < 0.65:
            assert await store.fetch_pending(BOB, 3) == await ref.fetch_pending(BOB, 3)
        elif op < 0.75:
            i, add, rm = rnd.choice(ids), rnd.sample("xyz", 1), rnd.sample("xyz", 1)
            assert await store.tag(ALICE, i, add, rm) == await ref.tag(ALICE, i, add, rm)
        elif op < 0.85:
            i, box = rnd.choice(ids), rnd.choice(["inbox", "work"])
            assert await store.move(ALICE, i, box) == await ref.move(ALICE, i, box)
        elif op < 0.9:
            assert await store.expire(clock.now) == await ref.expire(clock.now)
        else:
            clock.now += rnd.randrange(20)
        if step % 10 == 0:
            for who in (ALICE, BOB):
                assert await store.inboxes(who) == await ref.inboxes(who)
                assert await store.pending_count(who) == await ref.pending_count(who)
                q = ListQuery(limit=500, include_deleted=True)
                assert await store.list(who, q) == await ref.list(who, q)
                assert await store.changes(who, 0, 1000) == await ref.changes(who, 0, 1000)
                t = rnd.choice(ids)
                assert await store.thread(who, t) == await ref.thread(who, t)


async def test_incoming_defaults():
    inc = Incoming(envelope={"id": "x"}, body_hash="h", recipients=[ALICE], received_at=1)
    assert inc.tags == () and inc.inbox == "inbox"


async def test_recipients_must_be_a_sequence_not_a_string(store):
    env = envelope()
    inc = Incoming(envelope=env, body_hash="h", recipients=ALICE, received_at=T0)
    with pytest.raises(TypeError):
        await store.store_message(inc)
    assert (await store.stats())["deliveries"] == 0


# -- message identity: (recipient, sender, id) (base.py; issue 9 §3) ------------------------
MALLORY = "fx1" + "e" * 40


async def test_two_senders_one_id_are_two_messages(store):
    from flux.store import AmbiguousMessage, MessageRef

    mine = envelope(**{"from": ALICE, "to": BOB})
    squat = envelope(**{"from": MALLORY, "to": BOB, "id": mine["id"]})
    assert await store.store_message(incoming(squat, BOB)) == {BOB: StoreOutcome.STORED}
    assert await store.store_message(incoming(mine, BOB)) == {BOB: StoreOutcome.STORED}
    # dedupe and conflict are the sender's own: a replay is DUPLICATE, another body CONFLICT
    assert await store.store_message(incoming(mine, BOB)) == {BOB: StoreOutcome.DUPLICATE}
    other = {**mine, "content": "changed"}
    assert await store.store_message(incoming(other, BOB)) == {BOB: StoreOutcome.CONFLICT}
    mid = mine["id"]
    with pytest.raises(AmbiguousMessage) as err:
        await store.get(BOB, mid)
    assert err.value.candidates == {mid: sorted([ALICE, MALLORY])}
    assert dict((await store.get(BOB, mid, ALICE)).envelope) == mine
    assert dict((await store.get(BOB, mid, MALLORY)).envelope) == squat
    assert await store.get(BOB, mid, CAROL) is None
    for call in (store.mark(BOB, [mid], R), store.tag(BOB, mid, ["t"], []),
                 store.move(BOB, mid, "x"), store.thread(BOB, mid)):  # fmt: skip
        with pytest.raises(AmbiguousMessage):
            await call
    assert (await store.get(BOB, mid, ALICE)).status == P  # nothing changed
    rows = await store.mark(BOB, [MessageRef(mid, ALICE)], R)
    assert [(r.id, r.sender, r.status) for r in rows] == [(mid, ALICE, R)]
    assert (await store.tag(BOB, mid, ["t"], [], MALLORY)).tags == ("t",)
    assert (await store.move(BOB, mid, "x", ALICE)).inbox == "x"
    assert (await store.get(BOB, mid, MALLORY)).inbox == "inbox"
    changes = (await store.changes(BOB, 0, 100)).changes
    assert {(c.msg_id, c.sender) for c in changes} == {(mid, ALICE), (mid, MALLORY)}
    assert (await store.stats())["deliveries"] == 2


async def test_thread_participant_rule(store):
    real = envelope(**{"from": ALICE, "to": BOB, "cc": [CAROL]})
    squat = envelope(**{"from": MALLORY, "to": BOB, "id": real["id"]})
    await store.store_message(incoming(squat, BOB, at=T0 + 1))
    await store.store_message(incoming(real, BOB, at=T0 + 2))
    reply = envelope(**{"from": CAROL, "to": ALICE, "cc": [BOB], "re": real["id"]})
    stranger = envelope(**{"from": SENDER_X, "to": BOB, "re": real["id"]})
    await store.store_message(incoming(reply, BOB, at=T0 + 3))
    await store.store_message(incoming(stranger, BOB, at=T0 + 4))
    ids = lambda rows: [(m.sender, m.id) for m in rows]  # noqa: E731
    assert ids(await store.thread(BOB, real["id"], ALICE)) == [(ALICE, real["id"]), (CAROL, reply["id"])]  # fmt: skip
    assert ids(await store.thread(BOB, real["id"], MALLORY)) == [(MALLORY, real["id"])]
    assert ids(await store.thread(BOB, stranger["id"])) == [(SENDER_X, stranger["id"])]


async def test_waiting_replies_are_adopted_only_by_a_parent_they_take_part_in(store):
    parent = envelope(**{"from": ALICE, "to": BOB})
    mine = envelope(**{"from": ALICE, "to": BOB, "re": parent["id"]})
    stranger = envelope(**{"from": MALLORY, "to": BOB, "re": parent["id"]})
    await store.store_message(incoming(mine, BOB, at=T0 + 1))
    await store.store_message(incoming(stranger, BOB, at=T0 + 2))
    await store.store_message(incoming(parent, BOB, at=T0 + 3))
    got = [m.id for m in await store.thread(BOB, parent["id"])]
    assert got == [mine["id"], parent["id"]]


async def test_queue_dedupe_is_per_sender(store):
    from flux.store.base import Outbound

    a = envelope(**{"from": ALICE, "to": BOB})
    b = envelope(**{"from": MALLORY, "to": BOB, "id": a["id"]})
    items = [Outbound("peer.example", e, incoming(e, BOB).body_hash, (BOB,), "pass", T0)
             for e in (b, a)]  # fmt: skip
    assert await store.enqueue(items) == [True, True]
    assert await store.enqueue(items[1:]) == [False]


SENDER_X = "fx1" + "9" * 40


# -- fair shares: strangers and expired mail (issue 10 §2) ------------------------------------
def _stranger(n: int) -> str:
    return "fx1" + f"{n:040x}".replace("0", "7")


async def test_strangers_share_the_quota_and_known_senders_keep_the_rest(store):
    """26 throwaway keys fill only the stranger share; a sender the recipient wrote to is
    still stored, up to the whole quota; each stranger holds at most its own part."""
    from flux.store.base import StrangerShare

    share = StrangerShare(total=5, per_sender=2)
    await store.add_contacts(ALICE, [BOB], T0)

    def inc(sender: str, n: int) -> Incoming:
        env = envelope(**{"from": sender, "to": ALICE})
        return incoming(env, ALICE, at=T0 + n, pending_quota=8, stranger_share=share)

    outcomes = [(await store.store_message(inc(_stranger(k), k)))[ALICE] for k in range(26)]
    assert outcomes.count(StoreOutcome.STORED) == 5
    assert set(outcomes[5:]) == {StoreOutcome.OVER_STRANGER_SHARE}
    one = _stranger(99)
    per = [(await store.store_message(inc(one, 100 + k)))[ALICE] for k in range(3)]
    assert per[0] == StoreOutcome.OVER_STRANGER_SHARE  # the strangers' total already holds
    known = [(await store.store_message(inc(BOB, 200 + k)))[ALICE] for k in range(4)]
    assert known == [StoreOutcome.STORED] * 3 + [StoreOutcome.OVER_QUOTA]  # 5 + 3 = 8
    assert await store.is_contact(ALICE, BOB) and not await store.is_contact(BOB, ALICE)
    assert await store.is_contact(ALICE, ALICE)


async def test_one_stranger_holds_at_most_its_part_and_reading_frees_it(store):
    from flux.store.base import StrangerShare

    share = StrangerShare(total=10, per_sender=2)
    envs = [envelope(**{"from": MALLORY, "to": ALICE}) for _ in range(3)]
    got = [(await store.store_message(incoming(e, ALICE, stranger_share=share)))[ALICE] for e in envs]
    assert got == [StoreOutcome.STORED, StoreOutcome.STORED, StoreOutcome.OVER_STRANGER_SHARE]
    await store.mark(ALICE, [envs[0]["id"]], MessageStatus.READ)  # no longer pending
    again = await store.store_message(incoming(envs[2], ALICE, stranger_share=share))
    assert again[ALICE] == StoreOutcome.STORED
    # a recipient writing back makes the sender known: its pending mail is no stranger's
    await store.add_contacts(ALICE, [MALLORY], T0)
    more = envelope(**{"from": MALLORY, "to": ALICE})
    assert (await store.store_message(incoming(more, ALICE, stranger_share=share)))[ALICE] == StoreOutcome.STORED  # fmt: skip


async def test_purge_removes_expired_mail_and_its_body_for_good(store, clock):
    gone = await put(store, ALICE, BOB, expires=T0 + 10, tags=["x"])
    kept = await put(store, ALICE, expires=T0 + 10_000)
    plain = await put(store, ALICE)
    clock.now = T0 + 20
    assert await store.purge_expired(T0 + 5) == 0
    assert await store.purge_expired(T0 + 20) == 2  # one delivery each for ALICE and BOB
    assert await store.get(ALICE, gone["id"]) is None and await store.get(BOB, gone["id"]) is None
    assert await store.get(ALICE, kept["id"]) is not None
    assert await store.get(ALICE, plain["id"]) is not None
    assert (await store.stats())["messages"] == 2  # the purged body is gone too
    again = await store.store_message(incoming(gone, ALICE))  # nothing of it is left behind
    assert again[ALICE] == StoreOutcome.STORED
