"""The SQLite store's single writer thread, with group commit.

Why one writer: SQLite allows one writing transaction at a time per database, and a
durable commit (WAL, synchronous=FULL) costs one fsync, which dominates everything else a
mail write does. So every write of the process goes to one thread that owns the only
write connection. Coroutines enqueue an operation — a function of the connection — and
await a future. The thread takes whatever is queued (up to MAX_BATCH), runs it all in one
transaction, commits once, and only then resolves the futures: a write returns after its
commit is on disk, and N concurrent writers pay for about one fsync, not N.

If an operation raises, only its own changes are rolled back and only its future gets
the exception; the rest of the batch commits. A batch first runs without a SAVEPOINT per
operation (two statements each, for a failure that rarely comes); when one raises, the
whole transaction is rolled back and the batch runs again with each operation inside its
own SAVEPOINT. If the COMMIT itself fails, no operation of the batch happened, and every
future gets the error.

Cancelling the awaiting coroutine does not withdraw an operation already queued; it may
still commit (as with any database whose client disconnects after sending a COMMIT).

A full disk (SQLITE_FULL, or an I/O error whose cause is ENOSPC) fails the operations it
hits with `StoreFull` and sets `full` until a batch commits again. Checkpoints: after a
batch, and when idle every `checkpoint_interval_s`, a WAL past `checkpoint_bytes` gets a
TRUNCATE checkpoint with the busy timeout off, so a reader holding an old snapshot makes
it give up at once (it is tried again later) instead of stalling every write behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .base import StoreFull

MAX_BATCH = 512
_FULL_CODES = {sqlite3.SQLITE_FULL}
_IOERR = sqlite3.SQLITE_IOERR


def disk_full(exc: BaseException) -> bool:
    """Whether `exc` says there is no room to write."""
    if isinstance(exc, OSError):
        return exc.errno == errno.ENOSPC
    if not isinstance(exc, sqlite3.Error):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code in _FULL_CODES:
        return True
    # SQLITE_IOERR_WRITE and friends (extended codes) carry no errno; SQLite's own text
    # for ENOSPC says "disk is full" in every version FLUX supports.
    return code is not None and code & 0xFF == _IOERR and "full" in str(exc).lower()


def _as_full(exc: BaseException) -> BaseException:
    if disk_full(exc) and not isinstance(exc, StoreFull):
        full = StoreFull(f"no room to write: {exc}")
        full.__cause__ = exc
        return full
    return exc


Op = Callable[[sqlite3.Connection], Any]
_STOP = object()


class Writer:
    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        *,
        wal: Path | None = None,
        checkpoint_bytes: int = 16 << 20,
        checkpoint_interval_s: float = 30.0,
    ) -> None:
        self._connect = connect
        self._wal = wal
        self._checkpoint_bytes = checkpoint_bytes
        self._checkpoint_interval_s = checkpoint_interval_s
        self._last_check = time.monotonic()
        self.full = False  #: the last write found no room (cleared by the next commit)
        self.checkpoints = 0  #: TRUNCATE checkpoints that completed (tests read it)
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
        """Queue `op`; the future resolves once the transaction that ran it has committed.
        `op` may run twice (module doc: a batch in which an operation raised runs again),
        so it must act only through the connection: no Python state, counters or calls
        out, and arguments it does not consume (lists, not iterators)."""
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
                self._maybe_checkpoint(conn, idle=not batch)
        finally:
            conn.close()

    def _maybe_checkpoint(self, conn: sqlite3.Connection, *, idle: bool) -> None:
        now = time.monotonic()
        # Busy writers look at most once a second (a blocked attempt still scans the WAL).
        if now - self._last_check < (self._checkpoint_interval_s if idle else
                                     min(1.0, self._checkpoint_interval_s)):  # fmt: skip
            return
        self._last_check = now
        try:
            if self._wal is None or self._wal.stat().st_size <= self._checkpoint_bytes:
                return
        except FileNotFoundError:
            return
        busy_ms = conn.execute("PRAGMA busy_timeout").fetchone()[0]
        try:
            conn.execute("PRAGMA busy_timeout=0")  # a reader in the way: give up at once
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            self.checkpoints += busy == 0
        except sqlite3.Error:  # busy or full: the next check tries again
            pass
        finally:
            conn.execute(f"PRAGMA busy_timeout={int(busy_ms)}")

    def _take(self) -> tuple[list[Any], bool]:
        """Block for one item (at most a checkpoint interval: an idle writer still keeps
        the WAL bounded), then drain what is already queued."""
        try:
            item = self._queue.get(timeout=self._checkpoint_interval_s)
        except queue.Empty:
            return [], False
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
        outcomes = self._run_all(conn, batch)
        if outcomes is None:  # an operation failed: again, each in its own SAVEPOINT
            outcomes = self._run_each(conn, batch)
        if any(isinstance(e, StoreFull) for _r, e in outcomes):
            self.full = True
        self.operations += len(batch)
        # One wake-up of each waiting loop per batch, not one per operation: each
        # call_soon_threadsafe writes to the loop's self-pipe and costs it a turn.
        settled: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, Any]]] = {}
        for (_op, fut, loop), (result, exc) in zip(batch, outcomes, strict=True):
            settled.setdefault(loop, []).append((fut, result, exc))
        for loop, items in settled.items():
            _resolve(loop, items)

    def _run_all(
        self, conn: sqlite3.Connection, batch: list[Any]
    ) -> list[tuple[Any, BaseException | None]] | None:
        """The batch in one transaction without a SAVEPOINT per operation (two statements
        each, and most batches have no failure); None, with nothing of it written, when
        an operation raised: `_run_each` then runs it the careful way. The operations are
        functions of the connection alone, so running one again after a rollback is
        running it for the first time."""
        results: list[tuple[Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
        except BaseException as exc:
            return self._failed(conn, batch, exc)
        try:
            for op, _fut, _loop in batch:
                results.append((op(conn), None))
        except Exception:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # a full disk may refuse it too
                    conn.execute("ROLLBACK")
            return None
        except BaseException as exc:
            return self._failed(conn, batch, exc)
        try:
            conn.execute("COMMIT")
        except BaseException as exc:
            return self._failed(conn, batch, exc)
        self.commits += 1
        self.full = False
        return results

    def _run_each(
        self, conn: sqlite3.Connection, batch: list[Any]
    ) -> list[tuple[Any, BaseException | None]]:
        outcomes: list[tuple[Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op, _fut, _loop in batch:
                outcomes.append(self._run_one(conn, op))
            conn.execute("COMMIT")
            self.commits += 1
            self.full = False
        except BaseException as exc:  # BEGIN or COMMIT failed: nothing of the batch stands
            return self._failed(conn, batch, exc)
        return outcomes

    @staticmethod
    def _failed(
        conn: sqlite3.Connection, batch: list[Any], exc: BaseException
    ) -> list[tuple[Any, BaseException | None]]:
        """Nothing of the batch stands: every operation gets `exc`."""
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # a full disk may refuse it too
                conn.execute("ROLLBACK")
        return [(None, _as_full(exc))] * len(batch)

    @staticmethod
    def _run_one(conn: sqlite3.Connection, op: Op) -> tuple[Any, BaseException | None]:
        conn.execute("SAVEPOINT op")
        try:
            result = op(conn)
        except Exception as exc:
            if not conn.in_transaction:
                # SQLite rolled the whole transaction back (SQLITE_FULL and I/O errors
                # may): the batch's other operations are gone too, so all of it fails.
                raise _as_full(exc) from exc
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            return None, _as_full(exc)
        conn.execute("RELEASE op")
        return result, None


def _resolve(
    loop: asyncio.AbstractEventLoop,
    items: list[tuple[asyncio.Future[Any], Any, BaseException | None]],
) -> None:
    """Settle `items` (future, result, exception) on `loop`, from the writer thread."""

    def settle() -> None:
        for fut, result, exc in items:
            if fut.done():  # the waiter was cancelled
                continue
            if exc is None:
                fut.set_result(result)
                continue
            try:
                fut.set_exception(exc)
            except TypeError:  # StopIteration: a future refuses it; one bad outcome
                # must not leave the batch's other waiters unsettled
                fut.set_exception(RuntimeError(f"the store operation raised {exc!r}"))

    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
        loop.call_soon_threadsafe(settle)
