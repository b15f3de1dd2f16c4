"""The shared rate counters of SQLiteStore (`Store.count_hit`; table `hits`, step 3).

Each function is one writer operation, so it runs inside the writer's transaction (BEGIN
IMMEDIATE): in this process the writer thread runs operations one at a time, and other
processes on the same file wait for SQLite's write lock. The count and the insert of
`count_hit` therefore see no other hit between them.
"""

from __future__ import annotations

import sqlite3


def count_hit(c: sqlite3.Connection, bucket: str, now_ms: int, window_ms: int, limit: int) -> bool:
    cutoff = now_ms - window_ms
    # This bucket's hits that have left the window count no more: forget them here, so a
    # busy bucket stays small whether or not anyone prunes.
    c.execute("DELETE FROM hits WHERE bucket = ? AND t <= ?", (bucket, cutoff))
    row = c.execute("SELECT COUNT(*) FROM hits WHERE bucket = ? AND t > ?", (bucket, cutoff))
    if row.fetchone()[0] >= limit:
        return True
    c.execute("INSERT INTO hits (bucket, t) VALUES (?, ?)", (bucket, now_ms))
    return False


def hits_in_window(c: sqlite3.Connection, bucket: str, now_ms: int, window_ms: int) -> int:
    row = c.execute(
        "SELECT COUNT(*) FROM hits WHERE bucket = ? AND t > ?", (bucket, now_ms - window_ms)
    )
    return int(row.fetchone()[0])


def prune_hits(c: sqlite3.Connection, now_ms: int, window_ms: int) -> int:
    return c.execute("DELETE FROM hits WHERE t <= ?", (now_ms - window_ms,)).rowcount


def clear_hits(c: sqlite3.Connection, bucket: str) -> int:
    return c.execute("DELETE FROM hits WHERE bucket = ?", (bucket,)).rowcount
