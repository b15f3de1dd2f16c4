"""The web client with a password account, in a real Chromium against a real server.

Two people with password accounts on one server, each in their own browser context:
sign-in, compose and send, arrival without a reload, reading (which marks read), reply,
the conversation by `re`, tag, move, mark unread, delete, sent mail with its delivery
state; the page's headers; no console error or CSP refusal anywhere (conftest's `page`
and `new_page` record them). Live updates come over the WebSocket with the account's
session, with catch-up through /mail/changes after a reconnect, and a session ended
elsewhere signs the page out.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest_asyncio
from playwright.async_api import Page, Route, WebSocket, expect

from flux.server.routes.web import CSP
from flux.server.runner import RunningServer
from web.shots import shot

#: a shared 2-core machine can be slow: each expectation waits up to 15 s (not 5)
expect.set_options(timeout=15_000)


async def sign_up(page: Page, url: str, username: str, password: str = "correct horse 1") -> None:
    await page.goto(url + "/")
    await page.fill("#acc-user", username)
    await page.fill("#acc-pass", password)
    await page.click("#acc-register")
    await expect(page.locator("#app")).to_be_visible()
    await expect(page.locator("#me")).to_contain_text(username)


async def compose(page: Page, to: str, subject: str, body: str, *, cc: str = "") -> None:
    await page.keyboard.press("c")
    await expect(page.locator("#compose")).to_be_visible()
    await page.fill("#c-to", to)
    if cc:
        await page.fill("#c-cc", cc)
    await page.fill("#c-subject", subject)
    await page.fill("#c-body", body)
    await page.click("#c-send")
    await expect(page.locator("#compose")).to_be_hidden()


@pytest_asyncio.fixture(loop_scope="session", autouse=True)
async def _close_pages(browser):
    """Each test's pages end with it (a page left open would go on polling a stopped server)."""
    yield
    await browser.close_contexts()


@pytest_asyncio.fixture(loop_scope="session")
async def server(flux_server: RunningServer) -> RunningServer:
    return flux_server


