"""`POST /account/password`: changing a password account's password (docs/API.md,
"Accounts"), on every accounts store (memory, SQLite, PostgreSQL when
FLUX_TEST_POSTGRES_DSN is set).

What must hold: the old password stops working and the new one works; the key, and so the
address and mail encrypted to it before, stay the same (the seed is resealed, not
replaced); the account's other sessions are revoked and the caller's kept; a wrong old
password is a 401 counted by the login limiter under the same key as logins; a bad new
password is a 400 naming `new_password`; an unknown field is refused by name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from accounts_helpers import DOMAIN, PASSWORD, Harness, make_identity
from aiohttp.test_utils import TestClient, TestServer

from clocks import NOW, FakeClock
from flux.accounts import MemoryAccountStore, SQLiteAccountStore
from flux.protocol import ServerSigner, decrypt_content
from flux.server import ServerConfig, create_app
from flux.server.keys import ServerKey
from flux.store import MemoryStore

NEW = "a brand new passphrase"
STORES = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=STORES)
async def server(request: Any, clock: FakeClock, tmp_path: Path) -> AsyncIterator[Harness]:
    """One live server whose accounts store is the parameter's."""
    config = ServerConfig.from_env({}, domain=DOMAIN, data_dir=tmp_path / "server", port=0)
    accounts: Any
    if request.param == "postgres":
        dsn = request.getfixturevalue("pg_dsn")  # skips (or fails) without PostgreSQL
        from flux.accounts.postgres import PostgresAccountStore

        accounts = PostgresAccountStore(dsn, fresh_schema=True)
    elif request.param == "sqlite":
        config.accounts_database.parent.mkdir(parents=True, exist_ok=True)
        accounts = SQLiteAccountStore(config.accounts_database)
    else:
        accounts = MemoryAccountStore()
    store = MemoryStore(clock=clock)
    await store.open()
    await accounts.open()
    signer = ServerSigner(config.domain, make_identity("server-password"))
    app = create_app(config, store, ServerKey(signer, NOW - 60_000), clock, accounts_store=accounts)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield Harness(client, clock, config, store, None)
    finally:
        await client.close()
        await store.close()
        await accounts.close()


async def change(srv: Harness, session: str, expect: int = 200, **body: Any) -> dict[str, Any]:
    return await srv.call("POST", "/account/password", json_body=body,
                          headers={"X-Flux-Session": session}, expect=expect)  # fmt: skip


async def test_password_change_keeps_the_key_and_revokes_other_sessions(server: Harness) -> None:
    srv = server
    reg = await srv.register("ada")
    first = reg["session"]
    second = (await srv.login("ada"))["session"]
    third = (await srv.login("ada"))["session"]
    me = {"X-Flux-Session": second}
    await srv.call("POST", "/mail/send", headers=me,
                   json_body={"to": reg["address"], "content": "sealed before", "encrypt": True})  # fmt: skip
    before = await srv.accounts.store.account("ada")

    answer = await change(srv, second, password=PASSWORD, new_password=NEW)
    assert answer == {"ok": True, "sessions_revoked": 2, "_status": 200}

    # the caller's session stays; the others are gone
    assert (await srv.call("GET", "/account/me", headers=me))["address"] == reg["address"]
    for token in (first, third):
        gone = await srv.call("GET", "/account/me", headers={"X-Flux-Session": token}, expect=401)
        assert gone["code"] == "unauthorized"
    # the old password no longer logs in; the new one does, to the same address
    assert (await srv.login("ada", PASSWORD, expect=401))["code"] == "login_failed"
    fresh = await srv.login("ada", NEW)
    assert fresh["address"] == reg["address"] and fresh["pub"] == reg["pub"]

    # resealed, not replaced: new salt and box, same key, so old mail still opens
    after = await srv.accounts.store.account("ada")
    assert after.password_hash != before.password_hash
    assert after.sealed.salt != before.sealed.salt and after.sealed.box != before.sealed.box
    active = await srv.accounts.authenticate(fresh["session"])
    identity = srv.accounts.signer(active, fresh["session"])
    answer = await srv.call("GET", "/mail/inbox", headers={"X-Flux-Session": fresh["session"]})
    [msg] = answer["messages"]
    assert msg["encrypted"] is True and decrypt_content(msg, identity) == "sealed before"
    # and the new session signs with it
    sent = await srv.call("POST", "/mail/send", headers={"X-Flux-Session": fresh["session"]},
                          json_body={"to": reg["address"], "content": "after"})  # fmt: skip
    assert sent["ok"] is True


