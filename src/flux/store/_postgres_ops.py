"""The SQL of PostgresStore's mailboxes: one function per operation, each on a connection.

Write functions run inside a READ COMMITTED transaction that the caller opened, and each
takes its mailbox locks (_postgres_locks.py) as its first statement: from then on no other
transaction changes those mailboxes, and every later statement sees everything committed
before. That is what makes the dedupe check, the quota count and the seq order hold under
concurrency (postgres.py explains why). Read functions are single statements, or run in a
read-only REPEATABLE READ transaction when they need one snapshot. The lifecycle decisions
come from _rules.py, shared with the other stores.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import asyncpg

from . import _rules
from ._postgres_locks import Locks
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
         m.envelope, d.id, d.msg_id"""
FROM = "deliveries d JOIN messages m ON m.body_hash = d.body_hash"


def visible(now: str) -> str:
    """The row is not past its `expires` time at `now` (a placeholder such as "$2")."""
    return f"(d.hide_at IS NULL OR d.hide_at > {now})"


def to_message(row: asyncpg.Record, now: int) -> StoredMessage:
    rcpt, status, inbox, tags, received_at, seq, hide_at, envelope, _id, _msg_id = row
    return StoredMessage(
        envelope=json.loads(envelope), recipient=rcpt,
        status=_rules.effective_status(MessageStatus(status), hide_at, now), inbox=inbox,
        tags=tuple(tags), received_at=received_at, seq=seq,
    )  # fmt: skip


def rowcount(status: str) -> int:
    """The row count of a command tag such as "INSERT 0 1" or "UPDATE 3"."""
    return int(status.rsplit(" ", 1)[-1])


# -- writes ---------------------------------------------------------------------------------
async def store_batch(
    conn: asyncpg.Connection, locks: Locks, batch: Sequence[Incoming]
) -> list[dict[str, StoreOutcome]]:
    """Store every message of `batch`, in order, in the caller's transaction."""
    recipients = [_rules.recipients_of(inc) for inc in batch]  # TypeError before any SQL
    everyone = {r for rcpts in recipients for r in rcpts}
    await locks.take(conn, everyone, {inc.body_hash for inc in batch})
    return [await store(conn, inc, rcpts) for inc, rcpts in zip(batch, recipients, strict=True)]


STORE_DELIVERY = """
WITH c AS (
    INSERT INTO changes (address, msg_id, kind) VALUES ($1, $2, 'created') RETURNING seq
), d AS (
    INSERT INTO deliveries (recipient, msg_id, body_hash, status, inbox, tags, received_at,
                            seq, delete_on_read, hide_at, thread_root)
    SELECT $1, $2, $3, 'pending', $4, $5::text[], $6, c.seq, $7, $8, $9 FROM c
    RETURNING id
)
INSERT INTO delivery_tags (delivery_id, tag, recipient, received_at)
SELECT d.id, t, $1, $6 FROM d, unnest($5::text[]) AS t"""


async def store(
    conn: asyncpg.Connection, inc: Incoming, recipients: list[str]
) -> dict[str, StoreOutcome]:
    """One message; the caller holds the locks of its recipients and body."""
    env = inc.envelope
    msg_id = env["id"]
    delete_on_read, hide_at = _rules.expiry_of(env)
    tags = list(_rules.normalise_tags(inc.tags))
    existing = dict(
        await conn.fetch(
            "SELECT recipient, body_hash FROM deliveries "
            "WHERE msg_id = $1 AND recipient = ANY($2::text[])",
            msg_id, recipients,
        )
    )  # fmt: skip
    quota = inc.pending_quota
    fresh = [r for r in recipients if r not in existing]
    # Each recipient gets at most one row here, so counts read once stay right for this
    # message; the locks keep them right against other transactions.
    pending = await pending_counts(conn, fresh, inc.received_at) if quota is not None else {}
    out: dict[str, StoreOutcome] = {}
    body_saved = False
    for rcpt in recipients:
        if rcpt in existing:
            same = existing[rcpt] == inc.body_hash
            out[rcpt] = StoreOutcome.DUPLICATE if same else StoreOutcome.CONFLICT
            continue
        if quota is not None and pending.get(rcpt, 0) >= quota:
            out[rcpt] = StoreOutcome.OVER_QUOTA
            continue
        if not body_saved:
            await save_body(conn, inc)
            body_saved = True
        root = await thread_root(conn, rcpt, msg_id, env.get("re"))
        await conn.execute(
            STORE_DELIVERY, rcpt, msg_id, inc.body_hash, inc.inbox, tags, inc.received_at,
            delete_on_read, hide_at, root,
        )  # fmt: skip
        out[rcpt] = StoreOutcome.STORED
    return out


