"""A conversation includes the owner's own sent mail (base.py, "A conversation includes the
owner's own sent mail"), on every back end (the `store` fixture of conftest.py), and the
schema step 11 backfill that gives sent records stored before it their thread roots
(SQLite and PostgreSQL).
"""

from __future__ import annotations

import json

import pytest
from store_helpers import ALICE, BOB, CAROL, T0, envelope, incoming

from flux.protocol import body_hash
from flux.store import MessageStatus, StoredMessage
from flux.store.base import AmbiguousMessage, SentMessage


def sent(env: dict, at: int) -> SentMessage:
    """The sent record of `env` as the server keeps it (one recipient, stored here)."""
    return SentMessage(env["from"], env, at, {env["to"]: {"state": "stored", "at": at}}, at)


def shape(items) -> list[tuple[str, str]]:
    """(kind, id) of each conversation item: "in" received, "out" sent."""
    return [("out" if isinstance(m, SentMessage) else "in", m.id) for m in items]


async def send(store, env: dict, at: int) -> None:
    """What the server does for local mail: deliver, and keep the sender's record, in one
    transaction (`Incoming.sent`)."""
    await store.store_message(incoming(env, env["to"], at=at, sent=sent(env, at)))


async def test_a_conversation_shows_both_sides_to_each(store):
    m1 = envelope(**{"from": ALICE, "to": BOB})
    m2 = envelope(**{"from": BOB, "to": ALICE, "re": m1["id"]})
    m3 = envelope(**{"from": ALICE, "to": BOB, "re": m2["id"]})
    for n, env in enumerate((m1, m2, m3)):
        await send(store, env, T0 + 10 * n)
    alice = [("out", m1["id"]), ("in", m2["id"]), ("out", m3["id"])]
    bob = [("in", m1["id"]), ("out", m2["id"]), ("in", m3["id"])]
    for msg in (m1, m2, m3):  # asked by any of its messages, received or sent
        assert shape(await store.thread(ALICE, msg["id"])) == alice
        assert shape(await store.thread(BOB, msg["id"])) == bob
    out = (await store.thread(ALICE, m1["id"]))[0]
    assert out.delivery == {BOB: {"state": "stored", "at": T0}} and out.sent_at == T0
    # naming the sender chooses too; another sender never holds Alice's sent message
    assert shape(await store.thread(ALICE, m1["id"], ALICE)) == alice
    assert await store.thread(ALICE, m1["id"], CAROL) == []
    assert await store.thread(CAROL, m1["id"]) == []


async def test_a_remote_conversation_joins_through_the_sent_record(store):
    """Mail to another server: the record comes from `enqueue`/`record_sent`, the reply
    arrives later; it joins the sent message's root."""
    m1 = envelope(**{"from": ALICE, "to": BOB})
    await store.record_sent([sent(m1, T0)])
    m2 = envelope(**{"from": BOB, "to": ALICE, "re": m1["id"]})
    await store.store_message(incoming(m2, ALICE, at=T0 + 5))
    m3 = envelope(**{"from": ALICE, "to": BOB, "re": m2["id"]})
    await store.enqueue([], sent=[sent(m3, T0 + 9)])
    m4 = envelope(**{"from": BOB, "to": ALICE, "re": m3["id"]})
    await store.store_message(incoming(m4, ALICE, at=T0 + 12))
    want = [("out", m1["id"]), ("in", m2["id"]), ("out", m3["id"]), ("in", m4["id"])]
    assert shape(await store.thread(ALICE, m4["id"])) == want
    assert shape(await store.thread(ALICE, m1["id"])) == want
    # a replayed record keeps its first state and root
    await store.record_sent([sent(m1, T0 + 99)])
    assert shape(await store.thread(ALICE, m1["id"])) == want
    assert (await store.thread(ALICE, m1["id"]))[0].sent_at == T0


