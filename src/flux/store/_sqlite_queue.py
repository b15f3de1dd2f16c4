"""The SQL of SQLiteStore's delivery queue (rules: base.py, "the delivery queue").

Writes run on the writer thread inside a SAVEPOINT, so `lease` (find a due destination,
then claim it) is atomic against every other writer of the file, other processes included.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Sequence

from . import _rules
from ._sqlite_ops import new_change, new_root
from .base import (
    ChangeKind,
    DeliveryUpdates,
    DestinationState,
    Lease,
    Outbound,
    Queued,
    QueuedMessage,
    SentMessage,
    merge_delivery,
    merge_sent,
    prefix_upper,
)

HAS_MAIL = "EXISTS (SELECT 1 FROM outbound o WHERE o.destination = d.destination)"
#: a destination the worker may claim: not held, with mail that is not held one by one
#: (a held message never blocks the rest of its destination)
SENDABLE = (
    "d.held = 0 AND EXISTS (SELECT 1 FROM outbound o"
    " WHERE o.destination = d.destination AND o.held = 0)"
)


#: A destination's sendable copies round-robin across senders, each sender's in queue order
#: (_memory_queue.py, "A fair queue"), at most `:limit`, leaving out the qids in `:exclude`
#: and the senders in `:skip` (JSON arrays: a rolling lease's copies and senders in flight,
#: base.py `lease_more`; `[]` for a new lease). Numbering every queued copy would read a
#: whole flood per lease (10,000 rows: ~35 ms on the writer); so the senders are found by
#: skipping through the index outbound_fair (schema step 12) one sender at a time and only
#: then filtered (a filter inside the skip would walk a skipped flood's every row), only
#: each sender's first `:limit` copies after the exclusions are numbered (reading at most
#: `:limit` plus its excluded rows), and only those rows are read.
FAIR_LEASE = """
WITH RECURSIVE senders(sender) AS (
    SELECT MIN(sender) FROM outbound WHERE destination = :destination AND held = 0
    UNION ALL
    SELECT (SELECT MIN(sender) FROM outbound
            WHERE destination = :destination AND held = 0 AND sender > senders.sender)
    FROM senders WHERE senders.sender IS NOT NULL
),
chosen(sender) AS (
    SELECT sender FROM senders
    WHERE sender IS NOT NULL AND sender NOT IN (SELECT value FROM json_each(:skip))
),
firsts(qid, sender) AS (
    SELECT o.qid, o.sender FROM chosen JOIN outbound o ON o.qid IN (
        SELECT qid FROM outbound
        WHERE destination = :destination AND held = 0 AND sender = chosen.sender
          AND qid NOT IN (SELECT value FROM json_each(:exclude))
        ORDER BY qid LIMIT :limit)
),
turns(qid, turn) AS (
    SELECT qid, ROW_NUMBER() OVER (PARTITION BY sender ORDER BY qid) FROM firsts
)
SELECT o.qid, o.body_hash, o.envelope, o.recipients, o.cv, o.via, o.enqueued_at
FROM turns JOIN outbound o ON o.qid = turns.qid
ORDER BY turns.turn, turns.qid LIMIT :limit"""


def record_sent(conn: sqlite3.Connection, sent: Sequence[SentMessage]) -> None:
    """One row per message: the first record of (sender, id) is inserted, a later BCC copy
    merged into it (base.py `merge_sent`; read, merge, write in the writer's transaction,
    as `update_sent`), a replay changes nothing. A new record's thread root is computed as
    a delivery's (base.py, "A conversation includes the owner's own sent mail"), its
    sender being the owner; a merge keeps it (the copies share their `re`)."""
    for m in sent:
        row = conn.execute(
            f"SELECT {SENT_COLUMNS} FROM sent WHERE sender = ? AND msg_id = ?", (m.sender, m.id)
        ).fetchone()
        if row is not None:
            _merge_sent(conn, _sent_row(row), m)
            continue
        conn.execute(
            """INSERT INTO sent (sender, msg_id, sent_at, envelope, delivery, updated_at,
                                 thread_root)
               VALUES (?, ?, ?, ?, ?, ?, ?)""",
            (m.sender, m.id, m.sent_at, _rules.envelope_text(m.envelope),
             _rules.compact_json(m.delivery), m.updated_at, new_root(conn, m.sender, m.envelope)),
        )  # fmt: skip


def _merge_sent(conn: sqlite3.Connection, kept: SentMessage, new: SentMessage) -> None:
    merged = merge_sent(kept, new)
    if merged is None:
        return
    conn.execute(
        """UPDATE sent SET envelope = ?, delivery = ?, updated_at = ?
           WHERE sender = ? AND msg_id = ?""",
        (_rules.envelope_text(merged.envelope), _rules.compact_json(merged.delivery),
         merged.updated_at, kept.sender, kept.id),
    )  # fmt: skip
    new_change(conn, kept.sender, kept.sender, kept.id, ChangeKind.SENT)  # the sender's /changes


def _sent_row(row: tuple) -> SentMessage:
    sender, sent_at, envelope, delivery, updated_at = row
    return SentMessage(sender, json.loads(envelope), sent_at, json.loads(delivery), updated_at)


SENT_COLUMNS = "sender, sent_at, envelope, delivery, updated_at"


def sent(
    conn: sqlite3.Connection, sender: str, limit: int, before: tuple[int, str] | None
) -> list[SentMessage]:
    at, msg_id = (2**63 - 1, "") if before is None else before
    rows = conn.execute(
        f"""SELECT {SENT_COLUMNS} FROM sent WHERE sender = ? AND (sent_at, msg_id) < (?, ?)
            ORDER BY sent_at DESC, msg_id DESC LIMIT ?""",
        (sender, at, msg_id, limit),
    ).fetchall()
    return [_sent_row(r) for r in rows]


def sent_message(conn: sqlite3.Connection, sender: str, msg_id: str) -> SentMessage | None:
    row = conn.execute(
        f"SELECT {SENT_COLUMNS} FROM sent WHERE sender = ? AND msg_id = ?", (sender, msg_id)
    ).fetchone()
    return None if row is None else _sent_row(row)


def sent_prefix(
    conn: sqlite3.Connection, sender: str, prefix: str, limit: int
) -> list[SentMessage]:
    rows = conn.execute(
        f"""SELECT {SENT_COLUMNS} FROM sent WHERE sender = ? AND msg_id >= ? AND msg_id < ?
            ORDER BY msg_id LIMIT ?""",
        (sender, prefix, prefix_upper(prefix), limit),
    ).fetchall()
    return [_sent_row(r) for r in rows]


def update_sent(conn: sqlite3.Connection, delivery: DeliveryUpdates) -> None:
    """Merge each (sender, id)'s changed states in (read, merge, write: this runs in the
    writer's transaction, so nothing writes the row in between)."""
    for (sender, msg_id), changes in delivery.items():
        row = conn.execute(
            "SELECT delivery, updated_at FROM sent WHERE sender = ? AND msg_id = ?",
            (sender, msg_id),
        ).fetchone()
        if row is None:  # mail another server handed on: no sent record here
            continue
        at = max((int(c.get("at", 0)) for c in changes.values()), default=0)
        merged = merge_delivery(json.loads(row[0]), changes)
        conn.execute(
            "UPDATE sent SET delivery = ?, updated_at = ? WHERE sender = ? AND msg_id = ?",
            (_rules.compact_json(merged), max(row[1], at), sender, msg_id),
        )
        new_change(conn, sender, sender, msg_id, ChangeKind.SENT)  # in the sender's /changes


