"""The two lookups the web client's page makes through its own server (routes/web.py).

`GET /web/keys/{server}`: this server's published keys, or a peer's as already cached,
never fetched on demand (an unknown peer is 404); `GET /web/resolve/{name@domain}`: a name
or address at another domain, resolved by this server with the key checked. Both need a
session (a key session or an account's) and refuse bad names by field, over two real
servers.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest_asyncio

from federation.fed_helpers import local_servers
from flux.client import FluxClient
from flux.protocol import Identity
from flux.protocol.encoding import b64e
from flux.server.app import PARTS
from flux.server.routes.web import WebFiles


@pytest_asyncio.fixture(loop_scope="session")
async def servers(tmp_path: Path):
    async with local_servers(tmp_path, ["a", "b"]) as running:
        yield running


async def get(http: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, dict]:
    async with http.get(url, headers=headers) as r:
        return r.status, await r.json()


async def test_keys_and_resolve(servers) -> None:
    a, b = servers["a"], servers["b"]
    a_name, b_name = a.url.split("//")[1], b.url.split("//")[1]
    me = Identity.generate()
    async with aiohttp.ClientSession() as http, FluxClient(me, a.url) as client:
        await client.register()
        bearer = {"Authorization": f"Bearer {await client.authenticate()}"}
        bob_form = {"username": "bob", "password": "correct horse 5"}
        async with http.post(b.url + "/account/register", json=bob_form) as r:
            bob = await r.json()
        amy_form = {"username": "amy", "password": "correct horse 5"}
        async with http.post(a.url + "/account/register", json=amy_form) as r:
            amy_session = {"X-Flux-Session": (await r.json())["session"]}

        # no session: 401, before anything else is looked at
        assert (await get(http, f"{a.url}/web/keys/{a_name}"))[0] == 401
        assert (await get(http, f"{a.url}/web/resolve/bob@{b_name}"))[0] == 401
        dead = {"X-Flux-Session": "nope"}
        assert (await get(http, f"{a.url}/web/keys/{a_name}", **dead))[0] == 401

        # this server's own keys, for a key session and an account session alike
        for auth in (bearer, amy_session):
            status, body = await get(http, f"{a.url}/web/keys/{a_name}", **auth)
            assert status == 200, body
            own = a.app[PARTS]["key"].signer.identity.public_key
            assert body["server"] == a_name and body["keys"][0]["pub"] == b64e(own)

        # a peer A has not heard from: 404, and nothing was fetched
        status, body = await get(http, f"{a.url}/web/keys/{b_name}", **bearer)
        assert (status, body["code"], body["field"]) == (404, "not_found", "server")
        status, body = await get(http, f"{a.url}/web/keys/Not_A_Server!", **bearer)
        assert (status, body["field"]) == (400, "server")
        status, body = await get(http, f"{a.url}/web/keys/{a_name}?x=1", **bearer)
        assert (status, body["field"]) == (400, "x")

        # after B delivered to A, A holds B's keys and answers them
        sent = await client.send(f"bob@{b_name}", "hello")
        async with FluxClient(Identity.generate(), b.url) as other:
            await other.send(f"{me.address}@{a_name}", "back to you")
        for _ in range(200):
            status, body = await get(http, f"{a.url}/web/keys/{b_name}", **bearer)
            if status == 200:
                break
            await asyncio.sleep(0.05)  # until the delivery is in (bounded by the loop)
        assert status == 200, body
        peer = b.app[PARTS]["key"].signer.identity.public_key
        assert body["keys"][0]["pub"] == b64e(peer)
        assert sent.recipients

        # names and addresses at another domain, the key checked to hash to the address
        status, body = await get(http, f"{a.url}/web/resolve/bob@{b_name}", **bearer)
        assert status == 200, body
        assert (body["address"], body["pub"], body["name"]) == (bob["address"], bob["pub"], "bob")
        status, body = await get(
            http, f"{a.url}/web/resolve/{bob['address']}@{b_name}", **amy_session
        )
        assert status == 200 and body["address"] == bob["address"]
        status, body = await get(http, f"{a.url}/web/resolve/nobody@{b_name}", **bearer)
        assert (status, body["code"], body["field"]) == (404, "not_found", "name")
        for bad in ("bob", me.address, "bad name@x.test"):
            status, body = await get(http, f"{a.url}/web/resolve/{bad}", **bearer)
            assert (status, body["field"]) == (400, "name"), bad
        # a private address the federation may not reach is not asked either
        status, body = await get(http, f"{a.url}/web/resolve/bob@10.1.2.3", **bearer)
        assert (status, body["field"]) == (404, "name")


async def test_web_files_lists_only_what_the_browser_loads(tmp_path: Path) -> None:
    """What `/web/{path}` can ever answer: files of a known type, not hidden, not sources of
    vendored code; names are looked up in that list, never joined into a path."""
    for name in ("index.html", "js/app/main.js", "app.css", "icon.svg", ".eslintrc.json",
                 "js/.cache/x.js", "vendor-src/package.json", "vendor-src/node_modules/a.js",
                 "notes.md", "server.py"):  # fmt: skip
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    files = WebFiles(tmp_path)
    assert sorted(files.names()) == ["app.css", "icon.svg", "index.html", "js/app/main.js"]
    assert files.get("js/app/main.js").content_type == "text/javascript"
    for bad in ("../web.py", "/etc/passwd", "js/app/../../server.py", "notes.md", ".eslintrc.json",
                "vendor-src/package.json", "js/app"):  # fmt: skip
        assert files.get(bad) is None, bad