async def test_a_reply_that_arrives_before_its_sent_parent_is_adopted(store):
    """A reply waiting under a placeholder moves under the sent message once its record
    is kept, as it would under a received one."""
    m1 = envelope(**{"from": ALICE, "to": BOB})
    m2 = envelope(**{"from": BOB, "to": ALICE, "re": m1["id"]})
    await store.store_message(incoming(m2, ALICE, at=T0 + 5))
    assert shape(await store.thread(ALICE, m2["id"])) == [("in", m2["id"])]
    await store.record_sent([sent(m1, T0 + 1)])
    assert shape(await store.thread(ALICE, m2["id"])) == [("out", m1["id"]), ("in", m2["id"])]


async def test_a_message_to_oneself_is_there_once(store):
    note = envelope(**{"from": ALICE, "to": ALICE})
    await send(store, note, T0)
    answer = envelope(**{"from": ALICE, "to": BOB, "re": note["id"]})
    await send(store, answer, T0 + 3)
    got = await store.thread(ALICE, note["id"])
    assert shape(got) == [("in", note["id"]), ("out", answer["id"])]
    assert isinstance(got[0], StoredMessage) and got[0].status == MessageStatus.PENDING
    # deleting the received copy leaves the sent one, still once
    await store.mark(ALICE, [note["id"]], MessageStatus.DELETED)
    assert shape(await store.thread(ALICE, answer["id"])) == [
        ("out", note["id"]), ("out", answer["id"])]  # fmt: skip


async def test_the_participant_rule_holds_for_sent_parents(store):
    """A stranger's "reply" to Alice's sent message does not join its conversation."""
    m1 = envelope(**{"from": ALICE, "to": BOB})
    await store.record_sent([sent(m1, T0)])
    squat = envelope(**{"from": CAROL, "to": ALICE, "re": m1["id"]})
    await store.store_message(incoming(squat, ALICE, at=T0 + 1))
    assert shape(await store.thread(ALICE, m1["id"])) == [("out", m1["id"])]
    assert shape(await store.thread(ALICE, squat["id"])) == [("in", squat["id"])]


async def test_a_bare_id_in_both_a_sent_record_and_anothers_mail_is_ambiguous(store):
    mine = envelope(**{"from": ALICE, "to": BOB})
    await store.record_sent([sent(mine, T0)])
    theirs = envelope(**{"id": mine["id"], "from": BOB, "to": ALICE})
    await store.store_message(incoming(theirs, ALICE, at=T0 + 1))
    with pytest.raises(AmbiguousMessage):
        await store.thread(ALICE, mine["id"])
    assert shape(await store.thread(ALICE, mine["id"], ALICE)) == [("out", mine["id"])]
    assert shape(await store.thread(ALICE, mine["id"], BOB)) == [("in", mine["id"])]


async def test_within_one_millisecond_a_message_comes_before_its_replies(store):
    """Times tie (a fast exchange, a coarse clock): the thread still reads in order, each
    message before its replies, sent or received; then sent before received."""
    m1 = envelope(**{"from": ALICE, "to": BOB})
    m2 = envelope(**{"from": BOB, "to": ALICE, "re": m1["id"]})
    await store.record_sent([sent(m1, T0)])
    await store.store_message(incoming(m2, ALICE, at=T0))
    assert shape(await store.thread(ALICE, m2["id"])) == [("out", m1["id"]), ("in", m2["id"])]
    b1 = envelope(**{"from": BOB, "to": CAROL})
    b2 = envelope(**{"from": CAROL, "to": BOB, "re": b1["id"]})
    await store.store_message(incoming(b1, CAROL, at=T0))
    await store.record_sent([sent(b2, T0)])  # carol answers within the millisecond
    other = envelope(**{"from": BOB, "to": CAROL, "re": b1["id"]})  # bob adds a line
    await store.store_message(incoming(other, CAROL, at=T0))
    assert shape(await store.thread(CAROL, b1["id"])) == [
        ("in", b1["id"]), ("out", b2["id"]), ("in", other["id"])]  # fmt: skip


