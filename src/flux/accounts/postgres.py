"""`PostgresAccountStore`: the `AccountStore` on PostgreSQL, for a domain that several FLUX
processes serve from one database (the only module of flux.accounts that imports asyncpg).

    accounts = PostgresAccountStore("postgresql://flux@db.example/flux")
    await accounts.open()   # pool, migrations (under their own advisory lock)
    ...
    await accounts.close()

The tables are those of SQLiteAccountStore (store.py), in PostgreSQL's types, next to the
mail store's in the same database and schema (their names do not meet). They have their
own schema steps and their own version table, `account_schema_version`, so the accounts
can be migrated, backed up or moved apart from the mail; `open()` applies the missing steps
in one transaction under a transaction-scoped advisory lock whose key differs from the mail
store's, so processes starting together apply each step once and never wait on the mail
store's migration. Schema options as in PostgresStore: the connection's default
search_path, or `schema` (created if missing), or `fresh_schema=True` (tests: a new schema
that `close()` drops).

Concurrency: `create_account` checks and inserts in one transaction, and the unique keys
(username, address, OAuth link) decide between processes that race to create the same
name: the loser's transaction rolls back whole (nothing half-made) and it reports what was
taken. Every other call is a single statement. Every write returns after its COMMIT
(`synchronous_commit=on`), every statement runs under `statement_timeout`, and a database
that cannot be reached raises StoreUnavailable (503), as the mail store does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from ..store._postgres_locks import Locks, scope_of
from ..store._postgres_ops import rowcount
from ..store._postgres_pool import Conn, PgPool, chosen_schema, redact
from ..store.migrations import Migration
from ..store.migrations.postgres import migrate
from .keys import SealedSeed
from .store import (
    _ACCOUNT_COLUMNS,
    _READ_COLUMNS,
    Account,
    AccountSession,
    ActiveSession,
    Created,
    OAuthLink,
    _account_from,
    _account_row,
)

__all__ = ["PostgresAccountStore"]

T = TypeVar("T")

STEPS: list[Migration] = [
    Migration(
        1,
        "accounts, sessions, OAuth links",
        """
CREATE TABLE accounts (
    username        TEXT PRIMARY KEY,
    kind            TEXT NOT NULL CHECK (kind IN ('password', 'claimed', 'oauth')),
    address         TEXT NOT NULL UNIQUE,
    pub             TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    password_hash   TEXT,
    sealed_key      BYTEA,
    key_salt        BYTEA,
    key_kdf         TEXT,
    CHECK ((kind = 'claimed') = (sealed_key IS NULL))
);
CREATE TABLE account_sessions (
    token_hash      TEXT PRIMARY KEY,
    username        TEXT NOT NULL REFERENCES accounts (username),
    expires_at      BIGINT NOT NULL,
    revoked         BOOLEAN NOT NULL DEFAULT FALSE,
    wrapped_seed    BYTEA NOT NULL
);
CREATE INDEX account_sessions_expiry ON account_sessions (expires_at);
CREATE TABLE oauth_links (
    provider        TEXT NOT NULL,
    subject         TEXT NOT NULL,
    username        TEXT NOT NULL REFERENCES accounts (username),
    PRIMARY KEY (provider, subject)
);
""",
    ),
    Migration(
        2,
        "the operator's controls: a disabled account, and the last login",
        """
