"""Store.match_prefix (base.py, "Short ids") on every backend: a prefix is resolved only
inside one mailbox, by (id, sender), with a count, and as an index range scan."""

from __future__ import annotations

import pytest
from store_helpers import ALICE, BOB, CAROL, SENDER, envelope, incoming

from flux.store.base import MAX_CANDIDATES, MessageStatus, prefix_upper


async def put(store, msg_id: str, *recipients: str, sender: str = SENDER, **fields) -> dict:
    env = envelope(**{"id": msg_id, "from": sender, **fields})
    await store.store_message(incoming(env, *(recipients or (ALICE,))))
    return env


def test_prefix_upper_bounds_exactly_the_strings_with_the_prefix():
    assert prefix_upper("abcd1234") == "abcd1235"
    assert prefix_upper("abcd123f") == "abcd123g"
    assert prefix_upper("abcd1239") == "abcd123:"
    for s in ("abcd1239", "abcd1239ffff", "abcd12390000"):
        assert "abcd1239" <= s < prefix_upper("abcd1239")
    for s in ("abcd1238ffff", "abcd123a", "abcd124"):
        assert not ("abcd1239" <= s < prefix_upper("abcd1239"))


async def test_one_match_many_and_none(store):
    a = await put(store, "abcd1234" + "0" * 24, subject="first")
    b = await put(store, "abcd1234" + "f" * 24)
    c = await put(store, "abcd1235" + "0" * 24)
    one = await store.match_prefix(ALICE, "abcd12350")
    assert one.count == 1 and [m.id for m in one.items] == [c["id"]]
    two = await store.match_prefix(ALICE, "abcd1234")
    assert two.count == 2 and [m.id for m in two.items] == [a["id"], b["id"]]
    assert two.items[0].envelope["subject"] == "first"
    assert two.items[0].sender == SENDER and two.items[0].recipient == ALICE
    none = await store.match_prefix(ALICE, "abcd1236")
    assert none.count == 0 and list(none.items) == []
    full = await store.match_prefix(ALICE, a["id"])
    assert full.count == 1 and full.items[0].id == a["id"]


async def test_only_the_callers_mailbox(store):
    """Bob's and Carol's mail never matches Alice's prefix, even with the same id."""
    mine = await put(store, "12345678" + "a" * 24, ALICE)
    await put(store, "12345678" + "b" * 24, BOB)
    await put(store, "12345678" + "c" * 24, CAROL, BOB)
    found = await store.match_prefix(ALICE, "12345678")
    assert found.count == 1 and [m.id for m in found.items] == [mine["id"]]
    assert {m.recipient for m in found.items} == {ALICE}
    assert (await store.match_prefix(BOB, "12345678")).count == 2
    assert (await store.match_prefix(CAROL, "12345678aaaa")).count == 0


async def test_same_id_from_two_senders_and_the_sender_filter(store):
    msg_id = "feedbeef" + "1" * 24
    await put(store, msg_id, sender=SENDER)
    await put(store, msg_id, sender=BOB)
    both = await store.match_prefix(ALICE, "feedbeef")
    assert both.count == 2
    assert [(m.id, m.sender) for m in both.items] == sorted([(msg_id, SENDER), (msg_id, BOB)])
    only = await store.match_prefix(ALICE, "feedbeef", sender=BOB)
    assert only.count == 1 and only.items[0].sender == BOB
    assert (await store.match_prefix(ALICE, "feedbeef", sender=CAROL)).count == 0


async def test_limit_caps_items_not_count(store):
    for n in range(MAX_CANDIDATES + 3):
        await put(store, f"0badcafe{n:024x}")
    found = await store.match_prefix(ALICE, "0badcafe")
    assert found.count == MAX_CANDIDATES + 3 and len(found.items) == MAX_CANDIDATES
    assert [m.id for m in found.items] == sorted(m.id for m in found.items)
    assert len((await store.match_prefix(ALICE, "0badcafe", limit=2)).items) == 2


async def test_deleted_rows_match_as_get_finds_them(store):
    env = await put(store, "deadbeef" + "2" * 24)
    await store.mark(ALICE, [env["id"]], MessageStatus.DELETED)
    found = await store.match_prefix(ALICE, "deadbeef")
    assert found.count == 1 and found.items[0].status == MessageStatus.DELETED


async def test_sqlite_prefix_lookup_is_an_index_range(tmp_path, clock):
    from flux.store import SQLiteStore
    from flux.store import _sqlite_ops as ops

    store = SQLiteStore(tmp_path / "flux.db", clock=clock)
    await store.open()
    try:
        params = {"a": ALICE, "lo": "abcd1234", "hi": "abcd1235", "s": SENDER, "n": 10}
        for sender in (None, SENDER):
            for sql in (ops.prefix_sql(sender, "COUNT(*)"),
                        ops.prefix_sql(sender, "d.msg_id, d.sender") + " ORDER BY d.msg_id, d.sender LIMIT :n"):  # fmt: skip
                rows = await store._read(
                    lambda c, sql=sql: c.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
                )
                detail = " | ".join(r[3] for r in rows)
                assert "SEARCH d USING" in detail and "INDEX" in detail, detail
                assert "msg_id>? AND msg_id<?" in detail, detail
                assert "TEMP B-TREE" not in detail, detail
    finally:
        await store.close()


@pytest.mark.postgres
async def test_postgres_prefix_lookup_uses_the_byte_order_index(pg_dsn, clock):
    import asyncpg

    from flux.store import _postgres_ops as ops
    from flux.store.postgres import PostgresStore

    store = PostgresStore(pg_dsn, clock=clock, fresh_schema=True)
    await store.open()
    try:
        await put(store, "abcd1234" + "0" * 24)

        async def explain(c: asyncpg.Connection) -> str:
            async with c.transaction():
                await c.execute("SET LOCAL enable_seqscan = off")
                args = (ALICE, "abcd1234", prefix_upper("abcd1234"), None)
                rows = await c.fetch("EXPLAIN " + ops.PREFIX_COUNT, *args)
                rows += await c.fetch("EXPLAIN " + ops.PREFIX_ROWS, *args, 10)
                return "\n".join(r[0] for r in rows)

        plan = await store._read(explain)
        assert "deliveries_id_prefix" in plan, plan
        assert "Seq Scan on deliveries" not in plan, plan
    finally:
        await store.close()
