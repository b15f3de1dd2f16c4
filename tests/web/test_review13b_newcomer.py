"""A newcomer's first session with the web client, end to end (second review of issue 13).

Three federated servers. Ann signs up for a password account on A; Kim makes a new key in
her browser on B (the first-run screen, the backup link); Bob has a password account on B
and Carl a key on C (their own clients). Ann writes to `bob@B` by name with Kim and Carl in
Cc; Kim's page gets it pushed, she reads it, checks it, replies, replies to all (each at
their own server), forwards it; she tags, moves, marks unread, deletes and searches; her
sent mail shows each recipient's delivery state; the socket drops and what arrived
meanwhile comes back through /changes. The same page at 360 px. No console error that is
not an expected lookup miss.
"""

from __future__ import annotations

import asyncio
import base64
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio
from playwright.async_api import Page, expect

from federation.fed_helpers import local_servers
from flux.client import FluxClient
from flux.protocol import Identity
from web.shots import shot

#: a shared 2-core machine can be slow: each expectation waits up to 15 s (not 5)
expect.set_options(timeout=15_000)

PASSWORD = "correct horse 13b"
UNREAD = re.compile(r"\bunread\b")


@pytest_asyncio.fixture(loop_scope="session", autouse=True)
async def _close_pages(browser):
    yield
    await browser.close_contexts()


@pytest_asyncio.fixture(loop_scope="session")
async def servers(tmp_path: Path):
    async with local_servers(tmp_path, ["a", "b", "c"]) as running:
        yield running


def host(server) -> str:
    return server.url.split("//")[1]


def row(page: Page, text: str):
    return page.locator("#list li.row", has_text=text)


async def sign_up(page: Page, url: str, username: str) -> None:
    await page.goto(url + "/")
    await page.fill("#acc-user", username)
    await page.fill("#acc-pass", PASSWORD)
    await page.click("#acc-register")
    await expect(page.locator("#app")).to_be_visible()


async def register_account(url: str, username: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            url + "/account/register", json={"username": username, "password": PASSWORD}
        ) as r,  # fmt: skip
    ):
        assert r.status == 200, await r.text()
        return await r.json()


async def mail_of(url: str, session: str, path: str = "/mail/inbox") -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(url + path, headers={"X-Flux-Session": session}) as r,
    ):
        assert r.status == 200, await r.text()
        return (await r.json())["messages"]


async def until(probe, what: str, tries: int = 300):
    """`probe()`'s answer once truthy (each try 0.1 s apart), else fail naming `what`."""
    for _ in range(tries):
        got = await probe()
        if got:
            return got
        await asyncio.sleep(0.1)
    raise AssertionError(f"never: {what}")


