"""Group commit for a store whose every transaction is a round trip (PostgreSQL).

Each message stored in its own transaction costs a BEGIN, its lock statement and a COMMIT
(a WAL flush) of its own. `Coalescer` lets concurrent callers share them: the first call
runs at once; calls that arrive while batches are in flight wait and then go together, in
arrival order, as one batch (SQLiteStore's writer thread does the same for SQLite). Each
caller gets its own result, returned only after the shared transaction committed; if the
batch fails, every caller in it gets the exception (a caller's retry is then harmless: the
store dedupes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Coalescer(Generic[Item, Result]):
    def __init__(
        self,
        run: Callable[[list[Item]], Awaitable[list[Result]]],
        *,
        max_batch: int = 64,
        max_in_flight: int = 4,
    ) -> None:
        self._run = run
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self._waiting: list[tuple[Sequence[Item], asyncio.Future[list[Result]]]] = []
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, items: Sequence[Item]) -> list[Result]:
        """Run `items` (in order) in a shared batch; their results, after its commit."""
        future: asyncio.Future[list[Result]] = asyncio.get_running_loop().create_future()
        self._waiting.append((items, future))
        self._start()
        return await future

    def _start(self) -> None:
        while self._waiting and self._in_flight < self.max_in_flight:
            taken, size = 0, 0
            while taken < len(self._waiting) and (
                taken == 0 or size + len(self._waiting[taken][0]) <= self.max_batch
            ):
                size += len(self._waiting[taken][0])
                taken += 1
            requests, self._waiting = self._waiting[:taken], self._waiting[taken:]
            self._in_flight += 1
            task = asyncio.create_task(self._batch(requests))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _batch(
        self, requests: list[tuple[Sequence[Item], asyncio.Future[list[Result]]]]
    ) -> None:
        try:
            results = await self._run([item for items, _ in requests for item in items])
        except BaseException as exc:
            for _, future in requests:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            start = 0
            for items, future in requests:
                if not future.done():  # a caller that gave up (cancelled) is skipped
                    future.set_result(results[start : start + len(items)])
                start += len(items)
        finally:
            self._in_flight -= 1
            self._start()