def enqueue(
    conn: sqlite3.Connection, items: Sequence[Outbound], sent: Sequence[SentMessage] = ()
) -> list[bool]:
    record_sent(conn, sent)
    added = []
    for item in items:
        conn.execute(
            "INSERT OR IGNORE INTO destinations (destination) VALUES (?)", (item.destination,)
        )
        cur = conn.execute(
            """INSERT OR IGNORE INTO outbound
               (destination, body_hash, envelope, recipients, cv, via, enqueued_at, sender)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
            (item.destination, item.body_hash,
             _rules.envelope_text(item.envelope),
             json.dumps(list(item.recipients)), item.cv, item.via, item.enqueued_at,
             item.sender),
        )  # fmt: skip
        added.append(cur.rowcount == 1)
    return added


def lease(
    conn: sqlite3.Connection, holder: str, now: int, lease_ms: int, limit: int
) -> Lease | None:
    row = conn.execute(
        f"""SELECT destination, attempts FROM destinations d
            WHERE next_attempt_at <= :now AND (holder IS NULL OR leased_until <= :now)
              AND {SENDABLE}
            ORDER BY next_attempt_at LIMIT 1""",
        {"now": now},
    ).fetchone()
    if row is None:
        return None
    destination, attempts = row
    conn.execute(
        "UPDATE destinations SET holder = ?, leased_until = ? WHERE destination = ?",
        (holder, now + lease_ms, destination),
    )
    params = {"destination": destination, "limit": limit, "exclude": "[]", "skip": "[]"}
    rows = conn.execute(FAIR_LEASE, params).fetchall()
    return Lease(destination, holder, _queued(destination, rows), attempts)


def _queued(destination: str, rows: list[tuple]) -> list[Queued]:
    return [
        Queued(
            qid, Outbound(destination, json.loads(env), bh, tuple(json.loads(rcpts)), cv, at, via)
        )
        for qid, bh, env, rcpts, cv, via, at in rows
    ]


def lease_more(
    conn: sqlite3.Connection,
    lease: Lease,
    now: int,
    lease_ms: int,
    limit: int,
    exclude: str,
    skip: str,
) -> list[Queued] | None:
    """`exclude`, `skip`: JSON arrays (`json_lists`); on the writer, so the holder check
    and the renewal are atomic against a `lease` by another worker."""
    row = _holding(conn, lease)
    if row is None:
        return None
    conn.execute(
        "UPDATE destinations SET leased_until = ? WHERE destination = ?",
        (now + lease_ms, lease.destination),
    )
    if row[0]:  # the operator holds the destination: nothing more goes
        return []
    params = {"destination": lease.destination, "limit": limit, "exclude": exclude, "skip": skip}
    return _queued(lease.destination, conn.execute(FAIR_LEASE, params).fetchall())


def _holding(conn: sqlite3.Connection, lease: Lease) -> tuple[int] | None:
    """(held,) of `lease`'s destination while `lease.holder` holds it, else None."""
    return conn.execute(
        "SELECT held FROM destinations WHERE destination = ? AND holder = ?",
        (lease.destination, lease.holder),
    ).fetchone()


def json_lists(exclude: Collection[int], skip_senders: Collection[str]) -> tuple[str, str]:
    """`lease_more`'s collections as the JSON arrays FAIR_LEASE takes."""
    return json.dumps([int(q) for q in exclude]), json.dumps(list(skip_senders))


def settle(
    conn: sqlite3.Connection,
    lease: Lease,
    done: Sequence[int],
    retry_at: int | None,
    error: str | None,
    delivery: DeliveryUpdates | None = None,
    release: bool = True,
) -> bool:
    # Only the lease's holder settles: a worker whose lease lapsed and went to another
    # worker would otherwise write its stale backoff over the new holder's outcome.
    if _holding(conn, lease) is None:
        return False
    update_sent(conn, delivery or {})
    conn.executemany(
        "DELETE FROM outbound WHERE qid = ? AND destination = ?",
        [(qid, lease.destination) for qid in done],
    )
    if not release:  # one part of a rolling lease: the lease and the backoff stay
        return True
    if retry_at is None:
        backoff = "attempts = 0, next_attempt_at = 0, last_error = NULL"
        params: tuple = ()
    else:
        backoff = "attempts = attempts + 1, next_attempt_at = ?, last_error = ?"
        params = (retry_at, error)
    conn.execute(
        f"""UPDATE destinations SET {backoff}, holder = NULL, leased_until = 0
            WHERE destination = ?""",
        (*params, lease.destination),
    )
    return True


def renew(conn: sqlite3.Connection, lease: Lease, now: int, lease_ms: int) -> bool:
    cur = conn.execute(
        "UPDATE destinations SET leased_until = ? WHERE destination = ? AND holder = ?",
        (now + lease_ms, lease.destination, lease.holder),
    )
    return cur.rowcount == 1


def wake(conn: sqlite3.Connection, destination: str) -> bool:
    cur = conn.execute(
        f"UPDATE destinations AS d SET next_attempt_at = 0 WHERE destination = ? AND {HAS_MAIL}",
        (destination,),
    )
    return cur.rowcount == 1


def queue_state(conn: sqlite3.Connection) -> list[DestinationState]:
    rows = conn.execute(
        """SELECT d.destination, COUNT(o.qid), MIN(o.enqueued_at), d.attempts,
                  d.next_attempt_at, d.last_error, d.leased_until, d.held, SUM(o.held)
           FROM destinations d JOIN outbound o ON o.destination = d.destination
           GROUP BY d.destination ORDER BY d.destination"""
    ).fetchall()
    return [DestinationState(*row[:7], bool(row[7]), row[8]) for row in rows]


def next_due(conn: sqlite3.Connection) -> int | None:
    row = conn.execute(
        f"SELECT MIN(MAX(next_attempt_at, leased_until)) FROM destinations d WHERE {SENDABLE}"
    ).fetchone()
    return row[0]


# -- operator control (flux admin queue) ------------------------------------------------------
def queued(
    conn: sqlite3.Connection, destination: str | None, id_prefix: str | None, limit: int
) -> list[QueuedMessage]:
    where, params = [], []
    if destination is not None:
        where.append("destination = ?")
        params.append(destination)
    if id_prefix is not None:  # the operator's look-up: a scan of the queue is fine here
        where.append("substr(json_extract(envelope, '$.id'), 1, ?) = ?")
        params += [len(id_prefix), id_prefix]
    rows = conn.execute(
        f"""SELECT qid, destination, body_hash, envelope, recipients, cv, via, enqueued_at, held
            FROM outbound {"WHERE " + " AND ".join(where) if where else ""}
            ORDER BY qid LIMIT ?""",
        (*params, limit),
    ).fetchall()
    return [
        QueuedMessage(qid, Outbound(dest, json.loads(env), bh, tuple(json.loads(rcpts)), cv, at,
                                    via), bool(held))
        for qid, dest, bh, env, rcpts, cv, via, at, held in rows
    ]  # fmt: skip


def hold(conn: sqlite3.Connection, destination: str, held: bool) -> bool:
    cur = conn.execute(
        f"UPDATE destinations AS d SET held = ? WHERE destination = ? AND {HAS_MAIL}",
        (int(held), destination),
    )
    return cur.rowcount == 1


def hold_messages(conn: sqlite3.Connection, qids: Sequence[int], held: bool) -> int:
    return sum(
        conn.execute("UPDATE outbound SET held = ? WHERE qid = ?", (int(held), qid)).rowcount
        for qid in qids
    )


def remove_queued(
    conn: sqlite3.Connection, removals: Sequence[tuple[int, DeliveryUpdates]], now: int
) -> list[int]:
    """On the writer, in one transaction: a lease cannot be taken between the check and
    the delete."""
    removed = []
    for qid, delivery in removals:
        cur = conn.execute(
            """DELETE FROM outbound WHERE qid = ? AND NOT EXISTS (
                   SELECT 1 FROM destinations d WHERE d.destination = outbound.destination
                   AND d.holder IS NOT NULL AND d.leased_until > ?)""",
            (qid, now),
        )
        if cur.rowcount == 1:
            update_sent(conn, delivery)
            removed.append(qid)
    return removed
