"""The AccountStore contract, run against every implementation (memory, SQLite, PostgreSQL
when FLUX_TEST_POSTGRES_DSN is set); the limiter; names; and the runner's accounts file
(opened with the server, kept across a restart)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from flux.accounts import (
    Account,
    AccountKind,
    LoginLimiter,
    MemoryAccountStore,
    OAuthLink,
    SQLiteAccountStore,
    check_username,
)
from flux.accounts.keys import SealedSeed
from flux.accounts.names import username_from
from flux.accounts.store import AccountSession, Created
from flux.protocol.errors import InvalidValue, WrongType
from flux.server import ServerConfig, start_server
from flux.server.limits import MemoryHitCounter

SEALED = SealedSeed(b"box", b"salt", "custody:1")


def account(name: str, address: str, kind: AccountKind = AccountKind.PASSWORD) -> Account:
    sealed = None if kind is AccountKind.CLAIMED else SEALED
    return Account(name, kind, address, "pub=", 1, "$argon2id$..." if sealed else None, sealed)


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: Any, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "postgres":
        dsn = request.getfixturevalue("pg_dsn")  # skips (or fails) without PostgreSQL
        from flux.accounts.postgres import PostgresAccountStore

        made: Any = PostgresAccountStore(dsn, fresh_schema=True)
    elif request.param == "sqlite":
        made = SQLiteAccountStore(tmp_path / "a.db")
    else:
        made = MemoryAccountStore()
    await made.open()
    yield made
    await made.close()


async def test_accounts_are_unique_by_name_address_and_link(store: Any) -> None:
    assert await store.create_account(account("ada", "fx1a")) is Created.CREATED
    assert await store.create_account(account("ada", "fx1b")) is Created.USERNAME_TAKEN
    assert await store.create_account(account("bob", "fx1a")) is Created.ADDRESS_TAKEN
    link = OAuthLink("github", "1")
    assert await store.create_account(account("cat", "fx1c", AccountKind.OAUTH), link) is Created.CREATED  # fmt: skip
    assert await store.create_account(account("dan", "fx1d", AccountKind.OAUTH), link) is Created.LINK_TAKEN  # fmt: skip
    assert await store.account("dan") is None  # nothing half-made
    assert (await store.linked_account(link)).username == "cat"
    assert await store.linked_account(OAuthLink("github", "2")) is None
    got = await store.account("ada")
    assert got == account("ada", "fx1a")
    claimed = account("eve", "fx1e", AccountKind.CLAIMED)
    await store.create_account(claimed)
    assert await store.account("eve") == claimed


async def test_sessions_expire_revoke_and_prune(store: Any) -> None:
    await store.create_account(account("ada", "fx1a"))
    await store.create_session(AccountSession("h1", "ada", 100, b"wrapped"))
    await store.create_session(AccountSession("h2", "ada", 200, b"wrapped2"))
    live = await store.active_session("h1", 99)
    assert live is not None and live.account.username == "ada"
    assert live.session == AccountSession("h1", "ada", 100, b"wrapped")
    assert await store.active_session("h1", 100) is None  # expired at expires_at
    assert await store.active_session("nope", 0) is None
    assert await store.revoke_session("h2") is True
    assert await store.revoke_session("h2") is False
    assert await store.revoke_session("nope") is False
    assert await store.active_session("h2", 0) is None
    assert await store.drop_expired_sessions(150) == 1
    assert await store.active_session("h1", 0) is None


async def test_a_closed_sqlite_store_refuses_use(tmp_path: Path) -> None:
    store = SQLiteAccountStore(tmp_path / "b.db")
    with pytest.raises(RuntimeError):
        await store.account("ada")
    await store.open()
    await store.close()
    await store.close()  # twice is harmless


async def test_limiter_counts_per_username_and_peer_in_a_window() -> None:
    limiter = LoginLimiter(MemoryHitCounter(limit=3, window_ms=1000))
    key, other_peer = ("ada", "1.2.3.4"), ("ada", "5.6.7.8")
    for t in (0, 100, 200):
        assert await limiter.attempt(key, t) is False  # counted as failed until it succeeds
    assert await limiter.attempt(key, 300) is True  # refused unchecked, and not counted
    assert await limiter.attempt(other_peer, 300) is False
    assert limiter.retry_after_s == 1
    assert await limiter.attempt(key, 1000) is False  # the first failure left the window
    await limiter.succeeded(key)  # forgets every failure of the key
    assert [await limiter.attempt(key, t) for t in (1001, 1002, 1003, 1004)] == [
        False, False, False, True,
    ]  # fmt: skip


def test_limiter_buckets_are_unambiguous() -> None:
    assert LoginLimiter.bucket(("a:b", "c")) != LoginLimiter.bucket(("a", "b:c"))
    assert LoginLimiter.bucket(("ada", "::1")).startswith("login:")


def test_usernames() -> None:
    assert check_username("a.b-c_d") == "a.b-c_d"
    with pytest.raises(WrongType):
        check_username(5)
    with pytest.raises(InvalidValue):
        check_username("fx1" + "0" * 40)  # never mistaken for an address: too long
    assert username_from("Ada.Lovelace@example.org") == "ada.lovelace"
    assert username_from("__init__") == "init"
    assert username_from("") == "user"


async def test_runner_keeps_accounts_in_their_own_file(tmp_path: Path) -> None:
    """`start_server` opens `accounts.db` in the data directory and closes it on stop; an
    account made before a restart logs in after it and still resolves."""
    config = ServerConfig(domain="runner.test", port=0, data_dir=tmp_path, open_mode=False)
    body = {"username": "persist", "password": "a durable password"}

    server = await start_server(config)
    try:
        made = await _post(server.url + "/account/register", body)
    finally:
        await server.stop()
    assert (tmp_path / "accounts.db").exists()

    server = await start_server(config)
    try:
        login = await _post(server.url + "/account/login", body)
        assert login["address"] == made["address"]
        resolved = await _get(server.url + "/federation/resolve/persist")
        assert resolved["address"] == made["address"]
    finally:
        await server.stop()


async def _post(url: str, body: dict) -> dict:
    async with aiohttp.ClientSession() as http, http.post(url, json=body) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def _get(url: str) -> dict:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()
