"""`flux admin doctor` (issue 12, "Operators") against a real `flux server` process and
real SQLite files: a healthy server passes every check (exit 0); loose permissions, an
outdated schema, a peer that does not answer and a peer whose clock is off each give a ✗
line with its fix (exit 1); `--json` lists the same checks."""

from __future__ import annotations

import asyncio
import email.utils
import json
import sqlite3
import time
from pathlib import Path

import pytest
from aiohttp import web
from cli_helpers import Running, flux, free_port

from flux.store import SQLiteStore
from flux.store.base import Outbound
from flux.store.migrations.sqlite import STEPS, migrate
from postgres_env import fresh_schema_url


def doctor(data_dir: Path, *args: str, **env: str):
    return flux("admin", "doctor", "--data-dir", str(data_dir), *args, **env)


def failed(result, name: str) -> dict:
    """The ✗ check called `name` in a --json answer."""
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert checks[name]["ok"] is False, checks
    assert checks[name]["fix"], checks[name]
    return checks[name]


def test_a_healthy_server_passes_then_loose_permissions_fail(tmp_path: Path) -> None:
    data_dir = tmp_path / "server"
    port = free_port()
    # the settings as an operator keeps them, for the server and for doctor alike
    env = {"FLUX_DOMAIN": f"localhost:{port}", "FLUX_PORT": str(port)}
    server = Running("server", "--host", "127.0.0.1", "--data-dir", str(data_dir), forked=True,
                     **env)
    try:
        server.wait_for(r"FLUX server for \S+ at http://")
        healthy = doctor(data_dir, **env)
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr
        lines = healthy.stdout.splitlines()
        assert lines and all(line.startswith(("✓", "    ")) for line in lines), lines
        for words in ("key file", "database schema", "integrity_check ok", "publishes this key",
                      "no queued mail"):  # fmt: skip
            assert words in healthy.stdout, healthy.stdout
        checks = json.loads(doctor(data_dir, "--json", **env).stdout)
        assert all(c["ok"] for c in checks) and {"config", "server key"} <= {
            c["name"] for c in checks
        }

        (data_dir / "server_key.json").chmod(0o644)
        data_dir.chmod(0o777)
        loose = doctor(data_dir, **env)
        assert loose.returncode == 1
        assert "✗ key file" in loose.stdout and f"chmod 600 {data_dir}" in loose.stdout
        assert "✗ data directory" in loose.stdout and "chmod go-w" in loose.stdout
        as_json = doctor(data_dir, "--json", **env)
        assert as_json.returncode == 1
        assert "chmod 600" in failed(as_json, "key file")["fix"]
    finally:
        data_dir.chmod(0o700)
        assert server.interrupt() == 0, server.output


def test_an_outdated_schema_and_a_missing_server_are_reported(tmp_path: Path) -> None:
    data_dir = tmp_path / "old"
    data_dir.mkdir(mode=0o700)
    conn = sqlite3.connect(data_dir / "flux.db", isolation_level=None)
    migrate(conn, "old", STEPS[:7])
    conn.close()
    result = doctor(data_dir, "--json", FLUX_DOMAIN=f"localhost:{free_port()}")
    assert result.returncode == 1
    schema = failed(result, "database schema")
    assert schema["detail"] == f"version 7, this FLUX knows {len(STEPS)}"
    assert "start `flux server` once" in schema["fix"]
    assert "no server key" in failed(result, "key file")["detail"]
    assert failed(result, "published key")["fix"] == "see the key check above"
    offline = doctor(data_dir, "--offline", "--json")
    assert "published key" not in {c["name"] for c in json.loads(offline.stdout)}


async def test_peers_with_queued_mail_are_reached_and_clocks_compared(tmp_path: Path) -> None:
    """Two destinations with queued mail: one where nothing listens, one whose clock is
    ten minutes ahead (a stand-in peer answering /federation/info with its Date header)."""
    skewed_port, down_port = free_port(), free_port()
    skewed, down = f"127.0.0.1:{skewed_port}", f"127.0.0.1:{down_port}"

    async def info(_: web.Request) -> web.Response:
        ahead = email.utils.formatdate(time.time() + 600, usegmt=True)
        return web.json_response({"keys": []}, headers={"Date": ahead})

    app = web.Application()
    app.router.add_get("/federation/info", info)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", skewed_port).start()
    data_dir = tmp_path / "q"
    data_dir.mkdir(mode=0o700)
    store = SQLiteStore(data_dir / "flux.db")
    await store.open()
    await store.enqueue([Outbound(d, {"id": f"{n:032x}"}, f"h{n}", ("fx1" + "b" * 40,), "none", 1)
                         for n, d in enumerate((skewed, down))])  # fmt: skip
    await store.close()
    try:
        result = await asyncio.to_thread(
            doctor, data_dir, "--json", "--timeout", "2",
            FLUX_INSECURE_PEERS=f"{skewed},{down}", FLUX_DOMAIN=f"localhost:{free_port()}",
        )  # fmt: skip
    finally:
        await runner.cleanup()
    assert result.returncode == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert checks[f"peer {skewed}"]["ok"] is True
    clock = failed(result, f"clock vs {skewed}")
    assert clock["detail"].startswith("off by +") and "NTP" in clock["fix"]
    unreachable = failed(result, f"peer {down}")
    assert "not reachable" in unreachable["detail"] and "flux admin queue" in unreachable["fix"]


@pytest.mark.postgres
async def test_a_postgres_schema_is_checked_without_migrating_it(tmp_path: Path) -> None:
    from flux.accounts.postgres import PostgresAccountStore
    from flux.store.postgres import PostgresStore

    data_dir = tmp_path / "pg"
    data_dir.mkdir(mode=0o700)
    async with fresh_schema_url("flux_doctor") as url:
        empty = await asyncio.to_thread(doctor, data_dir, "--offline", "--json", FLUX_DB_URL=url)
        assert failed(empty, "database schema")["detail"].startswith("version 0,")
        again = await asyncio.to_thread(doctor, data_dir, "--offline", "--json", FLUX_DB_URL=url)
        assert failed(again, "database schema")  # doctor migrated nothing
        for store in (PostgresStore(url), PostgresAccountStore(url)):
            await store.open()
            await store.close()
        done = await asyncio.to_thread(doctor, data_dir, "--offline", "--json", FLUX_DB_URL=url)
        checks = {c["name"]: c for c in json.loads(done.stdout)}
        assert checks["database schema"]["ok"] and checks["accounts database schema"]["ok"]
