"""Rate counters: `HitCounter`, counted in this process (`MemoryHitCounter`) or in the
store, shared by every process of a domain on one database (`StoreHitCounter`).

A counter lets at most `limit` hits into a bucket in any `window_ms`: `hit` counts one and
answers True, counting nothing, when the bucket is already full. These are the semantics
of flux.protocol.spam.RateLimiter.hit, made async so that a database can answer.

`full` looks without counting: a caller whose work is costly (the submit pipeline's
content checks) refuses a sender already over the limit first, cheaply, and counts the
hit only for work it actually took (PROTOCOL.md §8.2: refused messages do not count).
Between the look and the count, concurrent work of one bucket can let it overshoot by
at most the number of requests in flight for it; the count itself stays exact.

Which one: processes that share a PostgreSQL database must share their limits, or a
client that spreads its attempts over the processes of a domain gets that many times the
limit; so with the postgres backend the server counts in the store (`Store.count_hit`,
atomic across processes). An SQLite or memory server is one process, and counts in
memory, where a hit costs no durable write. `hit_counter` makes the right one.
"""

from __future__ import annotations

from typing import Protocol

from ..store.base import RateBucket, Store
from ..store.memory import HitLog

__all__ = [
    "KEEP_MS", "HitCounter", "MemoryHitCounter", "StoreHitCounter", "counted_in_store",
    "hit_counter",
]  # fmt: skip

#: How long the store keeps a hit, whatever counter made it: the longest window a
#: StoreHitCounter may have. Buckets share one table, and pruning it with a counter's own
#: window would forget hits that a counter with a longer window still counts.
KEEP_MS = 24 * 3_600_000
#: How often (at most) a StoreHitCounter prunes the store's old hits, on a hit.
PRUNE_EVERY_MS = 10 * 60_000


class HitCounter(Protocol):
    limit: int
    window_ms: int

    async def hit(self, bucket: str, now_ms: int) -> bool:
        """Count one hit in `bucket`; True when the bucket already had `limit` hits within
        the last `window_ms` (the hit is then not counted)."""
        ...

    async def full(self, bucket: str, now_ms: int, ahead: int = 0) -> bool:
        """True when `bucket`'s hits within the last `window_ms`, with `ahead` more not yet
        counted (accepted by the checks, still being stored), reach `limit`; counts
        nothing."""
        ...

    async def clear(self, bucket: str) -> None:
        """Forget every hit of `bucket`."""
        ...

    async def prune(self, now_ms: int) -> int:
        """Forget hits that no longer count (call now and then); return how many."""
        ...


class MemoryHitCounter:
    """Counts in this process. Beyond `max_buckets`, the hits that left the window are
    pruned before a new bucket is added, so memory stays bounded without a sweeper."""

    def __init__(self, *, limit: int, window_ms: int, max_buckets: int = 100_000) -> None:
        self.limit = limit
        self.window_ms = window_ms
        self.max_buckets = max_buckets
        self._log = HitLog()

    def __len__(self) -> int:
        """Buckets with hits held (tests, metrics)."""
        return len(self._log)

    async def hit(self, bucket: str, now_ms: int) -> bool:
        if bucket not in self._log and len(self._log) >= self.max_buckets:
            self._log.prune(now_ms, self.window_ms)
        return self._log.count(bucket, now_ms, self.window_ms, self.limit)

    async def full(self, bucket: str, now_ms: int, ahead: int = 0) -> bool:
        return self._log.in_window(bucket, now_ms, self.window_ms) + ahead >= self.limit

    async def clear(self, bucket: str) -> None:
        self._log.clear(bucket)

    async def prune(self, now_ms: int) -> int:
        return self._log.prune(now_ms, self.window_ms)


class StoreHitCounter:
    """Counts in the store (`Store.count_hit`): one limit for every process on its database.

    The store forgets a busy bucket's old hits as it counts; the hits of buckets nobody
    hits again are pruned by this counter itself, at most every `prune_every_ms`, on a hit
    (`Store.prune_hits` with KEEP_MS, safe for every counter sharing the store).
    """

    def __init__(
        self, store: Store, *, limit: int, window_ms: int, prune_every_ms: int = PRUNE_EVERY_MS
    ) -> None:
        if window_ms > KEEP_MS:
            raise ValueError(f"a shared counter's window is at most {KEEP_MS} ms")
        self.store = store
        self.limit = limit
        self.window_ms = window_ms
        self.prune_every_ms = prune_every_ms
        self._next_prune: int | None = None

    async def hit(self, bucket: str, now_ms: int) -> bool:
        over = await self.store.count_hit(bucket, now_ms, self.window_ms, self.limit)
        if self._next_prune is None or now_ms >= self._next_prune:
            self._next_prune = now_ms + self.prune_every_ms  # before the await: prune once
            await self.prune(now_ms)
        return over

    async def full(self, bucket: str, now_ms: int, ahead: int = 0) -> bool:
        return await self.store.hits_in_window(bucket, now_ms, self.window_ms) + ahead >= self.limit

    async def clear(self, bucket: str) -> None:
        await self.store.clear_hits(bucket)

    async def prune(self, now_ms: int) -> int:
        return await self.store.prune_hits(now_ms, KEEP_MS)

    def bucket(self, bucket: str) -> RateBucket:
        """`bucket` as a storing transaction counts it (`Incoming.rate`): the same hits,
        in the same table, one round trip fewer than a `full` before and a `hit` after."""
        return RateBucket(bucket, self.window_ms, self.limit)

    async def counted(self, now_ms: int) -> None:
        """A hit of this counter was counted by a storing transaction: prune on the
        schedule `hit` keeps (a round trip at most every `prune_every_ms`)."""
        if self._next_prune is None or now_ms >= self._next_prune:
            self._next_prune = now_ms + self.prune_every_ms
            await self.prune(now_ms)


def counted_in_store(counter: HitCounter, store: Store) -> StoreHitCounter | None:
    """`counter`, when it counts in `store` itself, so its hits can be counted in that
    store's storing transaction (`Incoming.rate`); None when it counts elsewhere (in this
    process, where a hit costs no round trip and no durable write)."""
    if isinstance(counter, StoreHitCounter) and counter.store is store:
        return counter
    return None


def hit_counter(*, limit: int, window_ms: int, shared: Store | None = None) -> HitCounter:
    """A counter in `shared` (every process on its database counts together), or in this
    process when `shared` is None."""
    if shared is not None:
        return StoreHitCounter(shared, limit=limit, window_ms=window_ms)
    return MemoryHitCounter(limit=limit, window_ms=window_ms)
