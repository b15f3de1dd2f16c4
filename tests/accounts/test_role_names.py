"""Reserved names (accounts/names.py; docs/OPERATING.md, "Reserved names"): the RFC 2142
role mailboxes, mailer-daemon, root, admin, no-reply... are refused by every public path
that binds a name (`POST /account/register`, `POST /account/claim`, OAuth sign-up), in any
case and with any separators, with 400 naming the field and `reason: "reserved"`; what the
operator binds through the account store stays theirs. On the SQLite and the PostgreSQL
account stores. And the server's own mail, its bounces, is named `mailer-daemon@domain`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from accounts_helpers import DOMAIN, Harness, make_identity
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cli.cli_helpers import free_port
from clocks import NOW, FakeClock
from flux.accounts import Account, AccountKind, complete_oauth_login
from flux.accounts.names import RESERVED_NAMES, is_reserved
from flux.protocol import ServerSigner
from flux.server import ServerConfig, create_app
from flux.server.app import PARTS
from flux.server.keys import ServerKey
from flux.store import MemoryStore

#: reserved names as people might write them: every one of the list, and variants
VARIANTS = [
    "postmaster", "Postmaster", "POSTMASTER", "post-master", "hostmaster", "webmaster",
    "abuse", "Abuse", "noc", "security", "mailer-daemon", "MAILER-DAEMON", "mailer_daemon",
    "mailerdaemon", "mailer.daemon", "root", "admin", "Admin", "administrator", "no-reply",
    "noreply", "no_reply", "No.Reply", "support", "info",
]  # fmt: skip
#: near names that are not reserved, and stay free
FREE = ["postmaster2", "rooted", "admins", "abuser", "info-desk", "nocturne"]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def any_srv(request: Any, make_server: Any, clock: FakeClock, tmp_path: Path) -> AsyncIterator[Harness]:  # fmt: skip
    """A hosted-mode server with open registration, its accounts in SQLite or PostgreSQL."""
    if request.param == "sqlite":
        yield await make_server()
        return
    from flux.accounts.postgres import PostgresAccountStore
    from postgres_env import postgres_dsn

    accounts = PostgresAccountStore(postgres_dsn("flux.accounts.postgres"), fresh_schema=True)
    await accounts.open()
    store = MemoryStore(clock=clock)
    await store.open()
    config = ServerConfig.from_env({}, domain=DOMAIN, data_dir=tmp_path / "pg", port=0)
    signer = ServerSigner(DOMAIN, make_identity("server-pg"))
    app = create_app(config, store, ServerKey(signer, NOW - 60_000), clock, accounts_store=accounts)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield Harness(client, clock, config, store, None)
    finally:
        await client.close()
        await store.close()
        await accounts.close()


def refused_as_reserved(answer: dict[str, Any], field: str = "username") -> bool:
    return (answer["_status"], answer["code"], answer["field"], answer["reason"]) == (
        400, "invalid_value", field, "reserved")  # fmt: skip


def test_the_list_and_the_comparison() -> None:
    for name in ("postmaster", "hostmaster", "webmaster", "abuse", "noc", "security"):
        assert name in RESERVED_NAMES  # RFC 2142's, at least
    assert all(is_reserved(v) for v in VARIANTS)
    assert not any(is_reserved(f) for f in FREE)


async def test_register_refuses_every_reserved_name(any_srv: Harness) -> None:
    for name in VARIANTS:
        body = {"username": name, "password": "x" * 12}
        answer = await any_srv.call("POST", "/account/register", json_body=body, expect=None)
        assert refused_as_reserved(answer), (name, answer)
        assert name.lower() in answer["error"] and "reserved" in answer["error"]
        assert await any_srv.accounts.resolve(name) is None
    any_srv.clock.advance(3_600_001)  # past the per-address registration limit's window
    for name in FREE:
        assert (await any_srv.register(name))["username"] == name


async def test_claim_refuses_every_reserved_name(any_srv: Harness) -> None:
    who = make_identity("would-be-postmaster")
    for name in VARIANTS:
        body = any_srv.claim_body(who, name)
        answer = await any_srv.call("POST", "/account/claim", json_body=body, expect=None)
        assert refused_as_reserved(answer), (name, answer)
        assert await any_srv.accounts.resolve(name) is None
    answer = await any_srv.call(
        "POST", "/account/claim", json_body=any_srv.claim_body(who, "rooted")
    )
    assert answer["created"] is True and answer["username"] == "rooted"


async def test_oauth_sign_up_passes_over_a_reserved_name(any_srv: Harness) -> None:
    _, account = await complete_oauth_login(
        any_srv.accounts, "github", "42", "postmaster@example.org"
    )
    assert account.username == "postmaster-2"
    _, other = await complete_oauth_login(any_srv.accounts, "github", "43", "Admin")
    assert other.username == "admin-2"


async def test_the_operator_can_bind_a_reserved_name(any_srv: Harness) -> None:
    """No admin command binds names today: the operator's path is the account store itself,
    which does not check the list. The key then holds the name as any claimed one."""
    who, other = make_identity("the-operator"), make_identity("someone-else")
    bound = Account("postmaster", AccountKind.CLAIMED, who.address, who.pub_b64(), NOW)
    await any_srv.accounts.store.create_account(bound)
    found = await any_srv.call("GET", "/federation/resolve/Postmaster")
    assert (found["address"], found["name"]) == (who.address, "postmaster")
    again = await any_srv.call(
        "POST", "/account/claim", json_body=any_srv.claim_body(who, "postmaster")
    )
    assert again["created"] is False  # its own key claiming it again changes nothing
    theirs = any_srv.claim_body(other, "postmaster")
    assert refused_as_reserved(
        await any_srv.call("POST", "/account/claim", json_body=theirs, expect=None)
    )


# -- bounces are from mailer-daemon@domain -------------------------------------------------------
@pytest.fixture
async def refusing_peer() -> AsyncIterator[str]:
    """A peer that refuses every message as spam, a final refusal (as in
    tests/server/test_submission_bounces.py): its name."""

    async def deliver(request: web.Request) -> web.Response:
        batch = await request.json()
        results = [
            {"id": m["id"], "refused": "spam", "error": "no thanks"} for m in batch["messages"]
        ]
        body = json.dumps({"ok": True, "txn": batch["txn"], "results": results})
        return web.Response(text=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/federation/deliver", deliver)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"127.0.0.1:{port}"
    await runner.cleanup()


async def test_a_bounce_is_from_mailer_daemon(make_server: Any, refusing_peer: str) -> None:
    srv = await make_server(insecure_peers=frozenset({refusing_peer}))
    alice = await srv.account("alice")
    bob = make_identity("bob-elsewhere").address
    sent = await srv.send(alice, to=f"{bob}@{refusing_peer}", content="to be refused")
    async with asyncio.timeout(10):  # the delivery worker bounces it: wait, bounded
        while not (bounces := [m for m in await srv.inbox(alice) if m.get("re") == sent["id"]]):
            await asyncio.sleep(0.02)
    (bounce,) = bounces
    server = srv.client.server.app[PARTS]["key"].signer.identity.address
    assert bounce["from"] == server and "bounce" in bounce["tags"]
    assert bounce["_from_name"] == f"mailer-daemon@{DOMAIN}"
    # the same name wherever the mailbox shows it: one message, and by key session too
    one = await srv.call("GET", f"/mail/message/{bounce['id']}", headers=alice.headers)
    assert one["message"]["_from_name"] == f"mailer-daemon@{DOMAIN}"
    # and no account can take the name
    taken = await srv.call("POST", "/account/register", expect=None,
                           json_body={"username": "mailer-daemon", "password": "x" * 12})  # fmt: skip
    assert refused_as_reserved(taken)
