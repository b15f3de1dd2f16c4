"""`flux admin queue list|show|hold|release|retry|fail|drop` (issue 12, "Operators")
against a real server whose peer is down: server A runs in this process on a real SQLite
file (or PostgreSQL schema), the CLI is a child process opening the same store, as an
operator runs it beside a live server; the peer is started later on the port A has been
failing to reach."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import flux, free_port

from federation.fed_helpers import name
from flux.client import FluxClient
from flux.client.sent import delivery_state
from flux.federation import delivery
from flux.protocol import Identity
from flux.server.app import PARTS
from flux.server.config import ServerConfig
from flux.server.runner import RunningServer, start_server
from postgres_env import fresh_schema_url
from server.test_sent_mail import FAST, until

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@contextlib.asynccontextmanager
async def server_a(tmp_path: Path, backend: str, down: str) -> AsyncIterator[dict[str, Any]]:
    """Server A on `backend`, with `down` as a (plain HTTP) peer; yields the running
    server and the environment the CLI needs to open A's store."""
    async with contextlib.AsyncExitStack() as stack:
        env = {"FLUX_DATA_DIR": str(tmp_path / "a")}
        settings: dict[str, Any] = {}
        if backend == "postgres":
            url = await stack.enter_async_context(fresh_schema_url("flux_admin_queue"))
            env["FLUX_DB_URL"] = settings["db_url"] = url
        port = free_port()
        server = await start_server(ServerConfig.from_env(
            {}, host="127.0.0.1", port=port, domain=f"127.0.0.1:{port}",
            data_dir=tmp_path / "a", backend=backend, insecure_peers=frozenset({down}),
            **settings, **FAST,
        ))  # fmt: skip
        stack.push_async_callback(server.stop)
        yield {"server": server, "env": env}


