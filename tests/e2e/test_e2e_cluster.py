"""Several `flux server` processes serving one domain from one PostgreSQL database.

Two real processes share a fresh schema (and one data directory, so one server key, as
processes behind a load balancer must): mail submitted to one is pushed to sockets on the
other, state changes made through one reach sockets on the other, and the delivery queue
is worked by both without double delivery, even when one is killed mid-delivery.
Skipped without FLUX_TEST_POSTGRES_DSN (mandatory in CI: .ci/run).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from cli.cli_helpers import Running, free_port
from e2e.e2e_helpers import LOAD_GENERATOR_ENV
from federation.fed_helpers import Inbox
from flux.client import FluxClient, FluxClientError
from flux.protocol import Identity
from postgres_env import fresh_schema_url

pytestmark = [pytest.mark.timeout(120), pytest.mark.postgres]
FAST = {"FLUX_QUEUE_RETRY_BASE_S": "0.1", "FLUX_QUEUE_RETRY_CAP_S": "0.5",
        "FLUX_QUEUE_LEASE_S": "2", "FLUX_SPAM_RATE_PER_MINUTE": "1000"}  # fmt: skip


@pytest.fixture
async def schema_dsn() -> AsyncIterator[str]:
    async with fresh_schema_url("flux_cluster") as url:
        yield url


class Cluster:
    def __init__(self, tmp: Path, dsn: str, **env: str) -> None:
        self.tmp, self.dsn = tmp, dsn
        self.env = {**FAST, **env}
        self.ports = [free_port(), free_port()]
        self.b_port = free_port()
        # The domain's name: process 2 answers for it (as a load balancer would route to a
        # live process), so peers can fetch its keys while process 1 is killed.
        self.name = f"127.0.0.1:{self.ports[1]}"
        self.b_name = f"127.0.0.1:{self.b_port}"
        self.procs: dict[str, Running] = {}

    def urls(self, n: int) -> str:
        return f"http://127.0.0.1:{self.ports[n]}"

    async def start(self, n: int) -> None:
        peers = f"{self.name},{self.b_name}"
        self.procs[f"p{n}"] = Running(
            "server", "--host", "127.0.0.1", "--port", str(self.ports[n]), "--db", self.dsn,
            "--data-dir", str(self.tmp / "cluster"),
            FLUX_DOMAIN=self.name, FLUX_INSECURE_PEERS=peers, **self.env, **LOAD_GENERATOR_ENV,
        )  # fmt: skip
        await asyncio.to_thread(self.procs[f"p{n}"].wait_for, r"FLUX server for \S+ at http://")

    async def start_b(self) -> None:
        self.procs["b"] = Running(
            "server", "--host", "127.0.0.1", "--port", str(self.b_port), "--open",
            "--data-dir", str(self.tmp / "b"),
            FLUX_DOMAIN=self.b_name, FLUX_INSECURE_PEERS=f"{self.name},{self.b_name}", **FAST,
            **LOAD_GENERATOR_ENV,
            # carol never wrote to alice, so alice is a stranger at B: these tests are about
            # the queue, not the stranger share (tests/server/test_fair_shares.py is)
            FLUX_STRANGER_PENDING_PER_SENDER="1000", FLUX_STRANGER_PENDING_TOTAL="1000",
        )  # fmt: skip
        await asyncio.to_thread(self.procs["b"].wait_for, r"FLUX server for \S+ at http://")

    def kill(self, label: str) -> None:
        self.procs.pop(label).kill()

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.kill()


@pytest.fixture
async def cluster(tmp_path: Path, schema_dsn: str) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path, schema_dsn)
    try:
        await c.start(0)  # first alone: it creates the server key the second then loads
        await c.start(1)
        yield c
    finally:
        c.stop()


async def test_pushes_cross_processes_both_ways(cluster: Cluster) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    async with aiohttp.ClientSession() as http:
        via_1 = FluxClient(alice, cluster.urls(0), session=http)
        await via_1.register()
        bob_on_2 = FluxClient(bob, cluster.urls(1), session=http)
        await bob_on_2.register()
        bob_on_1 = FluxClient(bob, cluster.urls(0), session=http)
        box_2, box_1 = await Inbox(bob_on_2).connect(), await Inbox(bob_on_1).connect()
        changes: asyncio.Queue[list[str]] = asyncio.Queue()
        bob_on_1.on_change(changes.put_nowait)

        sent = await via_1.send(bob.address, "stored by process 1")
        (pushed,) = await box_2.wait_for(1)  # pushed by process 2, which did not store it
        assert pushed["id"] == sent.id
        await box_1.wait_for(1)  # and by process 1 to bob's socket there

        await bob_on_2.read(sent.id)  # a change made through process 2...
        ids = await asyncio.wait_for(changes.get(), 30)
        assert ids == [sent.id]  # ...reaches bob's socket on process 1
        assert (await bob_on_1.get(sent.id))["_status"] == "read"


async def test_sessions_and_challenges_hold_on_every_process(cluster: Cluster) -> None:
    bob = Identity.generate()
    async with aiohttp.ClientSession() as http:
        on_1 = FluxClient(bob, cluster.urls(0), session=http)
        await on_1.register()
        token = await on_1.authenticate()  # a session made by process 1...
        headers = {"Authorization": f"Bearer {token}"}
        async with http.get(f"{cluster.urls(1)}/inbox/{bob.address}", headers=headers) as r:
            assert r.status == 200  # ...is valid on process 2
        # a challenge issued by process 2, answered at process 1, once only
        async with http.get(f"{cluster.urls(1)}/auth/challenge",
                            params={"address": bob.address}) as r:  # fmt: skip
            challenge = await r.json()
        body = {"address": bob.address, "pub": bob.pub_b64(), "challenge": challenge["challenge"],
                "sig": bob.sign(f"flux-auth:1:{challenge['domain']}:{challenge['challenge']}")}  # fmt: skip
        async with http.post(f"{cluster.urls(0)}/auth/session", json=body) as r:
            assert r.status == 200, await r.text()
        async with http.post(f"{cluster.urls(1)}/auth/session", json=body) as r:
            assert r.status == 401  # used: a replay fails on every process
        await on_1.logout()  # revoked through process 1...
        async with http.get(f"{cluster.urls(1)}/inbox/{bob.address}", headers=headers) as r:
            assert r.status == 401  # ...is revoked on process 2


async def test_the_sender_rate_limit_is_one_limit_across_processes(
    tmp_path: Path, schema_dsn: str
) -> None:
    cluster = Cluster(tmp_path, schema_dsn, FLUX_SPAM_RATE_PER_MINUTE="4")
    try:
        await cluster.start(0)
        await cluster.start(1)
        alice, bob = Identity.generate(), Identity.generate()
        async with aiohttp.ClientSession() as http:
            clients = [FluxClient(alice, cluster.urls(n), session=http) for n in (0, 1)]
            await clients[0].register()
            await FluxClient(bob, cluster.urls(1), session=http).register()
            for n in range(4):  # 4 through two processes: the limit, not twice the limit
                await clients[n % 2].send(bob.address, f"note {n}")
            for client in clients:
                with pytest.raises(FluxClientError) as refused:
                    await client.send(bob.address, "one too many")
                assert refused.value.status == 451 and "rate limit" in refused.value.message
    finally:
        cluster.stop()


async def stored_at_b(http: aiohttp.ClientSession, cluster: Cluster) -> int:
    async with http.get(f"http://{cluster.b_name}/stats") as r:
        return (await r.json())["store"]["deliveries"]


async def duplicates_at_b(http: aiohttp.ClientSession, cluster: Cluster) -> float:
    async with http.get(f"http://{cluster.b_name}/metrics") as r:
        text = await r.text()
    key = 'flux_submissions_total{outcome="duplicate"}'
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(key))


async def send_routed(
    http: aiohttp.ClientSession, cluster: Cluster, count: int
) -> tuple[list[str], str]:
    """`count` messages from alice (hosted by the cluster) to carol at B, alternately
    through process 1 and process 2."""
    alice, carol = Identity.generate(), Identity.generate()
    clients = [FluxClient(alice, cluster.urls(n), session=http) for n in (0, 1)]
    await clients[0].register()
    ids = []
    for n in range(count):
        sent = await clients[n % 2].send(f"{carol.address}@{cluster.b_name}", f"m{n}")
        assert sent.recipients == {carol.address: "queued"}
        ids.append(sent.id)
    return ids, carol.address


async def wait_stored_at_b(http: aiohttp.ClientSession, cluster: Cluster, count: int) -> None:
    async with asyncio.timeout(60):
        while await stored_at_b(http, cluster) < count:
            await asyncio.sleep(0.05)  # polling another process's counter, bounded


async def test_the_queue_is_worked_by_both_without_double_delivery(cluster: Cluster) -> None:
    await cluster.start_b()
    async with aiohttp.ClientSession() as http:
        ids, carol = await send_routed(http, cluster, 60)
        await wait_stored_at_b(http, cluster, 60)
        assert stored_ids(cluster, carol) == {i: 1 for i in ids}
        assert await duplicates_at_b(http, cluster) == 0  # no batch was ever sent twice


async def test_killing_a_process_mid_delivery_loses_and_duplicates_nothing(
    cluster: Cluster,
) -> None:
    async with aiohttp.ClientSession() as http:
        ids, carol = await send_routed(http, cluster, 40)  # B is not up: all queued
        await cluster.start_b()
        cluster.kill("p0")  # SIGKILL, possibly holding the destination's lease
        await wait_stored_at_b(http, cluster, 40)
        assert stored_ids(cluster, carol) == {i: 1 for i in ids}  # each exactly once


def stored_ids(cluster: Cluster, recipient: str) -> dict[str, int]:
    """B's own database (SQLite WAL lets a reader in beside the live server)."""
    with contextlib.closing(sqlite3.connect(cluster.tmp / "b" / "flux.db")) as db:
        rows = db.execute(
            "SELECT msg_id, COUNT(*) FROM deliveries WHERE recipient = ? GROUP BY msg_id",
            (recipient,),
        ).fetchall()
    return dict(rows)
