"""The shared rate counters of PostgresStore (`Store.count_hit`; table `hits`, step 3).

Atomic across processes. `count_hit` runs in one READ COMMITTED transaction that first
takes a transaction-scoped advisory lock on the bucket, then counts and inserts in one
statement. Why it is exact: the lock is held until COMMIT, so the hits of one bucket are
counted one at a time, and the counting statement starts (takes its snapshot) only once
the lock is granted, after the previous holder's COMMIT: it sees every hit counted before
it. Without the lock, two transactions could both count `limit - 1` and both insert.

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

_COUNT = """
WITH gone AS (
    DELETE FROM hits WHERE bucket = $1 AND t <= $2::bigint - $3::bigint
), counted AS (
    SELECT count(*) AS n FROM hits WHERE bucket = $1 AND t > $2::bigint - $3::bigint
), added AS (
    INSERT INTO hits (bucket, t) SELECT $1, $2 FROM counted WHERE n < $4::bigint
)
SELECT n >= $4::bigint FROM counted"""


async def count_hit(
    c: asyncpg.Connection, locks: Locks, bucket: str, now_ms: int, window_ms: int, limit: int
) -> bool:
    await c.execute("SELECT pg_advisory_xact_lock($1)", locks.key("hits", bucket))
    # `gone` forgets this bucket's hits that left the window (a busy bucket stays small
    # whether or not anyone prunes); it and `counted` read disjoint rows of one snapshot.
    return bool(await c.fetchval(_COUNT, bucket, now_ms, window_ms, limit))


async def hits_in_window(c: asyncpg.Connection, bucket: str, now_ms: int, window_ms: int) -> int:
    # No lock: a peek, not a count; count_hit decides under the lock
    query = "SELECT count(*) FROM hits WHERE bucket = $1 AND t > $2::bigint - $3::bigint"
    return int(await c.fetchval(query, bucket, now_ms, window_ms))


async def prune_hits(c: asyncpg.Connection, now_ms: int, window_ms: int) -> int:
    return rowcount(await c.execute("DELETE FROM hits WHERE t <= $1", now_ms - window_ms))


async def clear_hits(c: asyncpg.Connection, locks: Locks, bucket: str) -> int:
    await c.execute("SELECT pg_advisory_xact_lock($1)", locks.key("hits", bucket))
    return rowcount(await c.execute("DELETE FROM hits WHERE bucket = $1", bucket))
