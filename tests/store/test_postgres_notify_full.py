"""PostgreSQL's NOTIFY queue full (a listener stopped reading): the storing transaction,
which notifies, cannot commit, and the write is refused as the database being unable to
take it now (StoreUnavailable: 503, retried), never as an internal error, and without
dropping the pool's connections (OPERATING.md, "Cross-process push")."""

from __future__ import annotations

import asyncpg
import pytest

from flux.store import StoreUnavailable
from flux.store._postgres_pool import notify_queue_full

FULL = "too many notifications in the NOTIFY queue"  # PostgreSQL's own text (async.c)


def test_only_the_full_queue_is_a_retry_later() -> None:
    assert notify_queue_full(asyncpg.exceptions.ProgramLimitExceededError(FULL))
    # the call's own limits (an index row too large, too many columns) stay errors
    assert not notify_queue_full(asyncpg.exceptions.ProgramLimitExceededError("index row size"))
    assert not notify_queue_full(asyncpg.exceptions.TooManyColumnsError(FULL))
    assert not notify_queue_full(ValueError(FULL))


@pytest.mark.postgres
async def test_a_full_queue_refuses_the_write_as_unavailable(pg_dsn) -> None:
    from flux.store.postgres import PostgresStore

    store = PostgresStore(pg_dsn, fresh_schema=True)
    await store.open()
    try:

        async def commit_refused(conn: asyncpg.Connection) -> None:
            raise asyncpg.exceptions.ProgramLimitExceededError(FULL)

        with pytest.raises(StoreUnavailable, match="cannot take the write now"):
            await store._pool.borrow(commit_refused, {})
        assert await store.hosted("fx1nobody") is None  # and the store goes on working
    finally:
        await store.close()