async def test_a_second_change_counts_no_dead_sessions(server: Harness) -> None:
    srv = server
    reg = await srv.register("bea")
    assert (await change(srv, reg["session"], password=PASSWORD, new_password=NEW))["sessions_revoked"] == 0  # fmt: skip
    other = (await srv.login("bea", NEW))["session"]
    srv.clock.advance(srv.config.account_session_ttl_ms)  # both expire: neither is live
    again = (await srv.login("bea", NEW))["session"]
    assert (await change(srv, again, password=NEW, new_password=PASSWORD))["sessions_revoked"] == 0  # fmt: skip
    assert other != again
    await srv.login("bea", PASSWORD)


async def test_wrong_old_password_is_401_and_counted_by_the_login_limiter(server: Harness) -> None:
    srv = server
    reg = await srv.register("cal")
    for _ in range(5):
        wrong = await change(srv, reg["session"], 401, password="not my password", new_password=NEW)
        assert wrong["code"] == "login_failed" and wrong["field"] == "password"
    limited = await change(srv, reg["session"], 429, password=PASSWORD, new_password=NEW)
    assert limited["code"] == "rate_limited" and limited["field"] == "password"
    # the same (username, client) budget as logins: a login is refused too, unchecked
    assert (await srv.login("cal", PASSWORD, expect=429))["code"] == "rate_limited"
    # nothing changed, and the session was not revoked by failing
    srv.clock.advance(15 * 60_000)
    await srv.login("cal", PASSWORD)
    await srv.call("GET", "/account/me", headers={"X-Flux-Session": reg["session"]})


async def test_a_success_clears_the_failures(server: Harness) -> None:
    srv = server
    reg = await srv.register("dee")
    for _ in range(4):
        await change(srv, reg["session"], 401, password="not my password", new_password=NEW)
    await change(srv, reg["session"], password=PASSWORD, new_password=NEW)
    for _ in range(4):
        await srv.login("dee", "still not it", expect=401)
    await srv.login("dee", NEW)


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"password": PASSWORD, "new_password": "short"}, "invalid_value", "new_password"),
        ({"password": PASSWORD, "new_password": 12345678}, "wrong_type", "new_password"),
        ({"password": PASSWORD, "new_password": "x" * 1025}, "too_large", "new_password"),
        ({"password": PASSWORD}, None, "new_password"),
        ({"new_password": NEW}, None, "password"),
        ({"password": PASSWORD, "new_password": NEW, "confirm": NEW}, "invalid_value", "confirm"),
        (
            {"password": PASSWORD, "new_password": NEW, "username": "eve"},
            "invalid_value",
            "username",
        ),
    ],
)
async def test_bad_requests_name_the_field(
    server: Harness, body: dict[str, Any], code: str | None, field: str
) -> None:
    srv = server
    reg = await srv.register("eve")
    answer = await change(srv, reg["session"], 400, **body)
    assert answer["field"] == field, answer
    if code is not None:
        assert answer["code"] == code, answer
    # refused before any password check: the limiter counted nothing, the password holds
    await srv.login("eve", PASSWORD)


async def test_no_session_is_401_before_the_body_is_read(server: Harness) -> None:
    srv = server
    await srv.register("fay")
    for headers in ({}, {"X-Flux-Session": "A" * 43}):
        answer = await srv.call("POST", "/account/password", headers=headers, expect=401,
                                json_body={"password": PASSWORD, "new_password": NEW})  # fmt: skip
        assert answer["code"] == "unauthorized"
    await srv.login("fay", PASSWORD)


async def test_an_oauth_account_has_no_password_to_change(server: Harness) -> None:
    from flux.accounts import OAuthLink

    srv = server
    assert str(await srv.accounts.create_oauth_account("gus", OAuthLink("test", "gus-1"))) == "created"  # fmt: skip
    login = await srv.accounts.oauth_login(await srv.accounts.store.account("gus"))
    answer = await change(srv, login.token, 400, password=PASSWORD, new_password=NEW)
    assert answer["field"] == "password" and "oauth" in answer["error"]
