"""One asyncpg pool with FLUX's rules, shared by PostgresStore and PostgresAccountStore.

* Settings every connection gets: `statement_timeout`, `synchronous_commit=on` (the
  durability rule: COMMIT returns only once the WAL is flushed, whatever the server's own
  default says), the schema's `search_path`, and no per-release `RESET` round trip
  (`keep_session`).
* `open(migrate)` connects and runs the caller's migration on one connection; a database
  that cannot be reached is `DatabaseUnavailable`.
* `borrow(op, transaction)` is the one place where a lost database becomes
  `StoreUnavailable`: refused or broken connections, a server shutting down or starting
  up, a borrow that waits longer than the acquire timeout, a statement cancelled by
  `statement_timeout`. Anything else (a constraint violation, a bug) propagates unchanged.
  A connection that failed that way is terminated before it goes back, and the idle ones
  are replaced on their next borrow, so the pool recovers by itself once the database
  answers again.
* `close()` waits for borrowed connections, drops a `fresh_schema` (tests), closes.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from .base import StoreUnavailable
from .migrations.postgres import quote_ident

T = TypeVar("T")
Conn = asyncpg.Connection
SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class DatabaseUnavailable(StoreUnavailable, ConnectionError):
    """The database could not be reached or refused the connection (at `open()`). A
    ConnectionError too, which is how the CLI reports it in one line."""


#: asyncpg's "the server is going away, or not there yet" (SQLSTATE class 57: admin or crash
#: shutdown, cannot connect now, statement_timeout's query_canceled) and class 08.
_UNREACHABLE = (
    OSError,  # ConnectionError (refused, reset) included
    TimeoutError,  # connect timeout, acquire timeout
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TooManyConnectionsError,
    # class 53: disk full (53100), out of memory (53200)... the database cannot take the
    # write now; like an outage, a 503 the client retries, never a 500
    asyncpg.exceptions.InsufficientResourcesError,
)


def unreachable(exc: BaseException) -> bool:
    """Whether `exc` says the database could not be used, not that the call was wrong."""
    if isinstance(exc, _UNREACHABLE):
        return True
    # A connection whose server went away while it sat idle in the pool: asyncpg calls it
    # closed, or (the server's goodbye read before the socket's end) out of protocol step.
    if type(exc) in (asyncpg.exceptions.InternalClientError, asyncpg.exceptions.ProtocolError):
        return True
    return isinstance(exc, asyncpg.InterfaceError) and "connection is closed" in str(exc)


def notify_queue_full(exc: BaseException) -> bool:
    """Whether `exc` is PostgreSQL's "too many notifications in the NOTIFY queue": a
    listener stopped reading, so a transaction that notifies (the storing one does,
    OPERATING.md) cannot commit now. The connection is fine and the write can be retried:
    a 503, never a 500. Other limits of its class (54) are the call's own and stay errors."""
    return getattr(exc, "sqlstate", None) == "54000" and "NOTIFY queue" in str(exc)


