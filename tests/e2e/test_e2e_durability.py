"""Durability of a real `flux server` process: what it acknowledged survives SIGKILL.

A load of concurrent submissions runs against a server process on SQLite; once hundreds
have been acknowledged, the process is killed with SIGKILL while requests are in flight.
Every message acknowledged with 200 must then be in the database exactly once, the
database must be intact, and the restarted server must come back with the same signing key
(peers know it by that key). A graceful SIGTERM must exit 0 and keep what it acknowledged.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

import aiohttp
import pytest

from cli.cli_helpers import Running
from e2e.e2e_helpers import LOAD_GENERATOR_ENV, mailbox_ids
from flux.protocol import Identity, compose
from flux.store import SQLiteStore

WORKERS = 16
KILL_AFTER = 300


def start(data_dir: Path) -> tuple[Running, str]:
    server = Running(
        "server", "--host", "127.0.0.1", "--port", "0", "--data-dir", str(data_dir),
        "--backend", "sqlite", "--open", **LOAD_GENERATOR_ENV,
    )  # fmt: skip
    url = server.wait_for(r"FLUX server for \S+ at (http://\S+)").group(1)
    return server, url


def build(count: int) -> list[dict]:
    """Distinct senders (15 messages each: under the 20/min rate limit), 50 recipients
    (far under the 500 pending quota)."""
    import time

    now = int(time.time() * 1000)
    recipients = [Identity.generate().address for _ in range(50)]
    senders = [Identity.generate() for _ in range(count // 15 + 1)]
    return [
        compose(senders[i // 15], recipients[i % 50], f"durable {i}", now_ms=now).primary
        for i in range(count)
    ]


async def server_key(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/federation/info") as r:
        return (await r.json())["keys"][0]["pub"]


async def load_until(
    url: str, messages: list[dict], enough: int
) -> tuple[list[tuple[str, str]], asyncio.Event, list[asyncio.Task]]:
    """Post with WORKERS workers; return the acknowledged (id, to), an event set once
    `enough` are acknowledged, and the worker tasks."""
    acked: list[tuple[str, str]] = []
    reached = asyncio.Event()
    queue = list(reversed(messages))

    async def worker(http: aiohttp.ClientSession) -> None:
        while queue:
            msg = queue.pop()
            try:
                async with http.post(f"{url}/send", json=msg) as r:
                    if r.status == 200:
                        acked.append((msg["id"], msg["to"]))
                        if len(acked) >= enough:
                            reached.set()
            except (aiohttp.ClientError, ConnectionError):
                return  # the server is gone: this worker is done

    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    tasks = [asyncio.create_task(worker(http)) for _ in range(WORKERS)]

    async def close_when_done() -> None:
        await asyncio.gather(*tasks)
        await http.close()

    # Awaiting the returned tasks awaits the session's closing too.
    return acked, reached, [*tasks, asyncio.create_task(close_when_done())]


async def stored_ids(db: Path, acked: list[tuple[str, str]]) -> dict[str, list[str]]:
    """recipient -> ids of every message listed in its mailbox (all pages)."""
    store = SQLiteStore(db)
    await store.open()
    try:
        return await mailbox_ids(store, (to for _, to in acked))
    finally:
        await store.close()


def assert_exactly_once(acked: list[tuple[str, str]], stored: dict[str, list[str]]) -> None:
    for rcpt, ids in stored.items():
        assert len(ids) == len(set(ids)), f"duplicates for {rcpt}"
    missing = [(i, to) for i, to in acked if i not in stored[to]]
    assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {missing[:3]}"


def assert_intact(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.timeout(180)
async def test_acknowledged_mail_survives_sigkill_mid_stream(tmp_path: Path) -> None:
    server, url = start(tmp_path)
    try:
        key_before = await server_key(url)
        acked, reached, tasks = await load_until(url, build(1500), KILL_AFTER)
        await asyncio.wait_for(reached.wait(), 60)
        server.proc.send_signal(signal.SIGKILL)  # requests are still in flight
        server.proc.wait(30)
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    finally:
        server.kill()
    assert len(acked) >= KILL_AFTER
    db = tmp_path / "flux.db"
    assert_intact(db)
    assert_exactly_once(acked, await stored_ids(db, acked))

    again, url = start(tmp_path)  # the restarted server serves the same key and the mail
    try:
        assert await server_key(url) == key_before
    finally:
        again.kill()


@pytest.mark.timeout(180)
async def test_sigterm_finishes_and_keeps_what_it_acknowledged(tmp_path: Path) -> None:
    server, url = start(tmp_path)
    try:
        acked, reached, tasks = await load_until(url, build(400), 100)
        await asyncio.wait_for(reached.wait(), 60)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(60) == 0
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    finally:
        server.kill()
    assert_intact(tmp_path / "flux.db")
    assert_exactly_once(acked, await stored_ids(tmp_path / "flux.db", acked))
