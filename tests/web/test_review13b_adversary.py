"""A hostile sender against the web client (second review of issue 13), in a real Chromium.

What a stranger controls reaches the page: the subject, the content, the tags it signs
into the envelope (they become the recipient's tags, and so mailboxes in the page), and
any `_`-field it adds outside its signature, hoping the server passes a claimed
`_from_name`, `_inbox` or `_status` through. Each must stay text: no element made from
it, nothing fetched because of it (a canary HTTP server on 127.0.0.1 counts every request
made to it, and every request of the page must go to the page's own origin), no bidi or
control character left to reorder what is shown, no long word widening the page, and no
claimed name shown or used as the address of a reply. Then a relay that sealed a forged
body is blamed by name, and the page's own answers carry the strict CSP.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Page, expect

from federation.fed_helpers import deliver, local_servers, signer
from flux.protocol import Identity
from flux.protocol.chain import append_hop
from flux.protocol.envelope import body_hash
from flux.protocol.outgoing import compose
from flux.server.app import PARTS
from flux.server.routes.web import CSP
from flux.store.base import Incoming
from web.boxes import settled_box
from web.shots import shot

#: a shared 2-core machine can be slow: each expectation waits up to 15 s (not 5)
expect.set_options(timeout=15_000)

PASSWORD = "correct horse 13b"
#: characters that reorder or hide text, and controls: none may reach the page as itself
DISGUISING = re.compile(
    "[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]"
)


@pytest_asyncio.fixture(loop_scope="session", autouse=True)
async def _close_pages(browser):
    yield
    await browser.close_contexts()


@pytest_asyncio.fixture(loop_scope="session")
async def servers(tmp_path: Path):
    async with local_servers(tmp_path, ["a", "b"]) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session")
async def canary() -> AsyncIterator[tuple[str, list[str]]]:
    """An HTTP server on 127.0.0.1 that records every request made to it: (its URL, hits)."""
    hits: list[str] = []

    async def record(request: web.Request) -> web.Response:
        hits.append(f"{request.method} {request.path_qs}")
        return web.Response(text="canary")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", hits
    finally:
        await runner.cleanup()


def host(server) -> str:
    return server.url.split("//")[1]


def row(page: Page, text: str):
    return page.locator("#list li.row", has_text=text)


async def sign_up(page: Page, url: str, username: str) -> str:
    await page.goto(url + "/")
    await page.fill("#acc-user", username)
    await page.fill("#acc-pass", PASSWORD)
    await page.click("#acc-register")
    await expect(page.locator("#app")).to_be_visible()
    return await page.evaluate("fluxApp.state.api.address")


async def post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.post(url, json=body) as r:
        return r.status, await r.json()


def hostile_envelope(canary: str, to: str) -> dict[str, Any]:
    """A stranger's signed message full of markup, bidi, controls, a very long word and
    links to the canary, with claimed retrieval fields added after signing."""
    now = int(time.time() * 1000)
    long_word = os.urandom(3000).hex()  # one word of 6,000 characters (not repetitive: spam)
    out = compose(
        Identity.generate(), to,
        f"<script>fetch('{canary}/script')</script><img src='{canary}/img'>"
        f"<a href='{canary}/a'>click</a> {canary}/plain-link\n"
        f"\u202eevil\u202c \u0007bell \u001b[31mred \u200bzero\n{long_word}\n",
        subject=f"<img src={canary}/subject>Pay\u202egnp.exe\u0007 {os.urandom(150).hex()}",
        tags=["<b>bold</b>", "\u202egnp.exe", f"{canary}/tag"],
        now_ms=now,
    )  # fmt: skip
    return {
        **out.primary,
        # outside the signature: a server that passed these on would lie for the sender
        "_from_name": "ceo@bank.example",
        "_inbox": "trusted",
        "_status": "read",
        "_tags": ["verified"],
    }


async def test_hostile_content_stays_inert_and_fetches_nothing(browser, servers, canary) -> None:
    a = servers["a"]
    canary_url, hits = canary
    page, log = await browser.new_page()
    await page.set_viewport_size({"width": 1100, "height": 760})
    dialogs: list[str] = []
    page.on("dialog", lambda d: dialogs.append(d.message))
    me = await sign_up(page, a.url, "target")

    status, answer = await post(a.url + "/send", hostile_envelope(canary_url, me))
    assert status == 200, answer

    hostile = row(page, "Pay")
    await expect(hostile).to_be_visible(timeout=20_000)
    # the claims outside the signature were dropped: unread, in the inbox, no name
    await expect(hostile).to_have_class(re.compile(r"\bunread\b"))
    await expect(hostile.locator(".from")).not_to_contain_text("ceo@")
    await expect(page.locator(".box[data-box='box:trusted']")).to_have_count(0)
    await hostile.click()
    reader = page.locator("#reader")
    await expect(reader.locator(".msg-subject")).to_contain_text("[U+202E]gnp.exe[U+0007]")
    await expect(reader.locator(".content")).to_contain_text(
        f"<script>fetch('{canary_url}/script')"
    )
    await expect(reader.locator(".content")).to_contain_text("[U+202E]evil[U+202C]")
    await expect(reader.locator(".trust .check", has_text="Look")).to_contain_text(
        "can disguise text"
    )
    await expect(reader).not_to_contain_text("ceo@bank.example")
    # the sender's tags are the recipient's now, and so mailboxes: text, marked
    await expect(page.locator("#boxes")).to_contain_text("[U+202E]gnp.exe")
    await expect(page.locator("#boxes")).to_contain_text("<b>bold</b>")
    await expect(reader.locator(".headers .tags .chip")).to_have_count(3)
    await expect(page.locator("#boxes")).not_to_contain_text("verified")
    await shot(page, "r13b-hostile")
    # a 4 KiB subject does not push the checks out of view
    checks = await settled_box(reader.locator(".trust"))
    assert checks is not None and checks["y"] < 760, checks

    # nothing made from the text: no element, no link, no image, no script
    made = await page.evaluate(
        "document.querySelectorAll('#reader script, #reader img, #reader a, #reader b,"
        " #list script, #list img, #list a, #list b, #boxes b, #boxes img').length"
    )
    assert made == 0
    # no disguising character anywhere in the page's text
    shown = await page.evaluate("document.body.innerText")
    assert not DISGUISING.search(shown), repr(DISGUISING.findall(shown)[:5])
    # the very long word and subject wrap: neither the page nor the reader grows sideways
    wide = await page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth,"
        " document.getElementById('reader').scrollWidth,"
        " document.getElementById('reader').clientWidth]"
    )
    assert wide[0] <= wide[1] and wide[2] <= wide[3], wide

    # a reply goes to the real sender, never to the name it claimed
    await page.keyboard.press("r")
    to = await page.locator("#c-to").input_value()
    assert "ceo@" not in to and to.startswith("fx1"), to
    await page.click("#c-cancel")

    # the same at 360 px
    await page.set_viewport_size({"width": 360, "height": 720})
    await shot(page, "r13b-hostile-narrow")
    narrow = await page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
    assert narrow[0] <= narrow[1], narrow

    # nothing was fetched because of the content, and every request went to this server
    assert hits == [], hits
    assert dialogs == []
    origin = a.url
    ws_origin = origin.replace("http://", "ws://")
    others = [
        r.url
        for r in log.requests
        if not (r.url.startswith(origin + "/") or r.url.startswith(ws_origin + "/"))
        and not r.url.startswith(("data:", "blob:"))
    ]
    assert others == [], others
    # The reply asked this server whether it hosts the sender (homes.js hostedHere): its
    # 404 is the answer "no", which Chromium logs as a failed load when it arrives before
    # this look (it did in CI); anything else is a fault.
    asked = f"/federation/resolve/{to.split('@')[0].strip()}'"
    faults = [e for e in log.errors if not ("404" in e and asked in e)]
    assert faults == [], log.errors


async def test_a_long_cc_list_keeps_the_checks_in_view(browser, servers) -> None:
    """99 Cc recipients (the most a message may name) scroll in their own box: the checks
    and the text stay in view, at 1100 and at 360 px."""
    a = servers["a"]
    page, log = await browser.new_page()
    await page.set_viewport_size({"width": 1100, "height": 760})
    me = await sign_up(page, a.url, "manycc")
    others = [Identity.generate().address for _ in range(99)]
    out = compose(Identity.generate(), me, "Hello all.", subject="Everyone", cc=others,
                  now_ms=int(time.time() * 1000))  # fmt: skip
    status, answer = await post(a.url + "/send", out.primary)
    assert status == 200, answer
    await row(page, "Everyone").click()
    reader = page.locator("#reader")
    await expect(reader.locator(".headers .cc code")).to_have_count(99)
    await expect(reader.locator(".trust")).to_contain_text("Route verified")
    for width, height in ((1100, 760), (360, 720)):
        await page.set_viewport_size({"width": width, "height": height})
        if width == 360:
            await shot(page, "r13b-many-cc-narrow")
        box = await settled_box(reader.locator(".trust"))
        assert box is not None and box["y"] < height, (width, box)
    assert log.errors == []


async def test_claimed_name_is_dropped_on_federation_too(servers) -> None:
    """A peer that hands over a message with `_from_name` and friends added: A keeps none
    of them (what a page would show as the sender's name is A's word only)."""
    a, b = servers["a"], servers["b"]
    async with aiohttp.ClientSession() as http:
        async with http.post(a.url + "/account/register",
                             json={"username": "fedtarget", "password": PASSWORD}) as r:  # fmt: skip
            account = await r.json()
        sender = Identity.generate()
        out = compose(sender, account["address"], "From a peer.", subject="Peer",
                      now_ms=int(time.time() * 1000))  # fmt: skip
        stamped = append_hop(out.primary, signer(b), next_hop=host(a),
                             now_ms=int(time.time() * 1000))  # fmt: skip
        claimed = {**stamped, "_from_name": "ceo@bank.example", "_inbox": "trusted"}
        status, answer = await deliver(signer(b), a, [claimed])
        assert status == 200, answer
        async with http.get(a.url + "/mail/inbox",
                            headers={"X-Flux-Session": account["session"]}) as r:  # fmt: skip
            listed = (await r.json())["messages"]
    (msg,) = [m for m in listed if m.get("subject") == "Peer"]
    assert "_from_name" not in msg
    assert msg.get("_inbox", "inbox") == "inbox"


def forged_by_relay(a, b, to: str) -> Incoming:
    """A message whose content B changed after the sender signed it, sealed by B and handed
    to A (which sealed it as received): B's own seal proves it relayed a forged body."""
    now = int(time.time() * 1000)
    out = compose(Identity.generate(), to, "Pay 10 EUR to the usual account.",
                  subject="Relayed refund", now_ms=now)  # fmt: skip
    changed = {**out.primary, "content": "Pay 10,000 EUR to the new account."}
    at_b = append_hop(changed, signer(b), next_hop=host(a), now_ms=now)
    at_a = append_hop(at_b, signer(a), next_hop="local", now_ms=now)
    return Incoming(at_a, body_hash(at_a), (to,), now)


