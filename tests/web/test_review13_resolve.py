"""`GET /web/resolve/{name@domain}` as a way out of the server (review of issue 13).

The page may ask its own server to resolve a name at any domain, so the server must follow
the domain's delegation (`/.well-known/flux`, as the CLI does) and stay bounded against a
hostile domain: a redirect is not followed (its target is never asked), an answer over the
cap is dropped, a delegation into a private address is not taken, and a key that does not
hash to the address is refused. Real servers and a real hostile HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest_asyncio
from aiohttp import web

from federation.fed_helpers import local_servers
from flux.protocol import Identity
from flux.protocol.encoding import b64e
from flux.server.routes.web import RESOLVES_PER_CALLER, WebRoutes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Hostile:
    """A domain on 127.0.0.1 whose answers each test sets; records every path asked."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.name = f"127.0.0.1:{port}"
        self.asked: list[str] = []
        self.delegate_to: str | None = None
        self.resolve_answer: web.StreamResponse | None = None
        #: set: answers to /federation/resolve/slow* wait until it is
        self.release = asyncio.Event()
        self.waiting = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.asked.append(request.path)
        if request.path == "/.well-known/flux":
            if self.delegate_to is None:
                return web.json_response({"ok": False}, status=404)
            return web.json_response({"server": self.delegate_to})
        if request.path.startswith("/federation/resolve/slow"):
            self.waiting += 1
            await self.release.wait()
            self.waiting -= 1
        elif request.path.startswith("/federation/resolve/") and self.resolve_answer is not None:
            return self.resolve_answer
        return web.json_response({"ok": False, "code": "not_found"}, status=404)


@pytest_asyncio.fixture(loop_scope="session")
async def hostile() -> AsyncIterator[Hostile]:
    site = Hostile(_free_port())
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", site.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", site.port).start()
    try:
        yield site
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture(loop_scope="session")
async def servers(tmp_path: Path, hostile: Hostile):
    async with local_servers(tmp_path, ["a", "b"], extra_insecure={hostile.name}) as running:
        yield running


def _web_routes(server) -> WebRoutes:
    """The running app's WebRoutes (the owner of its /web/resolve handler)."""
    for resource in server.app.router.resources():
        if resource.canonical == "/web/resolve/{name}":
            return next(iter(resource)).handler.__self__
    raise AssertionError("no /web/resolve route")


async def _get(http: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, dict]:
    async with http.get(url, headers=headers) as r:
        return r.status, await r.json()


async def test_resolve_follows_delegation_and_stays_bounded(servers, hostile: Hostile) -> None:
    a, b = servers["a"], servers["b"]
    b_name = b.url.split("//")[1]
    async with aiohttp.ClientSession() as http:
        form = {"username": "bob", "password": "correct horse 13"}
        async with http.post(b.url + "/account/register", json=form) as r:
            bob = await r.json()
        form = {"username": "amy", "password": "correct horse 13"}
        async with http.post(a.url + "/account/register", json=form) as r:
            amy = {"X-Flux-Session": (await r.json())["session"]}

        async def resolve(written: str) -> tuple[int, dict]:
            return await _get(http, f"{a.url}/web/resolve/{written}", **amy)

        # the domain delegates to B: the name is resolved there, as the CLI would
        hostile.delegate_to = b_name
        status, body = await resolve(f"bob@{hostile.name}")
        assert status == 200, body
        assert (body["address"], body["pub"], body["domain"]) == (
            bob["address"], bob["pub"], hostile.name,
        )  # fmt: skip
        assert "/.well-known/flux" in hostile.asked
        assert not any(p.startswith("/federation/resolve/") for p in hostile.asked)

        # a delegation to an address the outbound policy refuses is checked before it is
        # asked (this domain is itself on loopback, so client/resolve.py passes it on)
        hostile.delegate_to, hostile.asked[:] = "10.9.8.7", []
        status, body = await resolve(f"bob@{hostile.name}")
        assert (status, body["field"]) == (404, "name"), body
        assert "10.9.8.7" in body["error"], body

        # the domain answers for itself from here on
        hostile.delegate_to = None

        # a redirect is not followed: its target (B, which knows bob) is never asked
        hostile.resolve_answer = web.HTTPFound(f"{b.url}/federation/resolve/bob")
        status, body = await resolve(f"bob@{hostile.name}")
        assert (status, body["code"], body["field"]) == (404, "not_found", "name"), body
        assert "redirect" in body["error"]

        # an answer over the cap is dropped, named, not read to its end
        huge = {"ok": True, "address": bob["address"], "pub": bob["pub"], "pad": "x" * 300_000}
        hostile.resolve_answer = web.json_response(huge)
        status, body = await resolve(f"bob@{hostile.name}")
        assert (status, body["field"]) == (404, "name"), body
        assert "bytes" in body["error"]

        # a key that does not hash to the address it is given for is refused
        other = b64e(Identity.generate().public_key)
        hostile.resolve_answer = web.json_response(
            {"ok": True, "address": bob["address"], "pub": other}
        )
        status, body = await resolve(f"bob@{hostile.name}")
        assert (status, body["field"]) == (404, "name"), body

        # an address asked for, answered with another (genuine) binding: refused
        eve = Identity.generate()
        hostile.resolve_answer = web.json_response(
            {"ok": True, "address": eve.address, "pub": b64e(eve.public_key)}
        )
        status, body = await resolve(f"{bob['address']}@{hostile.name}")
        assert (status, body["field"]) == (400, "name"), body


async def test_resolve_lookups_under_way_are_bounded_per_caller(servers, hostile: Hostile) -> None:
    """A page cannot hold the server's outbound connections with lookups a slow domain
    never answers: past RESOLVES_PER_CALLER under way, the next is 429 at once (not
    queued), another caller still gets its turn, and turns come back as lookups end."""
    a = servers["a"]
    async with aiohttp.ClientSession() as http:
        sessions = []
        for name in ("sol", "tim"):
            form = {"username": name, "password": "correct horse 13"}
            async with http.post(a.url + "/account/register", json=form) as r:
                sessions.append({"X-Flux-Session": (await r.json())["session"]})
        sol, tim = sessions
        url = f"{a.url}/web/resolve/slow@{hostile.name}"

        slow = [asyncio.create_task(_get(http, url, **sol)) for _ in range(RESOLVES_PER_CALLER)]
        # until every one holds its turn (some wait for the pool's connections to the host)
        lookups = _web_routes(a)._lookups
        for _ in range(400):  # bounded by the loop, not timed
            if sum(lookups.values()) == RESOLVES_PER_CALLER and hostile.waiting:
                break
            await asyncio.sleep(0.025)
        assert sum(lookups.values()) == RESOLVES_PER_CALLER
        asked = hostile.waiting
        async with http.get(url, headers=sol) as r:
            body = await r.json()
            assert (r.status, body["code"], body["field"]) == (429, "rate_limited", "name")
            assert int(r.headers["Retry-After"]) > 0
        assert hostile.waiting == asked  # refused before anything was asked
        other = asyncio.create_task(_get(http, url, **tim))

        hostile.release.set()
        for status, body in [*await asyncio.gather(*slow), await other]:
            assert (status, body["field"]) == (404, "name"), body
        assert "did not resolve" not in body["error"].split("did not resolve", 1)[1]
        status, body = await _get(http, url, **sol)  # a turn again
        assert (status, body["field"]) == (404, "name"), body
