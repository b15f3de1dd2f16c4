"""Fixtures for the account tests: real servers on 127.0.0.1 (an ephemeral port), built by
`create_app` with a real `SQLiteAccountStore` file, and a fake clock the tests move.

`pg_dsn` is FLUX_TEST_POSTGRES_DSN for the PostgresAccountStore tests, as in
tests/store/conftest.py: skipped when it is unset (or flux.accounts.postgres does not
import), failed instead when FLUX_TEST_REQUIRE_POSTGRES=1.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

sys.path.insert(0, str(Path(__file__).parent))  # the helpers module beside this file
from accounts_helpers import DOMAIN, Harness, make_identity

from clocks import NOW, FakeClock
from flux.accounts import SQLiteAccountStore
from flux.protocol import ServerSigner
from flux.server import ServerConfig, create_app
from flux.server.keys import ServerKey
from flux.store import MemoryStore
from postgres_env import postgres_dsn

ServerFactory = Callable[..., Awaitable[Harness]]


@pytest.fixture
def pg_dsn() -> str:
    return postgres_dsn("flux.accounts.postgres")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def make_server(clock: FakeClock, tmp_path: Path) -> AsyncIterator[ServerFactory]:
    """Start servers: `await make_server(registration="invite", invites="a,b")`."""
    started: list[tuple[TestClient, Any, Any]] = []

    async def start(*, memory_accounts: bool = False, **overrides: Any) -> Harness:
        n = len(started)
        overrides.setdefault("domain", DOMAIN)
        overrides.setdefault("data_dir", tmp_path / f"server{n}")
        overrides.setdefault("port", 0)
        config = ServerConfig.from_env({}, **overrides)
        store = MemoryStore(clock=clock)
        await store.open()
        accounts_db = None if memory_accounts else config.accounts_database
        accounts_store = None
        if accounts_db is not None:
            accounts_db.parent.mkdir(parents=True, exist_ok=True)
            accounts_store = SQLiteAccountStore(accounts_db)
            await accounts_store.open()
        signer = ServerSigner(config.domain, make_identity(f"server-{n}"))
        app = create_app(config, store, ServerKey(signer, NOW - 60_000), clock,
                         accounts_store=accounts_store)  # fmt: skip
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        started.append((client, store, accounts_store))
        return Harness(client, clock, config, store, accounts_db)

    yield start
    for client, store, accounts_store in reversed(started):
        await client.close()
        await store.close()
        if accounts_store is not None:
            await accounts_store.close()


@pytest.fixture
async def srv(make_server: ServerFactory) -> Harness:
    """A hosted-mode server with open registration and an SQLite accounts file."""
    return await make_server()
