"""The SQL of PostgresStore's delivery queue (rules: base.py, "the delivery queue").

Writes run in the caller's READ COMMITTED transaction. A lease picks its destination with
`FOR UPDATE SKIP LOCKED`: workers leasing at the same moment (in this process or others)
each lock a different due row instead of queueing behind one another, and the row
lock is re-checked against the latest committed version, so a destination another
worker has just claimed is passed over. The lease itself is the (holder, leased_until)
written into the row, which outlives the short transaction and lapses on its own.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence

import asyncpg

from . import _rules
from ._postgres_locks import Locks
from ._postgres_ops import new_root, rowcount
from .base import (
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
    "NOT d.held AND EXISTS (SELECT 1 FROM outbound o"
    " WHERE o.destination = d.destination AND NOT o.held)"
)


async def record_sent(
    conn: asyncpg.Connection, sent: Sequence[SentMessage], locks: Locks | None = None
) -> None:
    """One row per message: the first record of (sender, id) is inserted, a later BCC copy
    merged into it (base.py `merge_sent`), a replay changes nothing. A new record's thread
    root is computed as a delivery's (base.py, "A conversation includes the owner's own
    sent mail"), its sender being the owner, under the sender's mailbox lock: taken here
    when `locks` is given, else already held by the caller (the storing transaction takes
    it with the recipients'). That lock orders two submissions of one sender; a merge also
    reads the row FOR UPDATE, the lock `update_sent` takes, so a settlement of the same
    message cannot write between the merge's read and its write."""
    if not sent:
        return
    if locks is not None:
        await locks.take(conn, {m.sender for m in sent})
    for m in sent:
        if await _merge_sent(conn, m):
            continue
        root = await new_root(conn, m.sender, m.envelope)
        status = await conn.execute(
            """INSERT INTO sent (sender, msg_id, sent_at, envelope, delivery, updated_at,
                                 thread_root)
               VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING""",
            m.sender, m.id, m.sent_at, _rules.envelope_text(m.envelope),
            _rules.compact_json(m.delivery), m.updated_at, root,
        )  # fmt: skip
        if rowcount(status) == 0:  # the row appeared meanwhile (a writer without the lock)
            await _merge_sent(conn, m)


async def _merge_sent(conn: asyncpg.Connection, new: SentMessage) -> bool:
    """Merge `new` into the kept record of its (sender, id); False when there is none."""
    row = await conn.fetchrow(
        f"SELECT {SENT_COLUMNS} FROM sent WHERE sender = $1 AND msg_id = $2 FOR UPDATE",
        new.sender, new.id,
    )  # fmt: skip
    if row is None:
        return False
    merged = merge_sent(_sent_row(row), new)
    if merged is None:
        return True
    await conn.execute(
        """UPDATE sent SET envelope = $1, delivery = $2, updated_at = $3
           WHERE sender = $4 AND msg_id = $5""",
        _rules.envelope_text(merged.envelope), _rules.compact_json(merged.delivery),
        merged.updated_at, new.sender, new.id,
    )  # fmt: skip
    await conn.execute(  # in the sender's /changes, as a settlement's
        "INSERT INTO changes (address, sender, msg_id, kind) VALUES ($1, $1, $2, 'sent')",
        new.sender, new.id,
    )  # fmt: skip
    return True


SENT_COLUMNS = "sender, sent_at, envelope, delivery, updated_at"


def _sent_row(row: asyncpg.Record) -> SentMessage:
    sender, sent_at, envelope, delivery, updated_at = row
    return SentMessage(sender, json.loads(envelope), sent_at, json.loads(delivery), updated_at)


async def sent(
    conn: asyncpg.Connection, sender: str, limit: int, before: tuple[int, str] | None
) -> list[SentMessage]:
    at, msg_id = (2**63 - 1, "") if before is None else before
    rows = await conn.fetch(
        f"""SELECT {SENT_COLUMNS} FROM sent
            WHERE sender = $1 AND (sent_at, msg_id COLLATE "C") < ($2, $3 COLLATE "C")
            ORDER BY sent_at DESC, msg_id COLLATE "C" DESC LIMIT $4""",
        sender, at, msg_id, limit,
    )  # fmt: skip
    return [_sent_row(r) for r in rows]


async def sent_message(conn: asyncpg.Connection, sender: str, msg_id: str) -> SentMessage | None:
    row = await conn.fetchrow(
        f"SELECT {SENT_COLUMNS} FROM sent WHERE sender = $1 AND msg_id = $2", sender, msg_id
    )
    return None if row is None else _sent_row(row)


async def sent_prefix(
    conn: asyncpg.Connection, sender: str, prefix: str, limit: int
) -> list[SentMessage]:
    rows = await conn.fetch(
        f"""SELECT {SENT_COLUMNS} FROM sent
            WHERE sender = $1 AND msg_id COLLATE "C" >= $2 AND msg_id COLLATE "C" < $3
            ORDER BY msg_id COLLATE "C" LIMIT $4""",
        sender, prefix, prefix_upper(prefix), limit,
    )  # fmt: skip
    return [_sent_row(r) for r in rows]


async def update_sent(conn: asyncpg.Connection, delivery: DeliveryUpdates) -> None:
    """Merge each (sender, id)'s changed states in; the row lock (FOR UPDATE) keeps two
    settlements of one message (two destinations) from losing each other's change."""
    for (sender, msg_id), changes in delivery.items():
        row = await conn.fetchrow(
            "SELECT delivery, updated_at FROM sent WHERE sender = $1 AND msg_id = $2 FOR UPDATE",
            sender, msg_id,
        )  # fmt: skip
        if row is None:  # mail another server handed on: no sent record here
            continue
        at = max((int(c.get("at", 0)) for c in changes.values()), default=0)
        merged = merge_delivery(json.loads(row[0]), changes)
        await conn.execute(
            "UPDATE sent SET delivery = $1, updated_at = $2 WHERE sender = $3 AND msg_id = $4",
            _rules.compact_json(merged), max(row[1], at), sender, msg_id,
        )  # fmt: skip
        await conn.execute(  # in the sender's /changes
            "INSERT INTO changes (address, sender, msg_id, kind) VALUES ($1, $1, $2, 'sent')",
            sender, msg_id,
        )  # fmt: skip


async def enqueue(
    conn: asyncpg.Connection, items: Sequence[Outbound], sent: Sequence[SentMessage] = (),
    locks: Locks | None = None,
) -> list[bool]:  # fmt: skip
    """Per item, in order: True if it was added, False if that copy was already queued.
    `locks`: as record_sent's."""
    await record_sent(conn, sent, locks)
    added = []
    for item in items:
        await conn.execute(
            "INSERT INTO destinations (destination) VALUES ($1) ON CONFLICT DO NOTHING",
            item.destination,
        )
        status = await conn.execute(
            """INSERT INTO outbound
                   (destination, body_hash, envelope, recipients, cv, via, enqueued_at, sender)
               VALUES ($1, $2, $3, $4::text[], $5, $6, $7, $8)
               ON CONFLICT (destination, body_hash) DO NOTHING""",
            item.destination, item.body_hash, _rules.envelope_text(item.envelope),
            list(item.recipients), item.cv, item.via, item.enqueued_at, item.sender,
        )  # fmt: skip
        added.append(rowcount(status) == 1)
    return added


#: a destination's sendable copies round-robin across senders, each sender's in queue order,
#: at most $2 (_memory_queue.py, "A fair queue"), leaving out the qids in $3 and the senders
#: in $4 (a rolling lease's copies and senders in flight, base.py `lease_more`; empty for a
#: new lease); as _sqlite_queue.FAIR_LEASE, the senders are found by skipping through the
#: index outbound_fair one sender at a time and filtered afterwards, and only each sender's
#: first $2 copies after the exclusions are numbered and read
FAIR_LEASE = """
WITH RECURSIVE senders(sender) AS (
    SELECT MIN(sender) FROM outbound WHERE destination = $1 AND NOT held
    UNION ALL
    SELECT (SELECT MIN(o.sender) FROM outbound o
            WHERE o.destination = $1 AND NOT o.held AND o.sender > s.sender)
    FROM senders s WHERE s.sender IS NOT NULL
)
SELECT o.qid, o.body_hash, o.envelope, o.recipients, o.cv, o.via, o.enqueued_at
FROM senders s CROSS JOIN LATERAL (
    SELECT f.qid, ROW_NUMBER() OVER (ORDER BY f.qid) AS turn FROM (
        SELECT qid FROM outbound
        WHERE destination = $1 AND NOT held AND sender = s.sender
          AND qid <> ALL($3::bigint[])
        ORDER BY qid LIMIT $2
    ) f
) t JOIN outbound o ON o.qid = t.qid
WHERE s.sender IS NOT NULL AND s.sender <> ALL($4::text[])
ORDER BY t.turn, t.qid LIMIT $2"""

CLAIM = f"""
WITH due AS (
    SELECT d.destination FROM destinations d
    WHERE d.next_attempt_at <= $1 AND (d.holder IS NULL OR d.leased_until <= $1) AND {SENDABLE}
    ORDER BY d.next_attempt_at, d.destination COLLATE "C" LIMIT 1
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE destinations SET holder = $2, leased_until = $3 FROM due
WHERE destinations.destination = due.destination
RETURNING destinations.destination, destinations.attempts"""


async def lease(
    conn: asyncpg.Connection, holder: str, now: int, lease_ms: int, limit: int
) -> Lease | None:
    claimed = await conn.fetchrow(CLAIM, now, holder, now + lease_ms)
    if claimed is None:
        return None
    destination, attempts = claimed
    rows = await conn.fetch(FAIR_LEASE, destination, limit, [], [])
    return Lease(destination, holder, _queued(destination, rows), attempts)


def _queued(destination: str, rows: list[asyncpg.Record]) -> list[Queued]:
    return [
        Queued(qid, Outbound(destination, json.loads(env), bh, tuple(rcpts), cv, at, via))
        for qid, bh, env, rcpts, cv, via, at in rows
    ]


async def lease_more(
    conn: asyncpg.Connection,
    lease: Lease,
    now: int,
    lease_ms: int,
    limit: int,
    exclude: Collection[int],
    skip_senders: Collection[str],
) -> list[Queued] | None:
    """The holder check is the renewal itself, one UPDATE: it takes the row lock, which
    orders it with a CLAIM by another worker as settle's FOR UPDATE does (a CLAIM skips the
    locked row; an UPDATE that waited on a CLAIM re-reads the row and finds another
    holder)."""
    held = await conn.fetchval(
        """UPDATE destinations SET leased_until = $3 WHERE destination = $1 AND holder = $2
           RETURNING held""",
        lease.destination, lease.holder, now + lease_ms,
    )  # fmt: skip
    if held is None:
        return None
    if held:  # the operator holds the destination: nothing more goes
        return []
    rows = await conn.fetch(
        FAIR_LEASE, lease.destination, limit, [int(q) for q in exclude], list(skip_senders)
    )
    return _queued(lease.destination, rows)


async def settle(
    conn: asyncpg.Connection,
    lease: Lease,
    done: Sequence[int],
    retry_at: int | None,
    error: str | None,
    delivery: DeliveryUpdates | None = None,
    release: bool = True,
) -> bool:
    # Only the lease's holder settles: the row lock taken here (FOR UPDATE) serialises this
    # with a CLAIM by another worker, so a lease that lapsed and went elsewhere is seen as
    # gone and its old holder's stale backoff is not written over the new holder's outcome.
    held = await conn.fetchval(
        "SELECT 1 FROM destinations WHERE destination = $1 AND holder = $2 FOR UPDATE",
        lease.destination, lease.holder,
    )  # fmt: skip
    if held is None:
        return False
    await update_sent(conn, delivery or {})
    await conn.execute(
        "DELETE FROM outbound WHERE destination = $1 AND qid = ANY($2::bigint[])",
        lease.destination, list(done),
    )  # fmt: skip
    if not release:  # one part of a rolling lease: the lease and the backoff stay
        return True
    if retry_at is None:
        backoff = "attempts = 0, next_attempt_at = 0, last_error = NULL"
        args: tuple = ()
    else:
        backoff = "attempts = attempts + 1, next_attempt_at = $2, last_error = $3"
        args = (retry_at, error)
    await conn.execute(
        f"""UPDATE destinations SET {backoff}, holder = NULL, leased_until = 0
            WHERE destination = $1""",
        lease.destination, *args,
    )  # fmt: skip
    return True


async def renew(conn: asyncpg.Connection, lease: Lease, now: int, lease_ms: int) -> bool:
    status = await conn.execute(
        "UPDATE destinations SET leased_until = $3 WHERE destination = $1 AND holder = $2",
        lease.destination, lease.holder, now + lease_ms,
    )  # fmt: skip
    return rowcount(status) == 1


async def wake(conn: asyncpg.Connection, destination: str) -> bool:
    status = await conn.execute(
        f"UPDATE destinations d SET next_attempt_at = 0 WHERE destination = $1 AND {HAS_MAIL}",
        destination,
    )
    return rowcount(status) == 1


async def queue_state(conn: asyncpg.Connection) -> list[DestinationState]:
    rows = await conn.fetch(
        """SELECT d.destination, COUNT(o.qid), MIN(o.enqueued_at), d.attempts,
                  d.next_attempt_at, d.last_error, d.leased_until, d.held,
                  COUNT(o.qid) FILTER (WHERE o.held)
           FROM destinations d JOIN outbound o ON o.destination = d.destination
           GROUP BY d.destination
           ORDER BY d.destination COLLATE "C"  -- code point order, as in the other stores
        """
    )
    return [DestinationState(*row) for row in rows]


async def next_due(conn: asyncpg.Connection) -> int | None:
    return await conn.fetchval(
        f"SELECT MIN(GREATEST(next_attempt_at, leased_until)) FROM destinations d WHERE {SENDABLE}"
    )


# -- operator control (flux admin queue) ------------------------------------------------------
async def queued(
    conn: asyncpg.Connection, destination: str | None, id_prefix: str | None, limit: int
) -> list[QueuedMessage]:
    # the operator's look-up: a scan of the queue is fine here
    rows = await conn.fetch(
        """SELECT qid, destination, body_hash, envelope, recipients, cv, via, enqueued_at, held
           FROM outbound
           WHERE ($1::text IS NULL OR destination = $1)
             AND ($2::text IS NULL OR left(envelope::json ->> 'id', length($2)) = $2)
           ORDER BY qid LIMIT $3""",
        destination, id_prefix, limit,
    )  # fmt: skip
    return [
        QueuedMessage(qid, Outbound(dest, json.loads(env), bh, tuple(rcpts), cv, at, via), held)
        for qid, dest, bh, env, rcpts, cv, via, at, held in rows
    ]


async def hold(conn: asyncpg.Connection, destination: str, held: bool) -> bool:
    status = await conn.execute(
        f"UPDATE destinations d SET held = $2 WHERE destination = $1 AND {HAS_MAIL}",
        destination, held,
    )  # fmt: skip
    return rowcount(status) == 1


async def hold_messages(conn: asyncpg.Connection, qids: Sequence[int], held: bool) -> int:
    status = await conn.execute(
        "UPDATE outbound SET held = $2 WHERE qid = ANY($1::bigint[])", list(qids), held
    )
    return rowcount(status)


async def remove_queued(
    conn: asyncpg.Connection, removals: Sequence[tuple[int, DeliveryUpdates]], now: int
) -> list[int]:
    """The destination's row lock (as CLAIM and settle take it) orders this with a lease:
    a copy is removed only while no live lease covers it."""
    removed = []
    for qid, delivery in removals:
        destination = await conn.fetchval("SELECT destination FROM outbound WHERE qid = $1", qid)
        if destination is None:
            continue
        busy = await conn.fetchval(
            """SELECT holder IS NOT NULL AND leased_until > $2 FROM destinations
               WHERE destination = $1 FOR UPDATE""",
            destination, now,
        )  # fmt: skip
        if busy:
            continue
        status = await conn.execute("DELETE FROM outbound WHERE qid = $1", qid)
        if rowcount(status) == 1:
            await update_sent(conn, delivery)
            removed.append(qid)
    return removed
