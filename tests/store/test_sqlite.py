"""SQLite-only properties: durability under SIGKILL, group commit, per-operation failure
isolation, close(), migrations, pragmas, and the listing query plans that keep a page
fast in a mailbox of a million messages (checked by plan, not by timing)."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest
from store_helpers import ALICE, BOB, check_migrated_to_step_4, envelope, incoming

from flux.store import (
    Incoming,
    ListQuery,
    MemoryStore,
    MessageStatus,
    SchemaTooNew,
    SQLiteStore,
    StoreOutcome,
    open_store,
)
from flux.store import _sqlite_ops as ops
from flux.store.migrations import Migration, plan, split_statements
from flux.store.migrations.sqlite import STEPS, migrate


@pytest.fixture
async def sqlite_store(tmp_path):
    s = SQLiteStore(tmp_path / "flux.db")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


# -- durability -----------------------------------------------------------------------------
CHILD = textwrap.dedent("""
    import asyncio, hashlib, sys
    from flux.store import Incoming, SQLiteStore

    async def main(path):
        store = SQLiteStore(path)
        await store.open()

        async def writer(w):
            for k in range(1_000_000):
                mid = f"{w:04x}{k:028x}"
                env = {"v": "1.0", "id": mid, "from": "fx1" + "5" * 40, "to": "fx1" + "a" * 40,
                       "t": k, "content": "x" * 300, "sig": "s", "pub": "p"}
                body = hashlib.sha256(mid.encode()).hexdigest()
                await store.store_message(Incoming(env, body, ["fx1" + "a" * 40], k))
                sys.stdout.write(mid + "\\n")  # acknowledged: the commit returned
                sys.stdout.flush()

        await asyncio.gather(*(writer(w) for w in range(8)))

    asyncio.run(main(sys.argv[1]))