async def admin(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(flux, "admin", "queue", *args, **env)


async def state(client: FluxClient, msg_id: str, rcpt: str) -> dict[str, Any]:
    return (await delivery_state(client, msg_id))["_delivery"][rcpt]


async def attempted(client: FluxClient, msg_id: str, rcpt: str) -> bool:
    s = await state(client, msg_id, rcpt)
    return s["state"] == "queued" and s.get("attempts", 0) >= 1


async def bounces(client: FluxClient) -> list[dict[str, Any]]:
    page = await client.inbox()
    return [m for m in page.messages if "bounce" in (m.get("tags") or ())]


@pytest.fixture
def worker_looks_often(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI changes the queue from another process, so server A's worker learns of a
    `release` or `retry` at its next idle look at the store (federation/delivery.py,
    IDLE_CHECK_S: 10 s, each wait up to that long); here it looks every 0.2 s, the same
    path sooner."""
    monkeypatch.setattr(delivery, "IDLE_CHECK_S", 0.2)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.usefixtures("worker_looks_often")
async def test_queue_control_against_a_down_peer(tmp_path: Path, backend: str) -> None:
    me, bob = Identity.generate(), Identity.generate()
    port = free_port()
    down = f"127.0.0.1:{port}"
    async with server_a(tmp_path, backend, down) as a:
        env, server = a["env"], a["server"]
        async with FluxClient(me, server.url) as client:
            await client.register()
            sent = [
                await client.send(f"{bob.address}@{down}", f"n{i}", subject=f"s{i}")
                for i in range(4)
            ]
            ids = [s.id for s in sent]
            await until(lambda: attempted(client, ids[0], bob.address), "a failed attempt")

            # list: per destination, then per message, as tables and as JSON
            table = await admin(env, "list")
            assert table.returncode == 0, table.stderr
            row = next(line for line in table.stdout.splitlines() if down in line)
            assert " 4 " in row and "Cannot connect" in row  # the technical error, per server
            (dest,) = json.loads((await admin(env, "list", "--json")).stdout)
            assert dest["destination"] == down and dest["queued"] == 4 and not dest["held"]
            assert dest["attempts"] >= 1
            rows = json.loads((await admin(env, "list", "--messages", "--json")).stdout)
            assert [r["id"] for r in rows] == ids
            first = rows[0]
            assert first["from"] == me.address and first["recipients"] == [bob.address]
            assert first["destination"] == down and first["attempts"] >= 1
            assert "connection refused" in first["last_error"] and first["held"] is False
            messages = await admin(env, "list", "--messages")
            assert messages.returncode == 0 and ids[0][:12] in messages.stdout

            # show: one message by a short id
            shown = await admin(env, "show", ids[0][:10])
            assert shown.returncode == 0, shown.stderr
            assert ids[0] in shown.stdout and "s0" in shown.stdout and down in shown.stdout
            assert "connection refused" in shown.stdout
            one = json.loads((await admin(env, "show", ids[0], "--json")).stdout)
            assert one["envelope"]["subject"] == "s0" and one["qid"] == first["qid"]

            # hold the destination: it is never leased; retry does not undo it
            held = await admin(env, "hold", down)
            assert held.returncode == 0 and "held" in held.stdout, held.stderr
            (dest,) = json.loads((await admin(env, "list", "--json")).stdout)
            assert dest["held"] and dest["state"] == "held"
            still = await admin(env, "retry", down)
            assert "but held" in still.stdout and "release" in still.stdout
            assert await server.app[PARTS]["store"].next_due() is None  # held: never due

            # fail one message: a bounce naming the operator, and the sent mail says so
            failed = await admin(env, "fail", "--id", ids[0][:8], "--reason", "peer retired")
            assert failed.returncode == 0, failed.stderr
            s0 = await state(client, ids[0], bob.address)
            assert s0["state"] == "bounced"
            assert s0["reason"] == "failed by the operator: peer retired"
            (bounce,) = await until(lambda: bounces(client), "the operator's bounce")
            assert bounce["re"] == ids[0] and "failed by the operator" in bounce["content"]

            # drop another: no bounce, the sent mail says dropped
            dropped = await admin(env, "drop", "--id", ids[1])
            assert dropped.returncode == 0, dropped.stderr
            s1 = await state(client, ids[1], bob.address)
            assert (s1["state"], s1["reason"]) == ("bounced", "dropped by the operator")
            assert len(await bounces(client)) == 1

            # several at once: not without --yes (stdin is no terminal here)
            refused = await admin(env, "drop", down)
            assert refused.returncode == 1 and "--yes" in refused.stderr
            assert len(refused.stderr.strip().splitlines()) == 1
            assert len(json.loads((await admin(env, "list", "-m", "--json")).stdout)) == 2

            # hold one message, release the destination: the rest goes, the held one waits
            await admin(env, "hold", "--id", ids[3])
            released = await admin(env, "release", "--to-server", down)
            assert released.returncode == 0, released.stderr
            b = await start_peer(tmp_path, port, server)
            try:
                await admin(env, "retry", down)
                await until(
                    lambda: _is(client, ids[2], bob.address, "delivered"), "ids[2] delivered"
                )
                (left,) = json.loads((await admin(env, "list", "-m", "--json")).stdout)
                assert left["id"] == ids[3] and left["held_by"] == "message"
                assert (await state(client, ids[3], bob.address))["state"] == "queued"
                await admin(env, "release", "--id", ids[3])
                await admin(env, "retry", "--id", ids[3][:8])
                await until(
                    lambda: _is(client, ids[3], bob.address, "delivered"), "ids[3] delivered"
                )
            finally:
                await b.stop()
            empty = await admin(env, "list")
            assert "the delivery queue is empty" in empty.stdout


async def _is(client: FluxClient, msg_id: str, rcpt: str, wanted: str) -> bool:
    return (await state(client, msg_id, rcpt))["state"] == wanted


async def start_peer(tmp_path: Path, port: int, a: RunningServer) -> RunningServer:
    return await start_server(ServerConfig.from_env(
        {}, host="127.0.0.1", port=port, domain=f"127.0.0.1:{port}", data_dir=tmp_path / "b",
        backend="memory", insecure_peers=frozenset({name(a)}), open_mode=True,
    ))  # fmt: skip


async def test_selection_errors_are_one_line_with_the_fix(tmp_path: Path) -> None:
    port = free_port()
    async with server_a(tmp_path, "sqlite", f"127.0.0.1:{port}") as a:
        env = a["env"]
        cases = {
            ("hold",): "say which mail",
            ("hold", "nowhere.example"): "nothing queued for nowhere.example",
            ("show", "deadbeefdead"): "no queued message deadbeefdead",
            ("fail", "a.example", "--to-server", "b.example"): "two destinations given",
        }
        for args, words in cases.items():
            result = await admin(env, *args)
            assert result.returncode == 1, (args, result.stdout)
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and words in lines[0], (args, result.stderr)
        missing = await asyncio.to_thread(
            flux, "admin", "queue", "list", "--data-dir", str(tmp_path / "none")
        )
        assert missing.returncode == 1 and "no FLUX database" in missing.stderr
        assert "--data-dir" in missing.stderr
