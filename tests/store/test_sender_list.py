"""Two store features of issue 12, on every backend: `Store.mark_unread` (base.py,
"Unread": read → delivered, nothing else moves back) and `ListQuery.sender` (one
sender's mail, keyset-paged, an index range scan on SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from store_helpers import ALICE, BOB, CAROL, SENDER, T0, envelope, incoming

from flux.store.base import ChangeKind, ListQuery, MessageRef, MessageStatus


async def put(store, *recipients: str, **fields) -> dict:
    env = envelope(**fields)
    await store.store_message(incoming(env, *(recipients or (ALICE,))))
    return env


# -- mark_unread ----------------------------------------------------------------------------


async def test_read_goes_back_to_delivered_with_a_change(store):
    m = await put(store)
    await store.mark(ALICE, [m["id"]], MessageStatus.READ)
    before = await store.state(ALICE)
    changed = await store.mark_unread(ALICE, [m["id"]])
    assert [r.id for r in changed] == [m["id"]]
    assert changed[0].status == MessageStatus.DELIVERED and changed[0].seq > before
    assert (await store.get(ALICE, m["id"])).status == MessageStatus.DELIVERED
    found = await store.changes(ALICE, before, 10)
    assert [(c.msg_id, c.kind, c.sender) for c in found.changes] == [
        (m["id"], ChangeKind.UPDATED, SENDER)]  # fmt: skip
    # and it can be read again, like any delivered message
    again = await store.mark(ALICE, [m["id"]], MessageStatus.READ)
    assert [r.status for r in again] == [MessageStatus.READ]


async def test_only_read_moves_back(store):
    delivered, read, deleted = [await put(store) for _ in range(3)]
    await store.fetch_pending(ALICE, 3)
    pending = await put(store)
    await store.mark(ALICE, [read["id"]], MessageStatus.READ)
    await store.mark(ALICE, [deleted["id"]], MessageStatus.DELETED)
    state = await store.state(ALICE)
    ids = [pending["id"], delivered["id"], read["id"], deleted["id"]]
    changed = await store.mark_unread(ALICE, ids)
    assert [r.id for r in changed] == [read["id"]]
    assert (await store.get(ALICE, deleted["id"])).status == MessageStatus.DELETED
    assert (await store.changes(ALICE, state, 10)).changes[0].msg_id == read["id"]
    assert len((await store.changes(ALICE, state, 10)).changes) == 1
    assert await store.mark_unread(ALICE, [read["id"]]) == []  # delivered now: unread already


async def test_expired_and_read_once_mail_cannot_come_back(store, clock):
    once = await put(store, expires=0)
    timed = await put(store, expires=T0 + 10_000)
    await store.mark(ALICE, [once["id"], timed["id"]], MessageStatus.READ)
    assert (await store.get(ALICE, once["id"])).status == MessageStatus.DELETED  # read once
    assert (await store.get(ALICE, timed["id"])).status == MessageStatus.READ
    clock.now = T0 + 20_000  # past its time: deleted for readers, swept or not
    state = await store.state(ALICE)
    assert await store.mark_unread(ALICE, [once["id"], timed["id"]]) == []
    assert await store.state(ALICE) == state
    assert (await store.get(ALICE, timed["id"])).status == MessageStatus.DELETED


async def test_unread_names_a_sender_and_refuses_an_ambiguous_id(store):
    from flux.store.base import AmbiguousMessage

    msg_id = "e" * 32
    await put(store, id=msg_id)
    await put(store, **{"id": msg_id, "from": BOB})
    await store.mark(ALICE, [MessageRef(msg_id, SENDER), MessageRef(msg_id, BOB)],
                     MessageStatus.READ)  # fmt: skip
    with pytest.raises(AmbiguousMessage):
        await store.mark_unread(ALICE, [msg_id])
    changed = await store.mark_unread(ALICE, [MessageRef(msg_id, BOB)])
    assert [(r.id, r.sender) for r in changed] == [(msg_id, BOB)]
    assert (await store.get(ALICE, msg_id, SENDER)).status == MessageStatus.READ


async def test_unread_is_per_recipient(store):
    m = await put(store, ALICE, CAROL)
    await store.mark(ALICE, [m["id"]], MessageStatus.READ)
    await store.mark(CAROL, [m["id"]], MessageStatus.READ)
    assert [r.recipient for r in await store.mark_unread(ALICE, [m["id"]])] == [ALICE]
    assert (await store.get(CAROL, m["id"])).status == MessageStatus.READ
    assert await store.mark_unread(BOB, [m["id"]]) == []  # not in Bob's mailbox


# -- ListQuery.sender ---------------------------------------------------------------------


async def test_sender_filter_pages_without_loss_or_repeat(store):
    mine = []
    for n in range(7):
        mine.append(await put(store))
        await put(store, **{"from": BOB})
        if n % 2:
            await put(store, **{"from": CAROL})
    await put(store, BOB, **{"from": SENDER})  # the same sender, another mailbox
    seen: list[str] = []
    cursor = None
    while True:
        page = await store.list(ALICE, ListQuery(sender=SENDER, limit=3, cursor=cursor))
        assert all(m.sender == SENDER and m.recipient == ALICE for m in page.items)
        seen += [m.id for m in page.items]
        if (cursor := page.next_cursor) is None:
            break
    assert seen == [m["id"] for m in reversed(mine)]  # newest first, each once


async def test_sender_filter_combines_with_the_other_filters(store):
    a = await put(store, tags=["x"])
    b = await put(store)
    c = await put(store, **{"from": BOB, "tags": ["x"]})
    await store.store_message(incoming(envelope(), ALICE))  # another from SENDER
    await store.tag(ALICE, a["id"], ["work"], [])
    await store.tag(ALICE, c["id"], ["work"], [])
    await store.mark(ALICE, [b["id"]], MessageStatus.READ)
    by_tag = await store.list(ALICE, ListQuery(sender=SENDER, tag="work"))
    assert [m.id for m in by_tag.items] == [a["id"]]
    by_status = await store.list(ALICE, ListQuery(sender=SENDER, status=MessageStatus.READ))
    assert [m.id for m in by_status.items] == [b["id"]]
    await store.move(ALICE, b["id"], "archive")
    by_inbox = await store.list(ALICE, ListQuery(sender=SENDER, inbox="archive"))
    assert [m.id for m in by_inbox.items] == [b["id"]]
    assert (await store.list(ALICE, ListQuery(sender=CAROL))).items == []
    await store.mark(ALICE, [a["id"]], MessageStatus.DELETED)
    live = await store.list(ALICE, ListQuery(sender=SENDER))
    assert a["id"] not in [m.id for m in live.items]


async def test_sqlite_sender_listing_is_an_index_range(tmp_path, clock):
    from flux.store import SQLiteStore
    from flux.store import _sqlite_ops as ops

    store = SQLiteStore(tmp_path / "flux.db", clock=clock)
    await store.open()
    try:
        for query in (ListQuery(sender=SENDER), ListQuery(sender=SENDER, cursor="MTA6MTA=")):
            sql, params = ops.list_sql(ALICE, query, clock())
            rows = await store._read(
                lambda c, sql=sql, params=params: c.execute(
                    "EXPLAIN QUERY PLAN " + sql, params
                ).fetchall()
            )
            detail = " | ".join(r[3] for r in rows)
            assert "deliveries_from" in detail, detail
            assert "TEMP B-TREE" not in detail, detail
    finally:
        await store.close()


@pytest.mark.postgres
async def test_postgres_sender_listing_uses_the_sender_index(pg_dsn, clock):
    import asyncpg

    from flux.store import _postgres_ops as ops
    from flux.store.postgres import PostgresStore

    store = PostgresStore(pg_dsn, clock=clock, fresh_schema=True)
    await store.open()
    try:
        await put(store)
        sql, args = ops.list_sql(ALICE, ListQuery(sender=SENDER, cursor="MTA6MTA="), clock())

        async def explain(c: asyncpg.Connection) -> str:
            async with c.transaction():
                await c.execute("SET LOCAL enable_seqscan = off")
                rows = await c.fetch("EXPLAIN " + sql, *args)
                return "\n".join(r[0] for r in rows)

        plan = await store._read(explain)
        assert "deliveries_from" in plan, plan
        assert "Sort" not in plan, plan
    finally:
        await store.close()
