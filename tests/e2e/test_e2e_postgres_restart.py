"""PostgreSQL restarted under load: clients get 503s while it is down, nothing acknowledged
is lost, and service resumes by itself.

A real `flux server` process runs on a private PostgreSQL instance (e2e/pg_instance.py:
its own data directory and port, never the machine's shared server). While concurrent
submissions run, the database is stopped (`pg_ctl stop -m fast`): submissions must then be
refused with 503 `unavailable` (never a 500) and /health must answer 503. The database is
started again; without anything restarting the FLUX process, /health passes and
submissions succeed again. Every message acknowledged with 200 must then be stored exactly
once. Clients retry what was refused, as real ones do, so the retries go through dedupe.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from cli.cli_helpers import Running
from e2e.e2e_helpers import LOAD_GENERATOR_ENV, mailbox_ids
from e2e.pg_instance import PgInstance, skip_reason
from flux.background import wait_at_most
from flux.protocol import Identity, compose

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

WORKERS = 16
PER_SENDER = 10  #: under the 20/min rate limit, with room for retries of refused ones
WAIT_S = 30.0


class Load:
    """Concurrent POST /send of distinct messages; a refused message goes back in the queue
    (after a short client back-off) until it is acknowledged or the load stops."""

    def __init__(self, url: str, count: int) -> None:
        self.url = url
        now = int(time.time() * 1000)
        recipients = [Identity.generate().address for _ in range(40)]
        senders = [Identity.generate() for _ in range(count // PER_SENDER + 1)]
        self.queue = [
            compose(
                senders[i // PER_SENDER], recipients[i % 40], f"restart {i}", now_ms=now
            ).primary
            for i in range(count)
        ]
        self.queue.reverse()
        self.acked: list[tuple[str, str]] = []
        self.statuses: Counter[int] = Counter()
        self.codes: Counter[str] = Counter()  # codes of the 503s
        self.unexpected: list[str] = []
        self.stopping = False
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> Load:
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT_S))
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(WORKERS)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stopping = True
        try:
            await asyncio.wait_for(asyncio.gather(*self._tasks), WAIT_S)
        finally:
            await self.http.close()

    async def _worker(self) -> None:
        while self.queue and not self.stopping:
            msg = self.queue.pop()
            async with self.http.post(f"{self.url}/send", json=msg) as r:
                body = await r.json(content_type=None)
                self.statuses[r.status] += 1
                if r.status == 200:
                    self.acked.append((msg["id"], msg["to"]))
                else:
                    self.queue.insert(0, msg)  # retry it later, as a client would
                    if r.status == 503:
                        self.codes[body.get("code")] += 1
                    else:
                        self.unexpected.append(f"{r.status} {body}")
            self._changed.set()
            if r.status == 503:
                await asyncio.sleep(0.05)  # a client's back-off, not synchronisation

    async def until(self, what: str, condition: object, within_s: float = WAIT_S) -> None:
        """Wait (bounded) until `condition()` holds, woken by each answer."""
        deadline = time.monotonic() + within_s
        while not condition():  # type: ignore[operator]
            assert not self.unexpected, self.unexpected[:3]
            left = deadline - time.monotonic()
            assert left > 0, f"timed out waiting for {what}: {self.statuses}"
            assert self.queue, f"ran out of messages waiting for {what}"
            self._changed.clear()
            await wait_at_most(self._changed, left)


async def health(http: aiohttp.ClientSession, url: str) -> tuple[int, dict]:
    async with http.get(f"{url}/health") as r:
        return r.status, await r.json(content_type=None)


async def healthy_again(http: aiohttp.ClientSession, url: str, within_s: float = WAIT_S) -> None:
    """Poll /health (a condition, bounded) until it answers 200."""
    deadline = time.monotonic() + within_s
    while (await health(http, url))[0] != 200:
        assert time.monotonic() < deadline, "the server did not recover after PostgreSQL returned"
        await asyncio.sleep(0.1)


async def stored(dsn: str, acked: list[tuple[str, str]]) -> dict[str, list[str]]:
    """recipient -> every id in its mailbox, read straight from the database."""
    from flux.store.postgres import PostgresStore

    store = PostgresStore(dsn)
    await store.open()
    try:
        out = await mailbox_ids(store, (to for _, to in acked))
        missing = [(i, to) for i, to in acked if await store.get(to, i) is None]
        assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {missing[:3]}"
        return out
    finally:
        await store.close()


async def test_postgres_restarted_under_load(tmp_path: Path) -> None:
    if (reason := skip_reason()) is not None:
        pytest.skip(reason)
    pg = PgInstance()
    server: Running | None = None
    try:
        await asyncio.to_thread(pg.init)
        await asyncio.to_thread(pg.start)
        server = Running(
            "server", "--host", "127.0.0.1", "--port", "0", "--data-dir", str(tmp_path),
            "--db", pg.dsn, "--open", **LOAD_GENERATOR_ENV,
        )  # fmt: skip
        match = await asyncio.to_thread(server.wait_for, r"FLUX server for \S+ at (http://\S+)")
        url = match.group(1)
        async with aiohttp.ClientSession() as http, Load(url, 3000) as load:
            await load.until("the first acknowledgements", lambda: len(load.acked) >= 100)

            await asyncio.to_thread(pg.stop)  # fast shutdown, requests in flight
            await load.until("503s", lambda: load.codes["unavailable"] >= 5)
            status, body = await health(http, url)
            assert (status, body["code"]) == (503, "unavailable"), body
            acked_while_down = len(load.acked)

            await asyncio.to_thread(pg.start)
            await healthy_again(http, url)
            await load.until(
                "acknowledgements again", lambda: len(load.acked) >= acked_while_down + 100
            )
        assert server.proc.poll() is None, "the server process must survive the outage"
        assert not load.unexpected, load.unexpected[:3]
        assert set(load.statuses) <= {200, 503}, load.statuses  # never a 500
        assert set(load.codes) == {"unavailable"}, load.codes
        assert load.statuses[503] >= 5

        stored_ids = await stored(pg.dsn, load.acked)
        for rcpt, ids in stored_ids.items():
            assert len(ids) == len(set(ids)), f"duplicates for {rcpt}"

        code = await asyncio.to_thread(server.interrupt)  # a clean exit, outage or not
        last = [line for line in server.lines if "store_unavailable" not in line][-5:]
        assert code == 0, "\n".join(last)
        logged = [json.loads(line) for line in server.lines if line.startswith("{")]
        ours = [entry for entry in logged if entry["logger"].startswith("flux")]
        assert any("event=store_unavailable" in entry["msg"] for entry in ours)
        # one line per failure, no traceback, nothing reported as a bug
        assert not [e for e in ours if "exc" in e or "internal_error" in e["msg"]], ours[:3]
    finally:
        if server is not None:
            server.kill()
        await asyncio.to_thread(pg.remove)
