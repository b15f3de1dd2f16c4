"""The shared rate counters of PostgresStore (`Store.count_hit`; table `hits`, step 3).

Atomic across processes. `count_hits` counts the hits that arrived together
(PostgresStore coalesces them) in one statement and so one round trip, run on its own
(autocommit): a call of the server-side function `flux_count_hit` (schema step 13) per
hit, which first takes a transaction-scoped advisory lock on the bucket, then forgets,
counts and inserts. Why it is exact: the lock is held until the statement's
COMMIT, so the hits of one bucket are counted one at a time, and each statement of a
VOLATILE PL/pgSQL function takes a new snapshot: the count, which starts after the lock
is granted, after the previous holder's COMMIT, sees every hit counted before it. (A
plain statement could not do that: its one snapshot is taken before its lock is
granted.) Without the lock, two transactions could both count `limit - 1` and both insert.
It used to be a transaction of its own: BEGIN, the lock, the count, COMMIT, four round
trips where this is one (issue 15, aim 3).

Why this and not one row per bucket updated in place (`INSERT … ON CONFLICT DO UPDATE` on
an array of times): the row lock of an upsert would serialise a bucket just as well, but
each hit would rewrite a growing array, and a sliding window needs every time anyway. One
row per hit keeps the exact window of flux.protocol.spam.RateLimiter, reads through the
(bucket, t) index, and lets `prune_hits` be one indexed DELETE.

The lock key is `Locks.key("hits", bucket)`: 64 bits of BLAKE2b over the schema and the
bucket (hashtext would give 32 bits and collide across the schemas of one database). A
collision only makes two buckets take turns. A statement of several hits takes its
locks in ascending key order, as the storing transactions take theirs (the sender's rate
bucket among them), so no two of them can wait for each other's advisory locks in a
cycle; the row locks of the old hits they delete meet only `prune_hits`, which skips
locked rows instead of waiting. Within a statement, one bucket's later hits see its
earlier ones (one transaction, each call a new snapshot).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from ._postgres_locks import Locks
from ._postgres_ops import rowcount
from .base import RateBucket


@dataclass(frozen=True, slots=True)
class Hit:
    """One hit to count in `rate` at `now_ms` (`Store.count_hit`'s arguments)."""

    rate: RateBucket
    now_ms: int


#: For each hit, in the order of the arrays: the bucket's lock, forgetting its hits that
#: left the window (a busy bucket stays small whether or not anyone prunes), the count
#: and the insert (schema step 13). Each call is VOLATILE, so a hit sees the ones before it
#: in the same statement. Committed without waiting for the WAL flush
#: (`synchronous_commit` off for this statement's own transaction only): the locks are
#: held until the commit, so waiting there made every hit of one bucket (one client
#: address, on every process) wait a flush of its own, one after the other. A crash of
#: the database can forget the last fraction of a second of hits (at most 3 x
#: `wal_writer_delay`): a rate counter, not mail.
_COUNT = """SELECT h.n, flux_count_hit(h.k, h.b, h.t, h.w, h.l),
       set_config('synchronous_commit', 'off', true)
  FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[])
       WITH ORDINALITY AS h(k, b, t, w, l, n)"""


async def count_hits(c: asyncpg.Connection, locks: Locks, batch: Sequence[Hit]) -> list[bool]:
    """Count `batch` in one statement, one round trip: for each hit, in order, True when
    its bucket was already full (the hit is then not counted).

    Run on its own, not in a transaction: the statement is one, and its
    `synchronous_commit` off would hold for a whole transaction around it (mail's too).
    Raises RuntimeError inside a transaction.

    The hits go in the order of their lock keys (a stable sort: one bucket's hits keep
    their order), so the statement takes its locks in ascending order, as every storing
    transaction does (`_postgres_ops.lock_keys`): two statements never wait for each
    other's advisory locks in a cycle (row locks: `prune_hits`).
    """
    if c.is_in_transaction():
        raise RuntimeError("count_hits commits without a flush: it must run on its own")
    keys = [locks.key("hits", h.rate.bucket) for h in batch]
    order = sorted(range(len(batch)), key=keys.__getitem__)
    rows = await c.fetch(
        _COUNT,
        [keys[i] for i in order],
        [batch[i].rate.bucket for i in order],
        [batch[i].now_ms for i in order],
        [batch[i].rate.window_ms for i in order],
        [batch[i].rate.limit for i in order],
    )
    over = [False] * len(batch)
    for n, full, _ in rows:
        over[order[n - 1]] = bool(full)
    return over


async def hits_in_window(c: asyncpg.Connection, bucket: str, now_ms: int, window_ms: int) -> int:
    # No lock: a peek, not a count; count_hit decides under the lock
    query = "SELECT count(*) FROM hits WHERE bucket = $1 AND t > $2::bigint - $3::bigint"
    return int(await c.fetchval(query, bucket, now_ms, window_ms))


#: Old hits of every bucket, skipping rows another transaction holds: a counting
#: statement deletes its buckets' old rows in its own order (bucket by bucket), so a prune
#: that waited for a row could wait in a cycle with one (a deadlock, and every hit counted
#: in that statement refused with it). A prune that never waits is in no cycle; what it
#: skips, that statement is deleting anyway, or the next prune takes.
_PRUNE = """DELETE FROM hits WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM hits WHERE t <= $1 FOR UPDATE SKIP LOCKED))"""


async def prune_hits(c: asyncpg.Connection, now_ms: int, window_ms: int) -> int:
    return rowcount(await c.execute(_PRUNE, now_ms - window_ms))


async def clear_hits(c: asyncpg.Connection, locks: Locks, bucket: str) -> int:
    await c.execute("SELECT pg_advisory_xact_lock($1)", locks.key("hits", bucket))
    return rowcount(await c.execute("DELETE FROM hits WHERE bucket = $1", bucket))
