"""The shared rate counters of PostgresStore (`Store.count_hit`; table `hits`, step 3).

Atomic across processes. `count_hit` is one call of the server-side function
`flux_count_hit` (schema step 13), one statement and so one round trip, run on its own
(autocommit): it first takes a transaction-scoped advisory lock on the bucket, then
forgets, counts and inserts. Why it is exact: the lock is held until the statement's
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
collision only makes two buckets take turns. Each transaction takes one lock and no
other, so it cannot be part of a deadlock.
"""

from __future__ import annotations

import asyncpg

from ._postgres_locks import Locks
from ._postgres_ops import rowcount

#: the lock, forgetting this bucket's hits that left the window (a busy bucket stays small
#: whether or not anyone prunes), the count and the insert: schema step 13. Committed
#: without waiting for the WAL flush (`synchronous_commit` off for this statement's own
#: transaction only): the bucket's lock is held until the commit, so waiting there made
#: every hit of one bucket (one client address, on every process) wait a flush of its
#: own, one after the other. A crash of the database can forget the last fraction of a
#: second of hits (at most 3 x `wal_writer_delay`): a rate counter, not mail.
_COUNT = (
    "SELECT flux_count_hit($1, $2, $3, $4, $5), set_config('synchronous_commit', 'off', true)"
)


async def count_hit(
    c: asyncpg.Connection, locks: Locks, bucket: str, now_ms: int, window_ms: int, limit: int
) -> bool:
    """Run on its own, not in a transaction: the function's statement is one, and its
    `synchronous_commit` off would hold for a whole transaction around it (mail's too).
    Raises RuntimeError inside a transaction."""
    if c.is_in_transaction():
        raise RuntimeError("count_hit commits without a flush: it must run on its own")
    key = locks.key("hits", bucket)
    return bool(await c.fetchval(_COUNT, key, bucket, now_ms, window_ms, limit, column=0))


async def hits_in_window(c: asyncpg.Connection, bucket: str, now_ms: int, window_ms: int) -> int:
    # No lock: a peek, not a count; count_hit decides under the lock
    query = "SELECT count(*) FROM hits WHERE bucket = $1 AND t > $2::bigint - $3::bigint"
    return int(await c.fetchval(query, bucket, now_ms, window_ms))


async def prune_hits(c: asyncpg.Connection, now_ms: int, window_ms: int) -> int:
    return rowcount(await c.execute("DELETE FROM hits WHERE t <= $1", now_ms - window_ms))


async def clear_hits(c: asyncpg.Connection, locks: Locks, bucket: str) -> int:
    await c.execute("SELECT pg_advisory_xact_lock($1)", locks.key("hits", bucket))
    return rowcount(await c.execute("DELETE FROM hits WHERE bucket = $1", bucket))
