"""What the accounts database gives away (nothing usable), the key protection itself, and
the error table's rows for the account errors."""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from accounts_helpers import PASSWORD

from flux.accounts import ACCOUNT_ERROR_CLASSES, complete_oauth_login, custody_key_for
from flux.accounts import keys as account_keys
from flux.accounts.keys import KdfCost, UnsealFailed
from flux.server.errors import TABLE

CHEAP = KdfCost(time_cost=1, memory_kib=8, parallelism=1)  # pure tests only: fast


def encodings(secret: bytes) -> list[bytes]:
    """Every spelling of `secret` a careless implementation might store."""
    b64 = base64.b64encode(secret)
    url = base64.urlsafe_b64encode(secret)
    return [secret, secret.hex().encode(), secret.hex().upper().encode(), b64, b64.rstrip(b"="),
            url, url.rstrip(b"=")]  # fmt: skip


def dump(path: Path) -> list[bytes]:
    """Every value of every column of every table, as bytes."""
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        values: list[bytes] = []
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    values.append(value if isinstance(value, bytes) else str(value).encode())
        return values
    finally:
        conn.close()


async def test_a_database_dump_yields_no_seed_password_or_token(srv: Any) -> None:
    bob = await srv.account("bob")
    secrets: list[tuple[str, bytes]] = [("password", PASSWORD.encode())]
    for name in ("alice", "carol"):
        acct = await srv.account(name)
        await srv.send(acct, to="bob", content=f"hello from {name}")
        active = await srv.accounts.authenticate(acct.session)
        seed = srv.accounts.signer(active, acct.session).seed
        secrets += [(f"{name} seed", seed), (f"{name} session", acct.session.encode())]
    token, _ = await complete_oauth_login(srv.accounts, "github", "42", "olivia")
    active = await srv.accounts.authenticate(token)
    secrets += [("oauth seed", srv.accounts.signer(active, token).seed),
                ("oauth session", token.encode())]  # fmt: skip
    await srv.call("POST", "/account/logout", headers=bob.headers)

    values = dump(srv.accounts_db)
    assert any(b"$argon2id$" in v for v in values)  # the dump did read the accounts
    raw_files = b"".join(p.read_bytes() for p in srv.accounts_db.parent.glob("accounts.db*"))
    for label, secret in secrets:
        for spelling in encodings(secret):
            assert not any(spelling in v for v in values), label
            assert spelling not in raw_files, label


def test_tables_and_columns(tmp_path: Path) -> None:
    """The documented schema, at the documented version."""
    import asyncio

    from flux.accounts import SQLiteAccountStore

    async def make() -> None:
        store = SQLiteAccountStore(tmp_path / "a.db")
        await store.open()
        assert store.schema_version == 2
        await store.close()
        await store.open()  # opening again migrates nothing
        await store.close()

    asyncio.run(make())
    conn = sqlite3.connect(tmp_path / "a.db")
    columns = {t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")]
               for t in ("accounts", "account_sessions", "oauth_links")}  # fmt: skip
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert columns["accounts"] == ["username", "kind", "address", "pub", "created_at",
                                   "password_hash", "sealed_key", "key_salt", "key_kdf",
                                   "disabled_at", "last_login_at"]  # fmt: skip
    assert columns["account_sessions"] == ["token_hash", "username", "expires_at", "revoked",
                                           "wrapped_seed"]  # fmt: skip


def test_seal_open_round_trip_and_wrong_password() -> None:
    seed = bytes(range(32))
    sealed = account_keys.seal_password_seed(seed, "the password", cost=CHEAP)
    assert sealed.kdf == "argon2id:t=1,m=8,p=1" and len(sealed.salt) == 16
    assert seed not in sealed.box
    assert account_keys.open_password_seed(sealed, "the password") == seed
    with pytest.raises(UnsealFailed):
        account_keys.open_password_seed(sealed, "the passwore")
    tampered = type(sealed)(sealed.box[:-1] + bytes([sealed.box[-1] ^ 1]), sealed.salt, sealed.kdf)
    with pytest.raises(UnsealFailed):
        account_keys.open_password_seed(tampered, "the password")
    with pytest.raises(UnsealFailed):
        account_keys.open_password_seed(type(sealed)(sealed.box, sealed.salt, "scrypt:n=1"), "x")


def test_password_hash_is_argon2id_with_its_own_salt() -> None:
    stored = account_keys.hash_password("hunter2hunter2", CHEAP)
    assert stored.startswith("$argon2id$")
    assert account_keys.password_matches(stored, "hunter2hunter2")
    assert not account_keys.password_matches(stored, "hunter2hunter3")
    assert not account_keys.password_matches("not a hash", "hunter2hunter2")
    assert stored != account_keys.hash_password("hunter2hunter2", CHEAP)  # a fresh salt


def test_session_wrap_needs_the_token() -> None:
    seed = bytes(32)
    wrapped = account_keys.wrap_session_seed(seed, "token-one")
    assert account_keys.unwrap_session_seed(wrapped, "token-one") == seed
    with pytest.raises(UnsealFailed):
        account_keys.unwrap_session_seed(wrapped, "token-two")
    # the stored lookup hash is not the wrapping key
    digest = bytes.fromhex(account_keys.session_token_hash("token-one"))
    with pytest.raises(UnsealFailed):
        account_keys.unwrap_session_seed(wrapped, digest.hex())


def test_custodial_seal_needs_the_server_key() -> None:
    seed = b"\x07" * 32
    key = custody_key_for(b"\x01" * 32)
    sealed = account_keys.seal_custodial_seed(seed, key)
    assert account_keys.open_custodial_seed(sealed, key) == seed
    with pytest.raises(UnsealFailed):
        account_keys.open_custodial_seed(sealed, custody_key_for(b"\x02" * 32))


def test_every_account_error_has_a_row() -> None:
    missing = sorted(c.__name__ for c in ACCOUNT_ERROR_CLASSES if c.code not in TABLE)
    assert missing == []
    statuses = {c.__name__: TABLE[c.code].status for c in ACCOUNT_ERROR_CLASSES}
    assert statuses["LoginFailed"] == statuses["NoSession"] == 401
    assert statuses["TooManyAttempts"] == 429
    assert statuses["UsernameTaken"] == statuses["AddressTaken"] == 409
    assert statuses["RegistrationClosed"] == statuses["BadInvite"] == 403


def test_every_account_error_class_is_listed() -> None:
    from flux.accounts.errors import AccountError

    def subclasses(cls: type) -> set[type]:
        return {cls, *(s for c in cls.__subclasses__() for s in subclasses(c))}

    assert subclasses(AccountError) == set(ACCOUNT_ERROR_CLASSES)
