"""flux.server.limits: the in-memory and the store-backed HitCounter answer alike; the store
one is shared by every counter on one database (as by the processes of one domain) and
prunes old hits itself; the server picks the shared one for the postgres backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from flux.accounts import LoginLimiter, MemoryAccountStore
from flux.identity import Identity
from flux.protocol import ServerSigner
from flux.protocol.spam import RateLimiter
from flux.server import ServerConfig
from flux.server.app import build_accounts
from flux.server.keys import ServerKey
from flux.server.limits import KEEP_MS, MemoryHitCounter, StoreHitCounter, hit_counter
from flux.store import MemoryStore, SQLiteStore, Store
from postgres_env import postgres_dsn


def _made(kind: str, tmp_path: Path) -> Store:
    if kind == "postgres":  # pragma: no cover - needs a server
        from flux.store.postgres import PostgresStore

        return PostgresStore(postgres_dsn(), fresh_schema=True)
    return MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "flux.db")


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request, tmp_path: Path) -> AsyncIterator[Store]:
    made = _made(request.param, tmp_path)
    await made.open()
    try:
        yield made
    finally:
        await made.close()


TIMES = [0, 10, 20, 30, 500, 999, 1000, 1005, 1010, 1020, 1500, 2000, 2004, 3100]


async def test_both_counters_answer_like_the_spam_rate_limiter(store: Store) -> None:
    memory = MemoryHitCounter(limit=3, window_ms=1000)
    shared = StoreHitCounter(store, limit=3, window_ms=1000)
    limiter = RateLimiter(limit=3, window_ms=1000)
    for t in TIMES:
        expected = limiter.hit("s", t)
        assert await memory.hit("s", t) is expected
        assert await shared.hit("s", t) is expected


async def test_clear_empties_a_bucket(store: Store) -> None:
    for counter in (MemoryHitCounter(limit=1, window_ms=100), StoreHitCounter(store, limit=1, window_ms=100)):  # fmt: skip
        assert await counter.hit("b", 0) is False
        assert await counter.hit("b", 1) is True
        await counter.clear("b")
        assert await counter.hit("b", 2) is False


async def test_store_counters_on_one_database_share_the_count(tmp_path: Path) -> None:
    """Two stores on one SQLite file stand for two processes; their login limiters share."""
    stores = [SQLiteStore(tmp_path / "shared.db") for _ in range(2)]
    for s in stores:
        await s.open()
    try:
        limiters = [LoginLimiter(StoreHitCounter(s, limit=3, window_ms=60_000)) for s in stores]
        key = ("ada", "10.0.0.1")
        results = [await limiters[i % 2].attempt(key, 1000 + i) for i in range(5)]
        assert results == [False, False, False, True, True]
        await limiters[1].succeeded(key)  # a success in one process clears it for all
        assert await limiters[0].attempt(key, 2000) is False
    finally:
        for s in stores:
            await s.close()


async def test_the_memory_counter_prunes_when_full() -> None:
    counter = MemoryHitCounter(limit=1, window_ms=10, max_buckets=2)
    await counter.hit("a", 0)
    await counter.hit("b", 0)
    await counter.hit("c", 100)  # prunes a and b, which have expired
    assert len(counter) == 1
    assert await counter.prune(1000) == 1 and len(counter) == 0


async def test_the_store_counter_prunes_hits_nobody_counts_any_more(store: Store) -> None:
    counter = StoreHitCounter(store, limit=5, window_ms=1000, prune_every_ms=60_000)
    held = lambda t: store.count_hit("abandoned", t, 10 * KEEP_MS, 1)  # noqa: E731 (full: adds none)
    await counter.hit("abandoned", 0)  # the first hit prunes (nothing yet)
    await counter.hit("busy", 30_000)  # not yet time to prune again
    assert await held(KEEP_MS + 100) is True
    await counter.hit("busy", KEEP_MS + 100)  # prunes every hit at or before t=100
    assert await held(KEEP_MS + 100) is False
    with pytest.raises(ValueError):
        StoreHitCounter(store, limit=1, window_ms=KEEP_MS + 1)


async def test_the_server_counts_logins_in_the_store_only_with_postgres(tmp_path: Path) -> None:
    store = MemoryStore()
    assert isinstance(hit_counter(limit=1, window_ms=1, shared=store), StoreHitCounter)
    assert isinstance(hit_counter(limit=1, window_ms=1), MemoryHitCounter)
    identity = Identity.generate()
    kinds = {}
    for backend, db_url in (("sqlite", None), ("memory", None), ("postgres", "postgresql://db/x")):
        config = ServerConfig(domain="limits.test", data_dir=tmp_path, backend=backend,
                              db_url=db_url)  # fmt: skip
        key = ServerKey(ServerSigner(config.domain, identity), 0)
        accounts = build_accounts(config, store, key, lambda: 0, MemoryAccountStore())
        kinds[backend] = type(accounts.limiter.counter)
    assert kinds == {"sqlite": MemoryHitCounter, "memory": MemoryHitCounter,
                     "postgres": StoreHitCounter}  # fmt: skip


async def test_full_looks_without_counting(store: Store) -> None:
    """`full` (PROTOCOL.md §8.2: a refused message does not count): a look at the bucket
    that counts nothing, the same answer on every counter and store."""
    for counter in (MemoryHitCounter(limit=2, window_ms=1000), StoreHitCounter(store, limit=2, window_ms=1000)):  # fmt: skip
        for _ in range(5):
            assert await counter.full("p", 0) is False  # looked at five times: still empty
        assert await counter.hit("p", 0) is False
        assert await counter.full("p", 10) is False
        assert await counter.hit("p", 10) is False
        assert await counter.full("p", 20) is True
        assert await counter.full("p", 999) is True  # a hit at t counts while t > now - 1000
        assert await counter.full("p", 1000) is False
