"""The sender's sent record keeps its BCC recipients and their delivery state (store
base.py, "One sent record per message"; docs/API.md, "Sent mail"): real FLUX servers in
this process, real HTTP between them, the sender reading GET /sent/{addr}/{id}, its
socket, /changes, and `flux status` as a user runs it.

Alice (server A) writes to Bob (A) with Carol (A) and Dave (server B) in Bcc: three
envelopes sharing one id (PROTOCOL.md §5.2). B is down at first, so Dave's copy is seen
queued with an attempt, then delivered once B is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cli.cli_helpers import flux, free_port
from federation.fed_helpers import name
from flux.client import FluxClient
from flux.client.sent import delivery_state
from flux.identity import FluxIdentity
from flux.protocol import Identity, compose
from flux.server.config import ServerConfig
from flux.server.runner import RunningServer, start_server
from postgres_env import fresh_schema_url
from server.test_sent_mail import FAST, states, until

#: every back end: the server's sent record is the store's merge (tests/store/test_sent_bcc.py)
BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def config(tmp_path: Path, label: str, port: int, peers: set[str], **more: Any) -> ServerConfig:
    """A server named 127.0.0.1:<port> that reaches `peers` over plain HTTP (as
    fed_helpers.local_servers builds them, with the back end chosen here)."""
    return ServerConfig.from_env(
        {}, host="127.0.0.1", port=port, domain=f"127.0.0.1:{port}", data_dir=tmp_path / label,
        insecure_peers=frozenset(peers), open_mode=True, **{"backend": "memory", **more},
    )  # fmt: skip


@contextlib.asynccontextmanager
async def server_a(tmp_path: Path, backend: str, *peers: str) -> AsyncIterator[RunningServer]:
    """Alice's server on `backend` (PostgreSQL: a fresh schema of the test database)."""
    async with contextlib.AsyncExitStack() as stack:
        more: dict[str, Any] = {"backend": backend, **FAST}
        if backend == "postgres":
            more["db_url"] = await stack.enter_async_context(fresh_schema_url("flux_sent_bcc"))
        running = await start_server(config(tmp_path, "a", free_port(), set(peers), **more))
        try:
            yield running
        finally:
            await running.stop()


async def frames_until(ws: aiohttp.ClientWebSocketResponse, recipient: str, state: str) -> None:
    """Read `delivery` frames until one says `recipient` reached `state` (30 s at most)."""
    while True:
        frame = await ws.receive_json(timeout=30)
        if frame.get("action") != "delivery":
            continue
        if frame["delivery"].get(recipient, {}).get("state") == state:
            return


@pytest.mark.parametrize("backend", BACKENDS)
async def test_every_bcc_recipient_is_in_the_sent_record_with_its_state(
    tmp_path: Path, backend: str
) -> None:
    alice = FluxIdentity.generate()
    bob, carol, dave = Identity.generate(), Identity.generate(), Identity.generate()
    key = alice.save(tmp_path / "alice.json")
    port = free_port()
    down = f"127.0.0.1:{port}"
    async with (
        server_a(tmp_path, backend, down) as a,
        FluxClient(alice, a.url) as client,
        aiohttp.ClientSession() as http,
    ):
        token = await client._ensure_token()
        params = {"address": alice.address}
        before = await client._request("GET", "/changes", params=params)
        async with http.ws_connect(f"{a.url}/ws") as ws:
            await ws.send_json({"action": "auth", "token": token, "address": alice.address})
            assert (await ws.receive_json(timeout=30))["action"] == "authed"
            result = await client.send(
                bob.address, "the budget is final", subject="budget",
                bcc=[carol.address, f"{dave.address}@{down}"],
            )  # fmt: skip
            assert result.recipients == {
                bob.address: "stored",
                carol.address: "stored",
                dave.address: "queued",
            }

            async def retried() -> dict[str, Any] | None:
                m = await delivery_state(client, result.id)
                s = m["_delivery"][dave.address]
                return m if s["state"] == "queued" and s["attempts"] >= 1 else None

            waiting = await until(retried, "a failed attempt for the BCC copy to B")
            assert states(waiting) == {
                bob.address: "stored",
                carol.address: "stored",
                dave.address: "queued",
            }
            assert waiting["_delivery"][dave.address]["error"].startswith(
                "the receiving server did not answer"
            )
            # the record is the primary: its envelope names no BCC recipient
            assert "bcc" not in waiting and waiting["to"] == bob.address
            envelope = json.dumps({k: v for k, v in waiting.items() if k != "_delivery"})
            assert carol.address not in envelope and dave.address not in envelope
            # the retry was pushed to the sender's socket, for the BCC recipient
            await frames_until(ws, dave.address, "queued")

            b = await start_server(config(tmp_path, "b", port, {name(a)}))
            try:
                await frames_until(ws, dave.address, "delivered")
                done = await delivery_state(client, result.id[:10])
                assert states(done) == {
                    bob.address: "stored", carol.address: "stored",
                    dave.address: "delivered",
                }  # fmt: skip
                assert await b.store.get(dave.address, result.id) is not None
            finally:
                await b.stop()
        # /changes: the sent message as it now stands, BCC recipients included
        since = {**params, "since": before["state"]}
        changes = await client._request("GET", "/changes", params=since)
        (listed,) = [m for m in changes["sent"] if m["id"] == result.id]
        assert states(listed)[dave.address] == "delivered"
        assert set(listed["_delivery"]) == {bob.address, carol.address, dave.address}

        # `flux status` shows the BCC recipients too (a process of its own: this loop
        # goes on serving A meanwhile)
        shown = await asyncio.to_thread(
            flux, "status", result.id[:8], "--key", str(key), "--server", a.url, "--json"
        )
        assert shown.returncode == 0, shown.stderr
        assert states(json.loads(shown.stdout)) == states(done)
        text = await asyncio.to_thread(
            flux, "status", result.id[:8], "--key", str(key), "--server", a.url
        )
        assert text.returncode == 0, text.stderr
        assert text.stdout.count("→") == 3 and "delivered" in text.stdout


@pytest.mark.parametrize("backend", BACKENDS)
async def test_bcc_copies_before_the_primary_make_one_record_of_the_primary(
    tmp_path: Path, backend: str
) -> None:
    alice, bob, carol, dave = (Identity.generate() for _ in range(4))
    async with server_a(tmp_path, backend) as a, FluxClient(alice, a.url) as client:
        out = compose(
            alice, bob.address, "copies first", subject="order",
            bcc=[carol.address, dave.address], now_ms=int(time.time() * 1000),
        )  # fmt: skip
        copies = [c for _, c in out.bcc_copies]
        for envelope in [*copies, out.primary, *copies, out.primary]:  # replays as well
            answer = await client._request("POST", "/send", json=envelope, auth=False)
            assert answer["ok"], answer
        record = await delivery_state(client, out.primary["id"])
        assert states(record) == {
            bob.address: "stored",
            carol.address: "stored",
            dave.address: "stored",
        }
        assert "bcc" not in record and record["sig"] == out.primary["sig"]
        listed = (await client._request("GET", f"/sent/{alice.address}"))["messages"]
        assert [m["id"] for m in listed] == [out.primary["id"]]