async def test_page_headers(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(server.url + "/") as r:
            assert r.status == 200
            assert r.headers["Content-Security-Policy"] == CSP
            assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
            assert r.headers["Cache-Control"] == "no-cache"
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            etag = r.headers["ETag"]
        async with http.get(server.url + "/", headers={"If-None-Match": etag}) as r:
            assert r.status == 304
        async with http.get(server.url + "/web/js/app/main.js") as r:
            assert r.status == 200 and r.content_type == "text/javascript"
        for bad in ("/web/../app.py", "/web/%2e%2e/web.py", "/web/js/app/", "/web/nothing.js",
                    "/web/..%2fapp.py", "/?x=1"):  # fmt: skip
            async with http.get(server.url + bad) as r:
                assert r.status in (400, 404), bad
                assert (await r.json())["ok"] is False


async def test_two_accounts_mail_each_other(browser, server: RunningServer) -> None:
    alice, alice_log = await browser.new_page()
    bob, bob_log = await browser.new_page()
    await alice.set_viewport_size({"width": 1200, "height": 800})
    await bob.set_viewport_size({"width": 1200, "height": 800})
    await sign_up(alice, server.url, "alice")
    await sign_up(bob, server.url, "bob")

    # alice writes to bob by name; encrypted by default (bob's key is hosted here), and
    # bob's server, which holds his key, decrypts it for his session
    await alice.keyboard.press("c")
    await alice.fill("#c-to", "bob@web.test")
    await expect(alice.locator("#c-enc-state")).to_contain_text("Encrypted end to end")
    await alice.fill("#c-subject", "Lunch?")
    await alice.fill("#c-body", "Shall we have lunch on Friday?")
    await shot(alice, "compose")
    await alice.click("#c-send")
    await expect(alice.locator("#compose")).to_be_hidden()
    await expect(alice.locator("#toast")).to_contain_text("Sent")

    # bob sees it arrive without reloading (pushed over the WebSocket)
    row = bob.locator("#list li.row", has_text="Lunch?")
    await expect(row).to_be_visible(timeout=15_000)
    await expect(row).to_have_class(lambda_cls := __import__("re").compile(r"\bunread\b"))
    await expect(row).to_contain_text("alice@web.test")
    await expect(bob.locator(".box.current .count")).to_have_text("1")
    await row.click()
    await expect(bob.locator("#reader .content")).to_have_text("Shall we have lunch on Friday?")
    await expect(bob.locator("#reader .trust")).to_contain_text(
        "Signature verified in this browser"
    )
    await expect(bob.locator("#reader .trust")).to_contain_text("Route verified")
    await expect(row).not_to_have_class(lambda_cls)
    await shot(bob, "message")

    # bob replies (r): the reply goes to alice, threaded by re
    await bob.keyboard.press("r")
    await expect(bob.locator("#c-to")).to_have_value("alice@web.test")
    await expect(bob.locator("#c-subject")).to_have_value("Re: Lunch?")
    await bob.locator("#c-body").press("Home")
    await bob.locator("#c-body").type("Yes, noon. ")
    await bob.click("#c-send")
    await expect(bob.locator("#compose")).to_be_hidden()

    reply = alice.locator("#list li.row", has_text="Re: Lunch?")
    await expect(reply).to_be_visible(timeout=15_000)
    await reply.click()
    await expect(alice.locator("#reader .thread")).to_contain_text("Conversation (2 messages)")
    await expect(alice.locator("#reader .thread")).to_contain_text("Shall we have lunch")

    # tag, move, mark unread, delete (bob's copy)
    await bob.fill("#tag-input", "food")
    await bob.click("#tag-form button")
    await expect(bob.locator("#list li.row", has_text="Lunch?")).to_contain_text("food")
    await expect(bob.locator("#boxes")).to_contain_text("food")
    await bob.click("[data-action=unread]")
    await expect(bob.locator("#list li.row", has_text="Lunch?")).to_have_class(lambda_cls)
    await bob.locator("#list li.row", has_text="Lunch?").click()
    await bob.keyboard.press("e")  # archive
    await expect(bob.locator("#list li.row", has_text="Lunch?")).to_have_count(0)
    await bob.click(".box[data-box=archive]")
    archived = bob.locator("#list li.row", has_text="Lunch?")
    await expect(archived).to_be_visible()
    await archived.click()
    await bob.keyboard.press("#")
    await expect(bob.locator("#toast")).to_contain_text("Deleted")
    await expect(bob.locator("#list li.row", has_text="Lunch?")).to_have_count(0)

    # sent mail with its delivery state
    await alice.click(".box[data-box=sent]")
    sent = alice.locator("#list li.row", has_text="Lunch?")
    await expect(sent).to_contain_text("1 stored")
    await sent.click()
    await expect(alice.locator("#reader table.delivery")).to_contain_text("stored")

    # search over the loaded mail
    await alice.click(".box[data-box=inbox]")
    await alice.keyboard.press("/")
    await alice.keyboard.type("noon")
    await expect(alice.locator("#list li.row")).to_have_count(1)
    await alice.fill("#search", "nothing like this")
    await expect(alice.locator("#list li.empty")).to_be_visible()

    # a reload keeps the account's session, and the checks still run in the browser
    await alice.reload()
    await expect(alice.locator("#app")).to_be_visible()
    await alice.locator("#list li.row", has_text="Re: Lunch?").click()
    await expect(alice.locator("#reader .trust")).to_contain_text("verified in this browser")

    assert alice_log.errors == [] and bob_log.errors == []


async def test_narrow_screen_and_dark(browser, server: RunningServer) -> None:
    page, log = await browser.new_page()
    await page.set_viewport_size({"width": 360, "height": 740})
    await page.emulate_media(color_scheme="dark")
    await sign_up(page, server.url, "carol")
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360
    await shot(page, "narrow-dark")
    assert log.errors == []


def record_frames(page: Page) -> list[dict[str, Any]]:
    """Every JSON frame the page's WebSockets receive, in order (hooked before it opens one)."""
    frames: list[dict[str, Any]] = []

    def on_socket(ws: WebSocket) -> None:
        def on_frame(payload: str | bytes) -> None:
            if isinstance(payload, str):
                frames.append(json.loads(payload))

        ws.on("framereceived", on_frame)

    page.on("websocket", on_socket)
    return frames


def gets(log: Any, path: str, since: int = 0) -> list[str]:
    """The URLs of the GET requests to exactly `path` the page made after the first `since`."""
    return [r.url for r in log.requests[since:] if r.method == "GET" and urlsplit(r.url).path == path]  # fmt: skip


async def test_account_mode_is_live_over_the_websocket(browser, server: RunningServer) -> None:
    page, log = await browser.new_page()
    frames = record_frames(page)
    await sign_up(page, server.url, "erin")
    await expect(page.locator("#live")).to_have_text("live")
    assert [f["action"] for f in frames[:1]] == ["authed"]
    session = await page.evaluate("fluxApp.state.api.session")
    mark = len(log.requests)

    async with aiohttp.ClientSession() as http:
        async with http.post(server.url + "/account/register",
                             json={"username": "dave", "password": "correct horse 2"}) as r:  # fmt: skip
            dave = {"X-Flux-Session": (await r.json())["session"]}

        async def send(subject: str) -> str:
            body = {"to": "erin", "subject": subject, "content": f"{subject}, from dave"}
            async with http.post(server.url + "/mail/send", json=body, headers=dave) as r:
                assert r.status == 200, await r.text()
                return (await r.json())["id"]

        # an arrival appears because the socket pushed it: no listing was asked for
        first = await send("Pushed to you")
        row = page.locator("#list li.row", has_text="Pushed to you")
        await expect(row).to_be_visible()
        pushed = [f for f in frames if f.get("action") == "message"]
        assert [f["message"]["id"] for f in pushed] == [first]
        assert gets(log, "/mail/inbox", mark) == []
        assert await page.evaluate("fluxApp.state.live.fallback") is None

        # away and back: what changed meanwhile comes through /mail/changes
        await page.evaluate("fluxApp.pause()")
        await expect(page.locator("#live")).to_have_text("paused")
        mine = {"X-Flux-Session": session}
        tag = {"id": first, "add": ["later"]}
        async with http.post(server.url + "/mail/tag", json=tag, headers=mine) as r:
            assert r.status == 200, await r.text()
        await send("While you were away")
        await page.wait_for_timeout(500)
        away = page.locator("#list li.row", has_text="While you were away")
        await expect(away).to_have_count(0)
        mark = len(log.requests)
        await page.evaluate("fluxApp.resume()")
        await expect(away).to_be_visible()
        await expect(row).to_contain_text("later")
        assert gets(log, "/mail/changes", mark), "no catch-up through /mail/changes"
        assert gets(log, "/mail/inbox", mark) == []

        # a logout elsewhere (another tab, another device) ends this page's socket
        async with http.post(server.url + "/account/logout", headers=mine) as r:
            assert r.status == 200
        await expect(page.locator("#live")).to_contain_text("signed out by the server")
        ended = [f for f in frames if f.get("ok") is False]
        assert [(f["action"], f["code"]) for f in ended] == [("auth", "unauthorized")]
    assert log.errors == []


#: a name only the page's routed HTTP requests reach: Playwright routes no WebSocket there,
#: so the page's socket cannot open (as behind a proxy that refuses WebSockets)
NO_SOCKET_HOST = "http://nosocket.flux.example"


async def test_account_mode_polls_only_while_the_socket_cannot_open(
    browser, server: RunningServer
) -> None:
    page, log = await browser.new_page()

    async def through(route: Route) -> None:
        url = route.request.url.replace(NO_SOCKET_HOST, server.url)
        await route.fulfill(response=await route.fetch(url=url))

    await page.route(NO_SOCKET_HOST + "/**", through)
    await page.goto(NO_SOCKET_HOST + "/")
    await page.fill("#acc-user", "fallback")
    await page.fill("#acc-pass", "correct horse 4")
    await page.click("#acc-register")
    await expect(page.locator("#app")).to_be_visible()
    await expect(page.locator("#live")).to_contain_text("checking every few seconds")
    async with aiohttp.ClientSession() as http:
        async with http.post(server.url + "/account/register",
                             json={"username": "frank", "password": "correct horse 5"}) as r:  # fmt: skip
            frank = {"X-Flux-Session": (await r.json())["session"]}
        body = {"to": "fallback", "subject": "Found by asking", "content": "no socket here"}
        async with http.post(server.url + "/mail/send", json=body, headers=frank) as r:
            assert r.status == 200, await r.text()
    await expect(page.locator("#list li.row", has_text="Found by asking")).to_be_visible()
    assert gets(log, "/mail/inbox"), "the fallback lists the mailbox"
    # the only errors: Chromium's console line for each socket that could not open
    refused = f"WebSocket connection to '{NO_SOCKET_HOST.replace('http', 'ws')}/ws' failed"
    assert [e for e in log.errors if refused not in e] == []
    assert any(refused in e for e in log.errors)
    # the page keeps polling: a poll still being fetched when the browser context closes
    # cannot be fulfilled any more, and its error surfaced in the next test's context
    # ("Route.fulfill: Fetch response has been disposed", seen in CI)
    await page.unroute_all(behavior="ignoreErrors")