async def save_body(conn: asyncpg.Connection, inc: Incoming) -> None:
    env = inc.envelope
    re_id = env.get("re")
    await conn.execute(
        """INSERT INTO messages (body_hash, id, sender, t, re, envelope)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (body_hash) DO NOTHING""",
        inc.body_hash, env["id"], str(env.get("from", "")), int(env.get("t", 0)),
        re_id if isinstance(re_id, str) else None, _rules.envelope_text(env),
    )  # fmt: skip


async def thread_root(conn: asyncpg.Connection, rcpt: str, msg_id: str, re_id: object) -> str:
    """Root of the replied-to message if `rcpt` has it, else `re`, else own id; replies
    stored before this message (rooted at its id) move under the new root."""
    if not (isinstance(re_id, str) and re_id):
        return msg_id
    parent_root = await conn.fetchval(
        "SELECT thread_root FROM deliveries WHERE recipient = $1 AND msg_id = $2", rcpt, re_id
    )
    root = re_id if parent_root is None else parent_root
    if root != msg_id:
        await conn.execute(
            "UPDATE deliveries SET thread_root = $1 WHERE recipient = $2 AND thread_root = $3",
            root, rcpt, msg_id,
        )  # fmt: skip
    return root


SET_STATUSES = """
WITH u AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
        WITH ORDINALITY AS u (address, msg_id, status, n)
), c AS (
    INSERT INTO changes (address, msg_id, kind)
    SELECT address, msg_id, 'updated' FROM u ORDER BY n
    RETURNING seq, address, msg_id
)
UPDATE deliveries d SET status = u.status, seq = c.seq
FROM c JOIN u USING (address, msg_id)
WHERE d.recipient = c.address AND d.msg_id = c.msg_id"""


async def set_statuses(conn: asyncpg.Connection, rows: Sequence[tuple[str, str, str]]) -> None:
    """Apply (address, msg_id, status) rows with one change each, seqs in `rows` order
    (the INSERT draws them from the sequence in the ORDER BY order); the pairs are
    distinct."""
    if rows:
        addresses, ids, statuses = (list(col) for col in zip(*rows, strict=True))
        await conn.execute(SET_STATUSES, addresses, ids, statuses)


def update_with_change(assignment: str) -> str:
    """An UPDATE of one delivery ($1 recipient, $2 msg_id) that records one change."""
    return f"""
WITH c AS (
    INSERT INTO changes (address, msg_id, kind) VALUES ($1, $2, 'updated') RETURNING seq
)
UPDATE deliveries d SET {assignment}, seq = c.seq FROM c
WHERE d.recipient = $1 AND d.msg_id = $2"""


SET_TAGS = update_with_change("tags = $3::text[]")
SET_INBOX = update_with_change("inbox = $3")


async def mark(
    conn: asyncpg.Connection, locks: Locks, address: str, msg_ids: Sequence[str],
    status: MessageStatus, now: int,
) -> list[StoredMessage]:  # fmt: skip
    await locks.take(conn, [address])
    ids = list(dict.fromkeys(msg_ids))
    rows = await conn.fetch(
        "SELECT msg_id, status, delete_on_read, hide_at FROM deliveries "
        "WHERE recipient = $1 AND msg_id = ANY($2::text[])",
        address, ids,
    )  # fmt: skip
    found = {r["msg_id"]: r for r in rows}
    changed: list[tuple[str, str, str]] = []
    for msg_id in ids:
        row = found.get(msg_id)
        if row is None:
            continue
        new = _rules.next_status(
            MessageStatus(row["status"]), MessageStatus(status),
            delete_on_read=row["delete_on_read"], hidden=_rules.is_hidden(row["hide_at"], now),
        )  # fmt: skip
        if new is not None:
            changed.append((address, msg_id, str(new)))
    await set_statuses(conn, changed)
    return await get_many(conn, address, [c[1] for c in changed], now)


async def fetch_pending(
    conn: asyncpg.Connection, locks: Locks, address: str, limit: int, now: int
) -> list[StoredMessage]:
    await locks.take(conn, [address])  # two fetches of one mailbox never hand out one row
    rows = await conn.fetch(
        f"""SELECT d.msg_id FROM deliveries d
            WHERE d.recipient = $1 AND d.status = 'pending' AND {visible("$2")}
            ORDER BY d.received_at, d.id LIMIT $3""",
        address, now, _rules.clamp_limit(limit),
    )  # fmt: skip
    ids = [r[0] for r in rows]
    await set_statuses(conn, [(address, m, str(MessageStatus.DELIVERED)) for m in ids])
    return await get_many(conn, address, ids, now)


