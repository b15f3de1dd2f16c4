"""The SQLite writer settles every operation of a batch, whatever one of them raised."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from flux.store.sqlite import SQLiteStore


async def test_an_outcome_a_future_refuses_does_not_strand_the_rest_of_its_batch(
    tmp_path: Path,
) -> None:
    """A batch's futures are settled by one callback per event loop: a StopIteration
    (which a future refuses to hold) is turned into a RuntimeError, and the other
    operations of the batch still get their results."""
    store = SQLiteStore(tmp_path / "store.db")
    await store.open()
    try:

        def refused(conn: sqlite3.Connection) -> int:
            raise StopIteration  # e.g. a bare next() on an empty iterator in an operation

        def one(conn: sqlite3.Connection) -> int:
            return conn.execute("SELECT 1").fetchone()[0]

        # queued in one turn of the loop, so the writer takes them as one batch
        tasks = [asyncio.ensure_future(store._write(op)) for op in (refused, *[one] * 5)]
        async with asyncio.timeout(30):  # a stranded waiter would hang here
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(outcomes[0], RuntimeError)
        assert "StopIteration" in str(outcomes[0])
        assert outcomes[1:] == [1] * 5
    finally:
        await store.close()


@pytest.mark.parametrize("kind", [ValueError, KeyError])
async def test_an_ordinary_failure_reaches_only_its_own_waiter(tmp_path: Path, kind: type) -> None:
    store = SQLiteStore(tmp_path / "store.db")
    await store.open()
    try:

        def failing(conn: sqlite3.Connection) -> int:
            raise kind("no")

        def one(conn: sqlite3.Connection) -> int:
            return conn.execute("SELECT 1").fetchone()[0]

        tasks = [asyncio.ensure_future(store._write(op)) for op in (one, failing, one)]
        async with asyncio.timeout(30):
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert outcomes[0] == 1 and outcomes[2] == 1
        assert type(outcomes[1]) is kind
    finally:
        await store.close()
