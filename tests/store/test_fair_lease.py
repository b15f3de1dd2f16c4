"""The delivery queue is fair between senders (_memory_queue.py, "A fair queue"): a lease
takes a destination's mail round-robin across its senders, each sender's in queue order;
run against every store through the `store` fixture, and schema step 12's backfill of
`outbound.sender` on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
import uuid

import pytest
from store_helpers import BOB, CAROL, T0, envelope

from flux.protocol import body_hash
from flux.store.base import Outbound

B = "b.example"
FLOOD, OTHER, THIRD = "fx1" + "f" * 40, "fx1" + "e" * 40, "fx1" + "d" * 40


def copy(sender: str, destination: str = B) -> Outbound:
    env = envelope(**{"from": sender, "to": BOB})
    return Outbound(destination, env, body_hash(env), (BOB,), "none", T0)


def ids(lease) -> list[str]:
    return [q.item.envelope["id"] for q in lease.messages]


async def test_a_second_senders_copy_is_not_leased_behind_a_flood(store):
    flood = [copy(FLOOD) for _ in range(50)]
    await store.enqueue(flood)
    other = copy(OTHER)  # queued after the whole flood
    await store.enqueue([other])
    lease = await store.lease("w1", T0, 60_000, 10)
    # second place, not 51st: the flood's oldest, then the other sender's, then the flood
    assert ids(lease) == [flood[0].envelope["id"], other.envelope["id"]] + [
        f.envelope["id"] for f in flood[1:9]
    ]
    assert [q.qid for q in lease.messages if q.item.envelope["from"] == FLOOD] == sorted(
        q.qid for q in lease.messages if q.item.envelope["from"] == FLOOD
    )  # each sender's copies in queue order


async def test_the_lease_takes_turns_across_senders_and_keeps_each_senders_order(store):
    a = [copy(FLOOD) for _ in range(4)]
    b = [copy(OTHER) for _ in range(2)]
    c = [copy(THIRD)]
    await store.enqueue([a[0], a[1], b[0], a[2], a[3], b[1], c[0]])
    lease = await store.lease("w1", T0, 60_000, 100)
    want = [a[0], b[0], c[0], a[1], b[1], a[2], a[3]]  # turn 1 of each, turn 2, ...
    assert ids(lease) == [m.envelope["id"] for m in want]
    # what is settled leaves; the next lease starts each sender's turns again
    await store.settle(lease, [q.qid for q in lease.messages[:4]])  # a0 b0 c0 a1
    late = copy(CAROL)
    await store.enqueue([late])
    again = await store.lease("w2", T0, 60_000, 3)
    assert ids(again) == [m.envelope["id"] for m in (a[2], b[1], late)]  # turns 1, by qid


async def test_a_held_copy_takes_no_turn(store):
    first, second = copy(FLOOD), copy(FLOOD)
    other = copy(OTHER)
    await store.enqueue([first, second, other])
    held = [q.qid for q in await store.queued(B, None, 10) if q.item == first]
    assert await store.hold_messages(held, True) == 1
    lease = await store.lease("w1", T0, 60_000, 10)
    assert ids(lease) == [second.envelope["id"], other.envelope["id"]]


def _old_outbound(env: dict) -> tuple:
    return (B, body_hash(env), json.dumps(env), "none", T0)


async def test_step_12_backfills_the_sender_sqlite(tmp_path):
    from flux.store import SQLiteStore
    from flux.store.migrations.sqlite import STEPS, migrate

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, str(path), STEPS[:11]) == 11
    flood = [envelope(**{"from": FLOOD, "to": BOB}) for _ in range(3)]
    other = envelope(**{"from": OTHER, "to": BOB})
    conn.execute("INSERT INTO destinations (destination) VALUES (?)", (B,))
    for env in [*flood, other]:
        conn.execute(
            """INSERT INTO outbound (destination, body_hash, envelope, recipients, cv,
                   enqueued_at) VALUES (?, ?, ?, '["x"]', ?, ?)""",
            _old_outbound(env),
        )
    conn.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        assert store.schema_version >= 12
        lease = await store.lease("w1", T0, 60_000, 2)
        assert ids(lease) == [flood[0]["id"], other["id"]]
    finally:
        await store.close()


@pytest.mark.postgres
async def test_step_12_backfills_the_sender_postgres(pg_dsn):
    import asyncpg

    from flux.store.migrations.postgres import STEPS, migrate
    from flux.store.postgres import PostgresStore

    schema = f"flux_test_{uuid.uuid4().hex}"
    conn = await asyncpg.connect(pg_dsn, server_settings={"search_path": schema})
    try:
        assert await migrate(conn, "test", lock_key=12, schema=schema, steps=STEPS[:11]) == 11
        flood = [envelope(**{"from": FLOOD, "to": BOB}) for _ in range(3)]
        other = envelope(**{"from": OTHER, "to": BOB})
        await conn.execute("INSERT INTO destinations (destination) VALUES ($1)", B)
        for env in [*flood, other]:
            await conn.execute(
                """INSERT INTO outbound (destination, body_hash, envelope, recipients, cv,
                       enqueued_at) VALUES ($1, $2, $3, '{x}', $4, $5)""",
                *_old_outbound(env),
            )
        await conn.close()
        store = PostgresStore(pg_dsn, schema=schema)
        await store.open()
        try:
            assert store.schema_version >= 12
            lease = await store.lease("w1", T0, 60_000, 2)
            assert ids(lease) == [flood[0]["id"], other["id"]]
        finally:
            await store.close()
    finally:
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