async def test_a_newcomers_first_session(browser, servers) -> None:
    a, b, c = servers["a"], servers["b"], servers["c"]
    a_name, b_name, c_name = host(a), host(b), host(c)
    bob = await register_account(b.url, "bob")
    carl = FluxClient(Identity.generate(), c.url)
    await carl.register()
    ann, ann_log = await browser.new_page()
    kim, kim_log = await browser.new_page()
    for page in (ann, kim):
        await page.set_viewport_size({"width": 1100, "height": 760})
    try:
        # Kim: the first-run screen explains keys; a new key, and a backup offered at once
        await kim.goto(b.url + "/")
        await expect(kim.locator("#signin .firstrun")).to_contain_text(
            "your address is made from a key"
        )
        await shot(kim, "r13b-first-run")
        await kim.click("#key-generate")
        await expect(kim.locator("#app")).to_be_visible()
        await expect(kim.locator("#backup-link")).to_contain_text("Download a backup")
        await expect(kim.locator("#live")).to_have_text("live")
        kim_address = await kim.evaluate("fluxApp.state.api.address")
        # the backup is the key itself (its file opens to Kim's address)
        async with kim.expect_download() as download:
            await kim.click("#backup-link")
        backup = Path(await (await download.value).path()).read_text()
        kim_key = Identity.from_keyfile(backup)
        assert kim_key.address == kim_address

        # Ann: a password account on A writes to bob@B by name, Kim and Carl in Cc
        await sign_up(ann, a.url, "ann")
        await ann.keyboard.press("c")
        await ann.fill("#c-to", f"bob@{b_name}")
        await ann.fill("#c-cc", f"{kim_address}@{b_name}, {carl.address}@{c_name}")
        await ann.fill("#c-subject", "Lunch on Friday")
        await ann.fill("#c-body", "Shall we try the new place by the river?")
        ann_address = await ann.evaluate("fluxApp.state.api.address")
        await expect(ann.locator("#c-enc-state")).to_contain_text("Not encrypted")
        await shot(ann, "r13b-compose-account")
        await ann.click("#c-send")
        await expect(ann.locator("#compose")).to_be_hidden()
        await expect(ann.locator("#toast")).to_contain_text("Sent")

        # Kim's page has it without a reload (the socket), unread, and checks it
        lunch = row(kim, "Lunch on Friday")
        await expect(lunch).to_be_visible(timeout=20_000)
        await expect(lunch).to_have_class(UNREAD)
        await expect(kim.locator(".box[data-box=inbox] .count")).to_have_text("1")
        await lunch.click()
        reader = kim.locator("#reader")
        await expect(reader.locator(".content")).to_have_text(
            "Shall we try the new place by the river?"
        )
        await expect(reader.locator(".trust")).to_contain_text("Signature verified in this browser")
        await expect(reader.locator(".trust")).to_contain_text("Route verified: 2 servers")
        await expect(reader.locator(".hops li.sealed")).to_have_count(2)
        await expect(reader.locator(".enc-line")).to_contain_text("Not encrypted")
        await expect(kim.locator(".box[data-box=inbox] .count")).to_have_count(0)
        await shot(kim, "r13b-kim-reads")

        # reply goes to Ann at her server (her name is A's: B does not know it);
        # reply-all places Bob and Carl at their servers
        await kim.keyboard.press("r")
        await expect(kim.locator("#c-to")).to_have_value(f"{ann_address}@{a_name}")
        await expect(kim.locator("#compose-title")).to_have_text("Reply")
        await kim.click("#c-cancel")
        await kim.keyboard.press("a")
        await expect(kim.locator("#compose")).to_be_visible()
        await expect(kim.locator("#c-to")).to_have_value(f"{ann_address}@{a_name}")
        cc = await kim.locator("#c-cc").input_value()
        assert kim_address not in cc
        await shot(kim, "r13b-reply-all")
        await kim.locator("#c-body").press("Control+Home")
        await kim.locator("#c-body").type("Friday works. ")
        await kim.click("#c-send")
        await expect(kim.locator("#compose")).to_be_hidden(timeout=20_000)

        async def bob_has_reply():
            return [m for m in await mail_of(b.url, bob["session"])
                    if (m.get("subject") or "").startswith("Re: Lunch")]  # fmt: skip

        await until(bob_has_reply, "Bob has Kim's reply-all")

        # forward: the original's text quoted, subject marked
        await kim.keyboard.press("f")
        await expect(kim.locator("#compose-title")).to_have_text("Forward")
        await expect(kim.locator("#c-subject")).to_have_value("Fwd: Lunch on Friday")
        assert "Shall we try the new place" in await kim.locator("#c-body").input_value()
        await kim.click("#c-cancel")

        # tag: a mailbox for the tag appears; the row shows it
        await kim.fill("#tag-input", "food, friday")
        await kim.click("#tag-form button")
        await expect(kim.locator(".box[data-box='tag:food']")).to_be_visible()
        await expect(lunch.locator(".chip")).to_have_count(2)
        await kim.click(".box[data-box='tag:food']")
        await expect(row(kim, "Lunch on Friday")).to_be_visible()
        await kim.click(".box[data-box=inbox]")

        # search over what is loaded
        await kim.fill("#search", "river")
        await expect(kim.locator("#list li.row")).to_have_count(1)
        await kim.fill("#search", "no such words")
        await expect(kim.locator("#list li.empty")).to_contain_text("Nothing in the loaded mail")
        await kim.fill("#search", "")

        # mark unread, then move to a mailbox of her own, then delete
        await lunch.click()
        await kim.keyboard.press("u")
        await expect(lunch).to_have_class(UNREAD)
        await expect(kim.locator(".box[data-box=inbox] .count")).to_have_text("1")
        await lunch.click()
        # the reader is drawn again as its checks and conversation come in, and each time
        # the forms in it start empty: wait for it to settle before typing (see
        # test_review13b_reader_forms.py)
        await expect(kim.locator("#reader .thread")).to_contain_text("Conversation (2 messages)")
        await expect(kim.locator("#reader .trust")).to_contain_text("Route verified")
        await kim.fill("#move-input", "plans")
        await kim.click("#move-form button")
        await expect(lunch).to_have_count(0)
        await expect(kim.locator(".box[data-box='box:plans']")).to_be_visible()
        await kim.click(".box[data-box='box:plans']")
        await expect(row(kim, "Lunch on Friday")).to_be_visible()
        await row(kim, "Lunch on Friday").click()
        await kim.keyboard.press("#")
        await expect(row(kim, "Lunch on Friday")).to_have_count(0)
        await kim.click(".box[data-box=inbox]")

        # sent mail: each recipient's delivery state
        await kim.click(".box[data-box=sent]")
        sent = row(kim, "Re: Lunch on Friday")
        await expect(sent.locator(".delivery-summary")).to_contain_text("delivered", timeout=20_000)
        await sent.click()
        await expect(kim.locator("#reader table.delivery tbody tr")).to_have_count(3)
        await shot(kim, "r13b-sent-delivery")
        await kim.click(".box[data-box=inbox]")

        # the socket drops; mail sent while it is down arrives with the reconnect
        await kim.evaluate("fluxApp.pause()")
        await expect(kim.locator("#live")).to_have_text("paused")
        await carl.send(f"{kim_address}@{b_name}", "Sent while you were away.",
                        subject="Catch-up")  # fmt: skip
        await asyncio.sleep(1.5)  # it lands at B while Kim's page is away
        await expect(row(kim, "Catch-up")).to_have_count(0)
        await kim.evaluate("fluxApp.resume()")
        await expect(row(kim, "Catch-up")).to_be_visible(timeout=20_000)

        # the same page at 360 px: list, then reader with a way back
        await kim.set_viewport_size({"width": 360, "height": 720})
        await shot(kim, "r13b-narrow-list")
        await row(kim, "Catch-up").click()
        await expect(kim.locator("#reader .back")).to_be_visible()
        await shot(kim, "r13b-narrow-reader")
        width = await kim.evaluate("document.documentElement.scrollWidth")
        assert width <= 360, f"the page is {width} px wide at 360"
        await kim.click("#reader .back")
        await expect(kim.locator("#list")).to_be_visible()
        await kim.click("#menu")
        await expect(kim.locator("#boxes")).to_be_visible()
        await shot(kim, "r13b-narrow-menu")
        # the key made in the browser never left it: in no request of Kim's page
        seed = kim_key.seed
        secrets = [seed.hex(), base64.urlsafe_b64encode(seed).decode().rstrip("="),
                   base64.b64encode(seed).decode().rstrip("=")]  # fmt: skip
        sent = kim_log.sent()
        assert len(sent) > 20
        for secret in secrets:
            assert not any(secret in req for req in sent), "the key left the browser"
        # Carl's home unknown at reply-all: the 404s of asking for him are expected
        assert ann_log.errors == []
        faults = [e for e in kim_log.errors if not ("404" in e and carl.address in e)]
        assert faults == [], "\n".join(kim_log.errors)
    finally:
        await carl.close()