async def blamed_page(browser, servers) -> Page:
    """A page showing the message B forged in relaying, its checks done."""
    a, b = servers["a"], servers["b"]
    page, log = await browser.new_page()
    await page.set_viewport_size({"width": 1100, "height": 760})
    me = await sign_up(page, a.url, "blamee")
    # B has delivered to A before, so A has B's key on record (the blame can be confirmed)
    out = compose(Identity.generate(), me, "An honest one first.", subject="Honest",
                  now_ms=int(time.time() * 1000))  # fmt: skip
    honest = append_hop(out.primary, signer(b), next_hop=host(a), now_ms=int(time.time() * 1000))
    status, answer = await deliver(signer(b), a, [honest])
    assert status == 200, answer
    await a.app[PARTS]["store"].store_message(forged_by_relay(a, b, me))
    await page.reload()
    await expect(page.locator("#app")).to_be_visible()
    msg = row(page, "Relayed refund")
    await expect(msg).to_be_visible()
    await msg.click()
    trust = page.locator("#reader .trust.alarm")
    await expect(trust.locator(".check", has_text="Sender")).to_contain_text("Bad signature")
    route = trust.locator(".check", has_text="Route")
    await expect(route).to_contain_text(f"Blamed server: {host(b)}")
    await expect(trust.locator(".hops li")).to_have_count(2)
    await shot(page, "r13b-blamed")
    assert log.errors == []
    return page


