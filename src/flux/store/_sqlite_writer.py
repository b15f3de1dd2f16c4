"""The SQLite store's single writer thread, with group commit.

Why one writer: SQLite allows one writing transaction at a time per database, and a
durable commit (WAL, synchronous=FULL) costs one fsync, which dominates everything else a
mail write does. So every write of the process goes to one thread that owns the only
write connection. Coroutines enqueue an operation — a function of the connection — and
await a future. The thread takes whatever is queued (up to MAX_BATCH), runs it all in one
transaction, commits once, and only then resolves the futures: a write returns after its
commit is on disk, and N concurrent writers pay for about one fsync, not N.

Each operation runs inside its own SAVEPOINT: if it raises, only its own changes are
rolled back and only its future gets the exception; the rest of the batch commits. If the
COMMIT itself fails, no operation of the batch happened, and every future gets the error.

Cancelling the awaiting coroutine does not withdraw an operation already queued; it may
still commit (as with any database whose client disconnects after sending a COMMIT).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

MAX_BATCH = 512

Op = Callable[[sqlite3.Connection], Any]
_STOP = object()


class Writer:
    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="flux-sqlite-writer", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._closing = False
        self._submit_lock = threading.Lock()  # orders every submit before or after _STOP
        self.commits = 0  #: transactions committed (read by tests for group commit)
        self.operations = 0  #: operations run (committed or rolled back alone)

    def start(self) -> None:
        """Start the thread and wait until its connection is open (raises what opening did)."""
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def submit(self, op: Op) -> asyncio.Future[Any]:
        """Queue `op`; the future resolves once the transaction that ran it has committed."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        with self._submit_lock:
            if self._closing or not self._thread.is_alive():
                raise RuntimeError("the SQLite store is closed")
            self._queue.put((op, fut, loop))
        return fut

    def stop(self) -> None:
        """Blocking: let everything submitted so far commit, then end the thread."""
        with self._submit_lock:
            if self._closing:
                return
            self._closing = True
            self._queue.put(_STOP)
        self._thread.join()

    # -- the thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while True:
                batch, stop = self._take()
                if batch:
                    self._run_batch(conn, batch)
                if stop:
                    return
        finally:
            conn.close()

    def _take(self) -> tuple[list[Any], bool]:
        """Block for one item, then drain what is already queued."""
        item = self._queue.get()
        if item is _STOP:
            return [], True
        batch = [item]
        while len(batch) < MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _run_batch(self, conn: sqlite3.Connection, batch: list[Any]) -> None:
        outcomes: list[tuple[Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op, _fut, _loop in batch:
                outcomes.append(self._run_one(conn, op))
            conn.execute("COMMIT")
            self.commits += 1
        except BaseException as exc:  # BEGIN or COMMIT failed: nothing of the batch stands
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            outcomes = [(None, exc)] * len(batch)
        self.operations += len(batch)
        for (_op, fut, loop), (result, exc) in zip(batch, outcomes, strict=True):
            _resolve(loop, fut, result, exc)

    @staticmethod
    def _run_one(conn: sqlite3.Connection, op: Op) -> tuple[Any, BaseException | None]:
        conn.execute("SAVEPOINT op")
        try:
            result = op(conn)
        except Exception as exc:
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            return None, exc
        conn.execute("RELEASE op")
        return result, None


def _resolve(
    loop: asyncio.AbstractEventLoop,
    fut: asyncio.Future[Any],
    result: Any,
    exc: BaseException | None,
) -> None:
    def settle() -> None:
        if fut.done():  # the waiter was cancelled
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)

    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
        loop.call_soon_threadsafe(settle)