ALTER TABLE accounts ADD COLUMN disabled_at BIGINT;
ALTER TABLE accounts ADD COLUMN last_login_at BIGINT;
""",
    ),
]

#: the unique key a racing create_account ran into → what it reports
_TAKEN = {
    "accounts_pkey": Created.USERNAME_TAKEN,
    "accounts_address_key": Created.ADDRESS_TAKEN,
    "oauth_links_pkey": Created.LINK_TAKEN,
}


class PostgresAccountStore:
    """The PostgreSQL `AccountStore`."""

    def __init__(
        self,
        dsn: str,
        *,
        fresh_schema: bool = False,
        schema: str | None = None,
        pool_min: int = 1,
        pool_max: int = 5,
    ) -> None:
        self.dsn = dsn
        self.schema = chosen_schema(fresh_schema, schema)
        self.schema_version = 0
        self._locks = Locks(schema or "")
        self._pool = PgPool(
            dsn, schema=self.schema, drop_schema_on_close=fresh_schema,
            application_name="flux-accounts", pool_min=pool_min, pool_max=pool_max,
            statement_timeout_ms=10_000, connect_timeout_s=10.0, acquire_timeout_s=15.0,
        )  # fmt: skip

    # -- lifecycle ----------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect, create the schema if asked, apply pending account migrations.
        Raises DatabaseUnavailable, or SchemaTooNew for accounts migrated by a newer FLUX."""
        if not self._pool.is_open:
            self.schema_version = await self._pool.open(self._migrate)

    async def _migrate(self, conn: Conn) -> int:
        self._locks = Locks(
            await scope_of(conn, self.schema)
        )  # by schema (store/_postgres_locks.py)
        # Not the mail store's lock, so neither migration waits for the other; but a
        # missing schema is created under the mail store's lock too (it creates it as
        # well, and the mail store never takes ours, so no cycle).
        return await migrate(
            conn, f"accounts at {redact(self.dsn)}", lock_key=self._locks.key("migrate", "accounts"),
            schema=self.schema, steps=STEPS, table="account_schema_version",
            schema_lock=self._locks.key("migrate", ""),
        )  # fmt: skip

    async def close(self) -> None:
        """Wait for borrowed connections, drop a fresh schema, close the pool."""
        await self._pool.close()

    # -- plumbing -----------------------------------------------------------------------------
    async def _run(self, op: Callable[[Conn], Awaitable[T]], *, transaction: bool = False) -> T:
        """Run `op` on a pooled connection (in one transaction if asked); a database that
        cannot be used raises StoreUnavailable (PgPool.borrow), anything else propagates."""
        return await self._pool.borrow(op, {} if transaction else None)

    async def _row(self, sql: str, *args: Any) -> tuple[Any, ...] | None:
        row = await self._run(lambda c: c.fetchrow(sql, *args))
        return None if row is None else tuple(row)

    async def _execute(self, sql: str, *args: Any) -> int:
        return rowcount(await self._run(lambda c: c.execute(sql, *args)))

    # -- accounts -------------------------------------------------------------------------------
    async def create_account(self, account: Account, link: OAuthLink | None = None) -> Created:
        async def insert(c: Conn) -> Created:
            taken = await c.fetchrow(
                """SELECT EXISTS (SELECT 1 FROM accounts WHERE username = $1),
                          EXISTS (SELECT 1 FROM accounts WHERE address = $2),
                          EXISTS (SELECT 1 FROM oauth_links
                                  WHERE provider = $3 AND subject = $4)""",
                account.username, account.address,
                link and link.provider, link and link.subject,
            )  # fmt: skip
            for found, outcome in zip(taken, _TAKEN.values(), strict=True):
                if found:
                    return outcome
            await c.execute(
                f"INSERT INTO accounts ({_ACCOUNT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                *_account_row(account),
            )  # fmt: skip
            if link is not None:
                await c.execute("INSERT INTO oauth_links VALUES ($1, $2, $3)",
                                link.provider, link.subject, account.username)  # fmt: skip
            return Created.CREATED

        try:
            return await self._run(insert, transaction=True)
        except asyncpg.UniqueViolationError as exc:
            # Another process created the same name, address or link between the check and
            # the insert; this transaction rolled back whole.
            if exc.constraint_name not in _TAKEN:
                raise
            return _TAKEN[exc.constraint_name]

    async def account(self, username: str) -> Account | None:
        row = await self._row(f"SELECT {_READ_COLUMNS} FROM accounts WHERE username = $1", username)  # fmt: skip
        return None if row is None else _account_from(row)

    async def linked_account(self, link: OAuthLink) -> Account | None:
        sql = (f"SELECT {_READ_COLUMNS} FROM accounts WHERE username = "
               "(SELECT username FROM oauth_links WHERE provider = $1 AND subject = $2)")  # fmt: skip
        row = await self._row(sql, link.provider, link.subject)
        return None if row is None else _account_from(row)

    async def account_by_address(self, address: str) -> Account | None:
        row = await self._row(f"SELECT {_READ_COLUMNS} FROM accounts WHERE address = $1", address)  # fmt: skip
        return None if row is None else _account_from(row)

    async def set_password(
        self, username: str, password_hash: str, sealed: SealedSeed, *, keep_session: str | None,
        now_ms: int,
    ) -> int:  # fmt: skip
        """AccountStore.set_password: both updates in one transaction."""

        async def update(c: Conn) -> int:
            changed = await c.execute(
                """UPDATE accounts SET password_hash = $2, sealed_key = $3, key_salt = $4,
                          key_kdf = $5 WHERE username = $1""",
                username, password_hash, sealed.box, sealed.salt, sealed.kdf,
            )  # fmt: skip
            if rowcount(changed) != 1:
                raise KeyError(username)
            return rowcount(await c.execute(
                """UPDATE account_sessions SET revoked = TRUE
                   WHERE username = $1 AND NOT revoked AND expires_at > $2
                     AND token_hash IS DISTINCT FROM $3""",
                username, now_ms, keep_session,
            ))  # fmt: skip

        return await self._run(update, transaction=True)

    # -- sessions -------------------------------------------------------------------------------
    async def create_session(self, session: AccountSession) -> None:
        sql = """INSERT INTO account_sessions (token_hash, username, expires_at, wrapped_seed)
                 VALUES ($1, $2, $3, $4)"""
        await self._execute(sql, session.token_hash, session.username, session.expires_at,
                            session.wrapped_seed)  # fmt: skip

    async def active_session(self, token_hash: str, now_ms: int) -> ActiveSession | None:
        columns = ", ".join(f"a.{c.strip()}" for c in _READ_COLUMNS.split(","))
        sql = (f"SELECT s.expires_at, s.wrapped_seed, {columns} FROM account_sessions s "
               "JOIN accounts a ON a.username = s.username "
               "WHERE s.token_hash = $1 AND NOT s.revoked AND s.expires_at > $2")  # fmt: skip
        row = await self._row(sql, token_hash, now_ms)
        if row is None:
            return None
        account = _account_from(row[2:])
        session = AccountSession(token_hash, account.username, row[0], bytes(row[1]))
        return ActiveSession(session, account)

    async def revoke_session(self, token_hash: str) -> bool:
        sql = "UPDATE account_sessions SET revoked = TRUE WHERE token_hash = $1 AND NOT revoked"
        return await self._execute(sql, token_hash) == 1

    async def drop_expired_sessions(self, now_ms: int) -> int:
        return await self._execute("DELETE FROM account_sessions WHERE expires_at <= $1", now_ms)

    # -- operator control -------------------------------------------------------------------
    async def accounts(self) -> list[Account]:
        async def fetch(c: Conn) -> list[Account]:
            sql = f'SELECT {_READ_COLUMNS} FROM accounts ORDER BY username COLLATE "C"'
            return [_account_from(tuple(row)) for row in await c.fetch(sql)]

        return await self._run(fetch)

    async def set_disabled(self, username: str, disabled_at: int | None, now_ms: int) -> int:
        """AccountStore.set_disabled: both updates in one transaction."""

        async def update(c: Conn) -> int:
            sql = "UPDATE accounts SET disabled_at = $2 WHERE username = $1"
            if rowcount(await c.execute(sql, username, disabled_at)) != 1:
                raise KeyError(username)
            if disabled_at is None:
                return 0
            return rowcount(await c.execute(
                """UPDATE account_sessions SET revoked = TRUE
                   WHERE username = $1 AND NOT revoked AND expires_at > $2""",
                username, now_ms,
            ))  # fmt: skip

        return await self._run(update, transaction=True)

    async def record_login(self, username: str, now_ms: int) -> None:
        await self._execute(
            "UPDATE accounts SET last_login_at = $2 WHERE username = $1", username, now_ms
        )

    def __repr__(self) -> str:
        where = f", schema={self.schema!r}" if self.schema else ""
        return f"PostgresAccountStore({redact(self.dsn)!r}{where})"
