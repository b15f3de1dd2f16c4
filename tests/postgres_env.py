"""The PostgreSQL the tests may use: FLUX_TEST_POSTGRES_DSN (set by .ci/run).

Without it a PostgreSQL test is skipped with the reason, unless FLUX_TEST_REQUIRE_POSTGRES=1
(CI) makes it a failure: there, PostgreSQL tests must run.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import uuid
from collections.abc import AsyncIterator
from typing import NoReturn

import pytest


def skip_or_fail(reason: str) -> NoReturn:
    """Skip, or fail where PostgreSQL is mandatory (FLUX_TEST_REQUIRE_POSTGRES=1)."""
    if os.environ.get("FLUX_TEST_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"{reason}, and FLUX_TEST_REQUIRE_POSTGRES=1 requires PostgreSQL")
    pytest.skip(reason)


def postgres_dsn(module: str = "flux.store.postgres") -> str:
    """The test database's DSN, once `module` imports; skips (or fails) otherwise."""
    dsn = os.environ.get("FLUX_TEST_POSTGRES_DSN")
    if not dsn:
        skip_or_fail("FLUX_TEST_POSTGRES_DSN is not set")
    try:
        importlib.import_module(module)
    except ImportError as exc:
        skip_or_fail(f"{module} does not import ({exc})")
    return dsn


@contextlib.asynccontextmanager
async def fresh_schema_url(prefix: str = "flux_test") -> AsyncIterator[str]:
    """A database URL whose search_path is a new, empty schema (dropped afterwards), for
    servers started on it: several processes given this URL share one database."""
    import asyncpg

    dsn = postgres_dsn()
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(dsn)
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{dsn}{'&' if '?' in dsn else '?'}search_path={schema}"
    finally:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()
