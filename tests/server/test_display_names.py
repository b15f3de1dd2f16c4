"""Display names (server/names.py): address -> `name@domain` for senders with an account
here, on every accounts store (memory, SQLite, PostgreSQL when FLUX_TEST_POSTGRES_DSN is
set), against a live server whose accounts are made through its real routes.

What must hold: a password account's and a claimed name's address resolve to
`name@domain`; an address with no name here resolves to nothing; a miss is forgotten as
soon as the address claims a name in this process, and believed at most `miss_ttl_ms`
when another process (here: a write straight to the store) names it; the cache is
bounded; `annotate` adds `_from_name` to copies only, never to the envelopes it is given,
and only where there is a name.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from clocks import NOW, FakeClock
from flux.accounts import (
    Account,
    AccountKind,
    MemoryAccountStore,
    SQLiteAccountStore,
    claim_payload,
)
from flux.protocol import Identity, ServerSigner, verify_envelope
from flux.server import ServerConfig, create_app
from flux.server.app import PARTS
from flux.server.keys import ServerKey
from flux.server.names import FROM_NAME, NameResolver
from flux.store import MemoryStore
from flux.store.base import ListQuery, MessageRef
from postgres_env import postgres_dsn

DOMAIN = "names.test"
PASSWORD = "correct horse battery staple"
STORES = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def identity(label: str) -> Identity:
    return Identity(hashlib.sha256(f"flux-names-test:{label}".encode()).digest())


class Live:
    def __init__(self, client: TestClient, clock: FakeClock) -> None:
        self.client = client
        self.clock = clock
        self.accounts = client.server.app[PARTS]["accounts"]

    async def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        resp = await self.client.post(path, json=body, headers=headers)
        answer = await resp.json()
        assert resp.status == 200, answer
        return answer

    async def register(self, username: str) -> dict[str, Any]:
        return await self.post("/account/register", {"username": username, "password": PASSWORD})

    async def claim(self, who: Identity, username: str) -> dict[str, Any]:
        t = self.clock.now
        sig = who.sign(claim_payload(DOMAIN, username, who.address, t))
        body = {"username": username, "address": who.address, "pub": who.pub_b64(), "t": t,
                "sig": sig}  # fmt: skip
        return await self.post("/account/claim", body)


@pytest.fixture(params=STORES)
async def live(request: Any, tmp_path: Path) -> AsyncIterator[Live]:
    clock = FakeClock()
    config = ServerConfig.from_env({}, domain=DOMAIN, data_dir=tmp_path / "server", port=0)
    accounts: Any
    if request.param == "postgres":
        from flux.accounts.postgres import PostgresAccountStore

        accounts = PostgresAccountStore(postgres_dsn("flux.accounts.postgres"), fresh_schema=True)
    elif request.param == "sqlite":
        config.accounts_database.parent.mkdir(parents=True, exist_ok=True)
        accounts = SQLiteAccountStore(config.accounts_database)
    else:
        accounts = MemoryAccountStore()
    store = MemoryStore(clock=clock)
    await store.open()
    await accounts.open()
    signer = ServerSigner(DOMAIN, identity("server"))
    app = create_app(config, store, ServerKey(signer, NOW - 60_000), clock, accounts_store=accounts)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield Live(client, clock)
    finally:
        await client.close()
        await store.close()
        await accounts.close()


async def test_accounts_of_every_kind_have_their_name(live: Live) -> None:
    names = NameResolver(live.accounts, live.clock)
    ada = await live.register("ada")
    holder = identity("holder")
    await live.claim(holder, "kim")
    assert await names.name_of(ada["address"]) == f"ada@{DOMAIN}"
    assert await names.name_of(holder.address) == f"kim@{DOMAIN}"
    assert await names.name_of(identity("stranger").address) is None
    # not an address: no name, and nothing cached for it
    for junk in ("ada", f"ada@{DOMAIN}", "", "fx1" + "z" * 40):
        assert await names.name_of(junk) is None
    assert len(names) == 3
    assert await names.names_of([ada["address"], identity("stranger").address, ada["address"]]) == {
        ada["address"]: f"ada@{DOMAIN}"
    }


async def test_a_miss_is_forgotten_when_the_address_claims_a_name(live: Live) -> None:
    names = NameResolver(live.accounts, live.clock)
    holder = identity("late-claimer")
    assert await names.name_of(holder.address) is None  # cached as a miss
    await live.claim(holder, "late")  # through the route: Accounts tells the resolver
    assert await names.name_of(holder.address) == f"late@{DOMAIN}"


async def test_a_name_made_by_another_process_shows_after_the_miss_ttl(live: Live) -> None:
    names = NameResolver(live.accounts, live.clock, miss_ttl_ms=60_000)
    other = identity("named-elsewhere")
    assert await names.name_of(other.address) is None
    # another process serving the same database: this one's Accounts hears nothing
    made = Account("elsewhere", AccountKind.CLAIMED, other.address, other.pub_b64(), live.clock.now)
    assert str(await live.accounts.store.create_account(made)) == "created"
    live.clock.advance(59_999)
    assert await names.name_of(other.address) is None  # the miss is still believed
    live.clock.advance(1)
    assert await names.name_of(other.address) == f"elsewhere@{DOMAIN}"
    live.clock.advance(10 * 60_000)  # a name never expires: no lookup needed to keep it
    assert await names.name_of(other.address) == f"elsewhere@{DOMAIN}"


async def test_the_cache_is_bounded_least_recently_used_first(live: Live) -> None:
    names = NameResolver(live.accounts, live.clock, max_entries=2)
    first, second, third = (identity(f"lru-{n}").address for n in range(3))
    await names.name_of(first)
    await names.name_of(second)
    await names.name_of(first)  # used again: `second` is now the oldest
    await names.name_of(third)
    assert len(names) == 2
    assert set(names._cache) == {first, third}
    with pytest.raises(ValueError):
        NameResolver(live.accounts, live.clock, max_entries=0)


async def test_annotate_adds_the_name_beside_real_envelopes(live: Live) -> None:
    names = NameResolver(live.accounts, live.clock)
    ada = await live.register("ada")
    bob = await live.register("bob")
    me = {"X-Flux-Session": bob["session"]}
    await live.post("/mail/send", {"to": bob["address"], "content": "from ada"},
                    {"X-Flux-Session": ada["session"]})  # fmt: skip
    resp = await live.client.get("/mail/inbox", headers=me)
    # as stored (a listing may already carry the name: strip it to start from the envelope)
    listed = [
        {k: v for k, v in m.items() if k != FROM_NAME} for m in (await resp.json())["messages"]
    ]
    stranger = {**listed[0], "from": identity("no-name").address}
    annotated = await names.annotate([listed[0], stranger])
    assert annotated[0][FROM_NAME] == f"ada@{DOMAIN}"
    assert FROM_NAME not in annotated[1]
    # copies: what was given (the stored envelope as read) is untouched
    assert FROM_NAME not in listed[0] and FROM_NAME not in stranger
    assert {k: v for k, v in annotated[0].items() if k != FROM_NAME} == listed[0]
    verify_envelope(dict(listed[0]), now_ms=live.clock.now)


def _mailbox(live: Live) -> Any:
    """The live app's Mailbox (the one every listing route reads through)."""
    for route in live.client.server.app.router.routes():
        owner = getattr(route.handler, "__self__", None)
        if route.resource.canonical == "/mail/inbox" and owner is not None:
            return owner.mailbox
    raise AssertionError("no /mail/inbox route")


