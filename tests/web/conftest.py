"""Fixtures for the browser tests: a real headless Chromium driven by Playwright.

Debian's /usr/bin/chromium is launched by path (Playwright's own browser download is never
used). Its absence skips these tests, unless FLUX_TEST_REQUIRE_CHROMIUM=1 (CI) makes it a
failure, as tests/server/test_docs_page.py does.

Event loops: the browser is started once per session, so every test under tests/web runs in
the session's event loop (`pytest_collection_modifyitems` below marks them), and every async
fixture here declares `loop_scope="session"`. A test module's own async fixtures must say
`@pytest_asyncio.fixture(loop_scope="session")` too, or they run in another loop.

What the fixtures give a test:
- `browser`: the session's Chromium; `new_page()` makes a page in a fresh context
  (its own cookies and IndexedDB: one per simulated user) that records, in `PageLog`, every
  request it makes and every console error, page error and CSP refusal;
- `page` / `page_log`: one such page; the test fails (at teardown) on any console error;
- `web_origin`: this checkout's src/flux/server/static/web served at /web/ by a tiny aiohttp
  app on 127.0.0.1 (a secure context, so WebCrypto exists) with the web client's CSP, plus a
  blank page at /blank.html to import the modules from; for tests of js/flux alone;
- `flux_server`: a real FLUX server in-process (memory store) on an ephemeral port;
  `flux_server_sqlite` the same on an SQLite file.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import shutil
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    WebError,
    async_playwright,
)
from playwright.async_api import Error as PlaywrightError

from flux.server import ServerConfig, start_server
from flux.server.routes.web import CSP  # the real app's policy: the test pages run under it
from flux.server.runner import RunningServer

WEB_DIR = Path(__file__).resolve().parents[2] / "src" / "flux" / "server" / "static" / "web"
#: resolves to 127.0.0.1 in the test browser; a page served under it over plain HTTP is not
#: a secure context (no WebCrypto), as a FLUX server reached over HTTP by name would be
INSECURE_HOST = "insecure.flux.test"
BLANK_HTML = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>flux test</title>'
    # an icon given, so no /favicon.ico request (its 404 would be a console error)
    '<link rel="icon" href="data:,"></head><body></body></html>'
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run every test of this directory in the session's loop (the browser lives there).

    Prepended, so it is the closest `asyncio` marker (auto mode appends a bare one)."""
    here = Path(__file__).parent
    for item in items:
        coroutine = inspect.iscoroutinefunction(getattr(item, "obj", None))
        if coroutine and Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.asyncio(loop_scope="session"), append=False)


# --- the browser ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's Chromium; skipped when absent unless FLUX_TEST_REQUIRE_CHROMIUM=1."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("FLUX_TEST_REQUIRE_CHROMIUM") == "1":
            pytest.fail("FLUX_TEST_REQUIRE_CHROMIUM=1 but no chromium on PATH")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


@dataclass
class PageLog:
    """What one page did: every request's URL, method and body, and every error it showed."""

    requests: list[Request] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def sent(self) -> list[str]:
        """Each request as one string (method, URL, headers, body): for "never sent" checks."""
        out = []
        for req in self.requests:
            body = req.post_data_buffer or b""
            heads = "\n".join(f"{k}: {v}" for k, v in req.headers.items())
            out.append(f"{req.method} {req.url}\n{heads}\n\n{body.decode('latin-1')}")
        return out


@dataclass
class FluxBrowser:
    """The session's Chromium; `new_page()` gives a page in a fresh, isolated context."""

    browser: Browser
    contexts: list[BrowserContext] = field(default_factory=list)

    async def new_page(self, log: PageLog | None = None) -> tuple[Page, PageLog]:
        context = await self.browser.new_context()
        self.contexts.append(context)
        log = log if log is not None else PageLog()
        watch(context, log)
        return await context.new_page(), log

    async def close_contexts(self) -> None:
        for context in self.contexts:
            with contextlib.suppress(PlaywrightError):  # already closed by the test
                await context.close()
        self.contexts.clear()