async def tag(
    conn: asyncpg.Connection, locks: Locks, address: str, msg_id: str, add: Sequence[str],
    remove: Sequence[str], now: int,
) -> StoredMessage | None:  # fmt: skip
    await locks.take(conn, [address])
    row = await conn.fetchrow(
        "SELECT id, tags, received_at FROM deliveries WHERE recipient = $1 AND msg_id = $2",
        address, msg_id,
    )  # fmt: skip
    if row is None:
        return None
    did, received_at = row["id"], row["received_at"]
    old = set(row["tags"])
    new = (old | set(add)) - set(remove)
    if new != old:
        await conn.execute(SET_TAGS, address, msg_id, list(_rules.normalise_tags(new)))
        await conn.execute(
            "DELETE FROM delivery_tags WHERE delivery_id = $1 AND tag = ANY($2::text[])",
            did, sorted(old - new),
        )  # fmt: skip
        await conn.execute(
            "INSERT INTO delivery_tags (delivery_id, tag, recipient, received_at) "
            "SELECT $1, t, $2, $3 FROM unnest($4::text[]) AS t",
            did, address, received_at, sorted(new - old),
        )  # fmt: skip
    return await get(conn, address, msg_id, now)


async def move(
    conn: asyncpg.Connection, locks: Locks, address: str, msg_id: str, inbox: str, now: int
) -> StoredMessage | None:
    await locks.take(conn, [address])
    current = await conn.fetchval(
        "SELECT inbox FROM deliveries WHERE recipient = $1 AND msg_id = $2", address, msg_id
    )
    if current is None:
        return None
    if current != inbox:
        await conn.execute(SET_INBOX, address, msg_id, inbox)
    return await get(conn, address, msg_id, now)


EXPIRED = """SELECT {cols} FROM deliveries
             WHERE hide_at IS NOT NULL AND status <> 'deleted' AND hide_at <= $1"""


async def expire(conn: asyncpg.Connection, locks: Locks, now: int) -> int:
    # Find whose mailboxes to lock, lock them, then read the rows again under the locks
    # (only in those mailboxes: one that expires meanwhile waits for the next sweep).
    owners = [r[0] for r in await conn.fetch(EXPIRED.format(cols="DISTINCT recipient"), now)]
    if not owners:
        return 0
    await locks.take(conn, owners)
    rows = await conn.fetch(
        EXPIRED.format(cols="recipient, msg_id")
        + " AND recipient = ANY($2::text[]) ORDER BY received_at, id",
        now, owners,
    )  # fmt: skip
    await set_statuses(conn, [(r, m, str(MessageStatus.DELETED)) for r, m in rows])
    return len(rows)


# -- reads ----------------------------------------------------------------------------------
async def get(
    conn: asyncpg.Connection, address: str, msg_id: str, now: int
) -> StoredMessage | None:
    row = await conn.fetchrow(
        f"SELECT {ROW} FROM {FROM} WHERE d.recipient = $1 AND d.msg_id = $2", address, msg_id
    )
    return None if row is None else to_message(row, now)


async def get_many(
    conn: asyncpg.Connection, address: str, msg_ids: Sequence[str], now: int
) -> list[StoredMessage]:
    """The rows of `msg_ids` that exist, in `msg_ids` order."""
    if not msg_ids:
        return []
    rows = await conn.fetch(
        f"SELECT {ROW} FROM {FROM} WHERE d.recipient = $1 AND d.msg_id = ANY($2::text[])",
        address, list(msg_ids),
    )  # fmt: skip
    by_id = {r["msg_id"]: r for r in rows}
    return [to_message(by_id[m], now) for m in msg_ids if m in by_id]


class Placeholders:
    """Collects query arguments and hands out their `$n` placeholders."""

    def __init__(self) -> None:
        self.values: list[object] = []

    def __call__(self, value: object) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def list_sql(address: str, q: ListQuery, now: int) -> tuple[str, list[object]]:
    """The page query: newest first by (received_at, id), one index range scan per page
    whatever the mailbox size (the same shape as SQLite's, see _sqlite_ops.list_sql)."""
    p = Placeholders()
    a = p(address)
    where = [f"d.recipient = {a}"]
    order_cols = ("d.received_at", "d.id")
    source = FROM
    if q.tag is not None:
        # Walk the tag index, which carries received_at, and join each hit to its row.
        source = (
            "delivery_tags t JOIN deliveries d ON d.id = t.delivery_id "
            "JOIN messages m ON m.body_hash = d.body_hash"
        )
        where = [f"t.recipient = {a}", f"t.tag = {p(q.tag)}"]
        order_cols = ("t.received_at", "t.delivery_id")
    if q.inbox is not None:
        where.append(f"d.inbox = {p(q.inbox)}")
    if q.status == MessageStatus.DELETED:
        where.append(f"(d.status = 'deleted' OR d.hide_at <= {p(now)})")
    elif q.status is not None:
        where.append(f"d.status = {p(str(q.status))} AND {visible(p(now))}")
    elif not q.include_deleted:
        where.append(f"d.status <> 'deleted' AND {visible(p(now))}")
    if q.cursor:
        ca, cb = _rules.decode_cursor(q.cursor)
        where.append(f"({order_cols[0]}, {order_cols[1]}) < ({p(ca)}, {p(cb)})")
    limit = p(_rules.clamp_limit(q.limit) + 1)
    sql = (
        f"SELECT {ROW} FROM {source} WHERE {' AND '.join(where)} "
        f"ORDER BY {order_cols[0]} DESC, {order_cols[1]} DESC LIMIT {limit}"
    )
    return sql, p.values