""")


def test_every_acknowledged_message_survives_sigkill(tmp_path):
    db = tmp_path / "flux.db"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db)], stdout=subprocess.PIPE, text=True, bufsize=1
    )
    acked: list[str] = []
    try:
        for line in child.stdout:  # wait on the child's own acknowledgements, no sleeping
            acked.append(line.strip())
            if len(acked) >= 300:
                break
        os.kill(child.pid, signal.SIGKILL)
        rest = child.stdout.read()  # acks written before the kill are acks too
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    acked += [line for line in rest.split("\n")[:-1]]  # the last piece may be cut short
    assert len(acked) >= 300

    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        counts = dict(conn.execute("SELECT msg_id, COUNT(*) FROM deliveries GROUP BY msg_id"))
    finally:
        conn.close()
    missing = [i for i in acked if i not in counts]
    assert missing == []
    assert all(counts[i] == 1 for i in acked)
    assert len(set(acked)) == len(acked)


async def test_reopened_store_serves_acknowledged_mail(tmp_path):
    path = tmp_path / "flux.db"
    s = SQLiteStore(path)
    await s.open()
    env = envelope()
    await s.store_message(incoming(env, ALICE))
    await s.tag(ALICE, env["id"], ["kept"], [])
    await s.close()
    again = SQLiteStore(path)
    await again.open()
    try:
        m = await again.get(ALICE, env["id"])
        assert dict(m.envelope) == env and m.tags == ("kept",)
        assert (await again.changes(ALICE, 0, 10)).state == m.seq
    finally:
        await again.close()


# -- group commit ---------------------------------------------------------------------------
async def test_concurrent_writes_share_commits(sqlite_store):
    before = sqlite_store.commits
    incs = [incoming(envelope(), ALICE) for _ in range(64)]
    outs = await asyncio.gather(*(sqlite_store.store_message(i) for i in incs))
    assert outs == [{ALICE: StoreOutcome.STORED}] * 64
    commits = sqlite_store.commits - before
    assert 1 <= commits <= 64 // 4, commits
    assert await sqlite_store.pending_count(ALICE) == 64


async def test_a_failing_operation_does_not_fail_its_batch(sqlite_store):
    good = [incoming(envelope(), ALICE) for _ in range(10)]
    env = envelope()
    # Alice's row is written, then binding the second "recipient" fails mid-operation.
    bad = Incoming(env, "bad-body", [ALICE, ("not", "an address")], env["t"])  # type: ignore[list-item]
    before = sqlite_store.commits
    results = await asyncio.gather(
        *(sqlite_store.store_message(i) for i in good[:5]),
        sqlite_store.store_message(bad),
        *(sqlite_store.store_message(i) for i in good[5:]),
        return_exceptions=True,
    )
    assert isinstance(results[5], sqlite3.Error)
    assert [r for i, r in enumerate(results) if i != 5] == [{ALICE: StoreOutcome.STORED}] * 10
    assert sqlite_store.commits - before <= 3  # they did share transactions
    assert await sqlite_store.get(ALICE, env["id"]) is None  # rolled back to its savepoint
    ids = {c.msg_id for c in (await sqlite_store.changes(ALICE, 0, 100)).changes}
    assert env["id"] not in ids and len(ids) == 10
    assert (await sqlite_store.stats())["messages"] == 10


async def test_close_commits_what_was_submitted(tmp_path):
    path = tmp_path / "flux.db"
    s = SQLiteStore(path)
    await s.open()
    incs = [incoming(envelope(), ALICE) for _ in range(40)]
    # gather starts the writes (each enqueues at once) before close() runs
    *outs, _ = await asyncio.gather(*(s.store_message(i) for i in incs), s.close())
    assert outs == [{ALICE: StoreOutcome.STORED}] * 40
    with pytest.raises(RuntimeError):
        await s.store_message(incoming(envelope(), ALICE))
    again = SQLiteStore(path)
    await again.open()
    try:
        assert await again.pending_count(ALICE) == 40
    finally:
        await again.close()


async def test_two_stores_on_one_file_share_the_sequence(tmp_path):
    """Two store objects (as two processes would) write one file concurrently."""
    a, b = SQLiteStore(tmp_path / "f.db"), SQLiteStore(tmp_path / "f.db")
    await a.open()
    await b.open()
    try:
        await asyncio.gather(*(s.store_message(incoming(envelope(), ALICE)) for s in [a, b] * 20))
        ch = await a.changes(ALICE, 0, 100)
        seqs = [c.seq for c in ch.changes]
        assert len(seqs) == 40 and seqs == sorted(set(seqs))
    finally:
        await a.close()
        await b.close()


# -- pragmas and factory --------------------------------------------------------------------
async def test_connections_are_durable_and_checked(sqlite_store):
    pragma = "SELECT * FROM pragma_synchronous, pragma_foreign_keys, pragma_journal_mode"
    on_reader = await sqlite_store._read(lambda c: c.execute(pragma).fetchone())
    on_writer = await sqlite_store._write(lambda c: c.execute(pragma).fetchone())
    assert on_reader == on_writer == (2, 1, "wal")  # 2 = FULL


async def test_open_store_factory(tmp_path):
    assert isinstance(open_store("memory:"), MemoryStore)
    for url in (tmp_path / "a.db", str(tmp_path / "b.db"), f"sqlite://{tmp_path}/c.db"):
        s = open_store(url)
        assert isinstance(s, SQLiteStore)
        await s.open()
        await s.close()
    assert (tmp_path / "c.db").exists()
    with pytest.raises(ValueError):
        open_store("mysql://x")


# -- migrations -----------------------------------------------------------------------------
async def test_open_twice_is_idempotent(tmp_path):
    path = tmp_path / "flux.db"
    for _ in range(2):
        s = SQLiteStore(path)
        await s.open()
        assert s.schema_version == len(STEPS)
        await s.close()
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
    conn.close()
    assert rows == [(v,) for v in range(1, len(STEPS) + 1)]


async def test_a_newer_database_is_refused(tmp_path):
    path = tmp_path / "flux.db"
    s = SQLiteStore(path)
    await s.open()
    await s.close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_version (version, description) VALUES (99, 'future')")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaTooNew, match=r"schema version 99 is newer than this FLUX knows"):
        await SQLiteStore(path).open()


def test_a_failing_step_leaves_the_previous_version(tmp_path):
    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    assert migrate(conn, "m.db") == len(STEPS)
    broken = [
        *STEPS,
        Migration(len(STEPS) + 1, "broken", "CREATE TABLE x (a);\nINSERT INTO nope VALUES (1);\n"),
    ]
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn, "m.db", broken)
    assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == len(STEPS)
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'x'").fetchone() is None
    fixed = [*STEPS, Migration(len(STEPS) + 1, "fixed", "CREATE TABLE x (a);")]
    assert migrate(conn, "m.db", fixed) == len(STEPS) + 1
    assert migrate(conn, "m.db", fixed) == len(STEPS) + 1  # and again: nothing to do
    conn.close()


def test_plan_and_statement_splitting():
    steps = [Migration(1, "a", ""), Migration(2, "b", "")]
    assert [s.version for s in plan(0, steps, "db")] == [1, 2]
    assert [s.version for s in plan(1, steps, "db")] == [2]
    assert plan(2, steps, "db") == []
    with pytest.raises(SchemaTooNew):
        plan(3, steps, "db")
    with pytest.raises(AssertionError):
        plan(0, [Migration(2, "gap", "")], "db")
    script = """CREATE TABLE t (a TEXT DEFAULT 'x;y');