async def keep_session(_conn: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing. asyncpg's default sends `RESET ALL`, closes
    cursors, drops LISTENs and session advisory locks: a round trip per borrow, for state
    FLUX never leaves behind (its locks and settings are transaction-scoped)."""


def chosen_schema(fresh_schema: bool, schema: str | None) -> str | None:
    """The schema a store works in: `schema`, a new unique one (tests), or None (the
    connection's search_path). Raises ValueError for both, or for a name that is not a
    plain SQL identifier."""
    if fresh_schema and schema is not None:
        raise ValueError("pass either fresh_schema or schema, not both")
    if fresh_schema:
        schema = f"flux_test_{uuid.uuid4().hex}"
    if schema is not None and not SCHEMA_NAME.fullmatch(schema):
        raise ValueError(f"schema {schema!r} is not a plain SQL identifier")
    return schema


def redact(dsn: str) -> str:
    """`dsn` without its password, for messages and logs."""
    try:
        parts = urlsplit(dsn)
        if parts.password is None:
            return dsn
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<unparsable DSN>"


def reason(exc: BaseException) -> str:
    """A short, readable cause for an error message."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"  # asyncio's own text names the address again
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, TimeoutError):
        return "timed out"
    return " ".join(str(exc).split()) or type(exc).__name__


class PgPool:
    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None,
        drop_schema_on_close: bool,
        application_name: str,
        pool_min: int,
        pool_max: int,
        statement_timeout_ms: int,
        connect_timeout_s: float,
        acquire_timeout_s: float,
    ) -> None:
        self.dsn = dsn
        self.schema = schema
        self._drop_schema_on_close = drop_schema_on_close
        self._application_name = application_name
        self._size = (pool_min, pool_max)
        self._statement_timeout_ms = statement_timeout_ms
        self._connect_timeout_s = connect_timeout_s
        self.acquire_timeout_s = acquire_timeout_s
        self._pool: asyncpg.Pool | None = None

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    def live(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError(f"{self._application_name}: the PostgreSQL pool is not open")
        return self._pool

    async def open(self, migrate: Callable[[Conn], Awaitable[int]]) -> int:
        """Connect and run `migrate` on one connection; return what it returns (the schema
        version). Raises DatabaseUnavailable, or whatever `migrate` raises."""
        settings = {
            "statement_timeout": str(self._statement_timeout_ms),
            "synchronous_commit": "on",
            "application_name": self._application_name,
        }
        if self.schema is not None:
            settings["search_path"] = quote_ident(self.schema)
        try:
            pool = await asyncpg.create_pool(
                self.dsn, min_size=self._size[0], max_size=self._size[1],
                server_settings=settings, timeout=self._connect_timeout_s, reset=keep_session,
            )  # fmt: skip
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise DatabaseUnavailable(
                f"cannot connect to PostgreSQL at {redact(self.dsn)}: {reason(exc)}"
            ) from exc
        try:
            async with pool.acquire(timeout=self.acquire_timeout_s) as conn:
                version = await migrate(conn)
        except BaseException as exc:
            if isinstance(exc, Exception) and unreachable(exc):
                pool.terminate()  # its connections are gone: do not wait on them
                raise DatabaseUnavailable(
                    f"lost PostgreSQL at {redact(self.dsn)} while migrating: {reason(exc)}"
                ) from exc
            await pool.close()
            raise
        self._pool = pool
        return version

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            if self._drop_schema_on_close and self.schema is not None:
                async with pool.acquire() as conn:
                    await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(self.schema)} CASCADE")
        finally:
            try:
                await pool.close()
            except Exception as exc:
                # Connections the database dropped (it went away, and perhaps came back)
                # cannot be closed politely; asyncpg has terminated them instead.
                if not unreachable(exc):
                    raise

    async def borrow(
        self, op: Callable[[Conn], Awaitable[T]], transaction: Mapping[str, object] | None
    ) -> T:
        """Run `op` on a pooled connection, in a transaction unless `transaction` is None
        (else its options)."""
        pool = self.live()
        done, result = False, None
        try:
            async with pool.acquire(timeout=self.acquire_timeout_s) as conn:
                try:
                    if transaction is None:
                        result = await op(conn)
                    else:
                        async with conn.transaction(**transaction):
                            result = await op(conn)
                    done = True
                except Exception as exc:
                    if unreachable(exc) and not isinstance(exc, asyncpg.QueryCanceledError):
                        # Never hand a broken connection out again (one the driver saw
                        # close is already back in the pool without it), and replace the
                        # idle ones on their next borrow: they most likely went with it.
                        with contextlib.suppress(asyncpg.InterfaceError):
                            conn.terminate()
                        await pool.expire_connections()
                    raise
        except Exception as exc:
            if notify_queue_full(exc):
                raise StoreUnavailable(
                    f"PostgreSQL cannot take the write now: {reason(exc)}"
                ) from exc
            if not unreachable(exc):
                raise
            if not done:
                raise StoreUnavailable(
                    f"PostgreSQL at {redact(self.dsn)} is unreachable: {reason(exc)}"
                ) from exc
            # `op` finished (a write committed); only handing the connection back failed,
            # and the pool has dropped that connection: the result stands.
        return result  # type: ignore[return-value]