def watch(context: BrowserContext, log: PageLog) -> None:
    """Record the requests and errors of every page of `context` (workers included) into
    `log`; a CSP refusal is a console error."""

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            log.errors.append(f"console: {msg.text} @ {msg.location}")

    def on_request(request: Request) -> None:
        log.requests.append(request)

    def on_error(error: WebError) -> None:
        log.errors.append(f"uncaught: {error.error}")

    context.on("request", on_request)
    context.on("console", on_console)
    context.on("weberror", on_error)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser(chromium_path: str) -> AsyncIterator[FluxBrowser]:
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=chromium_path,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                # the browser's own background traffic off: the page log is the page's only
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                # a name that is not localhost, for pages that are not a secure context
                f"--host-resolver-rules=MAP {INSECURE_HOST} 127.0.0.1",
            ],
        )
        flux_browser = FluxBrowser(chromium)
        try:
            yield flux_browser
        finally:
            await flux_browser.close_contexts()
            await chromium.close()


@pytest_asyncio.fixture(loop_scope="session")
async def page_log() -> PageLog:
    return PageLog()


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser: FluxBrowser, page_log: PageLog) -> AsyncIterator[Page]:
    """A fresh page (its own context); the test fails on any console error or CSP refusal."""
    page, _ = await browser.new_page(page_log)
    yield page
    await page.context.close()
    assert page_log.errors == [], "the page logged errors"


# --- servers ----------------------------------------------------------------------------------


@dataclass
class StaticSite:
    """The web client's files over HTTP on 127.0.0.1, without a FLUX server."""

    url: str  #: e.g. http://127.0.0.1:PORT (no trailing slash)
    port: int

    @property
    def blank(self) -> str:
        """A page with no script, to import modules into."""
        return self.url + "/blank.html"

    def module(self, path: str) -> str:
        """The URL of a file under web/, e.g. `js/flux/index.js`."""
        return f"{self.url}/web/{path}"

    @property
    def insecure_url(self) -> str:
        """The same site under a name that is not localhost: not a secure context."""
        return f"http://{INSECURE_HOST}:{self.port}"

    @property
    def insecure_blank(self) -> str:
        return self.insecure_url + "/blank.html"

    def insecure_module(self, path: str) -> str:
        return f"{self.insecure_url}/web/{path}"


async def _blank(_: web.Request) -> web.Response:
    return web.Response(text=BLANK_HTML, content_type="text/html")


@web.middleware
async def _headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    resp = await handler(request)
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Cache-Control"] = "no-store"
    return resp


@pytest_asyncio.fixture(loop_scope="session")
async def web_origin() -> AsyncIterator[StaticSite]:
    app = web.Application(middlewares=[_headers])
    app.router.add_get("/blank.html", _blank)
    app.router.add_static("/web/", WEB_DIR)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    port = sock.getsockname()[1]
    try:
        yield StaticSite(url=f"http://127.0.0.1:{port}", port=port)
    finally:
        await runner.cleanup()


async def _running(config: ServerConfig) -> AsyncIterator[RunningServer]:
    running = await start_server(config)
    try:
        yield running
    finally:
        await running.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def flux_server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    """A FLUX server on 127.0.0.1 (memory store); `.url` is its origin."""
    config = ServerConfig(domain="web.test", port=0, data_dir=tmp_path, backend="memory")
    async for running in _running(config):
        yield running


@pytest_asyncio.fixture(loop_scope="session")
async def flux_server_sqlite(tmp_path: Path) -> AsyncIterator[RunningServer]:
    """The same on an SQLite file under tmp_path."""
    config = ServerConfig(domain="web.test", port=0, data_dir=tmp_path, backend="sqlite")
    async for running in _running(config):
        yield running