# -- schema step 11: the backfill -------------------------------------------------------------
def _old_mail() -> tuple[list[tuple[dict, int, str]], list[tuple[dict, int]]]:
    """A conversation as step 10 stored it: Alice's deliveries (envelope, at, root: the
    reply to her sent M1 waits under a placeholder, as it did before sent mail counted)
    and her sent records (envelope, at)."""
    m1 = envelope(**{"from": ALICE, "to": BOB})
    m2 = envelope(**{"from": BOB, "to": ALICE, "re": m1["id"]})
    m3 = envelope(**{"from": ALICE, "to": BOB, "re": m2["id"]})
    other = envelope(**{"from": CAROL, "to": ALICE})
    received = [(m2, T0 + 2, f"re {m1['id']} {BOB}"), (other, T0 + 4, f"{other['id']} {CAROL}")]
    return received, [(m1, T0 + 1), (m3, T0 + 3)]


async def _check_backfilled(store, received, sent_rows) -> None:
    (m2, _, _), (other, _, _) = received
    (m1, _), (m3, _) = sent_rows
    want = [("out", m1["id"]), ("in", m2["id"]), ("out", m3["id"])]
    for msg in (m1, m2, m3):
        assert shape(await store.thread(ALICE, msg["id"])) == want
    assert shape(await store.thread(ALICE, other["id"])) == [("in", other["id"])]
    # and mail after the step joins the same conversation
    m4 = envelope(**{"from": BOB, "to": ALICE, "re": m3["id"]})
    await store.store_message(incoming(m4, ALICE, at=T0 + 9))
    assert shape(await store.thread(ALICE, m1["id"])) == [*want, ("in", m4["id"])]


async def test_step_11_backfills_sqlite(tmp_path):
    import sqlite3

    from flux.store import SQLiteStore
    from flux.store.migrations.sqlite import STEPS, migrate

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, str(path), STEPS[:10]) == 10
    received, sent_rows = _old_mail()
    for seq, (env, at, root) in enumerate(received, start=1):
        bh = body_hash(env)
        conn.execute("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?)",
                     (bh, env["id"], env["from"], env["t"], env.get("re"), json.dumps(env)))  # fmt: skip
        conn.execute(
            "INSERT INTO changes (address, msg_id, kind, sender) VALUES (?, ?, 'created', ?)",
            (ALICE, env["id"], env["from"]),
        )
        conn.execute(
            """INSERT INTO deliveries (recipient, sender, msg_id, re, body_hash, status, inbox,
                   received_at, seq, thread_root) VALUES (?, ?, ?, ?, ?, 'pending', 'inbox',
                   ?, ?, ?)""",
            (ALICE, env["from"], env["id"], env.get("re"), bh, at, seq, root),
        )
    for env, at in sent_rows:
        conn.execute(
            "INSERT INTO sent VALUES (?, ?, ?, ?, ?, ?)",
            (ALICE, env["id"], at, json.dumps(env), json.dumps(sent(env, at).delivery), at),
        )
    conn.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        assert store.schema_version == STEPS[-1].version >= 11
        await _check_backfilled(store, received, sent_rows)
    finally:
        await store.close()
    # a row an old process records during a rolling upgrade has no root: it stands alone
    late, other = envelope(**{"from": ALICE, "to": BOB}), envelope(**{"from": ALICE, "to": BOB})
    conn = sqlite3.connect(path, isolation_level=None)
    for env in (late, other):
        conn.execute("INSERT INTO sent (sender, msg_id, sent_at, envelope, delivery, updated_at) "
                     "VALUES (?, ?, ?, ?, '{}', ?)", (ALICE, env["id"], T0, json.dumps(env), T0))  # fmt: skip
    conn.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        assert shape(await store.thread(ALICE, late["id"])) == [("out", late["id"])]
    finally:
        await store.close()