async def test_a_relay_that_forged_the_body_is_blamed_by_name(browser, servers) -> None:
    await blamed_page(browser, servers)


async def test_a_blamed_route_is_not_called_verified(browser, servers) -> None:
    page = await blamed_page(browser, servers)
    route = page.locator("#reader .trust .check", has_text="Route")
    text = await route.inner_text()
    assert "Route verified" not in text, text
    assert " sig " not in text, text
    # and the blamed server's hop is marked (views.js does, once trust.js passes the blame)
    await expect(page.locator("#reader .hops li.blamed")).to_have_count(1)


async def test_the_reader_marks_the_blamed_hop(page, web_origin) -> None:
    """views.js renderTrust, given a route whose blame names a server, marks that hop."""
    await page.goto(web_origin.blank)
    marked = await page.evaluate(
        """async (url) => {
            const views = await import(url);
            const trust = {signature: null, name: null, look: null, chain: {
                state: "bad", text: "Blamed server: b.example.", verdict: "pass",
                blame: {kind: "forged_body", offender: "b.example", detail: "x"},
                hops: [{server: "b.example", t: 1, status: "sealed", text: "seal verified"},
                       {server: "a.example", t: 2, status: "sealed", text: "seal verified"}]}};
            const node = views.renderTrust(trust, () => {});
            return [...node.querySelectorAll("li.hop")].map(
                (li) => [li.className, li.textContent.includes("blamed:")]);
        }""",
        web_origin.module("js/app/views.js"),
    )
    assert marked == [["hop sealed blamed", True], ["hop sealed", False]]


