"""The SQL of SQLiteStore: one function per operation, each taking a connection.

Write functions run on the writer thread inside a SAVEPOINT (see _sqlite_writer.py);
read functions run on a reader thread inside one read transaction, so a multi-statement
read sees one snapshot. The lifecycle decisions come from _rules.py, shared with
MemoryStore.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from . import _rules
from .base import (
    Change,
    ChangeKind,
    Changes,
    Incoming,
    ListQuery,
    MessageStatus,
    Page,
    StoredMessage,
    StoreOutcome,
)

ROW = """d.recipient, d.status, d.inbox, d.tags, d.received_at, d.seq, d.hide_at,
         m.envelope, d.id"""
FROM = "deliveries d JOIN messages m ON m.body_hash = d.body_hash"
VISIBLE = "(d.hide_at IS NULL OR d.hide_at > :now)"


def to_message(row: sqlite3.Row | tuple, now: int) -> StoredMessage:
    rcpt, status, inbox, tags, received_at, seq, hide_at, envelope, _id = row
    return StoredMessage(
        envelope=json.loads(envelope), recipient=rcpt,
        status=_rules.effective_status(MessageStatus(status), hide_at, now), inbox=inbox,
        tags=tuple(json.loads(tags)), received_at=received_at, seq=seq,
    )  # fmt: skip


def new_change(conn: sqlite3.Connection, address: str, msg_id: str, kind: ChangeKind) -> int:
    cur = conn.execute(
        "INSERT INTO changes (address, msg_id, kind) VALUES (?, ?, ?)",
        (address, msg_id, str(kind)),
    )
    return cur.lastrowid  # type: ignore[return-value]


# -- writes ---------------------------------------------------------------------------------
def store(conn: sqlite3.Connection, inc: Incoming) -> dict[str, StoreOutcome]:
    env = inc.envelope
    msg_id = env["id"]
    delete_on_read, hide_at = _rules.expiry_of(env)
    tags = _rules.normalise_tags(inc.tags)
    out: dict[str, StoreOutcome] = {}
    body_saved = False
    for rcpt in _rules.recipients_of(inc):
        row = conn.execute(
            "SELECT body_hash FROM deliveries WHERE recipient = ? AND msg_id = ?", (rcpt, msg_id)
        ).fetchone()
        if row is not None:
            same = row[0] == inc.body_hash
            out[rcpt] = StoreOutcome.DUPLICATE if same else StoreOutcome.CONFLICT
            continue
        quota = inc.pending_quota
        if quota is not None and pending_count(conn, rcpt, inc.received_at) >= quota:
            out[rcpt] = StoreOutcome.OVER_QUOTA
            continue
        if not body_saved:
            save_body(conn, inc)
            body_saved = True
        root = thread_root(conn, rcpt, msg_id, env.get("re"))
        seq = new_change(conn, rcpt, msg_id, ChangeKind.CREATED)
        cur = conn.execute(
            """INSERT INTO deliveries (recipient, msg_id, body_hash, status, inbox, tags,
                   received_at, seq, delete_on_read, hide_at, thread_root)
               VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?)""",
            (rcpt, msg_id, inc.body_hash, inc.inbox, json.dumps(tags), inc.received_at, seq,
             int(delete_on_read), hide_at, root),
        )  # fmt: skip
        conn.executemany(
            "INSERT INTO delivery_tags (delivery_id, tag, recipient, received_at) "
            "VALUES (?, ?, ?, ?)",
            [(cur.lastrowid, t, rcpt, inc.received_at) for t in tags],
        )
        out[rcpt] = StoreOutcome.STORED
    return out


def save_body(conn: sqlite3.Connection, inc: Incoming) -> None:
    env = inc.envelope
    re_id = env.get("re")
    conn.execute(
        """INSERT OR IGNORE INTO messages (body_hash, id, sender, t, re, envelope)
           VALUES (?, ?, ?, ?, ?, ?)""",
        (inc.body_hash, env["id"], str(env.get("from", "")), int(env.get("t", 0)),
         re_id if isinstance(re_id, str) else None,
         json.dumps(env, ensure_ascii=False, separators=(",", ":"))),
    )  # fmt: skip


def thread_root(conn: sqlite3.Connection, rcpt: str, msg_id: str, re_id: object) -> str:
    """Root of the replied-to message if `rcpt` has it, else `re`, else own id; replies
    stored before this message (rooted at its id) move under the new root."""
    if not (isinstance(re_id, str) and re_id):
        return msg_id
    row = conn.execute(
        "SELECT thread_root FROM deliveries WHERE recipient = ? AND msg_id = ?", (rcpt, re_id)
    ).fetchone()
    root = row[0] if row is not None else re_id
    if root != msg_id:
        conn.execute(
            "UPDATE deliveries SET thread_root = ? WHERE recipient = ? AND thread_root = ?",
            (root, rcpt, msg_id),
        )
    return root


def set_status(conn: sqlite3.Connection, address: str, msg_id: str, status: str) -> None:
    seq = new_change(conn, address, msg_id, ChangeKind.UPDATED)
    conn.execute(
        "UPDATE deliveries SET status = ?, seq = ? WHERE recipient = ? AND msg_id = ?",
        (status, seq, address, msg_id),
    )


def mark(
    conn: sqlite3.Connection, address: str, msg_ids: Sequence[str], status: MessageStatus,
    now: int,
) -> list[StoredMessage]:  # fmt: skip
    changed = []
    for msg_id in dict.fromkeys(msg_ids):
        row = conn.execute(
            "SELECT status, delete_on_read, hide_at FROM deliveries "
            "WHERE recipient = ? AND msg_id = ?",
            (address, msg_id),
        ).fetchone()
        if row is None:
            continue
        new = _rules.next_status(
            MessageStatus(row[0]), MessageStatus(status), delete_on_read=bool(row[1]),
            hidden=_rules.is_hidden(row[2], now),
        )  # fmt: skip
        if new is not None:
            set_status(conn, address, msg_id, str(new))
            changed.append(msg_id)
    return [get(conn, address, m, now) for m in changed]  # type: ignore[misc]


def fetch_pending(
    conn: sqlite3.Connection, address: str, limit: int, now: int
) -> list[StoredMessage]:
    ids = [
        r[0]
        for r in conn.execute(
            f"""SELECT d.msg_id FROM deliveries d
                WHERE d.recipient = :a AND d.status = 'pending' AND {VISIBLE}
                ORDER BY d.received_at, d.id LIMIT :n""",
            {"a": address, "now": now, "n": _rules.clamp_limit(limit)},
        )
    ]
    for msg_id in ids:
        set_status(conn, address, msg_id, str(MessageStatus.DELIVERED))
    return [get(conn, address, m, now) for m in ids]  # type: ignore[misc]


def tag(
    conn: sqlite3.Connection, address: str, msg_id: str, add: Sequence[str],
    remove: Sequence[str], now: int,
) -> StoredMessage | None:  # fmt: skip
    row = conn.execute(
        "SELECT id, tags, received_at FROM deliveries WHERE recipient = ? AND msg_id = ?",
        (address, msg_id),
    ).fetchone()
    if row is None:
        return None
    did, old_json, received_at = row
    old = set(json.loads(old_json))
    new = (old | set(add)) - set(remove)
    if new != old:
        seq = new_change(conn, address, msg_id, ChangeKind.UPDATED)
        conn.execute(
            "UPDATE deliveries SET tags = ?, seq = ? WHERE id = ?",
            (json.dumps(_rules.normalise_tags(new)), seq, did),
        )
        conn.executemany(
            "DELETE FROM delivery_tags WHERE delivery_id = ? AND tag = ?",
            [(did, t) for t in old - new],
        )
        conn.executemany(
            "INSERT INTO delivery_tags (delivery_id, tag, recipient, received_at) "
            "VALUES (?, ?, ?, ?)",
            [(did, t, address, received_at) for t in sorted(new - old)],
        )
    return get(conn, address, msg_id, now)


def move(
    conn: sqlite3.Connection, address: str, msg_id: str, inbox: str, now: int
) -> StoredMessage | None:
    row = conn.execute(
        "SELECT inbox FROM deliveries WHERE recipient = ? AND msg_id = ?", (address, msg_id)
    ).fetchone()
    if row is None:
        return None
    if row[0] != inbox:
        seq = new_change(conn, address, msg_id, ChangeKind.UPDATED)
        conn.execute(
            "UPDATE deliveries SET inbox = ?, seq = ? WHERE recipient = ? AND msg_id = ?",
            (inbox, seq, address, msg_id),
        )
    return get(conn, address, msg_id, now)


def expire(conn: sqlite3.Connection, now: int) -> int:
    rows = conn.execute(
        """SELECT recipient, msg_id FROM deliveries
           WHERE hide_at IS NOT NULL AND status != 'deleted' AND hide_at <= ?
           ORDER BY received_at, id""",
        (now,),
    ).fetchall()
    for rcpt, msg_id in rows:
        set_status(conn, rcpt, msg_id, str(MessageStatus.DELETED))
    return len(rows)


# -- reads ----------------------------------------------------------------------------------
def get(conn: sqlite3.Connection, address: str, msg_id: str, now: int) -> StoredMessage | None:
    row = conn.execute(
        f"SELECT {ROW} FROM {FROM} WHERE d.recipient = ? AND d.msg_id = ?", (address, msg_id)
    ).fetchone()
    return None if row is None else to_message(row, now)


def list_sql(address: str, q: ListQuery, now: int) -> tuple[str, dict[str, object]]:
    """The page query: newest first by (received_at, id), one index range scan per page
    whatever the mailbox size (tests/store/test_sqlite.py checks the plan)."""
    params: dict[str, object] = {"a": address, "now": now, "n": _rules.clamp_limit(q.limit) + 1}
    where = ["d.recipient = :a"]
    order_cols = ("d.received_at", "d.id")
    source = FROM
    if q.tag is not None:
        # Walk the tag index, which carries received_at, and join each hit to its row.
        source = (
            "delivery_tags t JOIN deliveries d ON d.id = t.delivery_id "
            "JOIN messages m ON m.body_hash = d.body_hash"
        )
        where = ["t.recipient = :a", "t.tag = :tag"]
        order_cols = ("t.received_at", "t.delivery_id")
        params["tag"] = q.tag
    if q.inbox is not None:
        where.append("d.inbox = :inbox")
        params["inbox"] = q.inbox
    if q.status == MessageStatus.DELETED:
        where.append("(d.status = 'deleted' OR d.hide_at <= :now)")
    elif q.status is not None:
        where.append(f"d.status = :status AND {VISIBLE}")
        params["status"] = str(q.status)
    elif not q.include_deleted:
        where.append(f"d.status != 'deleted' AND {VISIBLE}")
    if q.cursor:
        params["ca"], params["cb"] = _rules.decode_cursor(q.cursor)
        where.append(f"({order_cols[0]}, {order_cols[1]}) < (:ca, :cb)")
    sql = (
        f"SELECT {ROW} FROM {source} WHERE {' AND '.join(where)} "
        f"ORDER BY {order_cols[0]} DESC, {order_cols[1]} DESC LIMIT :n"
    )
    return sql, params


def list_page(conn: sqlite3.Connection, address: str, q: ListQuery, now: int) -> Page:
    sql, params = list_sql(address, q, now)
    rows = conn.execute(sql, params).fetchall()
    limit = _rules.clamp_limit(q.limit)
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = _rules.encode_cursor(rows[-1][4], rows[-1][8]) if more else None
    return Page([to_message(r, now) for r in rows], cursor)


def pending_count(conn: sqlite3.Connection, address: str, now: int) -> int:
    return conn.execute(
        f"""SELECT COUNT(*) FROM deliveries d
            WHERE d.recipient = :a AND d.status = 'pending' AND {VISIBLE}""",
        {"a": address, "now": now},
    ).fetchone()[0]


def inboxes(conn: sqlite3.Connection, address: str, now: int) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for inbox, status, n in conn.execute(
        f"""SELECT d.inbox, d.status, COUNT(*) FROM deliveries d
            WHERE d.recipient = :a AND d.status != 'deleted' AND {VISIBLE}
            GROUP BY d.inbox, d.status""",
        {"a": address, "now": now},
    ):
        out.setdefault(inbox, {str(s): 0 for s in _rules.LIVE_STATUSES})[status] = n
    return out


def thread(conn: sqlite3.Connection, address: str, msg_id: str, now: int) -> list[StoredMessage]:
    rows = conn.execute(
        f"""SELECT {ROW} FROM {FROM}
            WHERE d.recipient = :a AND d.status != 'deleted' AND {VISIBLE}
              AND d.thread_root = (SELECT thread_root FROM deliveries
                                   WHERE recipient = :a AND msg_id = :m)
            ORDER BY d.received_at, d.id""",
        {"a": address, "m": msg_id, "now": now},
    ).fetchall()
    return [to_message(r, now) for r in rows]


def changes(conn: sqlite3.Connection, address: str, since: int, limit: int) -> Changes:
    limit = max(1, int(limit))
    rows = conn.execute(
        "SELECT seq, msg_id, kind FROM changes WHERE address = ? AND seq > ? ORDER BY seq LIMIT ?",
        (address, since, limit + 1),
    ).fetchall()
    page = [Change(seq, m, ChangeKind(k)) for seq, m, k in rows[:limit]]
    return Changes(page, page[-1].seq if page else since, len(rows) > limit)


def state(conn: sqlite3.Connection, address: str) -> int:
    row = conn.execute("SELECT MAX(seq) FROM changes WHERE address = ?", (address,)).fetchone()
    return row[0] or 0


def stats(conn: sqlite3.Connection, now: int) -> dict[str, int]:
    one = lambda sql, *a: conn.execute(sql, a).fetchone()[0]  # noqa: E731
    out = {
        "messages": one("SELECT COUNT(*) FROM messages"),
        "deliveries": one("SELECT COUNT(*) FROM deliveries"),
    }
    out |= {str(s): 0 for s in MessageStatus}
    for status, n in conn.execute("SELECT status, COUNT(*) FROM deliveries GROUP BY status"):
        out[status] = n
    out["hosted_addresses"] = one("SELECT COUNT(*) FROM hosted_addresses")
    out["sessions"] = one("SELECT COUNT(*) FROM sessions WHERE revoked = 0 AND expires_at > ?", now)
    return out
