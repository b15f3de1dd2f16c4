"""Where accounts live: the `AccountStore` protocol, `MemoryAccountStore` (tests) and
`SQLiteAccountStore` (its own file, the prototype's `FLUX_ACCOUNTS_DB`).

Accounts are kept apart from the mail store on purpose: they hold the custodial secrets,
so they can be backed up, moved or wiped on their own, and an operator who serves only
key-holding users need not have one. Nothing here is secret in the clear: passwords are
argon2id hashes, seeds are sealed (keys.py), sessions are found by SHA-256(token) and
carry the seed wrapped under the token, which the store never sees.

Tables (schema step 1; `PRAGMA user_version` records the step applied):

* `accounts`: username (the key), kind (`password`, `claimed` or `oauth`), the address
  and its public key, and for custodial kinds the sealed seed with its salt and KDF label.
* `account_sessions`: token_hash (the key), username, expires_at, revoked, wrapped_seed.
* `oauth_links`: (provider, subject) → username, for `complete_oauth_login`.

Step 2 adds the operator's columns to `accounts` (`flux admin accounts`): `disabled_at`
(unix ms; NULL: enabled) and `last_login_at` (unix ms of the last login; NULL: never).

Failed logins are counted in memory (limiter.py), not here: a counter is not worth a
durable write per failure.
"""

from __future__ import annotations

import asyncio
import enum
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ..store.migrations import Migration, plan, split_statements
from .keys import SealedSeed

__all__ = [
    "Account", "AccountKind", "AccountSession", "AccountStore", "ActiveSession", "Created",
    "MemoryAccountStore", "OAuthLink", "SQLiteAccountStore",
]  # fmt: skip

T = TypeVar("T")
BUSY_TIMEOUT_S = 30.0


class AccountKind(enum.StrEnum):
    """docs/API.md, "Accounts"."""

    PASSWORD = "password"  #: custodial: the server holds the seed, sealed under the password
    CLAIMED = "claimed"  #: a name claimed by a key its owner holds; the server holds no seed
    OAUTH = "oauth"  #: custodial, made by complete_oauth_login; sealed under the custody key


class Created(enum.StrEnum):
    """What `create_account` did."""

    CREATED = "created"
    USERNAME_TAKEN = "username_taken"
    ADDRESS_TAKEN = "address_taken"
    LINK_TAKEN = "link_taken"  #: the OAuth (provider, subject) already has an account


@dataclass(frozen=True, slots=True)
class Account:
    username: str
    kind: AccountKind
    address: str
    pub: str  #: padded base64url Ed25519 public key
    created_at: int
    password_hash: str | None = None  #: argon2id PHC string (password accounts)
    sealed: SealedSeed | None = None  #: the custodial seed (password and OAuth accounts)
    disabled_at: int | None = None  #: unix ms the operator disabled it (`flux admin accounts`)
    last_login_at: int | None = None  #: unix ms of its last password or OAuth login


@dataclass(frozen=True, slots=True)
class OAuthLink:
    provider: str
    subject: str


@dataclass(frozen=True, slots=True)
class AccountSession:
    token_hash: str
    username: str
    expires_at: int
    wrapped_seed: bytes


@dataclass(frozen=True, slots=True)
class ActiveSession:
    """An unexpired, unrevoked session and its account."""

    session: AccountSession
    account: Account


