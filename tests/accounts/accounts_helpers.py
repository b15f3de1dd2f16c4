"""Helpers for the account tests: a fake clock and a harness around one live server."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from clocks import FakeClock
from flux.accounts import Accounts, claim_payload
from flux.protocol import Identity
from flux.server import ServerConfig
from flux.server.app import PARTS

DOMAIN = "accounts.test"
PASSWORD = "correct horse battery staple"


def make_identity(label: str) -> Identity:
    return Identity(hashlib.sha256(f"flux-accounts-test:{label}".encode()).digest())


@dataclass
class Account:
    """A registered, logged-in password account as a test sees it."""

    username: str
    address: str
    session: str

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Flux-Session": self.session}


@dataclass
class Harness:
    client: TestClient
    clock: FakeClock
    config: ServerConfig
    store: Any
    accounts_db: Path | None

    @property
    def accounts(self) -> Accounts:
        return self.client.server.app[PARTS]["accounts"]

    async def call(self, method: str, path: str, *, json_body: Any = None, data: bytes | None = None,
                   headers: dict[str, str] | None = None, params: dict[str, Any] | None = None,
                   expect: int | None = 200) -> dict[str, Any]:  # fmt: skip
        """One request; the answer must be JSON (and have status `expect`, unless None)."""
        if data is not None:
            headers = {"Content-Type": "application/json", **(headers or {})}
        resp = await self.client.request(method, path, json=json_body, data=data,
                                         headers=headers, params=params)  # fmt: skip
        text = await resp.text()
        assert resp.content_type == "application/json", (resp.status, text[:200])
        answer = json.loads(text)
        answer["_status"] = resp.status
        if expect is not None:
            assert resp.status == expect, answer
        return answer

    async def register(self, username: str, password: str = PASSWORD, **extra: Any) -> dict[str, Any]:  # fmt: skip
        body = {"username": username, "password": password, **extra}
        return await self.call("POST", "/account/register", json_body=body)

    async def login(self, username: str, password: str = PASSWORD, expect: int = 200) -> dict[str, Any]:  # fmt: skip
        body = {"username": username, "password": password}
        return await self.call("POST", "/account/login", json_body=body, expect=expect)

    async def account(self, username: str) -> Account:
        """Register and log in."""
        await self.register(username)
        answer = await self.login(username)
        return Account(username, answer["address"], answer["session"])

    async def key_login(self, who: Identity) -> str:
        """Register `who` by signing, open a key-proof session; return its token."""
        t = self.clock.now
        reg = {"address": who.address, "pub": who.pub_b64(), "t": t,
               "sig": who.sign(f"flux-register:1:{self.config.domain}:{who.address}:{t}")}  # fmt: skip
        await self.call("POST", "/register", json_body=reg)
        got = await self.call("GET", "/auth/challenge", params={"address": who.address})
        challenge = got["challenge"]
        body = {"address": who.address, "pub": who.pub_b64(), "challenge": challenge,
                "sig": who.sign(f"flux-auth:1:{self.config.domain}:{challenge}")}  # fmt: skip
        return (await self.call("POST", "/auth/session", json_body=body))["token"]

    def claim_body(self, who: Identity, username: str, *, t: int | None = None,
                   domain: str | None = None) -> dict[str, Any]:  # fmt: skip
        t = self.clock.now if t is None else t
        payload = claim_payload(domain or self.config.domain, username, who.address, t)
        return {"username": username, "address": who.address, "pub": who.pub_b64(), "t": t,
                "sig": who.sign(payload)}  # fmt: skip

    async def send(self, sender: Account, expect: int = 200, **body: Any) -> dict[str, Any]:
        return await self.call("POST", "/mail/send", json_body=body, headers=sender.headers,
                               expect=expect)  # fmt: skip

    async def inbox(self, who: Account, **params: Any) -> list[dict[str, Any]]:
        answer = await self.call("GET", "/mail/inbox", headers=who.headers, params=params)
        return answer["messages"]
