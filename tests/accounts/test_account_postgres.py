"""PostgresAccountStore beyond the shared contract (test_account_store.py): its own
migrations and version table beside the mail store's, processes racing to create one name,
a newer schema refused, fresh schemas dropped, and the runner choosing it.

Skipped without FLUX_TEST_POSTGRES_DSN (failed instead when FLUX_TEST_REQUIRE_POSTGRES=1),
except the runner test, which does not connect.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from flux.accounts import Account, AccountKind, OAuthLink
from flux.accounts.keys import SealedSeed
from flux.accounts.store import Created
from flux.server import ServerConfig
from flux.server.runner import open_configured_accounts
from flux.store import SchemaTooNew

SEALED = SealedSeed(b"box", b"salt", "custody:1")


def account(name: str, address: str) -> Account:
    return Account(name, AccountKind.OAUTH, address, "pub=", 1, None, SEALED)


@pytest.fixture
async def schema(pg_dsn: str) -> AsyncIterator[str]:
    """A schema name nobody has used yet; dropped afterwards, whoever created it."""
    import asyncpg

    name = f"flux_test_{uuid.uuid4().hex}"
    yield name
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


def _store(dsn: str, **kw: Any) -> Any:
    from flux.accounts.postgres import PostgresAccountStore

    return PostgresAccountStore(dsn, **kw)


async def _fetch(dsn: str, schema: str, sql: str) -> list[tuple]:
    import asyncpg

    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


pg = pytest.mark.postgres


@pg
async def test_accounts_and_mail_migrate_apart_in_one_schema(pg_dsn: str, schema: str) -> None:
    from flux.accounts.postgres import STEPS
    from flux.store.postgres import PostgresStore

    mail = PostgresStore(pg_dsn, schema=schema)
    accounts = [_store(pg_dsn, schema=schema) for _ in range(3)]
    # like processes starting together on a new database: each step applied once
    await asyncio.gather(mail.open(), *(a.open() for a in accounts))
    try:
        assert {a.schema_version for a in accounts} == {len(STEPS)}
        await accounts[0].create_account(account("ada", "fx1a"))
        assert (await accounts[2].account("ada")).address == "fx1a"
    finally:
        await asyncio.gather(mail.close(), *(a.close() for a in accounts))
    versions = await _fetch(pg_dsn, schema, "SELECT version FROM account_schema_version ORDER BY 1")
    assert versions == [(v,) for v in range(1, len(STEPS) + 1)]
    mail_versions = await _fetch(pg_dsn, schema, "SELECT count(*) FROM schema_version")
    assert mail_versions[0][0] >= 1  # the mail store's own table, untouched by accounts
    again = _store(pg_dsn, schema=schema)
    await again.open()  # idempotent: nothing re-applied, nothing lost
    try:
        assert (await again.account("ada")).address == "fx1a"
    finally:
        await again.close()


@pg
async def test_processes_racing_for_one_name_make_one_account(pg_dsn: str, schema: str) -> None:
    stores = [_store(pg_dsn, schema=schema, pool_max=5) for _ in range(2)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        link = OAuthLink("github", "42")
        # every third tries the name "same"; every third (others) tries the one OAuth link
        names = [f"n{i}" if i % 3 else "same" for i in range(24)]
        links = [link if i % 3 == 1 else None for i in range(24)]
        tries = [stores[i % 2].create_account(account(names[i], f"fx1{i}"), links[i]) for i in range(24)]  # fmt: skip
        outcomes = await asyncio.gather(*tries)
        same = [o for i, o in enumerate(outcomes) if i % 3 == 0]
        assert same.count(Created.CREATED) == 1
        assert set(same) == {Created.CREATED, Created.USERNAME_TAKEN}
        linked = [o for i, o in enumerate(outcomes) if i % 3 == 1]
        assert linked.count(Created.CREATED) == 1
        assert set(linked) == {Created.CREATED, Created.LINK_TAKEN}
        owner = await stores[0].linked_account(link)
        assert owner is not None and await stores[1].account(owner.username) == owner
        # a loser left nothing half-made
        losers = [f"n{i}" for i, o in enumerate(outcomes) if i % 3 == 1 and o is not Created.CREATED]  # fmt: skip
        assert all([await stores[0].account(n) is None for n in losers])
        assert (
            await stores[1].create_account(account("other", "fx12")) is Created.ADDRESS_TAKEN
        )  # n2
    finally:
        await asyncio.gather(*(s.close() for s in stores))


@pg
async def test_accounts_from_a_newer_flux_are_refused(pg_dsn: str, schema: str) -> None:
    store = _store(pg_dsn, schema=schema)
    await store.open()
    await store.close()
    import asyncpg

    conn = await asyncpg.connect(pg_dsn, server_settings={"search_path": schema})
    try:
        await conn.execute("INSERT INTO account_schema_version VALUES (999, 'future', 0)")
    finally:
        await conn.close()
    with pytest.raises(SchemaTooNew):
        await _store(pg_dsn, schema=schema).open()


@pg
async def test_a_fresh_schema_is_dropped_and_a_closed_store_refuses_use(pg_dsn: str) -> None:
    store = _store(pg_dsn, fresh_schema=True)
    with pytest.raises(RuntimeError):
        await store.account("ada")
    await store.open()
    assert store.schema.startswith("flux_test_") and store.schema_version == 2
    await store.close()
    await store.close()  # twice is harmless
    gone = await _fetch(pg_dsn, "public", f"SELECT count(*) FROM pg_namespace WHERE nspname = '{store.schema}'")  # fmt: skip
    assert gone == [(0,)]
    with pytest.raises(RuntimeError):
        await store.account("ada")


def test_schema_options_are_checked() -> None:
    from flux.accounts.postgres import PostgresAccountStore

    with pytest.raises(ValueError):
        PostgresAccountStore("postgresql://x/y", fresh_schema=True, schema="s")
    with pytest.raises(ValueError):
        PostgresAccountStore("postgresql://x/y", schema="no; drop")
    assert "secret" not in repr(PostgresAccountStore("postgresql://u:secret@db/flux"))


def test_the_runner_keeps_accounts_in_postgres(tmp_path: Path) -> None:
    from flux.accounts.postgres import PostgresAccountStore

    config = ServerConfig(domain="pg.test", data_dir=tmp_path, db_url="postgresql://db/flux",
                          backend="postgres")  # fmt: skip
    store = open_configured_accounts(config)
    assert isinstance(store, PostgresAccountStore) and store.dsn == "postgresql://db/flux"
    assert not (tmp_path / "accounts.db").exists()
