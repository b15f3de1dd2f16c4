"""`flux admin invite create|list|revoke` (issue 12, "Operators") against a real `flux
server` process in invite mode, on SQLite and on PostgreSQL: the codes admit both kinds of
registration (a key, `flux register`; an account, `flux account register`), are used up,
expire and are revoked; the static FLUX_INVITES codes still work beside them; a
single-use code admits one of many registrations racing for it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import Running, flux, make_key, one_line_failure, user_env

from flux import FluxIdentity
from flux.client import FluxClient, FluxClientError
from flux.store import SQLiteStore
from postgres_env import fresh_schema_url

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@contextlib.contextmanager
def invite_server(tmp_path: Path, db_url: str | None) -> Iterator[tuple[str, dict[str, str]]]:
    """A `flux server` in invite mode with one static code, `static-1`; yields its URL and
    the environment `flux admin` needs to open its store."""
    store = {"FLUX_DATA_DIR": str(tmp_path / "server")}
    if db_url:
        store["FLUX_DB_URL"] = db_url
    server = Running(
        "server", "--host", "127.0.0.1", "--port", "0", "--registration", "invite",
        FLUX_INVITES="static-1", forked=True, **store,
    )  # fmt: skip
    try:
        yield server.wait_for(r"FLUX server for \S+ at (http://127\.0\.0\.1:\d+)").group(1), store
    finally:
        assert server.interrupt() == 0, server.output
        assert "Traceback" not in server.output


@contextlib.asynccontextmanager
async def database(backend: str):
    if backend == "sqlite":
        yield None
        return
    async with fresh_schema_url("flux_admin_invites") as url:
        yield url


def admin(store: dict[str, str], *args: str):
    return flux("admin", "invite", *args, **store)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_invites_admit_keys_and_accounts_until_used_up(tmp_path: Path, backend) -> None:
    async with database(backend) as url:
        with invite_server(tmp_path, url) as (server, store):
            await asyncio.to_thread(_scenario, tmp_path, server, store)


def _scenario(tmp_path: Path, server: str, store: dict[str, str]) -> None:
    made = admin(store, "create", "--uses", "2", "--expires", "7d", "--note", "team", "--json")
    assert made.returncode == 0, made.stderr
    invite = json.loads(made.stdout)
    code = invite["code"]
    assert invite["uses_left"] == 2 and invite["state"] == "active" and invite["expires_at"]

    key_path = tmp_path / "k.json"
    address = make_key(key_path)
    env = user_env(tmp_path, server, FLUX_PASSWORD="correct horse battery")
    keyed = flux("register", "--key", str(key_path), "--invite", code, **env)
    assert keyed.returncode == 0, keyed.stderr
    account = flux("account", "register", "dana", "--invite", code, **env)
    assert account.returncode == 0, account.stderr
    spent = flux("account", "register", "erin", "--invite", code, **env)
    one_line_failure(spent, "already used", "ask the server's operator for a fresh invite")

    (listed,) = json.loads(admin(store, "list", "--json").stdout)
    assert listed["id"] == invite["id"] and listed["uses_left"] == 0
    assert listed["state"] == "used up" and listed["note"] == "team"
    assert [u["by"] for u in listed["used_by"]] == [address, "dana"]
    assert code not in admin(store, "list").stdout  # only the hash is kept
    table = admin(store, "list")
    assert invite["id"] in table.stdout and "used up" in table.stdout

    # revoke: the code admits nobody; the static code still works
    other = json.loads(admin(store, "create", "--json").stdout)
    revoked = admin(store, "revoke", other["id"])
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    refused = flux("account", "register", "erin", "--invite", other["code"], **env)
    one_line_failure(refused, "revoked")
    static = flux("account", "register", "erin", "--invite", "static-1", **env)
    assert static.returncode == 0, static.stderr
    one_line_failure(flux("account", "register", "fred", "--invite", "nope", **env),
                     "valid invite code")  # fmt: skip
    one_line_failure(admin(store, "revoke", other["id"]), "no unrevoked invite")
    one_line_failure(admin(store, "create", "--expires", "soon"), "--expires", "7d")


async def test_a_single_use_invite_admits_one_of_many_racing_registrations(
    tmp_path: Path,
) -> None:
    with invite_server(tmp_path, None) as (server, store):
        made = await asyncio.to_thread(admin, store, "create", "--json")
        code = json.loads(made.stdout)["code"]

        async def register() -> bool:
            async with FluxClient(FluxIdentity.generate(), server) as client:
                try:
                    await client.register(code)
                except FluxClientError as exc:
                    assert exc.code == "bad_invite", exc
                    return False
                return True

        outcomes = await asyncio.gather(*(register() for _ in range(10)))
        assert outcomes.count(True) == 1
        listed = json.loads((await asyncio.to_thread(admin, store, "list", "--json")).stdout)
        assert listed[0]["uses_left"] == 0 and len(listed[0]["used_by"]) == 1


async def test_create_warns_when_the_server_does_not_ask_for_invites(tmp_path: Path) -> None:
    missing = await asyncio.to_thread(flux, "admin", "invite", "list",
                                      FLUX_DATA_DIR=str(tmp_path / "d"))  # fmt: skip
    one_line_failure(missing, "no FLUX database", "--data-dir")
    (tmp_path / "d").mkdir(mode=0o700)
    store = SQLiteStore(tmp_path / "d" / "flux.db")
    await store.open()
    await store.close()
    made = await asyncio.to_thread(flux, "admin", "invite", "create",
                                   FLUX_DATA_DIR=str(tmp_path / "d"))  # fmt: skip
    assert made.returncode == 0 and "flux-invite-" in made.stdout
    assert "registration here is open" in made.stderr and "FLUX_REGISTRATION" in made.stderr
