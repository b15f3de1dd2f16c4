"""Listing benchmark: one SQLite mailbox with a million messages.

    .venv/bin/python benchmarks/store_list.py [--messages 1000000] [--db PATH] [--keep]

Fills one mailbox through `SQLiteStore.store_many` (batches of 10,000, so the fill itself
exercises the real write path), then sets 90 % of the rows to `read` with one raw UPDATE
(a bulk shortcut: the benchmark is about listing, not about a million `mark` calls).
Mix: 10 % of messages in inbox "work", 5 % tagged "t", 10 % still pending.

Then times `SQLiteStore.list` (50 per page) — the first page and a deep page (a cursor
half-way down, and one 90 % down) — for each filter, as the median of 21 runs, through
the public API (reader thread hop included). With keyset pagination a deep page should
cost the same as the first; an OFFSET query is timed beside it for contrast.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from flux.store import Incoming, ListQuery, MessageStatus, SQLiteStore
from flux.store._rules import encode_cursor

ADDR = "fx1" + "a" * 40
SENDER = "fx1" + "5" * 40
T0 = 1_760_000_000_000
RUNS = 21


def make(n: int) -> Incoming:
    mid = f"{n:032x}"
    env = {
        "v": "1.0", "id": mid, "from": SENDER, "to": ADDR, "t": T0 + n,
        "subject": f"subject {n}", "content": f"message number {n} " + "x" * 200,
        "sig": "A" * 88, "pub": "B" * 44,
    }  # fmt: skip
    tags = ("t",) if n % 20 == 0 else ()
    inbox = "work" if n % 10 == 3 else "inbox"
    body = hashlib.sha256(mid.encode()).hexdigest()
    return Incoming(env, body, [ADDR], T0 + n, tags=tags, inbox=inbox)


async def fill(store: SQLiteStore, path: Path, total: int) -> float:
    start = time.perf_counter()
    batch = 10_000
    for first in range(0, total, batch):
        await store.store_many([make(n) for n in range(first, min(first + batch, total))])
        if (first // batch) % 10 == 0:
            print(f"  {first + batch:>9,} stored", flush=True)
    elapsed = time.perf_counter() - start
    conn = sqlite3.connect(path)
    conn.execute("UPDATE deliveries SET status = 'read' WHERE id % 10 != 0")
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()
    return elapsed


def cursor_at(path: Path, offset: int) -> str:
    conn = sqlite3.connect(path)
    row = conn.execute(
        "SELECT received_at, id FROM deliveries WHERE recipient = ? "
        "ORDER BY received_at DESC, id DESC LIMIT 1 OFFSET ?",
        (ADDR, offset),
    ).fetchone()
    conn.close()
    return encode_cursor(*row)


async def time_list(store: SQLiteStore, query: ListQuery) -> tuple[float, int]:
    times = []
    for _ in range(RUNS):
        t = time.perf_counter()
        page = await store.list(ADDR, query)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000, len(page.items)


def time_offset(path: Path, offset: int) -> float:
    conn = sqlite3.connect(path)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        conn.execute(
            "SELECT d.id, m.envelope FROM deliveries d JOIN messages m USING (body_hash) "
            "WHERE d.recipient = ? AND d.status != 'deleted' "
            "ORDER BY d.received_at DESC, d.id DESC LIMIT 50 OFFSET ?",
            (ADDR, offset),
        ).fetchall()
        times.append(time.perf_counter() - t)
    conn.close()
    return statistics.median(times) * 1000


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--db", type=Path, default=None, help="reuse or create this file")
    ap.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = ap.parse_args()
    tmp = None
    if args.db is None:
        tmp = tempfile.mkdtemp(prefix="flux-store-bench-")
        args.db = Path(tmp) / "flux.db"
    fresh = not args.db.exists()
    store = SQLiteStore(args.db)
    await store.open()
    try:
        if fresh:
            print(f"filling {args.messages:,} messages into one mailbox ({args.db})")
            secs = await fill(store, args.db, args.messages)
            print(f"fill: {secs:.1f} s, {args.messages / secs:,.0f} msg/s via store_many")
        size = sum(f.stat().st_size for f in args.db.parent.glob(args.db.name + "*"))
        print(f"database: {size / 2**20:,.0f} MiB; pages of 50, median of {RUNS} runs\n")
        total = args.messages
        deep = {"50%": cursor_at(args.db, total // 2), "90%": cursor_at(args.db, total * 9 // 10)}
        filters = {
            "all (not deleted)": {},
            "inbox=work": {"inbox": "work"},
            "status=pending": {"status": MessageStatus.PENDING},
            "tag=t": {"tag": "t"},
            "inbox=work,status=read": {"inbox": "work", "status": MessageStatus.READ},
        }
        print(f"{'filter':<26}{'first page':>12}{'deep 50%':>12}{'deep 90%':>12}")
        for name, f in filters.items():
            first, n = await time_list(store, ListQuery(**f))
            cols = [f"{first:>9.2f} ms"]
            for cur in deep.values():
                ms, _ = await time_list(store, ListQuery(**f, cursor=cur))
                cols.append(f"{ms:>9.2f} ms")
            print(f"{name:<26}{''.join(f'{c:>12}' for c in cols)}   ({n} items)")
        print(f"\nfor contrast, LIMIT/OFFSET at 50%: {time_offset(args.db, total // 2):.1f} ms")
    finally:
        await store.close()
        if tmp is not None and not args.keep:
            for f in Path(tmp).iterdir():
                f.unlink()
            os.rmdir(tmp)


if __name__ == "__main__":
    asyncio.run(main())