class AccountStore(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def create_account(self, account: Account, link: OAuthLink | None = None) -> Created:
        """Insert the account (and its OAuth link) atomically, unless a name, address or
        link is taken."""
        ...

    async def account(self, username: str) -> Account | None: ...
    async def linked_account(self, link: OAuthLink) -> Account | None: ...
    async def account_by_address(self, address: str) -> Account | None:
        """The account (any kind) whose address is `address`: one at most (unique)."""
        ...

    async def set_password(
        self, username: str, password_hash: str, sealed: SealedSeed, *, keep_session: str | None,
        now_ms: int,
    ) -> int:  # fmt: skip
        """Replace the account's password hash and sealed seed and revoke its other live
        sessions (all but `keep_session`, a token hash), in one transaction: a crash never
        leaves the new password with the old sessions, or a hash that does not match its
        seal. Returns how many live sessions it revoked. Raises KeyError for an unknown
        username."""
        ...

    async def create_session(self, session: AccountSession) -> None: ...
    async def active_session(self, token_hash: str, now_ms: int) -> ActiveSession | None: ...
    async def revoke_session(self, token_hash: str) -> bool:
        """True if a live session was revoked by this call."""
        ...

    async def drop_expired_sessions(self, now_ms: int) -> int: ...

    # -- operator control (`flux admin accounts`) --------------------------------------------
    async def accounts(self) -> list[Account]:
        """Every account, by username."""
        ...

    async def set_disabled(self, username: str, disabled_at: int | None, now_ms: int) -> int:
        """Disable (`disabled_at` unix ms) or enable (None) an account; disabling revokes its
        live sessions in the same transaction. Returns how many it revoked. Raises KeyError
        for an unknown username."""
        ...

    async def record_login(self, username: str, now_ms: int) -> None:
        """Remember `now_ms` as the account's last login."""
        ...


# -- memory ---------------------------------------------------------------------------------


class MemoryAccountStore:
    """The `AccountStore` in dicts (tests, `--backend memory`)."""

    def __init__(self) -> None:
        self._accounts: dict[str, Account] = {}
        self._links: dict[OAuthLink, str] = {}
        self._sessions: dict[str, tuple[AccountSession, bool]] = {}  # hash -> (row, revoked)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def create_account(self, account: Account, link: OAuthLink | None = None) -> Created:
        if account.username in self._accounts:
            return Created.USERNAME_TAKEN
        if any(a.address == account.address for a in self._accounts.values()):
            return Created.ADDRESS_TAKEN
        if link is not None and link in self._links:
            return Created.LINK_TAKEN
        self._accounts[account.username] = account
        if link is not None:
            self._links[link] = account.username
        return Created.CREATED

    async def account(self, username: str) -> Account | None:
        return self._accounts.get(username)

    async def linked_account(self, link: OAuthLink) -> Account | None:
        username = self._links.get(link)
        return None if username is None else self._accounts.get(username)

    async def account_by_address(self, address: str) -> Account | None:
        return next((a for a in self._accounts.values() if a.address == address), None)

    async def set_password(
        self, username: str, password_hash: str, sealed: SealedSeed, *, keep_session: str | None,
        now_ms: int,
    ) -> int:  # fmt: skip
        account = self._accounts[username]
        self._accounts[username] = replace(account, password_hash=password_hash, sealed=sealed)
        others = [h for h, (s, revoked) in self._sessions.items()
                  if s.username == username and not revoked and h != keep_session
                  and s.expires_at > now_ms]  # fmt: skip
        for token_hash in others:
            self._sessions[token_hash] = (self._sessions[token_hash][0], True)
        return len(others)

    async def create_session(self, session: AccountSession) -> None:
        self._sessions[session.token_hash] = (session, False)

    async def active_session(self, token_hash: str, now_ms: int) -> ActiveSession | None:
        session, revoked = self._sessions.get(token_hash, (None, True))
        if session is None or revoked or session.expires_at <= now_ms:
            return None
        return ActiveSession(session, self._accounts[session.username])

    async def revoke_session(self, token_hash: str) -> bool:
        session, revoked = self._sessions.get(token_hash, (None, True))
        if session is None or revoked:
            return False
        self._sessions[token_hash] = (session, True)
        return True

    async def drop_expired_sessions(self, now_ms: int) -> int:
        old = [h for h, (s, _) in self._sessions.items() if s.expires_at <= now_ms]
        for token_hash in old:
            del self._sessions[token_hash]
        return len(old)

    async def accounts(self) -> list[Account]:
        return [self._accounts[name] for name in sorted(self._accounts)]

    async def set_disabled(self, username: str, disabled_at: int | None, now_ms: int) -> int:
        account = self._accounts[username]
        self._accounts[username] = replace(account, disabled_at=disabled_at)
        if disabled_at is None:
            return 0
        live = [h for h, (s, revoked) in self._sessions.items()
                if s.username == username and not revoked and s.expires_at > now_ms]  # fmt: skip
        for token_hash in live:
            self._sessions[token_hash] = (self._sessions[token_hash][0], True)
        return len(live)

    async def record_login(self, username: str, now_ms: int) -> None:
        if (account := self._accounts.get(username)) is not None:
            self._accounts[username] = replace(account, last_login_at=now_ms)


# -- SQLite ---------------------------------------------------------------------------------

STEPS = [
    Migration(
        1,
        "accounts, sessions, OAuth links",
        """
CREATE TABLE accounts (
    username        TEXT PRIMARY KEY,
    kind            TEXT NOT NULL CHECK (kind IN ('password', 'claimed', 'oauth')),
    address         TEXT NOT NULL UNIQUE,
    pub             TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    password_hash   TEXT,
    sealed_key      BLOB,
    key_salt        BLOB,
    key_kdf         TEXT,
    CHECK ((kind = 'claimed') = (sealed_key IS NULL))
);
CREATE TABLE account_sessions (
    token_hash      TEXT PRIMARY KEY,
    username        TEXT NOT NULL REFERENCES accounts (username),
    expires_at      INTEGER NOT NULL,
    revoked         INTEGER NOT NULL DEFAULT 0,
    wrapped_seed    BLOB NOT NULL
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
ALTER TABLE accounts ADD COLUMN disabled_at INTEGER;
ALTER TABLE accounts ADD COLUMN last_login_at INTEGER;
""",
    ),
]

_ACCOUNT_COLUMNS = "username, kind, address, pub, created_at, password_hash, sealed_key, key_salt, key_kdf"  # fmt: skip
#: what is read back: the columns written at creation, then the operator's (step 2)
_READ_COLUMNS = f"{_ACCOUNT_COLUMNS}, disabled_at, last_login_at"


def _account_row(account: Account) -> tuple[Any, ...]:
    sealed = account.sealed
    return (
        account.username, str(account.kind), account.address, account.pub, account.created_at,
        account.password_hash, sealed and sealed.box, sealed and sealed.salt, sealed and sealed.kdf,
    )  # fmt: skip


def _account_from(row: tuple[Any, ...]) -> Account:
    """An account from a row of `_READ_COLUMNS`."""
    username, kind, address, pub, created_at, password_hash, box, salt, kdf, off, seen = row
    sealed = None if box is None else SealedSeed(bytes(box), bytes(salt), kdf)
    return Account(username, AccountKind(kind), address, pub, created_at, password_hash, sealed,
                   off, seen)  # fmt: skip


class SQLiteAccountStore:
    """The durable `AccountStore`: WAL, synchronous=FULL, one connection.

    Account traffic is light (logins, sends), so every call runs on one dedicated thread
    with one connection: the event loop never blocks on SQLite, and calls are serialised
    without locks. Writes take `BEGIN IMMEDIATE`, so several processes sharing the file
    serialise on SQLite's lock (waiting up to `busy_timeout`).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.schema_version = 0
        self._conn: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        """Create or migrate the file. Raises migrations.SchemaTooNew for a newer schema."""
        if self._thread is not None:
            return
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="flux-accounts")
        await self._run(self._open_sync)

    def _open_sync(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=BUSY_TIMEOUT_S)  # fmt: skip
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        self._conn = conn
        self._transaction(self._migrate)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        current = conn.execute("PRAGMA user_version").fetchone()[0]
        for step in plan(current, STEPS, str(self.path)):
            for statement in split_statements(step.sql, sqlite3.complete_statement):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {int(step.version)}")
        self.schema_version = conn.execute("PRAGMA user_version").fetchone()[0]

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(thread, conn.close)
        thread.shutdown(wait=True)

    # -- plumbing -----------------------------------------------------------------------------

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._thread is None:
            raise RuntimeError("SQLiteAccountStore is not open")
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    def _transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("SQLiteAccountStore is not open")
        return self._conn

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._run(lambda: self._transaction(fn))

    async def _one(self, sql: str, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        return await self._run(lambda: self._connection().execute(sql, args).fetchone())

    # -- accounts -------------------------------------------------------------------------------

    async def create_account(self, account: Account, link: OAuthLink | None = None) -> Created:
        def insert(conn: sqlite3.Connection) -> Created:
            exists = lambda sql, *args: conn.execute(sql, args).fetchone() is not None  # noqa: E731
            if exists("SELECT 1 FROM accounts WHERE username = ?", account.username):
                return Created.USERNAME_TAKEN
            if exists("SELECT 1 FROM accounts WHERE address = ?", account.address):
                return Created.ADDRESS_TAKEN
            if link and exists("SELECT 1 FROM oauth_links WHERE provider = ? AND subject = ?",
                               link.provider, link.subject):  # fmt: skip
                return Created.LINK_TAKEN
            conn.execute(f"INSERT INTO accounts ({_ACCOUNT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         _account_row(account))  # fmt: skip
            if link:
                conn.execute("INSERT INTO oauth_links VALUES (?, ?, ?)",
                             (link.provider, link.subject, account.username))  # fmt: skip
            return Created.CREATED

        return await self._write(insert)

    async def account(self, username: str) -> Account | None:
        row = await self._one(f"SELECT {_READ_COLUMNS} FROM accounts WHERE username = ?", (username,))  # fmt: skip
        return None if row is None else _account_from(row)

    async def linked_account(self, link: OAuthLink) -> Account | None:
        sql = (f"SELECT {_READ_COLUMNS} FROM accounts WHERE username = "
               "(SELECT username FROM oauth_links WHERE provider = ? AND subject = ?)")  # fmt: skip
        row = await self._one(sql, (link.provider, link.subject))
        return None if row is None else _account_from(row)

    async def account_by_address(self, address: str) -> Account | None:
        row = await self._one(f"SELECT {_READ_COLUMNS} FROM accounts WHERE address = ?", (address,))  # fmt: skip
        return None if row is None else _account_from(row)

    async def set_password(
        self, username: str, password_hash: str, sealed: SealedSeed, *, keep_session: str | None,
        now_ms: int,
    ) -> int:  # fmt: skip
        """AccountStore.set_password: one transaction (BEGIN IMMEDIATE)."""

        def update(conn: sqlite3.Connection) -> int:
            changed = conn.execute(
                "UPDATE accounts SET password_hash = ?, sealed_key = ?, key_salt = ?, key_kdf = ? "
                "WHERE username = ?",
                (password_hash, sealed.box, sealed.salt, sealed.kdf, username),
            ).rowcount  # fmt: skip
            if changed != 1:
                raise KeyError(username)
            return conn.execute(
                "UPDATE account_sessions SET revoked = 1 WHERE username = ? AND revoked = 0 "
                "AND expires_at > ? AND token_hash IS NOT ?",
                (username, now_ms, keep_session),
            ).rowcount  # fmt: skip

        return await self._write(update)

    # -- sessions -------------------------------------------------------------------------------

    async def create_session(self, session: AccountSession) -> None:
        row = (session.token_hash, session.username, session.expires_at, session.wrapped_seed)
        sql = "INSERT INTO account_sessions (token_hash, username, expires_at, wrapped_seed) VALUES (?, ?, ?, ?)"  # fmt: skip
        await self._write(lambda conn: conn.execute(sql, row))

    async def active_session(self, token_hash: str, now_ms: int) -> ActiveSession | None:
        columns = ", ".join(f"a.{c.strip()}" for c in _READ_COLUMNS.split(","))
        sql = (f"SELECT s.expires_at, s.wrapped_seed, {columns} FROM account_sessions s "
               "JOIN accounts a ON a.username = s.username "
               "WHERE s.token_hash = ? AND s.revoked = 0 AND s.expires_at > ?")  # fmt: skip
        row = await self._one(sql, (token_hash, now_ms))
        if row is None:
            return None
        account = _account_from(row[2:])
        session = AccountSession(token_hash, account.username, row[0], bytes(row[1]))
        return ActiveSession(session, account)

    async def revoke_session(self, token_hash: str) -> bool:
        sql = "UPDATE account_sessions SET revoked = 1 WHERE token_hash = ? AND revoked = 0"
        return await self._write(lambda conn: conn.execute(sql, (token_hash,)).rowcount) == 1

    async def drop_expired_sessions(self, now_ms: int) -> int:
        sql = "DELETE FROM account_sessions WHERE expires_at <= ?"
        return await self._write(lambda conn: conn.execute(sql, (now_ms,)).rowcount)

    # -- operator control -------------------------------------------------------------------
    async def accounts(self) -> list[Account]:
        sql = f"SELECT {_READ_COLUMNS} FROM accounts ORDER BY username"
        rows = await self._run(lambda: self._connection().execute(sql).fetchall())
        return [_account_from(row) for row in rows]

    async def set_disabled(self, username: str, disabled_at: int | None, now_ms: int) -> int:
        def update(conn: sqlite3.Connection) -> int:
            sql = "UPDATE accounts SET disabled_at = ? WHERE username = ?"
            if conn.execute(sql, (disabled_at, username)).rowcount != 1:
                raise KeyError(username)
            if disabled_at is None:
                return 0
            return conn.execute(
                "UPDATE account_sessions SET revoked = 1 WHERE username = ? AND revoked = 0 "
                "AND expires_at > ?",
                (username, now_ms),
            ).rowcount

        return await self._write(update)

    async def record_login(self, username: str, now_ms: int) -> None:
        sql = "UPDATE accounts SET last_login_at = ? WHERE username = ?"
        await self._write(lambda conn: conn.execute(sql, (now_ms, username)))