CREATE TRIGGER tr AFTER INSERT ON t BEGIN
    UPDATE t SET a = 'z;'; SELECT 1;
END;
"""
    assert len(list(split_statements(script, sqlite3.complete_statement))) == 2
    with pytest.raises(ValueError):
        list(split_statements("CREATE TABLE t (a", sqlite3.complete_statement))


# -- query plans: every listing is an index range scan, never a sort ------------------------
PLAN_QUERIES = [
    ListQuery(), ListQuery(inbox="work"), ListQuery(status=MessageStatus.PENDING),
    ListQuery(status=MessageStatus.DELETED), ListQuery(include_deleted=True),
    ListQuery(tag="t"), ListQuery(tag="t", inbox="work"),
    ListQuery(inbox="work", status=MessageStatus.READ),
]  # fmt: skip


@pytest.mark.parametrize("query", PLAN_QUERIES, ids=repr)
@pytest.mark.parametrize("with_cursor", [False, True])
async def test_listing_uses_an_index_and_no_sort(sqlite_store, query, with_cursor):
    if with_cursor:
        query = ListQuery(**{**{f: getattr(query, f) for f in query.__slots__},
                             "cursor": "MTc2MDAwMDAwMDAwMDo0Mg=="})  # fmt: skip
    sql, params = ops.list_sql(ALICE, query, 0)
    plan_rows = await sqlite_store._read(
        lambda c: c.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
    )
    detail = " | ".join(r[3] for r in plan_rows)
    assert "TEMP B-TREE" not in detail, detail
    first = plan_rows[0][3]
    assert "USING" in first and "INDEX" in first, detail


async def test_fetch_pending_and_counts_use_indexes(sqlite_store):
    for sql in (
        "SELECT d.msg_id FROM deliveries d WHERE d.recipient = ? AND d.status = 'pending' "
        "ORDER BY d.received_at, d.id LIMIT 10",
        "SELECT seq FROM changes WHERE address = ? AND seq > 0 ORDER BY seq LIMIT 10",
    ):
        rows = await sqlite_store._read(
            lambda c, sql=sql: c.execute("EXPLAIN QUERY PLAN " + sql, (BOB,)).fetchall()
        )
        detail = " | ".join(r[3] for r in rows)
        assert "TEMP B-TREE" not in detail and "INDEX" in detail, detail


async def test_step_4_migrates_mail_stored_at_step_3(tmp_path):
    """A database made at step 3 (deliveries keyed by (recipient, id)) opens at step 4 with
    its mail, tags, changes and threads, now keyed by (recipient, sender, id)."""
    import json
    import sqlite3

    from store_helpers import SENDER, envelope

    from flux.protocol import body_hash
    from flux.store.migrations.sqlite import STEPS, migrate

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, str(path), STEPS[:3]) == 3
    root = envelope()
    reply = envelope(re=root["id"])
    orphan = envelope(re="f" * 32)
    for n, (env, thread_root) in enumerate(
        ((root, root["id"]), (reply, root["id"]), (orphan, "f" * 32)), start=1
    ):
        bh = body_hash(env)
        conn.execute("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?)",
                     (bh, env["id"], SENDER, env["t"], env.get("re"), json.dumps(env)))  # fmt: skip
        conn.execute(
            "INSERT INTO changes (address, msg_id, kind) VALUES (?, ?, 'created')",
            (ALICE, env["id"]),
        )
        conn.execute(
            """INSERT INTO deliveries (id, recipient, msg_id, body_hash, status, inbox, tags,
                   received_at, seq, thread_root) VALUES (?, ?, ?, ?, 'pending', 'inbox',
                   '["old"]', ?, ?, ?)""",
            (n, ALICE, env["id"], bh, env["t"], n, thread_root),
        )
        conn.execute("INSERT INTO delivery_tags VALUES (?, 'old', ?, ?)", (n, ALICE, env["t"]))
    conn.close()

    store = SQLiteStore(path)
    await store.open()
    try:
        assert store.schema_version == STEPS[-1].version  # step 4 and every later one
        await check_migrated_to_step_4(store, root, reply, orphan)
    finally:
        await store.close()