async def test_a_mailbox_with_names_adds_from_name_to_every_read(live: Live) -> None:
    mailbox = _mailbox(live)
    if mailbox.names is None:  # until create_app passes one (report: app.py)
        mailbox.names = NameResolver(live.accounts, live.clock)
    ada = await live.register("ada")
    bob = await live.register("bob")
    await live.post("/mail/send", {"to": bob["address"], "content": "hello bob"},
                    {"X-Flux-Session": ada["session"]})  # fmt: skip
    await live.post("/mail/send", {"to": bob["address"], "content": "to myself"},
                    {"X-Flux-Session": bob["session"]})  # fmt: skip
    me = {"X-Flux-Session": bob["session"]}
    for path in ("/mail/inbox", "/mail/peek"):
        answer = await (await live.client.get(path, headers=me)).json()
        by_content = {m["content"]: m.get(FROM_NAME) for m in answer["messages"]}
        assert by_content == {"hello bob": f"ada@{DOMAIN}", "to myself": f"bob@{DOMAIN}"}, path
    listed, _ = await mailbox.list(bob["address"], ListQuery())
    one = listed[0]
    whole = await mailbox.get(bob["address"], MessageRef(one["id"], one["from"]))
    assert whole[FROM_NAME] == one[FROM_NAME]
    # the store still holds the envelope alone
    stored = await mailbox.store.get(bob["address"], one["id"], one["from"])
    assert FROM_NAME not in stored.envelope and FROM_NAME not in stored.to_wire()
