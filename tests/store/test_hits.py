"""The shared rate counters (`Store.count_hit`, `prune_hits`, `clear_hits`), run against
every store through the `store` fixture; then two stores on one database, as two
processes of one domain would be (SQLite file, PostgreSQL schema)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from flux.protocol.spam import RateLimiter
from flux.store import SQLiteStore, Store


async def test_the_limit_holds_exactly_under_concurrent_hits(store: Store) -> None:
    results = await asyncio.gather(*(store.count_hit("b", 1000, 60_000, 7) for _ in range(50)))
    assert results.count(False) == 7 and results.count(True) == 43
    assert await store.count_hit("b", 1001, 60_000, 7) is True


async def test_the_window_slides(store: Store) -> None:
    hit = lambda t: store.count_hit("b", t, 1000, 2)  # noqa: E731
    assert [await hit(0), await hit(100), await hit(500)] == [False, False, True]
    assert await hit(999) is True  # both hits are still in the window
    assert await hit(1000) is False  # the hit at 0 left it (t <= now - window)
    assert await hit(1050) is True  # 100 and 1000
    assert await hit(1100) is False  # 100 left


async def test_a_refused_hit_is_not_counted(store: Store) -> None:
    assert await store.count_hit("b", 0, 100, 1) is False
    assert await store.count_hit("b", 50, 100, 1) is True  # not counted...
    assert await store.count_hit("b", 100, 100, 1) is False  # ...so the window is empty again


async def test_the_same_answers_as_the_spam_rate_limiter(store: Store) -> None:
    limiter = RateLimiter(limit=3, window_ms=1000)
    times = [0, 10, 20, 30, 500, 999, 1000, 1005, 1010, 1020, 1500, 2000, 2004, 3100]
    for t in times:
        assert await store.count_hit("s", t, 1000, 3) is limiter.hit("s", t), t


async def test_buckets_are_independent(store: Store) -> None:
    assert await store.count_hit("a", 0, 1000, 1) is False
    assert await store.count_hit("b", 0, 1000, 1) is False
    assert await store.count_hit("a", 1, 1000, 1) is True
    assert await store.count_hit("b", 1, 1000, 1) is True
    assert await store.count_hit("c", 1, 1000, 1) is False


async def test_prune_forgets_old_hits_of_every_bucket(store: Store) -> None:
    for t in (0, 100, 200):
        await store.count_hit("old", t, 10_000, 10)
    await store.count_hit("new", 900, 10_000, 10)
    assert await store.prune_hits(1000, 700) == 3  # t <= 300 goes, in every bucket
    assert await store.prune_hits(1000, 700) == 0
    # with a long window, "old" would still be full had its hits not been forgotten
    assert await store.count_hit("old", 1000, 10_000, 1) is False
    assert await store.count_hit("new", 1000, 10_000, 1) is True


async def test_clear_forgets_one_bucket(store: Store) -> None:
    for bucket in ("a", "b"):
        await store.count_hit(bucket, 0, 1000, 1)
    assert await store.clear_hits("a") == 1
    assert await store.clear_hits("a") == 0
    assert await store.count_hit("a", 1, 1000, 1) is False
    assert await store.count_hit("b", 1, 1000, 1) is True


# -- two stores on one database -------------------------------------------------------------
@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def two_stores(request, tmp_path: Path) -> AsyncIterator[tuple[Store, Store]]:
    make: Callable[[], Store]
    if request.param == "sqlite":
        make = lambda: SQLiteStore(tmp_path / "shared.db")  # noqa: E731
        cleanup = None
    else:
        dsn = request.getfixturevalue("pg_dsn")  # skips (or fails) without PostgreSQL
        from flux.store.postgres import PostgresStore

        schema = f"flux_test_{uuid.uuid4().hex}"
        make = lambda: PostgresStore(dsn, schema=schema, pool_max=10)  # noqa: E731
        cleanup = (dsn, schema)
    stores = (make(), make())
    for s in stores:  # one after the other: SQLite cannot switch a new file to WAL twice at once
        await s.open()
    try:
        yield stores
    finally:
        await asyncio.gather(*(s.close() for s in stores))
        if cleanup is not None:
            import asyncpg

            conn = await asyncpg.connect(cleanup[0])
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{cleanup[1]}" CASCADE')
            finally:
                await conn.close()


async def test_two_stores_on_one_database_share_the_limit(two_stores) -> None:
    one, two = two_stores
    calls = [s.count_hit("shared", 5, 60_000, 9) for _ in range(25) for s in (one, two)]
    results = await asyncio.gather(*calls)
    assert results.count(False) == 9
    assert await two.clear_hits("shared") == 9
    assert await one.count_hit("shared", 6, 60_000, 1) is False


async def test_two_stores_counting_many_buckets_at_once_stay_exact(two_stores) -> None:
    """Hits of four buckets, interleaved, from two stores at once: counted together in
    statements that each take several buckets' locks (PostgreSQL), they neither deadlock
    nor let a bucket past its limit."""
    one, two = two_stores
    calls = [
        s.count_hit(f"many-{i % 4}", 5, 60_000, 6) for i in range(40) for s in (one, two)
    ]  # fmt: skip
    results = await asyncio.gather(*calls)
    for b in range(4):
        assert [r for i, r in enumerate(results) if (i // 2) % 4 == b].count(False) == 6
