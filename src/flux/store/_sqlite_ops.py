"""The SQL of SQLiteStore: one function per operation, each taking a connection.

Write functions run on the writer thread inside its transaction (see _sqlite_writer.py);
read functions run on a reader thread inside one read transaction, so a multi-statement
read sees one snapshot. The lifecycle decisions come from _rules.py, shared with
MemoryStore.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from . import _rules
from . import _sqlite_hits as hits
from .base import (
    Change,
    ChangeKind,
    Changes,
    Incoming,
    ListQuery,
    MessageRef,
    MessageStatus,
    Page,
    PrefixMatches,
    SentMessage,
    StoredMessage,
    StoreOutcome,
    ThreadItem,
    prefix_upper,
)

ROW = """d.recipient, d.status, d.inbox, d.tags, d.received_at, d.seq, d.hide_at,
         m.envelope, d.id"""
FROM = "deliveries d JOIN messages m ON m.body_hash = d.body_hash"
VISIBLE = "(d.hide_at IS NULL OR d.hide_at > :now)"
NO_TAGS = "[]"  #: json.dumps(()), which most mail stores


def to_message(row: sqlite3.Row | tuple, now: int) -> StoredMessage:
    rcpt, status, inbox, tags, received_at, seq, hide_at, envelope, _id = row
    return StoredMessage(
        envelope=json.loads(envelope), recipient=rcpt,
        status=_rules.effective_status(MessageStatus(status), hide_at, now), inbox=inbox,
        tags=tuple(json.loads(tags)), received_at=received_at, seq=seq,
    )  # fmt: skip


def new_change(
    conn: sqlite3.Connection, address: str, sender: str, msg_id: str, kind: ChangeKind
) -> int:
    cur = conn.execute(
        "INSERT INTO changes (address, sender, msg_id, kind) VALUES (?, ?, ?, ?)",
        (address, sender, msg_id, str(kind)),
    )
    return cur.lastrowid  # type: ignore[return-value]


def senders(conn: sqlite3.Connection, address: str, msg_id: str) -> list[str]:
    sql = "SELECT sender FROM deliveries WHERE recipient = ? AND msg_id = ?"
    return [r[0] for r in conn.execute(sql, (address, msg_id))]


def find(conn: sqlite3.Connection, address: str, msg_id: str, sender: str | None) -> str | None:
    """The sender of the row `msg_id` names (base.py); raises AmbiguousMessage."""
    return _rules.pick(MessageRef(msg_id, sender), senders(conn, address, msg_id))


# -- writes ---------------------------------------------------------------------------------
def store(conn: sqlite3.Connection, inc: Incoming) -> dict[str, StoreOutcome]:
    env = inc.envelope
    msg_id, sender = env["id"], env["from"]
    re_id = env.get("re") if isinstance(env.get("re"), str) else None
    delete_on_read, hide_at = _rules.expiry_of(env)
    tags = _rules.normalise_tags(inc.tags)
    out: dict[str, StoreOutcome] = {}
    body_saved = False
    quota = inc.pending_quota
    rate = inc.rate
    # looked at once, before anything of the message is written (base.py notes, "Rate and
    # contacts in the storing transaction"); the writer's transaction makes it exact
    limited = rate is not None and (
        hits.hits_in_window(conn, rate.bucket, inc.received_at, rate.window_ms) >= rate.limit
    )
    for rcpt in _rules.recipients_of(inc):
        held, pending, known, strangers, from_sender = conn.execute(
            _BEFORE_STORING,
            {"a": rcpt, "m": msg_id, "s": sender, "now": inc.received_at,
             "counted": quota is not None, "shared": inc.stranger_share is not None},
        ).fetchone()  # fmt: skip
        if held is not None:
            same = held == inc.body_hash
            out[rcpt] = StoreOutcome.DUPLICATE if same else StoreOutcome.CONFLICT
            continue
        if limited:
            out[rcpt] = StoreOutcome.RATE_LIMITED
            continue
        if quota is not None and pending >= quota:
            out[rcpt] = StoreOutcome.OVER_QUOTA
            continue
        if _rules.over_stranger_share(inc, rcpt, bool(known), strangers or 0, from_sender or 0):
            out[rcpt] = StoreOutcome.OVER_STRANGER_SHARE
            continue
        if not body_saved:
            save_body(conn, inc)
            body_saved = True
        root = thread_root(conn, rcpt, env)
        seq = new_change(conn, rcpt, sender, msg_id, ChangeKind.CREATED)
        cur = conn.execute(
            """INSERT INTO deliveries (recipient, sender, msg_id, re, body_hash, status, inbox,
                   tags, received_at, seq, delete_on_read, hide_at, thread_root)
               VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?)""",
            (rcpt, sender, msg_id, re_id, inc.body_hash, inc.inbox,
             json.dumps(tags) if tags else NO_TAGS,
             inc.received_at, seq, int(delete_on_read), hide_at, root),
        )  # fmt: skip
        if tags:
            conn.executemany(
                "INSERT INTO delivery_tags (delivery_id, tag, recipient, received_at) "
                "VALUES (?, ?, ?, ?)",
                [(cur.lastrowid, t, rcpt, inc.received_at) for t in tags],
            )
        out[rcpt] = StoreOutcome.STORED
    if body_saved:  # something was stored: the hit counts, the contacts are kept
        if rate is not None:
            hits.count_hit(conn, rate.bucket, inc.received_at, rate.window_ms, rate.limit)
        if inc.contacts:
            add_contacts(conn, sender, inc.contacts, inc.received_at)
    return out


#: What `store` must know of a recipient before writing, in one statement instead of
#: four (each a turn through sqlite3 on the writer, which holds the GIL the loop needs):
#: the body hash this sender's message of this id already has there (dedupe), its
#: visible pending count when a quota applies, whether it has written to the sender, and,
#: when a stranger share applies and it has not, the stranger share's two counts
#: (`over_stranger_share`: visible pending mail from every stranger, and from this one).
#: Both counts walk the recipient's pending rows (deliveries_status), as many as its quota
#: at most: `+d.sender` keeps this sender's count off the (recipient, sender) index, whose
#: range also holds every message of it already read (schema step 16 dropped the index
#: on (recipient, sender, status) that served only this count).
_BEFORE_STORING = f"""SELECT held, pending, known,
    CASE WHEN :shared AND NOT known AND :a != :s THEN
        (SELECT COUNT(*) FROM deliveries d
          WHERE d.recipient = :a AND d.status = 'pending' AND {VISIBLE}
            AND d.sender != d.recipient
            AND NOT EXISTS (SELECT 1 FROM contacts c
                             WHERE c.owner = d.recipient AND c.peer = d.sender)) END,
    CASE WHEN :shared AND NOT known AND :a != :s THEN
        (SELECT COUNT(*) FROM deliveries d
          WHERE d.recipient = :a AND d.status = 'pending' AND {VISIBLE}
            AND +d.sender = :s) END
  FROM (SELECT
    (SELECT body_hash FROM deliveries
      WHERE recipient = :a AND msg_id = :m AND sender = :s) AS held,
    CASE WHEN :counted THEN
        (SELECT COUNT(*) FROM deliveries d
          WHERE d.recipient = :a AND d.status = 'pending' AND {VISIBLE}) END AS pending,
    EXISTS (SELECT 1 FROM contacts WHERE owner = :a AND peer = :s) AS known)"""


def add_contacts(conn: sqlite3.Connection, owner: str, peers: Sequence[str], now: int) -> None:
    conn.executemany(
        "INSERT OR IGNORE INTO contacts (owner, peer, since) VALUES (?, ?, ?)",
        [(owner, p, now) for p in dict.fromkeys(peers)],
    )


def purge_expired(conn: sqlite3.Connection, before: int) -> int:
    """Delete expired deliveries, their tags and the bodies no delivery holds (base.py)."""
    gone = [(r[0], r[1]) for r in conn.execute(
        "SELECT id, body_hash FROM deliveries WHERE hide_at IS NOT NULL AND hide_at <= ?",
        (before,),
    )]  # fmt: skip
    conn.executemany("DELETE FROM delivery_tags WHERE delivery_id = ?", [(i,) for i, _ in gone])
    conn.executemany("DELETE FROM deliveries WHERE id = ?", [(i,) for i, _ in gone])
    conn.executemany(
        "DELETE FROM messages WHERE body_hash = ? AND NOT EXISTS "
        "(SELECT 1 FROM deliveries WHERE body_hash = ?)",
        [(b, b) for b in {b for _, b in gone}],
    )
    return len(gone)


def save_body(conn: sqlite3.Connection, inc: Incoming) -> None:
    env = inc.envelope
    re_id = env.get("re")
    conn.execute(
        """INSERT OR IGNORE INTO messages (body_hash, id, sender, t, re, envelope)
           VALUES (?, ?, ?, ?, ?, ?)""",
        (inc.body_hash, env["id"], str(env.get("from", "")), int(env.get("t", 0)),
         re_id if isinstance(re_id, str) else None,
         _rules.envelope_text(env)),
    )  # fmt: skip


def parent_candidates(
    conn: sqlite3.Connection, owner: str, re_id: str
) -> list[tuple[Mapping[str, Any], str]]:
    """(envelope, root) of `owner`'s messages of id `re_id`, received and sent, oldest
    first (base.py, "A conversation includes the owner's own sent mail")."""
    received = conn.execute(
        f"""SELECT d.received_at, m.envelope, d.thread_root FROM {FROM}
            WHERE d.recipient = ? AND d.msg_id = ? ORDER BY d.received_at, d.id""",
        (owner, re_id),
    ).fetchall()
    sent = conn.execute(
        "SELECT sent_at, envelope, thread_root, delivery FROM sent WHERE sender = ? AND msg_id = ?",
        (owner, re_id),
    ).fetchall()
    return _rules.oldest_first(
        [(t, json.loads(e), r) for t, e, r in received],
        [(t, _rules.as_sent(json.loads(e), json.loads(d)), r) for t, e, r, d in sent],
    )


def new_root(conn: sqlite3.Connection, owner: str, env: Mapping[str, Any]) -> str:
    """The root of a message new to `owner`'s mail, received or sent (base.py, "Threads");
    the replies waiting for it that its participants sent move under it, in both."""
    re_id = env.get("re")
    parent = None
    if isinstance(re_id, str) and re_id:
        parent = _rules.parent_root(env, owner, parent_candidates(conn, owner, re_id))
    root = _rules.thread_start(env, parent)
    waiting = _rules.adoptable(env, owner)
    marks = ", ".join("?" * len(waiting))
    # Replies stored before their parent are rare: one look at both tables, and the two
    # UPDATEs only when it finds one (each statement is a turn through sqlite3 on the
    # writer, which holds the GIL the loop needs).
    if not conn.execute(_any_waiting(len(waiting)), (owner, *waiting)).fetchone()[0]:
        return root
    conn.execute(
        f"UPDATE deliveries SET thread_root = ? WHERE recipient = ? AND thread_root IN ({marks})",
        (root, owner, *waiting),
    )
    conn.execute(
        f"UPDATE sent SET thread_root = ? WHERE sender = ? AND thread_root IN ({marks})",
        (root, owner, *waiting),
    )
    return root


#: the root of a new delivery: the recipient is the owner
thread_root = new_root


@functools.cache
def _any_waiting(keys: int) -> str:
    """Whether owner ?1 holds, received or sent, a row under any of the placeholder roots
    ?2..?(keys+1): one equality probe of the thread index each. Not `thread_root IN
    (...)`, for which SQLite builds a temporary table per run (10 against 5 us, 2 keys),
    unless there are many keys: an OR chain is as deep as it is long (SQLite's expression
    depth limit is 1,000)."""
    if keys > 8:
        marks = ", ".join(f"?{i + 2}" for i in range(keys))
        return f"""SELECT EXISTS (SELECT 1 FROM deliveries
                                   WHERE recipient = ?1 AND thread_root IN ({marks}))
                       OR EXISTS (SELECT 1 FROM sent
                                   WHERE sender = ?1 AND thread_root IN ({marks}))"""
    probes = [
        f"EXISTS (SELECT 1 FROM {table} WHERE {owner} = ?1 AND thread_root = ?{i + 2})"
        for table, owner in (("deliveries", "recipient"), ("sent", "sender"))
        for i in range(keys)
    ]
    return "SELECT " + " OR ".join(probes)


def set_status(
    conn: sqlite3.Connection, address: str, sender: str, msg_id: str, status: str
) -> None:
    seq = new_change(conn, address, sender, msg_id, ChangeKind.UPDATED)
    conn.execute(
        "UPDATE deliveries SET status = ?, seq = ? "
        "WHERE recipient = ? AND msg_id = ? AND sender = ?",
        (status, seq, address, msg_id, sender),
    )


def mark(
    conn: sqlite3.Connection, address: str, msg_ids: Sequence[str | MessageRef],
    status: MessageStatus, now: int, step: _rules.Step = _rules.next_status,
) -> list[StoredMessage]:  # fmt: skip
    """`Store.mark`; with `step=_rules.unread_status`, `Store.mark_unread`."""
    wanted = _rules.refs(msg_ids)
    held = {r.id: senders(conn, address, r.id) for r in wanted}
    changed = []
    for sender, msg_id in _rules.resolve_all(wanted, held):
        row = conn.execute(
            "SELECT status, delete_on_read, hide_at FROM deliveries "
            "WHERE recipient = ? AND msg_id = ? AND sender = ?",
            (address, msg_id, sender),
        ).fetchone()
        new = step(
            MessageStatus(row[0]), MessageStatus(status), delete_on_read=bool(row[1]),
            hidden=_rules.is_hidden(row[2], now),
        )  # fmt: skip
        if new is not None:
            set_status(conn, address, sender, msg_id, str(new))
            changed.append((sender, msg_id))
    return [exact(conn, address, who, m, now) for who, m in changed]  # type: ignore[misc]


def fetch_pending(
    conn: sqlite3.Connection, address: str, limit: int, now: int
) -> list[StoredMessage]:
    ids = [
        (r[0], r[1])
        for r in conn.execute(
            f"""SELECT d.sender, d.msg_id FROM deliveries d
                WHERE d.recipient = :a AND d.status = 'pending' AND {VISIBLE}
                ORDER BY d.received_at, d.id LIMIT :n""",
            {"a": address, "now": now, "n": _rules.clamp_limit(limit)},
        )
    ]
    for sender, msg_id in ids:
        set_status(conn, address, sender, msg_id, str(MessageStatus.DELIVERED))
    return [exact(conn, address, who, m, now) for who, m in ids]  # type: ignore[misc]


def tag(
    conn: sqlite3.Connection, address: str, msg_id: str, add: Sequence[str],
    remove: Sequence[str], now: int, sender: str | None = None,
) -> StoredMessage | None:  # fmt: skip
    sender = find(conn, address, msg_id, sender)
    if sender is None:
        return None
    row = conn.execute(
        "SELECT id, tags, received_at FROM deliveries "
        "WHERE recipient = ? AND msg_id = ? AND sender = ?",
        (address, msg_id, sender),
    ).fetchone()
    did, old_json, received_at = row
    old = set(json.loads(old_json))
    new = (old | set(add)) - set(remove)
    if new != old:
        seq = new_change(conn, address, sender, msg_id, ChangeKind.UPDATED)
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
    return exact(conn, address, sender, msg_id, now)


def move(
    conn: sqlite3.Connection, address: str, msg_id: str, inbox: str, now: int,
    sender: str | None = None,
) -> StoredMessage | None:  # fmt: skip
    sender = find(conn, address, msg_id, sender)
    if sender is None:
        return None
    row = conn.execute(
        "SELECT id, inbox FROM deliveries WHERE recipient = ? AND msg_id = ? AND sender = ?",
        (address, msg_id, sender),
    ).fetchone()
    if row[1] != inbox:
        seq = new_change(conn, address, sender, msg_id, ChangeKind.UPDATED)
        conn.execute("UPDATE deliveries SET inbox = ?, seq = ? WHERE id = ?", (inbox, seq, row[0]))
    return exact(conn, address, sender, msg_id, now)


def expire(conn: sqlite3.Connection, now: int) -> int:
    rows = conn.execute(
        """SELECT recipient, sender, msg_id FROM deliveries
           WHERE hide_at IS NOT NULL AND status != 'deleted' AND hide_at <= ?
           ORDER BY received_at, id""",
        (now,),
    ).fetchall()
    for rcpt, sender, msg_id in rows:
        set_status(conn, rcpt, sender, msg_id, str(MessageStatus.DELETED))
    return len(rows)


# -- reads ----------------------------------------------------------------------------------
def get(
    conn: sqlite3.Connection, address: str, msg_id: str, now: int, sender: str | None = None
) -> StoredMessage | None:
    sender = find(conn, address, msg_id, sender)
    return None if sender is None else exact(conn, address, sender, msg_id, now)


def prefix_sql(sender: str | None, what: str) -> str:
    """One mailbox's ids in [prefix, upper): a range of the unique index (recipient,
    msg_id, sender), in BINARY (byte) order (base.py, "Short ids"; the plan is checked in
    tests/store/test_short_ids.py)."""
    only = " AND d.sender = :s" if sender is not None else ""
    return (f"SELECT {what} FROM deliveries d WHERE d.recipient = :a"
            f" AND d.msg_id >= :lo AND d.msg_id < :hi{only}")  # fmt: skip


def match_prefix(
    conn: sqlite3.Connection, address: str, prefix: str, sender: str | None, limit: int,
    now: int,
) -> PrefixMatches:  # fmt: skip
    params = {"a": address, "lo": prefix, "hi": prefix_upper(prefix), "s": sender,
              "n": _rules.clamp_limit(limit)}  # fmt: skip
    count = conn.execute(prefix_sql(sender, "COUNT(*)"), params).fetchone()[0]
    keys = conn.execute(
        prefix_sql(sender, "d.msg_id, d.sender") + " ORDER BY d.msg_id, d.sender LIMIT :n",
        params,
    ).fetchall()
    items = [exact(conn, address, s, m, now) for m, s in keys]
    return PrefixMatches(count, [i for i in items if i is not None])


def exact(
    conn: sqlite3.Connection, address: str, sender: str, msg_id: str, now: int
) -> StoredMessage | None:
    row = conn.execute(
        f"SELECT {ROW} FROM {FROM} WHERE d.recipient = ? AND d.msg_id = ? AND d.sender = ?",
        (address, msg_id, sender),
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
    if q.sender is not None:
        # With no tag: the sender index (recipient, sender, received_at, id), schema step
        # 9, one range scan per page, newest first (tests/store/test_sender_list.py).
        where.append("d.sender = :sender")
        params["sender"] = q.sender
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


def thread(
    conn: sqlite3.Connection, address: str, msg_id: str, now: int, sender: str | None = None
) -> list[ThreadItem]:
    """Received and sent messages of one root (base.py); one read transaction."""
    root = root_of(conn, address, msg_id, sender)
    if root is None:
        return []
    rows = conn.execute(
        f"""SELECT {ROW} FROM {FROM}
            WHERE d.recipient = :a AND d.status != 'deleted' AND {VISIBLE}
              AND d.thread_root = :r
            ORDER BY d.received_at, d.id""",
        {"a": address, "r": root, "now": now},
    ).fetchall()
    # a root of "" is a row an older process recorded during a rolling upgrade past
    # schema step 11 (docs/OPERATING.md): it stands alone rather than with every such row
    alone = " AND msg_id = :m" if root == "" else ""
    sent = conn.execute(
        f"""SELECT sender, sent_at, envelope, delivery, updated_at FROM sent
            WHERE sender = :a AND thread_root = :r{alone} ORDER BY sent_at, msg_id""",
        {"a": address, "r": root, "m": msg_id},
    ).fetchall()
    return _rules.conversation(
        [to_message(r, now) for r in rows],
        [SentMessage(s, json.loads(e), at, json.loads(d), up) for s, at, e, d, up in sent],
    )


def root_of(conn: sqlite3.Connection, address: str, msg_id: str, sender: str | None) -> str | None:
    """The root of the message (sender, msg_id) of `address`'s mail, received or sent;
    None if there is none. Raises AmbiguousMessage (base.py)."""
    held = senders(conn, address, msg_id)
    sent_root = conn.execute(
        "SELECT thread_root FROM sent WHERE sender = ? AND msg_id = ?", (address, msg_id)
    ).fetchone()
    who = _rules.pick(
        MessageRef(msg_id, sender), [*held, *([address] if sent_root is not None else [])]
    )
    if who is None:
        return None
    if who in held:
        return conn.execute(
            "SELECT thread_root FROM deliveries WHERE recipient = ? AND msg_id = ? AND sender = ?",
            (address, msg_id, who),
        ).fetchone()[0]
    return sent_root[0]  # type: ignore[index]


def changes(conn: sqlite3.Connection, address: str, since: int, limit: int) -> Changes:
    limit = max(1, int(limit))
    rows = conn.execute(
        "SELECT seq, msg_id, kind, sender FROM changes WHERE address = ? AND seq > ? "
        "ORDER BY seq LIMIT ?",
        (address, since, limit + 1),
    ).fetchall()
    page = [Change(seq, m, ChangeKind(k), who) for seq, m, k, who in rows[:limit]]
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
