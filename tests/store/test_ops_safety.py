"""Operations fail safe (issue 10 §6), with real files, a real full database and real logs.

* SQLite files are 0600 whatever the umask; a directory open to others is reported.
* The WAL stays bounded: grown behind a reader holding a snapshot (an online `.backup`), it
  shrinks once the reader is gone.
* A full database (SQLITE_FULL, made for real with `max_bytes` = max_page_count) answers
  503 `unavailable`, /health drains the process, nothing acknowledged is lost, and both
  recover when there is room again.
* No token reaches the access log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from store_helpers import ALICE, envelope, incoming

from flux.server.config import ServerConfig
from flux.server.logs import redact
from flux.server.runner import start_server
from flux.store import SQLiteStore
from flux.store.base import StoreFull

WAIT_S = 20.0  # the most any polled condition may take before the test fails


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_database_files_are_private_whatever_the_umask(tmp_path: Path, caplog: Any) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    old = os.umask(0)  # the most permissive umask: files would be 0666
    try:
        store = SQLiteStore(data / "flux.db")
        with caplog.at_level(logging.WARNING, logger="flux.store"):
            await store.open()
        await store.store_message(incoming(envelope()))
    finally:
        os.umask(old)
    try:
        for suffix in ("", "-wal", "-shm"):
            path = Path(f"{data / 'flux.db'}{suffix}")
            assert path.exists(), suffix
            assert _mode(path) == 0o600, (suffix, oct(_mode(path)))
    finally:
        await store.close()
    assert any("data_dir_open_to_others" in r.getMessage() for r in caplog.records)


async def test_existing_files_are_narrowed_and_a_private_directory_is_not_reported(
    tmp_path: Path, caplog: Any
) -> None:
    data = tmp_path / "private"
    data.mkdir(mode=0o700)
    os.chmod(data, 0o700)
    path = data / "flux.db"
    sqlite3.connect(path).close()
    os.chmod(path, 0o644)
    store = SQLiteStore(path)
    with caplog.at_level(logging.WARNING, logger="flux.store"):
        await store.open()
    await store.close()
    assert _mode(path) == 0o600
    assert not any("data_dir_open_to_others" in r.getMessage() for r in caplog.records)


async def test_the_wal_shrinks_once_a_reader_holding_it_open_is_gone(tmp_path: Path) -> None:
    path = tmp_path / "flux.db"
    bound = 1 << 20
    store = SQLiteStore(path, wal_checkpoint_bytes=bound, checkpoint_interval_s=0.1)
    await store.open()
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM deliveries").fetchone()  # holds its snapshot
        big = "x" * 8000
        for n in range(0, 500, 50):
            await store.store_many([incoming(envelope(content=big)) for _ in range(50)])
            await asyncio.sleep(0)
            assert n >= 0
        wal = Path(f"{path}-wal")
        grown = wal.stat().st_size
        assert grown > 2 * bound  # the reader kept the checkpoints from reaching the end
    finally:
        reader.execute("COMMIT")
        reader.close()
    # Idle writer, no reader: the periodic TRUNCATE checkpoint brings it down.
    for _ in range(int(WAIT_S / 0.05)):
        if wal.stat().st_size <= bound:
            break
        await asyncio.sleep(0.05)  # polling a file's size; the bound is the assertion
    assert wal.stat().st_size <= bound, (grown, wal.stat().st_size)
    page = await store.list(ALICE, _query())
    assert len(page.items) == 50  # everything written is still there
    await store.close()


def _query() -> Any:
    from flux.store import ListQuery

    return ListQuery(limit=50)


# -- disk full ------------------------------------------------------------------------------


async def test_store_full_is_a_store_unavailable() -> None:
    from flux.store.base import StoreUnavailable

    assert issubclass(StoreFull, StoreUnavailable)


async def test_sqlite_full_fails_the_write_with_store_full_and_loses_nothing(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "small.db", max_bytes=300 * 1024)
    await store.open()
    stored: list[str] = []
    try:
        with pytest.raises(StoreFull):
            for _ in range(400):
                env = envelope(content="y" * 4000)
                await store.store_message(incoming(env))
                stored.append(env["id"])
        assert stored, "nothing fitted at all"
        with pytest.raises(StoreFull):
            await store.ping()  # the health check drains the process while full
        ids = {m.id for m in await _all(store)}
        assert set(stored) <= ids  # every acknowledged write is there
    finally:
        await store.close()
    # More room (a bigger cap): the same file takes writes again, nothing lost.
    store = SQLiteStore(tmp_path / "small.db", max_bytes=4 << 20)
    await store.open()
    try:
        await store.ping()
        await store.store_message(incoming(envelope()))
        assert set(stored) <= {m.id for m in await _all(store)}
    finally:
        await store.close()


async def _all(store: SQLiteStore) -> list[Any]:
    from flux.store import ListQuery

    out: list[Any] = []
    cursor = None
    while True:
        page = await store.list(ALICE, ListQuery(limit=500, cursor=cursor))
        out.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return out


# -- logs -----------------------------------------------------------------------------------


async def test_no_token_reaches_the_access_log(tmp_path: Path, caplog: Any) -> None:
    config = ServerConfig.from_env(
        {}, data_dir=tmp_path, host="127.0.0.1", port=0, backend="sqlite", access_log=True,
        legacy_tokens=True, secret="s" * 32,
    )  # fmt: skip
    running = await start_server(config)
    secret = "SEKRIT0123456789abcdef"
    try:
        with caplog.at_level(logging.INFO):
            async with aiohttp.ClientSession() as http:
                for path in (
                    f"/health?token={secret}",
                    f"/fetch/{ALICE}?address={ALICE}&token={secret}",
                    f"/changes?session={secret}&address={ALICE}",
                ):
                    async with http.get(running.url + path) as resp:
                        await resp.read()
                headers = {"Authorization": f"Bearer {secret}", "X-Flux-Token": secret}
                async with http.get(running.url + "/health", headers=headers) as resp:
                    await resp.read()
            for _ in range(100):  # the access log line is written after the response
                if sum(r.name == "flux.access" for r in caplog.records) >= 4:
                    break
                await asyncio.sleep(0.02)
    finally:
        await running.stop()
    access = [r for r in caplog.records if r.name == "flux.access"]
    assert len(access) >= 4
    for record in caplog.records:
        assert secret not in record.getMessage(), record.getMessage()
        assert all(secret not in str(v) for v in vars(record).values()), record.getMessage()
    assert any("token=***" in r.getMessage() for r in access)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('"GET /x?token=abc&limit=5 HTTP/1.1"', '"GET /x?token=***&limit=5 HTTP/1.1"'),
        ("Authorization: Bearer abc.def", "Authorization: Bearer ***"),
        ('"Bearer abc"', '"Bearer ***"'),
        ("GET /x?SESSION=1", "GET /x?SESSION=***"),
        ("event=store_unavailable where=GET /inbox", "event=store_unavailable where=GET /inbox"),
    ],
)
def test_redact(line: str, expected: str) -> None:
    assert redact(line) == expected
