"""`PostgresStore`: the `Store` on PostgreSQL (asyncpg), for servers that outgrow one file.

    store = PostgresStore("postgresql://flux@db.example/flux")
    await store.open()      # connection pool, migrations (under an advisory lock)
    ...
    await store.close()     # waits for in-flight calls, then closes the pool

Every call borrows one connection from an asyncpg pool (`pool_min`..`pool_max`), so many
coroutines use the store at once; each write is one transaction and returns after its
COMMIT, which PostgreSQL makes durable before it answers (the pool pins
`synchronous_commit=on`), and concurrent commits share WAL flushes in the server itself.
Every statement runs under `statement_timeout`, so a stuck lock or query surfaces as an
error instead of a hung request.

When the database goes away. Every call borrows its connection through `_borrow`
(`_postgres_pool.PgPool.borrow`, shared with the accounts store), the one place that
turns a lost database into `StoreUnavailable` (base.py): refused or broken
connections, a server shutting down or starting up, a borrow that waits longer than
`acquire_timeout_s`, a statement cancelled by `statement_timeout`. Anything else (a
constraint violation, a bug) propagates unchanged. A connection that failed that way is
terminated before it goes back to the pool, and the pool opens a new one on the next
borrow, so the store recovers by itself once the database answers again; nothing needs
restarting. A write either committed (and its call returned) or raised: a call that raised
StoreUnavailable may be retried, and the dedupe rules make a retry harmless.

Concurrency. A write that changes a mailbox first takes a transaction-scoped advisory lock
per mailbox it touches (and per message body it may insert), all in one statement, in key
order (_postgres_locks.py). That gives, without SERIALIZABLE retries:

* dedupe and the pending quota are decided on the latest committed state, so concurrent
  submissions can neither store one (id, recipient) twice nor overshoot the quota;
* the changes of one mailbox commit in seq order: a seq is drawn from the sequence only
  while that mailbox's lock is held, and the lock is released only after COMMIT, so a
  client that has seen seq n of its mailbox never later finds one below n appear
  (`changes(address, since)` loses nothing);
* no deadlocks: locks are all taken up front in one global order.

Reads are single statements (each sees one committed snapshot), or a read-only REPEATABLE
READ transaction where several statements must agree (`stats`).

Round trips. Each statement is a round trip to the database, and BEGIN and COMMIT are two
more; a submission once cost 28 (tests/server/test_postgres_round_trips.py counts them).
The writes of the submit path are therefore one statement each, run on their own
(autocommit, `_statement`): storing a batch and counting a rate hit call server-side
PL/pgSQL functions (schema steps 13 to 15) that take the same locks first, as their
first statement, and then read and write by the same rules; the storing one also decides
and counts the sender's rate, keeps its contacts and NOTIFYs the push (step 15; base.py,
"Rate and contacts in the storing transaction"), so a submission now costs two round
trips: the client address's rate and this call. In a VOLATILE function each
statement takes a new snapshot, so what they read after the locks is as fresh as in the
transactions they replace. A batch the storing function leaves to Python's rules (a sent
record to merge, a reply to a message of its own batch: _postgres_ops.store_at_once) is
stored in a transaction as before.

Schemas. Tables live in the connection's default search_path, or in `schema` (created if
missing). `fresh_schema=True` (tests) makes a new, uniquely named schema that `close()`
drops, so every test starts empty on one shared database.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import TypeVar

import asyncpg

from . import _postgres_hits as hits
from . import _postgres_invites as invites
from . import _postgres_ops as ops
from . import _postgres_queue as queue
from . import _rules
from ._coalesce import Coalescer
from ._postgres_locks import Locks, scope_of
from ._postgres_pool import (
    Conn,
    DatabaseUnavailable,
    PgPool,
    chosen_schema,
    redact,
)
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
    RateBucket,
    SentMessage,
    Session,
    StoredMessage,
    StoreOutcome,
    Strike,
    StrikeTally,
    ThreadItem,
    check_settle,
    sent_after,
)
from .migrations.postgres import migrate

__all__ = ["DatabaseUnavailable", "PostgresStore"]

T = TypeVar("T")

#: hosted addresses a PostgresStore keeps once read (`hosted`); ~200 bytes each
HOSTED_SEEN_MAX = 100_000


class PostgresStore:
    """The PostgreSQL `Store`. `clock` returns unix ms (for the `expires` hiding rule)."""

    def __init__(
        self,
        dsn: str,
        *,
        clock: Callable[[], int] = _rules.wall_clock_ms,
        fresh_schema: bool = False,
        schema: str | None = None,
        pool_min: int = 1,
        pool_max: int = 10,
        statement_timeout_ms: int = 10_000,
        connect_timeout_s: float = 10.0,
        acquire_timeout_s: float = 15.0,
    ) -> None:
        self.dsn = dsn
        self.schema = chosen_schema(fresh_schema, schema)
        self.schema_version = 0
        self._clock = clock
        self._locks = Locks(schema or "")
        self._pool = PgPool(
            dsn, schema=self.schema, drop_schema_on_close=fresh_schema, application_name="flux",
            pool_min=pool_min, pool_max=pool_max, statement_timeout_ms=statement_timeout_ms,
            connect_timeout_s=connect_timeout_s, acquire_timeout_s=acquire_timeout_s,
        )  # fmt: skip
        # Concurrent stores share transactions (_coalesce.py), one batch at a time: the
        # next one takes everything that arrived meanwhile, so under load each commit
        # carries more messages and no two of this process's storing transactions wait
        # for each other's locks or flushes. Measured against pool_max // 3 (3) in flight
        # (benchmarks/README.md, 2026-12-02 third session): one process +12 % msg/s and
        # -8 % CPU per message, two processes +31 % msg/s, -17 % CPU per message.
        self._stores = Coalescer(self._store_batch, max_in_flight=1)
        #: every client address's submissions count a hit (server/fair.py): counted
        #: together, they share a statement's Python, round trip and commit
        self._hits: Coalescer[hits.Hit, bool] = Coalescer(self._count_hits, max_in_flight=2)
        #: hosted addresses already read: a row of `hosted_addresses` is only ever
        #: inserted, never changed or removed, so one that was found stays true; an address
        #: not found is asked again (another process may register it). The submit path
        #: asks for its sender and each recipient: with this, no round trip for them once
        #: known (issue 15, aim 3).
        self._hosted_seen: OrderedDict[str, HostedAddress] = OrderedDict()

    # -- lifecycle ----------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect, create the schema if asked, and apply pending migrations.
        Raises DatabaseUnavailable if the server cannot be reached, SchemaTooNew for a
        schema migrated by a newer FLUX."""
        if self._pool.is_open:
            return
        self.schema_version = await self._pool.open(self._migrate)

    async def _migrate(self, conn: Conn) -> int:
        # Locks are scoped by the schema the tables are in, however it was chosen (an
        # explicit schema, or the URL's search_path): _postgres_locks.scope_of.
        self._locks = Locks(await scope_of(conn, self.schema))
        return await migrate(
            conn, redact(self.dsn), lock_key=self._locks.key("migrate", ""), schema=self.schema
        )

    @property
    def scope(self) -> str:
        """The schema scope of this store's locks and push channel (known once open)."""
        return self._locks.scope

    async def close(self) -> None:
        """Wait for borrowed connections to come back (their commits finish), drop a
        fresh schema, close the pool."""
        await self._pool.close()

    # -- plumbing -----------------------------------------------------------------------------
    def _live_pool(self) -> asyncpg.Pool:
        return self._pool.live()

    async def _borrow(
        self, op: Callable[[Conn], Awaitable[T]], transaction: Mapping[str, object] | None
    ) -> T:
        return await self._pool.borrow(op, transaction)

    async def _write(self, op: Callable[[Conn], Awaitable[T]]) -> T:
        """Run `op` in one READ COMMITTED transaction; return once it has committed."""
        return await self._borrow(op, {})

    async def _snapshot(self, op: Callable[[Conn], Awaitable[T]]) -> T:
        """Run `op` in one read-only snapshot (several statements that must agree)."""
        return await self._borrow(op, {"isolation": "repeatable_read", "readonly": True})

    async def _read(self, op: Callable[[Conn], Awaitable[T]]) -> T:
        """Run a single-statement read `op` (a statement is its own snapshot)."""
        return await self._borrow(op, None)

    async def _statement(self, op: Callable[[Conn], Awaitable[T]]) -> T:
        """Run `op`, one statement that is its own transaction (autocommit): a write done
        in one statement, or a server-side function that takes its own locks first. One
        round trip where BEGIN, the statement and COMMIT would be three."""
        return await self._borrow(op, None)

    async def _execute(self, sql: str, *args: object) -> int:
        """Run one writing statement (autocommit) and return its row count."""
        return ops.rowcount(await self._borrow(lambda c: c.execute(sql, *args), None))

    async def ping(self) -> None:
        """One `SELECT 1`: raises StoreUnavailable while the database cannot be used."""
        await self._read(lambda c: c.fetchval("SELECT 1"))

    # -- hosted addresses -------------------------------------------------------------------
    async def register_address(self, address: str, pub: str, now_ms: int) -> bool:
        sql = """INSERT INTO hosted_addresses (address, pub, registered_at) VALUES ($1, $2, $3)
                 ON CONFLICT (address) DO NOTHING"""
        return await self._execute(sql, address, pub, now_ms) == 1

    async def hosted(self, address: str) -> HostedAddress | None:
        if (known := self._hosted_seen.get(address)) is not None:
            return known
        sql = "SELECT address, pub, registered_at FROM hosted_addresses WHERE address = $1"
        row = await self._read(lambda c: c.fetchrow(sql, address))
        if row is None:
            return None
        if len(self._hosted_seen) >= HOSTED_SEEN_MAX:  # bounded: forget the oldest read
            self._hosted_seen.popitem(last=False)
        self._hosted_seen[address] = found = HostedAddress(*row)
        return found

    # -- mail -------------------------------------------------------------------------------
    async def store_message(self, incoming: Incoming) -> dict[str, StoreOutcome]:
        return (await self.store_many([incoming]))[0]

    async def store_many(self, batch: Sequence[Incoming]) -> list[dict[str, StoreOutcome]]:
        batch = list(batch)
        for inc in batch:
            _rules.recipients_of(inc)  # refuse a malformed batch before borrowing a connection
        if not batch:
            return []
        return await self._stores.submit(batch)

    async def _store_batch(self, batch: list[Incoming]) -> list[dict[str, StoreOutcome]]:
        # The common batch: one call, one round trip (_postgres_ops.store_at_once); the
        # rest (sent records to merge, replies within a batch), the general way, in a
        # transaction of several statements.
        at_once = await self._statement(lambda c: ops.store_at_once(c, self._locks, batch))
        if at_once is not None:
            return at_once

        async def store(conn: Conn) -> list[dict[str, StoreOutcome]]:
            outcomes = await ops.store_batch(conn, self._locks, batch)
            records = [
                record for inc, outcome in zip(batch, outcomes, strict=True)
                if inc.sent is not None and (record := sent_after(inc.sent, outcome)) is not None
            ]  # fmt: skip
            await queue.record_sent(conn, records)  # the sent records, in the same transaction
            return outcomes

        return await self._write(store)

    async def pending_count(self, address: str) -> int:
        now = self._clock()
        return await self._read(lambda c: ops.pending_count(c, address, now))

    async def get(
        self, address: str, msg_id: str, sender: str | None = None
    ) -> StoredMessage | None:
        now = self._clock()
        return await self._read(lambda c: ops.get(c, address, msg_id, now, sender))

    async def match_prefix(
        self, address: str, prefix: str, sender: str | None = None, limit: int = 10
    ) -> PrefixMatches:
        now = self._clock()
        return await self._read(lambda c: ops.match_prefix(c, address, prefix, sender, limit, now))

    async def list(self, address: str, query: ListQuery) -> Page:
        if query.cursor:
            _rules.decode_cursor(query.cursor)  # InvalidValue before borrowing a connection
        now = self._clock()
        return await self._read(lambda c: ops.list_page(c, address, query, now))

    async def fetch_pending(self, address: str, limit: int) -> list[StoredMessage]:
        now = self._clock()
        return await self._write(lambda c: ops.fetch_pending(c, self._locks, address, limit, now))

    async def mark(
        self, address: str, msg_ids: Sequence[str | MessageRef], status: MessageStatus
    ) -> list[StoredMessage]:
        now, ids = self._clock(), list(msg_ids)
        return await self._write(lambda c: ops.mark(c, self._locks, address, ids, status, now))

    async def mark_unread(
        self, address: str, msg_ids: Sequence[str | MessageRef]
    ) -> list[StoredMessage]:
        now, ids, unread = self._clock(), list(msg_ids), _rules.unread_status
        return await self._write(
            lambda c: ops.mark(c, self._locks, address, ids, MessageStatus.DELIVERED, now, unread)
        )

    async def tag(
        self, address: str, msg_id: str, add: Sequence[str], remove: Sequence[str],
        sender: str | None = None,
    ) -> StoredMessage | None:  # fmt: skip
        now, add, remove = self._clock(), list(add), list(remove)
        return await self._write(
            lambda c: ops.tag(c, self._locks, address, msg_id, add, remove, now, sender)
        )

    async def move(
        self, address: str, msg_id: str, inbox: str, sender: str | None = None
    ) -> StoredMessage | None:
        now = self._clock()
        return await self._write(
            lambda c: ops.move(c, self._locks, address, msg_id, inbox, now, sender)
        )

    async def inboxes(self, address: str) -> dict[str, dict[str, int]]:
        now = self._clock()
        return await self._read(lambda c: ops.inboxes(c, address, now))

    async def thread(
        self, address: str, msg_id: str, sender: str | None = None
    ) -> list[ThreadItem]:
        now = self._clock()
        return await self._snapshot(lambda c: ops.thread(c, address, msg_id, now, sender))

    async def changes(self, address: str, since: int, limit: int) -> Changes:
        return await self._read(lambda c: ops.changes(c, address, since, limit))

    async def state(self, address: str) -> int:
        return await self._read(lambda c: ops.state(c, address))

    async def expire(self, now_ms: int) -> int:
        return await self._write(lambda c: ops.expire(c, self._locks, now_ms))

    async def purge_expired(self, before_ms: int) -> int:
        return await self._write(lambda c: ops.purge_expired(c, self._locks, before_ms))

    async def add_contacts(self, owner: str, peers: Sequence[str], now_ms: int) -> None:
        peers = list(peers)
        await self._statement(lambda c: ops.add_contacts(c, owner, peers, now_ms))

    async def is_contact(self, owner: str, peer: str) -> bool:
        sql = "SELECT 1 FROM contacts WHERE owner = $1 AND peer = $2"
        return owner == peer or await self._read(lambda c: c.fetchval(sql, owner, peer)) is not None

    async def stats(self) -> dict[str, int]:
        now = self._clock()
        return await self._snapshot(lambda c: ops.stats(c, now))

    # -- sessions and challenges ------------------------------------------------------------
    async def create_session(self, token_hash: str, address: str, expires_at: int) -> None:
        sql = """INSERT INTO sessions (token_hash, address, expires_at, revoked)
                 VALUES ($1, $2, $3, FALSE)
                 ON CONFLICT (token_hash) DO UPDATE SET address = EXCLUDED.address,
                     expires_at = EXCLUDED.expires_at, revoked = FALSE"""
        await self._execute(sql, token_hash, address, expires_at)

    async def session(self, token_hash: str, now_ms: int) -> Session | None:
        sql = """SELECT address, expires_at FROM sessions
                 WHERE token_hash = $1 AND NOT revoked AND expires_at > $2"""
        row = await self._read(lambda c: c.fetchrow(sql, token_hash, now_ms))
        return None if row is None else Session(*row)

    async def revoke_session(self, token_hash: str) -> bool:
        sql = "UPDATE sessions SET revoked = TRUE WHERE token_hash = $1 AND NOT revoked"
        return await self._execute(sql, token_hash) == 1

    async def use_nonce(self, nonce: str, expires_at: int, now_ms: int) -> bool:
        async def op(c: Conn) -> bool:
            # Forget nonces past their own expiry: whoever checks the challenge refuses
            # those. Rows another call is already deleting are skipped, not waited for.
            await c.execute(
                """DELETE FROM nonces WHERE nonce IN (
                       SELECT nonce FROM nonces WHERE expires_at < $1
                       FOR UPDATE SKIP LOCKED)""",
                now_ms,
            )
            sql = """INSERT INTO nonces (nonce, expires_at) VALUES ($1, $2)
                     ON CONFLICT (nonce) DO NOTHING"""
            return ops.rowcount(await c.execute(sql, nonce, expires_at)) == 1

        return await self._write(op)

    # -- the delivery queue -----------------------------------------------------------------
    async def enqueue(
        self, items: Sequence[Outbound], *, sent: Sequence[SentMessage] = ()
    ) -> list[bool]:
        items, sent = list(items), list(sent)
        return await self._write(lambda c: queue.enqueue(c, items, sent, self._locks))

    async def record_sent(self, sent: Sequence[SentMessage]) -> None:
        sent = list(sent)
        if sent:
            await self._write(lambda c: queue.record_sent(c, sent, self._locks))

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
        exclude, skip = list(exclude), list(skip_senders)
        return await self._write(
            lambda c: queue.lease_more(c, lease, now_ms, lease_ms, limit, exclude, skip)
        )

    async def renew(self, lease: Lease, now_ms: int, lease_ms: int) -> bool:
        return await self._write(lambda c: queue.renew(c, lease, now_ms, lease_ms))

    async def wake(self, destination: str) -> bool:
        return await self._write(lambda c: queue.wake(c, destination))

    async def queue_state(self) -> list[DestinationState]:
        return await self._read(queue.queue_state)

    async def next_due(self) -> int | None:
        return await self._read(queue.next_due)

    # -- invites (_postgres_invites.py) ---------------------------------------------------
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
        params = (s.proof_id, s.offender, s.kind, s.reporter, s.msg_id, s.t)
        if cap is None:
            sql = """INSERT INTO strikes (proof_id, offender, kind, reporter, msg_id, t)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (proof_id) DO NOTHING"""
            return await self._execute(sql, *params) == 1
        # READ COMMITTED lets two inserts each count before the other commits; a lock per
        # offender (held to the commit) makes the count and the insert one step.
        capped = f"""INSERT INTO strikes (proof_id, offender, kind, reporter, msg_id, t)
                     SELECT $1, $2, $3, $4, $5, $6
                     WHERE ({_COUNTING_SQL} AND s.offender = $2) < $7
                     ON CONFLICT (proof_id) DO NOTHING"""
        lock = self._locks.key("strikes", s.offender)

        async def insert(c: Conn) -> int:
            await c.execute("SELECT pg_advisory_xact_lock($1)", lock)
            return ops.rowcount(await c.execute(capped, *params, cap))

        return await self._write(insert) == 1

    async def strikes(self) -> list[Strike]:
        sql = "SELECT offender, proof_id, kind, reporter, msg_id, t FROM strikes ORDER BY n"
        return [Strike(*r) for r in await self._read(lambda c: c.fetch(sql))]

    async def strike_tallies(
        self, offenders: Sequence[str] | None = None, *, limit: int
    ) -> list[StrikeTally]:
        where = "" if offenders is None else "WHERE s.offender = ANY($2::text[])"
        sql = f"""SELECT s.offender, count(*),
                         count(*) FILTER (WHERE NOT coalesce(o.lifted AND s.t <= o.set_at,
                                                             false)) AS c
                  FROM strikes s LEFT JOIN quarantine_overrides o ON o.server = s.offender
                  {where} GROUP BY s.offender ORDER BY c DESC, count(*) DESC, s.offender
                  LIMIT $1"""
        args = (limit,) if offenders is None else (limit, list(offenders))
        rows = await self._read(lambda c: c.fetch(sql, *args))
        return [StrikeTally(*r) for r in rows]

    async def set_quarantine_override(self, server: str, lifted: bool, now_ms: int) -> None:
        sql = """INSERT INTO quarantine_overrides (server, lifted, set_at) VALUES ($1, $2, $3)
                 ON CONFLICT (server) DO UPDATE SET lifted = EXCLUDED.lifted,
                     set_at = EXCLUDED.set_at"""
        await self._execute(sql, server, lifted, now_ms)

    async def quarantine_overrides(self) -> dict[str, Override]:
        sql = "SELECT server, lifted, set_at FROM quarantine_overrides"
        rows = await self._read(lambda c: c.fetch(sql))
        return {server: Override(lifted, set_at) for server, lifted, set_at in rows}

    # -- rate counters (atomic across processes: see _postgres_hits.py) ---------------------
    async def count_hit(self, bucket: str, now_ms: int, window_ms: int, limit: int) -> bool:
        # hits that arrive together are counted together: one statement, its own
        # transaction, one round trip for them all (_postgres_hits.py)
        hit = hits.Hit(RateBucket(bucket, window_ms, limit), now_ms)
        (over,) = await self._hits.submit([hit])
        return over

    async def _count_hits(self, batch: list[hits.Hit]) -> list[bool]:
        return await self._statement(lambda c: hits.count_hits(c, self._locks, batch))

    async def hits_in_window(self, bucket: str, now_ms: int, window_ms: int) -> int:
        return await self._read(lambda c: hits.hits_in_window(c, bucket, now_ms, window_ms))

    async def prune_hits(self, now_ms: int, window_ms: int) -> int:
        return await self._write(lambda c: hits.prune_hits(c, now_ms, window_ms))

    async def clear_hits(self, bucket: str) -> int:
        return await self._write(lambda c: hits.clear_hits(c, self._locks, bucket))

    def __repr__(self) -> str:
        where = f", schema={self.schema!r}" if self.schema else ""
        return f"PostgresStore({redact(self.dsn)!r}{where})"


#: counts one offender's strikes that no lift has forgiven (add `AND s.offender = $n`)
_COUNTING_SQL = """SELECT count(*) FROM strikes s
    LEFT JOIN quarantine_overrides o ON o.server = s.offender
    WHERE NOT coalesce(o.lifted AND s.t <= o.set_at, false)"""
