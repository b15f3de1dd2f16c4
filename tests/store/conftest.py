"""Fixtures for the store contract: one `store` fixture per implementation.

Every test in test_contract.py runs against each param. PostgreSQL joins when
FLUX_TEST_POSTGRES_DSN is set (and flux.store.postgres imports); it is skipped otherwise,
unless FLUX_TEST_REQUIRE_POSTGRES=1 (CI), where a missing DSN or driver fails the test.
To add a back end: one entry in STORES building an unopened store on an empty schema
(PostgreSQL: `PostgresStore(dsn, clock=..., fresh_schema=True)`, a fresh schema per test).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # store_helpers, like protocol_helpers

from store_helpers import Clock

from flux.store import MemoryStore, SQLiteStore, Store
from postgres_env import postgres_dsn


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pg_dsn() -> str:
    return postgres_dsn()


def _postgres(tmp_path, clock):  # pragma: no cover - needs a server
    from flux.store.postgres import PostgresStore

    return PostgresStore(postgres_dsn(), clock=clock, fresh_schema=True)


STORES: dict[str, Callable] = {
    "memory": lambda tmp_path, clock: MemoryStore(clock=clock),
    "sqlite": lambda tmp_path, clock: SQLiteStore(tmp_path / "flux.db", clock=clock),
    "postgres": _postgres,
}


@pytest.fixture(params=[
    "memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres),
])  # fmt: skip
async def store(request, tmp_path, clock) -> AsyncIterator[Store]:
    s = STORES[request.param](tmp_path, clock)
    await s.open()
    try:
        yield s
    finally:
        await s.close()
