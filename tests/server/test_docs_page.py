"""The API docs page at /docs: it loads over a real server from this server's files only.

What is checked: the page and every file it names load with their content types, caching
headers and a Content-Security-Policy that forbids inline script and other origins; no file
FLUX ships for the page names an outside URL (outside comments); every route of the app is in
/openapi.json with its parameters, request body, responses and errors; and, where Chromium
is installed, a real browser renders every operation of the document while requesting
nothing but this server (FLUX_TEST_REQUIRE_CHROMIUM=1 turns its absence into a failure).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from flux.server import ServerConfig, start_server
from flux.server.runner import RunningServer
from flux.server.static.docs import ASSETS, HERE, swagger_ui_dir


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    config = ServerConfig(domain="docs.test", port=0, data_dir=tmp_path, backend="memory")
    running = await start_server(config)
    yield running
    await running.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Links(HTMLParser):
    """The scripts and stylesheets a page loads, and whether any script is inline."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.inline_scripts = 0
        self.handlers: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        self.handlers += [k for k in named if k.startswith("on")]
        if tag == "script":
            if named.get("src"):
                self.loads.append(str(named["src"]))
            else:
                self.inline_scripts += 1
        elif tag == "link" and named.get("href") and "stylesheet" in (named.get("rel") or ""):
            self.loads.append(str(named["href"]))


def assert_docs_headers(resp: aiohttp.ClientResponse) -> None:
    csp = resp.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'self'"
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "http" not in csp
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["ETag"].startswith('"') and resp.headers["Cache-Control"]


async def test_page_and_every_file_it_loads(server: RunningServer, http: aiohttp.ClientSession) -> None:  # fmt: skip
    async with http.get(server.url + "/docs") as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "text/html" and resp.charset == "utf-8"
        assert resp.headers["Cache-Control"] == "no-cache"
        assert_docs_headers(resp)
        page = Links()
        page.feed(await resp.text())
    assert page.inline_scripts == 0 and page.handlers == []  # the CSP would block them
    types = {"js": "text/javascript", "css": "text/css"}
    assert sorted(page.loads) == sorted(
        ["docs/assets/swagger-ui.css", "docs/assets/flux-docs.css",
         "docs/assets/swagger-ui-bundle.js", "docs/assets/flux-docs.js"])  # fmt: skip
    for link in page.loads:
        # relative to /docs, as a browser resolves it
        async with http.get(f"{server.url}/{link}") as resp:
            assert resp.status == 200, link
            assert resp.content_type == types[link.rsplit(".", 1)[1]], link
            assert resp.headers["Cache-Control"] == "public, max-age=3600"
            assert_docs_headers(resp)
            assert len(await resp.read()) > 100
    async with http.get(server.url + "/docs/assets/swagger-ui-LICENSE.txt") as resp:
        assert resp.status == 200 and "Apache License" in await resp.text()


async def test_etag_revalidation_and_gzip(server: RunningServer, http: aiohttp.ClientSession) -> None:  # fmt: skip
    url = server.url + "/docs/assets/swagger-ui-bundle.js"
    async with http.get(url, headers={"Accept-Encoding": "identity"}) as resp:
        assert "Content-Encoding" not in resp.headers
        plain, etag = await resp.read(), resp.headers["ETag"]
    async with http.get(url, headers={"Accept-Encoding": "gzip"}, auto_decompress=False) as resp:
        assert resp.headers["Content-Encoding"] == "gzip"
        assert "Accept-Encoding" in resp.headers["Vary"]
        packed = await resp.read()
    assert len(packed) < len(plain) // 2 and gzip.decompress(packed) == plain
    async with http.get(url, headers={"If-None-Match": etag}) as resp:
        assert resp.status == 304 and await resp.read() == b""
        assert resp.headers["ETag"] == etag
    async with http.get(url, headers={"If-None-Match": '"something-else"'}) as resp:
        assert resp.status == 200


@pytest.mark.parametrize("name", ["nope.js", "docs.py", "..%2Fdocs.py", "swagger-editor.js",
                                  "index.html", "LICENSE"])  # fmt: skip
async def test_only_the_listed_files_are_served(
    server: RunningServer, http: aiohttp.ClientSession, name: str
) -> None:
    async with http.get(f"{server.url}/docs/assets/{name}") as resp:
        assert resp.status == 404
        body = await resp.json()
    assert body["code"] == "not_found" and body["field"] == "name"


@pytest.mark.parametrize("path", ["/docs", "/docs/assets/flux-docs.js"])
async def test_a_query_parameter_is_refused_by_name(
    server: RunningServer, http: aiohttp.ClientSession, path: str
) -> None:
    async with http.get(server.url + path, params={"theme": "dark"}) as resp:
        assert resp.status == 400
        body = await resp.json()
    assert body["field"] == "theme"


# --- no outside URL in what FLUX ships for the page -------------------------------------

