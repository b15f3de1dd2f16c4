"""Fixtures for the server tests: a fixed clock, identities, signed messages, a live app.

Servers run for real on 127.0.0.1 (aiohttp's TestServer on an ephemeral port) over
MemoryStore (or SQLiteStore on tmp_path); clients are real HTTP and WebSocket clients.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from client.client_helpers import server_config
from clocks import NOW, FakeClock
from flux.protocol import Identity, ServerSigner, compose
from flux.server import ServerConfig, create_app
from flux.server.keys import ServerKey
from flux.server.runner import start_server
from flux.store import MemoryStore, SQLiteStore

DOMAIN = "flux.test"


def make_identity(label: str) -> Identity:
    return Identity(hashlib.sha256(f"flux-server-test:{label}".encode()).digest())


@dataclass
class Harness:
    """One running server and what a test needs to talk to it."""

    client: TestClient
    store: Any
    clock: FakeClock
    config: ServerConfig
    key: ServerKey
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def app(self) -> Any:
        return self.client.server.app

    def url(self, path: str) -> str:
        return str(self.client.make_url(path))

    # -- messages -------------------------------------------------------------------------

    def message(self, sender: Identity, to: Identity | str, content: str = "Hello there, friend",
                **kwargs: Any) -> dict[str, Any]:  # fmt: skip
        target = to if isinstance(to, str) else to.address
        kwargs.setdefault("now_ms", self.clock.now)
        return compose(sender, target, content, **kwargs).primary

    async def send(self, msg: Any, expect: int | None = 200) -> dict[str, Any]:
        resp = await self.client.post("/send", json=msg)
        body = await resp.json()
        if expect is not None:
            assert resp.status == expect, body
        return body

    # -- identities ---------------------------------------------------------------------

    def register_body(self, who: Identity, *, t: int | None = None, domain: str | None = None,
                      invite: str | None = None) -> dict[str, Any]:  # fmt: skip
        t = self.clock.now if t is None else t
        payload = f"flux-register:1:{domain or self.config.domain}:{who.address}:{t}"
        body = {"address": who.address, "pub": who.pub_b64(), "t": t, "sig": who.sign(payload)}
        if invite is not None:
            body["invite"] = invite
        return body

    async def register(self, *who: Identity) -> None:
        for ident in who:
            resp = await self.client.post("/register", json=self.register_body(ident))
            assert resp.status == 200, await resp.text()

    async def login(self, who: Identity, *, domain: str | None = None) -> str:
        resp = await self.client.get("/auth/challenge", params={"address": who.address})
        challenge = (await resp.json())["challenge"]
        payload = f"flux-auth:1:{domain or self.config.domain}:{challenge}"
        body = {"address": who.address, "pub": who.pub_b64(), "challenge": challenge,
                "sig": who.sign(payload)}  # fmt: skip
        resp = await self.client.post("/auth/session", json=body)
        answer = await resp.json()
        assert resp.status == 200, answer
        self.tokens[who.address] = answer["token"]
        return answer["token"]

    def auth(self, who: Identity | str) -> dict[str, str]:
        address = who if isinstance(who, str) else who.address
        return {"Authorization": f"Bearer {self.tokens[address]}"}

    async def get(self, path: str, who: Identity | None = None, expect: int = 200,
                  **params: Any) -> dict[str, Any]:  # fmt: skip
        headers = self.auth(who) if who is not None else {}
        resp = await self.client.get(path, headers=headers, params=params)
        body = await resp.json()
        assert resp.status == expect, body
        return body

    async def post(self, path: str, body: Any, who: Identity | None = None,
                   expect: int = 200) -> dict[str, Any]:  # fmt: skip
        headers = self.auth(who) if who is not None else {}
        resp = await self.client.post(path, json=body, headers=headers)
        answer = await resp.json()
        assert resp.status == expect, answer
        return answer

    async def ws(
        self, who: Identity | None = None, **frame: Any
    ) -> aiohttp.ClientWebSocketResponse:
        """An authenticated WebSocket (the `authed` frame is read and kept in `.authed`)."""
        ws = await self.client.ws_connect("/ws")
        if who is not None:
            await ws.send_json({"action": "auth", "token": self.tokens[who.address], **frame})
            authed = await ws.receive_json(timeout=5)
            assert authed.get("action") == "authed", authed
            ws.authed = authed  # type: ignore[attr-defined]
        return ws


ServerFactory = Callable[..., Awaitable[Harness]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server_key() -> ServerKey:
    return ServerKey(ServerSigner(DOMAIN, make_identity("server-key")), valid_from=NOW - 60_000)


@pytest.fixture
async def make_server(
    clock: FakeClock, server_key: ServerKey, tmp_path: Any
) -> AsyncIterator[ServerFactory]:
    """Start servers: `await make_server(open_mode=True, backend="sqlite", ...)`."""
    started: list[tuple[TestClient, Any]] = []

    async def start(*, sqlite: bool = False, store: Any = None, key: ServerKey | None = None,
                    **overrides: Any) -> Harness:  # fmt: skip
        overrides.setdefault("domain", DOMAIN)
        overrides.setdefault("data_dir", tmp_path)
        overrides.setdefault("port", 0)
        config = ServerConfig.from_env({}, **overrides)
        own_store = store is None
        if store is None:
            n = len(started)
            store = SQLiteStore(tmp_path / f"s{n}.db", clock=clock) if sqlite else MemoryStore(clock=clock)  # fmt: skip
            await store.open()
        use_key = key or server_key
        if use_key.signer.name != config.domain:
            use_key = ServerKey(ServerSigner(config.domain, use_key.signer.identity), use_key.valid_from)  # fmt: skip
        app = create_app(config, store, use_key, clock)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        started.append((client, store if own_store else None))
        return Harness(client, store, clock, config, use_key)

    yield start
    for client, store in reversed(started):
        await client.close()
        if store is not None:
            await store.close()


@pytest.fixture
async def srv(make_server: ServerFactory) -> Harness:
    """A hosted-mode server with open registration."""
    return await make_server()


@pytest.fixture
def alice() -> Identity:
    return make_identity("alice")


@pytest.fixture
def bob() -> Identity:
    return make_identity("bob")


@pytest.fixture
def carol() -> Identity:
    return make_identity("carol")


@pytest.fixture
def mallory() -> Identity:
    return make_identity("mallory")


@pytest.fixture
async def pair(srv: Harness, alice: Identity, bob: Identity) -> Harness:
    """`srv` with alice and bob registered and logged in."""
    await srv.register(alice, bob)
    await srv.login(alice)
    await srv.login(bob)
    return srv


@pytest.fixture
async def running(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """A real `flux server` on 127.0.0.1 (an ephemeral port), its ServerConfig fields given
    by indirect parametrization: `@pytest.mark.parametrize("running", [{...}],
    indirect=True)`. (test_connections.py has a `running` of its own.)"""
    server = await start_server(server_config(tmp_path / "server", **request.param))
    yield server
    await server.stop()
