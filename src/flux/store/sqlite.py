"""`SQLiteStore`: the embedded, durable `Store` (stdlib sqlite3).

    store = SQLiteStore("/var/lib/flux/flux.db")
    await store.open()      # WAL, synchronous=FULL, foreign keys, migrations
    ...
    await store.close()     # lets queued writes commit first

Writes go through one writer thread with group commit (_sqlite_writer.py): a write
returns only once its transaction is durable, and concurrent writes share one fsync.
Reads run on a small pool of reader threads, each with its own connection; WAL lets them
read while the writer writes, each seeing the last committed state. Several processes may
open one file (SQLite's locks serialise their writers; busy_timeout waits them out).

Operating safely (issue 10 §6):

* Files are private. The database is created 0600 before SQLite opens it, whatever the
  umask, and SQLite gives its `-wal` and `-shm` files the database's own mode; files left
  by an older FLUX are narrowed to 0600 at open. A data directory that others may read is
  reported at open (one warning line): the mail is private even if the directory is not.
* The WAL stays bounded. A reader holding an old snapshot (an online `.backup`) stops
  checkpoints from reaching the WAL's end, so the WAL grows while it reads; without a
  size limit it then keeps that size for good. `journal_size_limit` makes SQLite cut it
  back whenever it restarts the WAL, and the writer runs a TRUNCATE checkpoint once the
  WAL is past `wal_checkpoint_bytes` (after a batch, and when idle every
  `checkpoint_interval_s`), never waiting for readers: blocked, it tries again later.
* A full disk is an outage, not a bug: SQLITE_FULL (the disk, or the `max_bytes` cap) and
  an I/O error with ENOSPC become `StoreFull`, a `StoreUnavailable` (503 `unavailable`);
  nothing of the failed write was acknowledged. `ping` (the health check) answers
  StoreFull while the last write found the disk full and there is still no room, so a
  load balancer drains the process; once a write succeeds, or there is room again, it
  passes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from . import _rules
from . import _sqlite_hits as hits
from . import _sqlite_invites as invites
from . import _sqlite_ops as ops
from . import _sqlite_queue as queue
from ._sqlite_writer import Writer
from .base import (
    Changes,
    DeliveryUpdates,
    DestinationState,
    HostedAddress,
    Incoming,
    Invite,
    InviteUse,
    Lease,
    ListQuery,
    MessageRef,
    MessageStatus,
    Outbound,
    Override,
    Page,
    PrefixMatches,
    Queued,
    QueuedMessage,
    SentMessage,
    Session,
    StoredMessage,
    StoreFull,
    StoreOutcome,
    Strike,
    StrikeTally,
    ThreadItem,
    check_settle,
    sent_after,
)
from .migrations.sqlite import migrate

T = TypeVar("T")


def _store_one(conn: sqlite3.Connection, inc: Incoming) -> dict[str, StoreOutcome]:
    """Store one message, and its sender's sent-mail record, in the writer's transaction."""
    outcome = ops.store(conn, inc)
    if inc.sent is not None and (record := sent_after(inc.sent, outcome)) is not None:
        queue.record_sent(conn, [record])
    return outcome


READERS = 4
BUSY_TIMEOUT_S = 30.0
JOURNAL_SIZE_LIMIT = 64 << 20  #: SQLite cuts the WAL back to this when it restarts it
WAL_CHECKPOINT_BYTES = 16 << 20  #: a WAL larger than this is checkpointed and truncated
CHECKPOINT_INTERVAL_S = 30.0  #: how often an idle writer looks at the WAL's size
FREE_BYTES_NEEDED = 1 << 20  #: room a full disk must have again before /health passes
log = logging.getLogger("flux.store")


class SQLiteStore:
    """The SQLite `Store`. `clock` returns unix ms (for the `expires` hiding rule)."""

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], int] = _rules.wall_clock_ms,
        max_bytes: int | None = None,
        wal_checkpoint_bytes: int = WAL_CHECKPOINT_BYTES,
        checkpoint_interval_s: float = CHECKPOINT_INTERVAL_S,
    ) -> None:
        """`max_bytes` caps the database file (SQLite's max_page_count): past it, writes
        fail as on a full disk (503), reads go on."""
        self.path = Path(path)
        self._clock = clock
        self.max_bytes = max_bytes
        self._wal_checkpoint_bytes = wal_checkpoint_bytes
        self._checkpoint_interval_s = checkpoint_interval_s
        self._writer: Writer | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._inline_conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self.schema_version = 0

    @property
    def commits(self) -> int:
        """Write transactions committed since open (group commit makes this < writes)."""
        return self._writer.commits if self._writer else 0

    # -- lifecycle ----------------------------------------------------------------------------
    def _connect(self, *, read_only: bool = False) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
        if self.max_bytes is not None:
            page = conn.execute("PRAGMA page_size").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count={max(1, self.max_bytes // page)}")
        if read_only:
            conn.execute("PRAGMA query_only=ON")
        return conn

    def _make_private(self) -> None:
        """Create the database 0600 (whatever the umask) and narrow existing files to it;
        warn once if the directory lets others in."""
        if str(self.path) == ":memory:":
            return
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        for suffix in ("", "-wal", "-shm", "-journal"):
            file = Path(f"{self.path}{suffix}")
            if file.exists() and stat.S_IMODE(file.stat().st_mode) & 0o077:
                os.chmod(file, 0o600)
        mode = stat.S_IMODE(self.path.resolve().parent.stat().st_mode)
        if mode & 0o007:
            log.warning(
                "event=data_dir_open_to_others dir=%s mode=%o: other users can list it; "
                "chmod o-rwx (the database files themselves are 0600)",
                self.path.resolve().parent, mode,
            )  # fmt: skip

    def _open_sync(self) -> None:
        self._make_private()
        conn = self._connect()
        try:
            self.schema_version = migrate(conn, str(self.path))
        finally:
            conn.close()

    async def open(self) -> None:
        """Create or migrate the database, then start the writer and readers.
        Raises migrations.SchemaTooNew for a database from a newer FLUX."""
        if self._writer is not None:
            return
        await asyncio.to_thread(self._open_sync)
        writer = Writer(
            self._connect, wal=Path(f"{self.path}-wal"),
            checkpoint_bytes=self._wal_checkpoint_bytes,
            checkpoint_interval_s=self._checkpoint_interval_s,
        )  # fmt: skip
        await asyncio.to_thread(writer.start)
        self._writer = writer
        self._readers = ThreadPoolExecutor(READERS, thread_name_prefix="flux-sqlite-read")

    async def close(self) -> None:
        """Commit what is queued, stop the threads and close every connection."""
        writer, readers = self._writer, self._readers
        self._writer = self._readers = None
        self._inline_conn = None
        if writer is not None:
            await asyncio.to_thread(writer.stop)
        if readers is not None:
            await asyncio.to_thread(readers.shutdown, True)
        with self._lock:
            conns, self._reader_conns = self._reader_conns, []
        for conn in conns:
            conn.close()

    # -- plumbing -----------------------------------------------------------------------------
    async def _write(self, op: Callable[[sqlite3.Connection], T]) -> T:
        if self._writer is None:
            raise RuntimeError("SQLiteStore is not open")
        return await self._writer.submit(op)

    def _reader_conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect(read_only=True)
            with self._lock:
                self._reader_conns.append(conn)
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._readers is None:
            raise RuntimeError("SQLiteStore is not open")

        def run() -> T:
            conn = self._reader_conn()
            conn.execute("BEGIN")  # one snapshot for every statement of `fn`
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")

        return await asyncio.get_running_loop().run_in_executor(self._readers, run)

    async def _lookup(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A point lookup (one indexed row), run on the event loop's own thread.

        Why not a reader thread: a WAL read of one row takes ~10-20 µs, while the hop to a
        thread and back costs more, and with several threads taking turns the loop waits
        for the GIL at every hop (the submit path makes several lookups per message; moving
        them here doubled ingest, see benchmarks/README.md). WAL readers never wait for the
        writer, so this cannot block the loop behind a commit.
        """
        if self._readers is None:
            raise RuntimeError("SQLiteStore is not open")
        conn = self._inline_conn
        if conn is None:
            conn = self._inline_conn = self._connect(read_only=True)
            with self._lock:
                self._reader_conns.append(conn)
        conn.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            conn.execute("COMMIT")

    async def ping(self) -> None:
        """One trivial read on the loop's own connection (an open file always answers).
        Raises StoreFull while the last write found no room and there is still none."""
        await self._lookup(lambda c: c.execute("SELECT 1").fetchone())
        writer = self._writer
        if writer is not None and writer.full and not await asyncio.to_thread(self._has_room):
            raise StoreFull(f"{self.path}: the disk (or max_bytes) is full; writes fail")

    def _has_room(self) -> bool:
        """Room for writes again: free disk space, and pages under `max_bytes`."""
        try:
            fs = os.statvfs(self.path.resolve().parent)
        except OSError:
            return False
        if fs.f_bavail * fs.f_frsize < FREE_BYTES_NEEDED:
            return False
        if self.max_bytes is None:
            return True
        conn = self._connect(read_only=True)
        try:
            page, pages, free, limit = (
                conn.execute(f"PRAGMA {p}").fetchone()[0]
                for p in ("page_size", "page_count", "freelist_count", "max_page_count")
            )
        finally:
            conn.close()
        return (limit - pages + free) * page >= FREE_BYTES_NEEDED

    # -- hosted addresses -------------------------------------------------------------------
    async def register_address(self, address: str, pub: str, now_ms: int) -> bool:
        sql = "INSERT OR IGNORE INTO hosted_addresses VALUES (?, ?, ?)"
        return await self._write(_exec(sql, (address, pub, now_ms))) == 1

    async def hosted(self, address: str) -> HostedAddress | None:
        sql = "SELECT address, pub, registered_at FROM hosted_addresses WHERE address = ?"
        row = await self._lookup(_one(sql, (address,)))
        return None if row is None else HostedAddress(*row)

    # -- mail -------------------------------------------------------------------------------
    async def store_message(self, incoming: Incoming) -> dict[str, StoreOutcome]:
        # with its sent record, as store_many (and PostgresStore) keep it
        return await self._write(lambda c: _store_one(c, incoming))

    async def store_many(self, batch: Sequence[Incoming]) -> list[dict[str, StoreOutcome]]:
        return await self._write(lambda c: [_store_one(c, inc) for inc in batch])

    async def pending_count(self, address: str) -> int:
        now = self._clock()
        return await self._lookup(lambda c: ops.pending_count(c, address, now))

    async def get(
        self, address: str, msg_id: str, sender: str | None = None
    ) -> StoredMessage | None:
        now = self._clock()
        return await self._lookup(lambda c: ops.get(c, address, msg_id, now, sender))

    async def match_prefix(
        self, address: str, prefix: str, sender: str | None = None, limit: int = 10
    ) -> PrefixMatches:
        now = self._clock()
        return await self._read(lambda c: ops.match_prefix(c, address, prefix, sender, limit, now))

    async def list(self, address: str, query: ListQuery) -> Page:
        if query.cursor:
            _rules.decode_cursor(query.cursor)  # raise InvalidValue here, not in a thread
        now = self._clock()
        return await self._read(lambda c: ops.list_page(c, address, query, now))

    async def fetch_pending(self, address: str, limit: int) -> list[StoredMessage]:
        now = self._clock()
        return await self._write(lambda c: ops.fetch_pending(c, address, limit, now))

    async def mark(
        self, address: str, msg_ids: Sequence[str | MessageRef], status: MessageStatus
    ) -> list[StoredMessage]:
        now, ids = self._clock(), list(msg_ids)
        return await self._write(lambda c: ops.mark(c, address, ids, status, now))

    async def mark_unread(
        self, address: str, msg_ids: Sequence[str | MessageRef]
    ) -> list[StoredMessage]:
        now, ids, unread = self._clock(), list(msg_ids), _rules.unread_status
        return await self._write(
            lambda c: ops.mark(c, address, ids, MessageStatus.DELIVERED, now, unread)
        )

    async def tag(
        self, address: str, msg_id: str, add: Sequence[str], remove: Sequence[str],
        sender: str | None = None,
    ) -> StoredMessage | None:  # fmt: skip
        now, add, remove = self._clock(), list(add), list(remove)
        return await self._write(lambda c: ops.tag(c, address, msg_id, add, remove, now, sender))

    async def move(
        self, address: str, msg_id: str, inbox: str, sender: str | None = None
    ) -> StoredMessage | None:
        now = self._clock()
        return await self._write(lambda c: ops.move(c, address, msg_id, inbox, now, sender))

    async def inboxes(self, address: str) -> dict[str, dict[str, int]]:
        now = self._clock()
        return await self._read(lambda c: ops.inboxes(c, address, now))

    async def thread(
        self, address: str, msg_id: str, sender: str | None = None
    ) -> list[ThreadItem]:
        now = self._clock()
        return await self._read(lambda c: ops.thread(c, address, msg_id, now, sender))

    async def changes(self, address: str, since: int, limit: int) -> Changes:
        return await self._read(lambda c: ops.changes(c, address, since, limit))

    async def state(self, address: str) -> int:
        return await self._lookup(lambda c: ops.state(c, address))

    async def expire(self, now_ms: int) -> int:
        return await self._write(lambda c: ops.expire(c, now_ms))

    async def purge_expired(self, before_ms: int) -> int:
        return await self._write(lambda c: ops.purge_expired(c, before_ms))

    async def add_contacts(self, owner: str, peers: Sequence[str], now_ms: int) -> None:
        peers = list(peers)
        await self._write(lambda c: ops.add_contacts(c, owner, peers, now_ms))

    async def is_contact(self, owner: str, peer: str) -> bool:
        sql = "SELECT 1 FROM contacts WHERE owner = ? AND peer = ?"
        return owner == peer or await self._lookup(_one(sql, (owner, peer))) is not None

    async def stats(self) -> dict[str, int]:
        now = self._clock()
        return await self._read(lambda c: ops.stats(c, now))

    # -- sessions and challenges ------------------------------------------------------------
    async def create_session(self, token_hash: str, address: str, expires_at: int) -> None:
        sql = "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, 0)"
        await self._write(_exec(sql, (token_hash, address, expires_at)))

    async def session(self, token_hash: str, now_ms: int) -> Session | None:
        sql = """SELECT address, expires_at FROM sessions
                 WHERE token_hash = ? AND revoked = 0 AND expires_at > ?"""
        row = await self._lookup(_one(sql, (token_hash, now_ms)))
        return None if row is None else Session(*row)

    async def revoke_session(self, token_hash: str) -> bool:
        sql = "UPDATE sessions SET revoked = 1 WHERE token_hash = ? AND revoked = 0"
        return await self._write(_exec(sql, (token_hash,))) == 1

    async def use_nonce(self, nonce: str, expires_at: int, now_ms: int) -> bool:
        def op(c: sqlite3.Connection) -> bool:
            # Forget nonces past their own expiry: whoever checks the challenge refuses those.
            c.execute("DELETE FROM nonces WHERE expires_at < ?", (now_ms,))
            sql = "INSERT OR IGNORE INTO nonces VALUES (?, ?)"
            return c.execute(sql, (nonce, expires_at)).rowcount == 1

        return await self._write(op)

    # -- the delivery queue -----------------------------------------------------------------
    async def enqueue(
        self, items: Sequence[Outbound], *, sent: Sequence[SentMessage] = ()
    ) -> list[bool]:
        items, sent = list(items), list(sent)
        return await self._write(lambda c: queue.enqueue(c, items, sent))

    async def record_sent(self, sent: Sequence[SentMessage]) -> None:
        sent = list(sent)
        if sent:
            await self._write(lambda c: queue.record_sent(c, sent))

    async def sent(
        self, sender: str, limit: int, before: tuple[int, str] | None = None
    ) -> list[SentMessage]:
        return await self._read(lambda c: queue.sent(c, sender, limit, before))

    async def sent_message(self, sender: str, msg_id: str) -> SentMessage | None:
        return await self._read(lambda c: queue.sent_message(c, sender, msg_id))

    async def sent_prefix(self, sender: str, prefix: str, limit: int) -> list[SentMessage]:
        return await self._read(lambda c: queue.sent_prefix(c, sender, prefix, limit))

    async def lease(self, holder: str, now_ms: int, lease_ms: int, limit: int) -> Lease | None:
        return await self._write(lambda c: queue.lease(c, holder, now_ms, lease_ms, limit))

    async def settle(
        self,
        lease: Lease,
        done: Sequence[int],
        *,
        retry_at: int | None = None,
        error: str | None = None,
        delivery: DeliveryUpdates | None = None,
        release: bool = True,
    ) -> bool:
        check_settle(release, retry_at, error)
        done = list(done)
        return await self._write(
            lambda c: queue.settle(c, lease, done, retry_at, error, delivery, release)
        )

    async def lease_more(
        self,
        lease: Lease,
        now_ms: int,
        lease_ms: int,
        limit: int,
        *,
        exclude: Collection[int] = (),
        skip_senders: Collection[str] = (),
    ) -> list[Queued] | None:
        # a read and a renewal: on the writer, as `lease`, so no other worker's lease
        # comes between the holder check and the renewal
        lists = queue.json_lists(exclude, skip_senders)
        return await self._write(
            lambda c: queue.lease_more(c, lease, now_ms, lease_ms, limit, *lists)
        )

    async def renew(self, lease: Lease, now_ms: int, lease_ms: int) -> bool:
        return await self._write(lambda c: queue.renew(c, lease, now_ms, lease_ms))

    async def wake(self, destination: str) -> bool:
        return await self._write(lambda c: queue.wake(c, destination))

    async def queue_state(self) -> list[DestinationState]:
        return await self._read(queue.queue_state)

    async def next_due(self) -> int | None:
        return await self._read(queue.next_due)

    # -- invites (_sqlite_invites.py) -----------------------------------------------------
    async def create_invite(self, invite: Invite, code_hash: str) -> None:
        await self._write(lambda c: invites.create_invite(c, invite, code_hash))

    async def invites(self) -> list[Invite]:
        return await self._read(invites.invites)

    async def revoke_invite(self, invite_id: str, now_ms: int) -> bool:
        return await self._write(lambda c: invites.revoke_invite(c, invite_id, now_ms))

    async def use_invite(self, code_hash: str, used_by: str, now_ms: int) -> InviteUse:
        return await self._write(lambda c: invites.use_invite(c, code_hash, used_by, now_ms))

    async def queued(
        self, destination: str | None = None, id_prefix: str | None = None, limit: int = 1000
    ) -> list[QueuedMessage]:
        return await self._read(lambda c: queue.queued(c, destination, id_prefix, limit))

    async def hold(self, destination: str, held: bool) -> bool:
        return await self._write(lambda c: queue.hold(c, destination, held))

    async def hold_messages(self, qids: Sequence[int], held: bool) -> int:
        qids = list(qids)
        return await self._write(lambda c: queue.hold_messages(c, qids, held))

    async def remove_queued(
        self, removals: Sequence[tuple[int, DeliveryUpdates]], now_ms: int
    ) -> list[int]:
        removals = list(removals)
        return await self._write(lambda c: queue.remove_queued(c, removals, now_ms))

    # -- reputation -------------------------------------------------------------------------
    async def add_strike(self, strike: Strike, *, cap: int | None = None) -> bool:
        s = strike
        # One statement on the single writer: the count and the insert cannot interleave
        # with another strike's. Without a cap the count is compared with -1 (always true).
        sql = f"""INSERT OR IGNORE INTO strikes (proof_id, offender, kind, reporter, msg_id, t)
                 SELECT ?, ?, ?, ?, ?, ? WHERE ({_COUNTING_SQL} AND s.offender = ?) < ?
                    OR ? < 0"""
        limit = -1 if cap is None else cap
        params = (s.proof_id, s.offender, s.kind, s.reporter, s.msg_id, s.t, s.offender,
                  limit, limit)  # fmt: skip
        return await self._write(_exec(sql, params)) == 1

    async def strikes(self) -> list[Strike]:
        sql = "SELECT offender, proof_id, kind, reporter, msg_id, t FROM strikes ORDER BY n"
        return [Strike(*r) for r in await self._read(_all(sql, ()))]

    async def strike_tallies(
        self, offenders: Sequence[str] | None = None, *, limit: int
    ) -> list[StrikeTally]:
        where = "" if offenders is None else "WHERE s.offender IN (SELECT value FROM json_each(?))"
        sql = f"""SELECT s.offender, count(*),
                         sum(CASE WHEN o.lifted AND s.t <= o.set_at THEN 0 ELSE 1 END) AS c
                  FROM strikes s LEFT JOIN quarantine_overrides o ON o.server = s.offender
                  {where} GROUP BY s.offender ORDER BY c DESC, count(*) DESC, s.offender
                  LIMIT ?"""
        params = (limit,) if offenders is None else (json.dumps(list(offenders)), limit)
        return [StrikeTally(*r) for r in await self._read(_all(sql, params))]

    async def set_quarantine_override(self, server: str, lifted: bool, now_ms: int) -> None:
        sql = "INSERT OR REPLACE INTO quarantine_overrides VALUES (?, ?, ?)"
        await self._write(_exec(sql, (server, int(lifted), now_ms)))

    async def quarantine_overrides(self) -> dict[str, Override]:
        sql = "SELECT server, lifted, set_at FROM quarantine_overrides"
        rows = await self._read(_all(sql, ()))
        return {server: Override(bool(lifted), set_at) for server, lifted, set_at in rows}

    # -- rate counters ----------------------------------------------------------------------
    async def count_hit(self, bucket: str, now_ms: int, window_ms: int, limit: int) -> bool:
        # One writer operation: the count and the insert are one write transaction.
        return await self._write(lambda c: hits.count_hit(c, bucket, now_ms, window_ms, limit))

    async def hits_in_window(self, bucket: str, now_ms: int, window_ms: int) -> int:
        return await self._read(lambda c: hits.hits_in_window(c, bucket, now_ms, window_ms))

    async def prune_hits(self, now_ms: int, window_ms: int) -> int:
        return await self._write(lambda c: hits.prune_hits(c, now_ms, window_ms))

    async def clear_hits(self, bucket: str) -> int:
        return await self._write(lambda c: hits.clear_hits(c, bucket))

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"


Params = Sequence[object]


#: counts one offender's strikes that no lift has forgiven (add `AND s.offender = ?`)
_COUNTING_SQL = """SELECT count(*) FROM strikes s
    LEFT JOIN quarantine_overrides o ON o.server = s.offender
    WHERE NOT coalesce(o.lifted AND s.t <= o.set_at, 0)"""


def _exec(sql: str, params: Params) -> Callable[[sqlite3.Connection], int]:
    """A write op that runs one statement and returns its rowcount."""
    return lambda c: c.execute(sql, params).rowcount


def _one(sql: str, params: Params) -> Callable[[sqlite3.Connection], tuple | None]:
    return lambda c: c.execute(sql, params).fetchone()


def _all(sql: str, params: Params) -> Callable[[sqlite3.Connection], list[tuple]]:
    return lambda c: c.execute(sql, params).fetchall()