async def test_page_answers_carry_the_strict_csp(servers) -> None:
    a = servers["a"]
    async with aiohttp.ClientSession() as http:
        for path in ("/", "/web/js/app/main.js", "/web/app.css"):
            async with http.get(a.url + path) as r:
                assert r.status == 200, path
                csp = r.headers["Content-Security-Policy"]
                assert csp == CSP, path
        directives = dict(d.strip().split(" ", 1) for d in CSP.split(";"))
        assert directives["default-src"] == "'none'"
        assert directives["script-src"] == "'self'"  # no inline script, no other origin
        assert directives["connect-src"] == "'self'"
        assert directives["frame-ancestors"] == "'none'"
        assert directives["require-trusted-types-for"] == "'script'"
        assert "unsafe" not in CSP and "http" not in CSP and "*" not in CSP
        async with http.get(a.url + "/") as r:
            html = await r.text()
        # the page has no inline script or style to need an exception
        assert not re.search(r"<script(?![^>]*\bsrc=)", html)
        assert "<style" not in html and " style=" not in html
        assert not re.search(r"\son[a-z]+\s*=", html)  # no inline event handler


async def test_a_reply_does_not_follow_a_forged_first_hop(browser, servers) -> None:
    a = servers["a"]
    page, _ = await browser.new_page()
    me = await sign_up(page, a.url, "replier")
    now = int(time.time() * 1000)
    out = compose(Identity.generate(), me, "Please answer with the code.", subject="Code?",
                  now_ms=now)  # fmt: skip
    stamped = append_hop(out.primary, signer(a), next_hop="local", now_ms=now)
    first = {**stamped["integrity_chain"][0], "server": "evil.example"}
    forged = {**stamped, "integrity_chain": [first]}
    await a.app[PARTS]["store"].store_message(Incoming(forged, body_hash(forged), (me,), now))
    await page.reload()
    await row(page, "Code?").click()
    await expect(page.locator("#reader .trust.alarm")).to_contain_text("Broken chain")
    await page.keyboard.press("r")
    await expect(page.locator("#compose")).to_be_visible()
    assert "evil.example" not in await page.locator("#c-to").input_value()
