"""`flux admin accounts list|disable|enable` (issue 12, "Operators") against a real `flux
server` process, on SQLite and on PostgreSQL: a disabled account's login gets a clear
refusal (a wrong password still gets the usual one), its live sessions are revoked, mail
to it still arrives, and `enable` gives it back with that mail."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cli_helpers import Running, flux, make_key, one_line_failure, user_env

from postgres_env import fresh_schema_url

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@contextlib.asynccontextmanager
async def server(tmp_path: Path, backend: str) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """A `flux server` process; yields its URL and the environment `flux admin` needs."""
    async with contextlib.AsyncExitStack() as stack:
        store = {"FLUX_DATA_DIR": str(tmp_path / "server")}
        if backend == "postgres":
            store["FLUX_DB_URL"] = await stack.enter_async_context(
                fresh_schema_url("flux_admin_accounts")
            )
        proc = Running("server", "--host", "127.0.0.1", "--port", "0", "--hosted", forked=True,
                       **store)
        try:
            yield proc.wait_for(r"FLUX server for \S+ at (http://127\.0\.0\.1:\d+)").group(1), store
        finally:
            assert proc.interrupt() == 0, proc.output
            assert "Traceback" not in proc.output


@pytest.mark.parametrize("backend", BACKENDS)
async def test_disable_refuses_logins_revokes_sessions_and_keeps_mail(tmp_path, backend):
    async with server(tmp_path, backend) as (url, store):
        await asyncio.to_thread(_scenario, tmp_path, url, store)


def _scenario(tmp_path: Path, url: str, store: dict[str, str]) -> None:
    env = user_env(tmp_path, url, FLUX_PASSWORD="correct horse battery")
    made = flux("account", "register", "carol", **env)
    assert made.returncode == 0, made.stderr
    address = re.search(r"fx1[0-9a-f]{40}", made.stdout).group(0)

    (listed,) = json.loads(flux("admin", "accounts", "list", "--json", **store).stdout)
    assert (listed["username"], listed["kind"], listed["address"]) == ("carol", "password", address)
    assert listed["disabled"] is False and listed["last_login_at"] >= listed["created_at"]
    table = flux("admin", "accounts", "list", **store)
    assert table.returncode == 0 and "carol" in table.stdout and address in table.stdout

    off = flux("admin", "accounts", "disable", "carol", **store)
    assert off.returncode == 0, off.stderr
    assert "1 live session revoked" in off.stdout and "mail to it still arrives" in off.stdout
    one_line_failure(flux("account", "whoami", **env), "session")
    refused = flux("account", "login", "carol", **env)
    one_line_failure(refused, "disabled by this server's operator")
    wrong = flux("account", "login", "carol", **{**env, "FLUX_PASSWORD": "not the password"})
    one_line_failure(wrong, "wrong")
    assert "disabled" not in wrong.stderr  # a stranger learns nothing
    (listed,) = json.loads(flux("admin", "accounts", "list", "--json", **store).stdout)
    assert listed["disabled"] is True and listed["disabled_at"]

    # mail to a disabled account still arrives, and waits for it
    key = tmp_path / "dave.json"
    make_key(key)
    assert flux("register", "--key", str(key), **env).returncode == 0
    sent = flux("send", address, "are you there?", "--key", str(key), **env)
    assert sent.returncode == 0, sent.stderr

    on = flux("admin", "accounts", "enable", "carol", **store)
    assert on.returncode == 0 and "enabled" in on.stdout
    assert flux("account", "login", "carol", **env).returncode == 0
    inbox = json.loads(flux("inbox", "--json", **env).stdout)
    assert [m["content"] for m in inbox] == ["are you there?"]


async def test_errors_are_one_line_with_the_fix(tmp_path: Path) -> None:
    async with server(tmp_path, "sqlite") as (url, store):
        unknown = await asyncio.to_thread(flux, "admin", "accounts", "disable", "nobody", **store)
        one_line_failure(unknown, "no account nobody", "flux admin accounts list")
        key = tmp_path / "k.json"
        await asyncio.to_thread(make_key, key)
        env = user_env(tmp_path, url)
        claimed = await asyncio.to_thread(flux, "claim", "erin", "--key", str(key), **env)
        assert claimed.returncode == 0, claimed.stderr
        refused = await asyncio.to_thread(flux, "admin", "accounts", "disable", "erin", **store)
        one_line_failure(refused, "claimed name", "own key")