#: comments, where a licence or a "why" may name a URL; a line comment starts a line or
#: follows whitespace, so "https://" inside a string is not taken for one
COMMENTS = {
    ".html": [r"(?s)<!--.*?-->"],
    ".js": [r"(?s)/\*.*?\*/", r"(?m)(^|\s)//.*$"],
    ".css": [r"(?s)/\*.*?\*/"],
}
URL = re.compile(r"\b[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def without_comments(path: Path) -> str:
    text = path.read_text()
    for pattern in COMMENTS[path.suffix]:
        text = re.sub(pattern, "", text)
    return text


def test_flux_files_name_no_outside_url() -> None:
    shipped = sorted(p for p in HERE.iterdir() if p.suffix in COMMENTS)
    assert {p.name for p in shipped} == {"index.html", "flux-docs.js", "flux-docs.css"}
    for path in shipped:
        assert not URL.findall(without_comments(path)), path


def test_swagger_ui_stylesheet_loads_nothing_from_elsewhere() -> None:
    """swagger-ui.css: every url() is inline data (its icons), no @import. The bundle's
    script is held to the same by the page's CSP, and by the browser test below."""
    css = (swagger_ui_dir() / "swagger-ui.css").read_text()
    urls = re.findall(r"url\(\s*['\"]?([^'\")\s]*)", css)
    assert urls and all(u.startswith("data:") for u in urls), urls
    assert "@import" not in css


def test_every_asset_is_installed() -> None:
    dirs = {"flux": HERE, "swagger-ui": swagger_ui_dir()}
    for source, filename, _ in ASSETS.values():
        assert (dirs[source] / filename).is_file(), (source, filename)


# --- the OpenAPI document describes every route ----------------------------------------

NO_BODY = {("post", "/auth/logout"), ("post", "/account/logout")}  # the token is the request


async def test_every_route_is_documented(server: RunningServer, http: aiohttp.ClientSession) -> None:  # fmt: skip
    async with http.get(server.url + "/openapi.json") as resp:
        spec = await resp.json()
    routes = {
        (r.method.lower(), r.resource.canonical)
        for r in server.app.router.routes()
        if r.method != "HEAD" and r.resource is not None
    }
    described = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    assert routes - described == {("get", "/ws")}  # WebSockets: docs/API.md
    assert described <= routes
    for path, ops in spec["paths"].items():
        template = set(re.findall(r"\{(\w+)\}", path))
        for method, op in ops.items():
            where = f"{method.upper()} {path}"
            assert op["summary"], where
            params = op.get("parameters", [])
            assert {p["name"] for p in params if p["in"] == "path"} == template, where
            assert all("schema" in p for p in params), where
            if method == "post" and (method, path) not in NO_BODY:
                assert op["requestBody"]["content"]["application/json"]["schema"], where
            assert_responses(spec, op, where)


def assert_responses(spec: dict[str, Any], op: dict[str, Any], where: str) -> None:
    responses = op["responses"]
    assert "200" in responses and "400" in responses, where
    assert all(c["schema"] for c in responses["200"]["content"].values()), where
    if "security" in op:
        assert "401" in responses, where
    for code, answer in responses.items():
        assert answer["description"], (where, code)
        if code[0] in "45":
            ref = json.dumps(answer["content"]["application/json"]["schema"])
            assert re.search(r"#/components/schemas/(Error|Ambiguous)", ref), (where, code)
    for name in re.findall(r"#/components/schemas/(\w+)", json.dumps(op)):
        assert name in spec["components"]["schemas"], (where, name)


# --- a real browser ------------------------------------------------------------------------


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("FLUX_TEST_REQUIRE_CHROMIUM") == "1":
            pytest.fail("FLUX_TEST_REQUIRE_CHROMIUM=1 but no chromium on PATH")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def page_requests(netlog: Path) -> list[str]:
    """The URLs the page asked for: requests whose network isolation key is the page's
    site (the browser's own background requests have none or another)."""
    log = json.loads(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    jobs = [e.get("params", {}) for e in log["events"] if e["type"] == start]
    return [p["url"] for p in jobs if "127.0.0.1" in p.get("network_isolation_key", "")]


async def test_chromium_renders_every_operation_from_this_server_only(
    server: RunningServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    browser = chromium()
    async with http.get(server.url + "/openapi.json") as resp:
        spec = await resp.json()
    netlog = tmp_path / "netlog.json"
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        # the browser's own background traffic: off, and nothing but loopback resolves
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        # virtual time: the page's scripts and its fetch of /openapi.json run to completion
        "--virtual-time-budget=15000",
        # the page's console on stderr: a CSP refusal would show there
        "--enable-logging=stderr", "--v=0",
        f"--log-net-log={netlog}", "--dump-dom", server.url + "/docs",
    ]  # fmt: skip
    # the server runs in this loop, so the browser runs as an asyncio subprocess
    proc = await asyncio.create_subprocess_exec(
        browser, *flags, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    dom, log = await asyncio.wait_for(proc.communicate(), timeout=180)
    console = [line for line in log.decode(errors="replace").splitlines() if ":CONSOLE" in line]
    assert console == []  # no CSP refusal, no script error
    rendered = set(re.findall(r'class="opblock-summary-path" data-path="([^"]*)"', dom.decode()))
    assert rendered == set(spec["paths"])
    requested = page_requests(netlog)
    assert server.url + "/openapi.json" in requested
    outside = [u for u in requested if not u.startswith(server.url + "/")]
    assert outside == []