@pytest.mark.postgres
async def test_step_11_backfills_postgres(pg_dsn):
    import uuid

    import asyncpg

    from flux.store.migrations.postgres import STEPS, migrate
    from flux.store.postgres import PostgresStore

    schema = f"flux_test_{uuid.uuid4().hex}"
    conn = await asyncpg.connect(pg_dsn, server_settings={"search_path": schema})
    try:
        assert await migrate(conn, "test", lock_key=11, schema=schema, steps=STEPS[:10]) == 10
        received, sent_rows = _old_mail()
        for env, at, root in received:
            bh = body_hash(env)
            await conn.execute("INSERT INTO messages VALUES ($1, $2, $3, $4, $5, $6)",
                               bh, env["id"], env["from"], env["t"], env.get("re"),
                               json.dumps(env))  # fmt: skip
            seq = await conn.fetchval(
                "INSERT INTO changes (address, msg_id, kind, sender) "
                "VALUES ($1, $2, 'created', $3) RETURNING seq",
                ALICE, env["id"], env["from"],
            )  # fmt: skip
            await conn.execute(
                """INSERT INTO deliveries (recipient, sender, msg_id, re, body_hash, status,
                       inbox, received_at, seq, thread_root)
                   VALUES ($1, $2, $3, $4, $5, 'pending', 'inbox', $6, $7, $8)""",
                ALICE, env["from"], env["id"], env.get("re"), bh, at, seq, root,
            )  # fmt: skip
        for env, at in sent_rows:
            await conn.execute(
                "INSERT INTO sent VALUES ($1, $2, $3, $4, $5, $6)",
                ALICE, env["id"], at, json.dumps(env), json.dumps(sent(env, at).delivery), at,
            )  # fmt: skip
        store = PostgresStore(pg_dsn, schema=schema)
        await store.open()
        try:
            assert store.schema_version == STEPS[-1].version >= 11
            await _check_backfilled(store, received, sent_rows)
            # a row an old process records during a rolling upgrade: it stands alone
            late, other = (
                envelope(**{"from": ALICE, "to": BOB}),
                envelope(**{"from": ALICE, "to": BOB}),
            )
            for env in (late, other):
                await conn.execute(
                    "INSERT INTO sent (sender, msg_id, sent_at, envelope, delivery, updated_at) "
                    "VALUES ($1, $2, $3, $4, '{}', $3)", ALICE, env["id"], T0, json.dumps(env),
                )  # fmt: skip
            assert shape(await store.thread(ALICE, late["id"])) == [("out", late["id"])]
        finally:
            await store.close()
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


# -- what GET /thread answers (server/mailbox.py over the memory store) -----------------------
async def test_the_answer_marks_sent_messages_and_finds_them_by_short_id():
    from flux.server.errors import NotFound
    from flux.server.fanout import Dispatcher, LocalFanout
    from flux.server.mailbox import AmbiguousPrefix, Mailbox
    from flux.server.metrics import Metrics
    from flux.server.push import Hub
    from flux.store import MemoryStore
    from flux.store.base import MessageRef

    store = MemoryStore()
    box = Mailbox(store, LocalFanout(Dispatcher(store, Hub(Metrics(), 8), "test")))
    m1 = envelope(**{"id": "abcd1234" + "0" * 24, "from": ALICE, "to": BOB})
    m2 = envelope(**{"from": BOB, "to": ALICE, "re": m1["id"]})
    twin = envelope(**{"id": "abcd1234" + "f" * 24, "from": ALICE, "to": CAROL})
    await store.record_sent([sent(m1, T0), sent(twin, T0 + 1)])
    await store.store_message(incoming(m2, ALICE, at=T0 + 2))
    got = await box.thread(ALICE, MessageRef(m2["id"][:10]))
    assert [(m["id"], m.get("_folder"), "_status" in m) for m in got] == [
        (m1["id"], "sent", False), (m2["id"], None, True)]  # fmt: skip
    assert got[0]["_delivery"] == {BOB: {"state": "stored", "at": T0}}
    by_sent = await box.thread(ALICE, MessageRef(m1["id"][:12]))  # only in alice's sent mail
    assert [m["id"] for m in by_sent] == [m1["id"], m2["id"]]
    with pytest.raises(AmbiguousPrefix) as caught:  # two sent ids start alike
        await box.thread(ALICE, MessageRef("abcd1234"))
    assert caught.value.count == 2 and caught.value.field == "id"
    with pytest.raises(NotFound):  # another sender's sent mail is not in alice's threads
        await box.thread(ALICE, MessageRef(m1["id"][:12], BOB))
    with pytest.raises(NotFound):
        await box.thread(CAROL, MessageRef(m1["id"][:12]))
