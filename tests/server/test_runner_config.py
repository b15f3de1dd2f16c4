"""Configuration precedence, the persistent server key, start_server and run_server."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from flux.protocol import compose
from flux.server import Backend, Registration, ServerConfig, start_server
from flux.server.keys import KEY_FILE, load_or_create
from postgres_env import fresh_schema_url

# -- configuration ------------------------------------------------------------------------


def test_defaults() -> None:
    config = ServerConfig.from_env({})
    assert (config.port, config.domain, config.backend) == (8765, "localhost", Backend.SQLITE)
    assert config.registration is Registration.OPEN
    assert config.open_mode is False and config.legacy_tokens is False
    assert config.database == Path("flux-data") / "flux.db"


def test_env_then_overrides() -> None:
    env = {"FLUX_PORT": "9000", "FLUX_DOMAIN": "Mail.Example", "FLUX_BACKEND": "memory",
           "FLUX_OPEN": "yes", "FLUX_REGISTRATION": "invite", "FLUX_INVITES": "a, b",
           "FLUX_SECRET": "s", "FLUX_LEGACY_TOKENS": "1", "FLUX_DB_PATH": "/tmp/x.db",
           "FLUX_ACCOUNTS_DB": "/tmp/a.db", "FLUX_HOST": "0.0.0.0", "FLUX_DATA_DIR": "/tmp/d"}  # fmt: skip
    config = ServerConfig.from_env(env, port=0)
    assert config.port == 0 and config.domain == "mail.example"
    assert config.backend is Backend.MEMORY and config.open_mode is True
    assert config.registration is Registration.INVITE and config.invites == {"a", "b"}
    assert config.legacy_tokens and config.secret == "s"
    assert config.database == Path("/tmp/x.db") and config.accounts_db == Path("/tmp/a.db")
    assert config.host == "0.0.0.0" and config.data_dir == Path("/tmp/d")


def test_outbound_policy_and_operator_token_settings() -> None:
    assert ServerConfig.from_env({}).peer_policy.literal_refused("127.0.0.1:5432")
    config = ServerConfig.from_env(
        {"FLUX_ALLOW_PRIVATE_PEERS": "10.0.0.0/8,localhost", "FLUX_INSECURE_PEERS": "127.0.0.1:9",
         "FLUX_OPERATOR_TOKEN": "t" * 16},
    )  # fmt: skip
    policy = config.peer_policy
    assert not policy.literal_refused("10.1.2.3:443") and not policy.literal_refused("127.0.0.1:9")
    assert policy.literal_refused("127.0.0.1:5432") and policy.name_allowed("localhost", 1)
    assert config.operator_token == "t" * 16


def test_toml_below_env(tmp_path: Path) -> None:
    path = tmp_path / "flux.toml"
    path.write_text('[server]\ndomain = "toml.example"\nport = 1234\nopen_mode = true\n'
                    'invites = ["x"]\nfuture_option = 1\n')  # fmt: skip
    config = ServerConfig.from_toml(path, {"FLUX_PORT": "4321"}, registration="closed")
    assert config.domain == "toml.example" and config.port == 4321 and config.open_mode
    assert config.invites == {"x"} and config.registration is Registration.CLOSED
    assert config.extra == {"future_option": 1}


@pytest.mark.parametrize(
    ("env", "overrides"),
    [
        ({"FLUX_PORT": "eighty"}, {}),
        ({"FLUX_OPEN": "perhaps"}, {}),
        ({"FLUX_REGISTRATION": "sometimes"}, {}),
        ({"FLUX_BACKEND": "postgres"}, {}),
        ({"FLUX_DOMAIN": "not a domain"}, {}),
        ({"FLUX_LEGACY_TOKENS": "1"}, {}),  # without a secret
        ({}, {"port": 70000}),
        ({}, {"no_such_option": 1}),
        ({"FLUX_ALLOW_PRIVATE_PEERS": "10.0.0.0/8, not a/cidr!"}, {}),
        ({"FLUX_OPERATOR_TOKEN": "short"}, {}),
    ],
)
def test_bad_configuration(env: dict, overrides: dict) -> None:
    with pytest.raises((ValueError, TypeError)):
        ServerConfig.from_env(env, **overrides)


# -- the server key -------------------------------------------------------------------------


def test_server_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    first = load_or_create(tmp_path / "data", "flux.test", 1000)
    path = tmp_path / "data" / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_or_create(tmp_path / "data", "flux.test", 2000)
    assert again.signer.identity.public_key == first.signer.identity.public_key
    assert again.valid_from == 1000


def test_server_key_permissions_are_tightened(tmp_path: Path) -> None:
    load_or_create(tmp_path, "flux.test", 1)
    os.chmod(tmp_path / KEY_FILE, 0o644)
    load_or_create(tmp_path, "flux.test", 1)
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600


# -- start_server ---------------------------------------------------------------------------


async def test_start_server_sqlite_and_restart_keeps_mail_and_key(tmp_path: Path) -> None:
    from flux.server.keys import load_or_create as _  # noqa: F401 - the runner makes the key

    config = ServerConfig(domain="run.test", port=0, data_dir=tmp_path, open_mode=True)
    server = await start_server(config)
    assert server.port != 0 and server.url == f"http://127.0.0.1:{server.port}"
    alice, bob = _ids()
    msg = compose(alice, bob.address, "Kept across restarts", now_ms=_now()).primary
    async with aiohttp.ClientSession() as http:
        async with http.post(server.url + "/send", json=msg) as resp:
            assert resp.status == 200, await resp.text()
        async with http.get(server.url + "/federation/info") as resp:
            key = (await resp.json())["keys"][0]["pub"]
    await server.stop()
    await server.stop()  # idempotent
    again = await start_server(config)
    async with aiohttp.ClientSession() as http:
        async with http.get(again.url + "/federation/info") as resp:
            assert (await resp.json())["keys"][0]["pub"] == key
        async with http.post(again.url + "/send", json=msg) as resp:
            assert (await resp.json())["duplicate"] is True
    await again.stop()


async def test_a_new_data_directory_is_private(tmp_path: Path) -> None:
    data = tmp_path / "fresh" / "data"
    server = await start_server(ServerConfig(domain="run.test", port=0, data_dir=data))
    try:
        assert data.stat().st_mode & 0o777 == 0o700  # database, accounts, key: owner only
        assert (data / "flux.db").exists() and (data / "accounts.db").exists()
    finally:
        await server.stop()


def _ids() -> tuple[Any, Any]:
    from flux.protocol import Identity

    return Identity.generate(), Identity.generate()


def _now() -> int:
    import time

    return int(time.time() * 1000)


async def test_run_server_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    code = (
        "import os, sys; from flux.server import ServerConfig, run_server; "
        "run_server(ServerConfig.from_env(os.environ, port=0))"
    )
    env = {**os.environ, "FLUX_DATA_DIR": str(tmp_path), "FLUX_DOMAIN": "proc.test"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, env=env, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    url = None
    while url is None:
        line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
        assert line, "the server exited before it started"
        if line.startswith("FLUX server"):
            url = line.rsplit(" at ", 1)[1].strip()
    async with aiohttp.ClientSession() as http, http.get(url + "/health") as resp:
        assert (await resp.json())["domain"] == "proc.test"
    proc.send_signal(signal.SIGTERM)
    rest = await asyncio.wait_for(proc.stderr.read(), 30)
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    assert b"server_stopped" in rest
    assert (tmp_path / "flux.db").exists()


# -- the PostgreSQL backend -----------------------------------------------------------------


def test_a_database_url_selects_the_postgres_backend() -> None:
    url = "postgresql://flux@db.example/flux"
    assert ServerConfig.from_env({"FLUX_DB_URL": url}).backend is Backend.POSTGRES
    config = ServerConfig.from_env({"FLUX_DB_URL": url, "FLUX_BACKEND": "memory"})
    assert config.backend is Backend.MEMORY  # an explicit backend wins
    config = ServerConfig.from_env({}, backend="postgres", db_url=url)
    assert (config.backend, config.db_url) == (Backend.POSTGRES, url)
    with pytest.raises(ValueError, match="db_url"):
        ServerConfig.from_env({"FLUX_DB_URL": "mysql://db.example/flux"})


@pytest.fixture
async def postgres_url() -> Any:
    """A database URL on a new, empty schema (dropped afterwards)."""
    async with fresh_schema_url() as url:
        yield url


@pytest.mark.postgres
async def test_start_server_on_postgres_keeps_mail_across_restarts(
    tmp_path: Path, postgres_url: str
) -> None:
    config = ServerConfig(domain="pg.test", port=0, data_dir=tmp_path, open_mode=True,
                          backend="postgres", db_url=postgres_url)  # fmt: skip
    alice, bob = _ids()
    msg = compose(alice, bob.address, "Kept in PostgreSQL", now_ms=_now()).primary
    server = await start_server(config)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(server.url + "/health") as resp:
                assert (await resp.json())["domain"] == "pg.test"
            async with http.post(server.url + "/send", json=msg) as resp:
                assert resp.status == 200, await resp.text()
    finally:
        await server.stop()
    again = await start_server(config)
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(again.url + "/send", json=msg) as resp,
        ):
            assert (await resp.json())["duplicate"] is True
    finally:
        await again.stop()
    assert not (tmp_path / "flux.db").exists()  # nothing went to SQLite


@pytest.mark.postgres
async def test_flux_server_with_a_postgres_url_serves_health(
    tmp_path: Path, postgres_url: str
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flux", "server", "--db", postgres_url, "--port", "0",
        "--data-dir", str(tmp_path), "--domain", "pgcli.test",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        url = None
        while url is None:
            line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
            assert line, "the server exited before it started"
            if line.startswith("FLUX server"):
                url = line.rsplit(" at ", 1)[1].strip()
        async with aiohttp.ClientSession() as http, http.get(url + "/health") as resp:
            assert (await resp.json())["domain"] == "pgcli.test"
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.stderr.read(), 30)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_flux_server_names_an_unreachable_database_in_one_line(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flux", "server", "--db", "postgresql://flux:s3cret@127.0.0.1:1/flux",
        "--port", "0", "--data-dir", str(tmp_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert "cannot connect to PostgreSQL" in lines[0] and "127.0.0.1:1" in lines[0]
    assert "s3cret" not in lines[0]


async def test_a_rotated_key_is_used_and_the_old_one_stays_published(tmp_path: Path) -> None:
    from flux.protocol import ServerSigner, append_hop, verify_chain
    from flux.protocol.encoding import b64d
    from flux.server.keys import load_or_create, rotate

    before = load_or_create(tmp_path, "run.test", 1_000)
    alice, bob = _ids()
    old_hop = append_hop(compose(alice, bob.address, "signed before", now_ms=2_000).primary,
                         before.signer, next_hop="local", now_ms=2_000)  # fmt: skip
    old, new = rotate(tmp_path, 5_000)
    after = load_or_create(tmp_path, "run.test", 9_000)
    assert after.signer.identity.public_key == new.pub != old.pub
    assert after.retired == (old,) and old.valid_until == 5_000
    assert after.custody == before.custody  # custodial accounts stay readable
    keys = {"run.test": after.all_published()}
    assert verify_chain(old_hop, lambda s: keys.get(s, ())).verdict == "pass"
    only_new = {"run.test": [after.published()]}
    assert verify_chain(old_hop, lambda s: only_new.get(s, ())).verdict == "fail"
    assert isinstance(after.signer, ServerSigner)

    server = await start_server(ServerConfig(domain="run.test", port=0, data_dir=tmp_path))
    try:
        async with aiohttp.ClientSession() as http, http.get(server.url + "/federation/info") as r:
            info = await r.json()
        assert b64d(info["keys"][0]["pub"]) == new.pub and info["protocol"] == "1.0"
        assert [(b64d(k["pub"]), k["valid_until"]) for k in info["retired_keys"]] == [
            (old.pub, 5_000)]  # fmt: skip
    finally:
        await server.stop()


def test_database_pool_and_timeout_settings() -> None:
    config = ServerConfig.from_env(
        {"FLUX_DB_URL": "postgresql://x@127.0.0.1/flux", "FLUX_DB_POOL_MAX": "4",
         "FLUX_DB_STATEMENT_TIMEOUT_MS": "2500"}
    )  # fmt: skip
    assert (config.db_pool_max, config.db_statement_timeout_ms) == (4, 2500)
    with pytest.raises(ValueError):
        ServerConfig.from_env({"FLUX_DB_POOL_MAX": "0"})


def test_log_level_setting() -> None:
    assert ServerConfig.from_env({"FLUX_LOG_LEVEL": "DEBUG"}).log_level == "debug"
    with pytest.raises(ValueError, match="FLUX_LOG_LEVEL"):
        ServerConfig.from_env({"FLUX_LOG_LEVEL": "loud"})