async def list_page(conn: asyncpg.Connection, address: str, q: ListQuery, now: int) -> Page:
    sql, args = list_sql(address, q, now)
    rows = await conn.fetch(sql, *args)
    limit = _rules.clamp_limit(q.limit)
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = _rules.encode_cursor(rows[-1]["received_at"], rows[-1]["id"]) if more else None
    return Page([to_message(r, now) for r in rows], cursor)


async def pending_counts(
    conn: asyncpg.Connection, addresses: Sequence[str], now: int
) -> dict[str, int]:
    """Visible pending messages per address (addresses with none are left out)."""
    if not addresses:
        return {}
    rows = await conn.fetch(
        f"""SELECT d.recipient, COUNT(*) FROM deliveries d
            WHERE d.recipient = ANY($1::text[]) AND d.status = 'pending' AND {visible("$2")}
            GROUP BY d.recipient""",
        list(addresses), now,
    )  # fmt: skip
    return dict(rows)


async def pending_count(conn: asyncpg.Connection, address: str, now: int) -> int:
    return (await pending_counts(conn, [address], now)).get(address, 0)


async def inboxes(conn: asyncpg.Connection, address: str, now: int) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    rows = await conn.fetch(
        f"""SELECT d.inbox, d.status, COUNT(*) FROM deliveries d
            WHERE d.recipient = $1 AND d.status <> 'deleted' AND {visible("$2")}
            GROUP BY d.inbox, d.status""",
        address, now,
    )  # fmt: skip
    for inbox, status, n in rows:
        out.setdefault(inbox, {str(s): 0 for s in _rules.LIVE_STATUSES})[status] = n
    return out


async def thread(
    conn: asyncpg.Connection, address: str, msg_id: str, now: int
) -> list[StoredMessage]:
    rows = await conn.fetch(
        f"""SELECT {ROW} FROM {FROM}
            WHERE d.recipient = $1 AND d.status <> 'deleted' AND {visible("$3")}
              AND d.thread_root = (SELECT thread_root FROM deliveries
                                   WHERE recipient = $1 AND msg_id = $2)
            ORDER BY d.received_at, d.id""",
        address, msg_id, now,
    )  # fmt: skip
    return [to_message(r, now) for r in rows]


async def changes(conn: asyncpg.Connection, address: str, since: int, limit: int) -> Changes:
    limit = max(1, int(limit))
    rows = await conn.fetch(
        "SELECT seq, msg_id, kind FROM changes WHERE address = $1 AND seq > $2 "
        "ORDER BY seq LIMIT $3",
        address, since, limit + 1,
    )  # fmt: skip
    page = [Change(seq, m, ChangeKind(k)) for seq, m, k in rows[:limit]]
    return Changes(page, page[-1].seq if page else since, len(rows) > limit)


async def state(conn: asyncpg.Connection, address: str) -> int:
    sql = "SELECT COALESCE(MAX(seq), 0) FROM changes WHERE address = $1"
    return await conn.fetchval(sql, address)


async def stats(conn: asyncpg.Connection, now: int) -> dict[str, int]:
    """Run in one read-only snapshot (the caller's transaction)."""
    one = conn.fetchval
    out = {
        "messages": await one("SELECT COUNT(*) FROM messages"),
        "deliveries": await one("SELECT COUNT(*) FROM deliveries"),
    }
    out |= {str(s): 0 for s in MessageStatus}
    for status, n in await conn.fetch("SELECT status, COUNT(*) FROM deliveries GROUP BY status"):
        out[status] = n
    out["hosted_addresses"] = await one("SELECT COUNT(*) FROM hosted_addresses")
    out["sessions"] = await one(
        "SELECT COUNT(*) FROM sessions WHERE NOT revoked AND expires_at > $1", now
    )
    return out
