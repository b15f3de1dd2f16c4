"""BCC from the web client across three federated servers, in real Chromium pages.

Alice holds her key in the browser on server A and writes to Bob (a password account on
server B, in his own browser) with Carol (a key on server C) in Bcc, once plain and once
encrypted. js/flux composes one signed copy for To/Cc with no `bcc` at all and one per BCC
recipient naming only that recipient (PROTOCOL.md §5.2). Carol gets each message, her copy
naming her alone in `bcc` (and decrypting); Bob's copy, as his server gives it to him and
as his page renders it, holds Carol's address nowhere. Alice's sent view shows Carol in
Bcc with her delivery state as Alice's server tracks it (the BCC copy's recipient is merged
into the message's one sent record: docs/API.md, "Sent mail"), in this browser and in a
fresh one that kept nothing.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest_asyncio
from playwright.async_api import Page, expect

from federation.fed_helpers import local_servers
from flux.client import FluxClient
from flux.protocol import Identity
from flux.protocol.e2e import decrypt_content
from web.conftest import FluxBrowser, PageLog
from web.shots import shot

#: a shared 2-core machine can be slow: each expectation waits up to 15 s (not 5)
expect.set_options(timeout=15_000)


@pytest_asyncio.fixture(loop_scope="session", autouse=True)
async def _close_pages(browser):
    """Each test's pages end with it (a page left open would go on polling a stopped server)."""
    yield
    await browser.close_contexts()


@pytest_asyncio.fixture(loop_scope="session")
async def servers(tmp_path: Path):
    async with local_servers(tmp_path, ["a", "b", "c"]) as running:
        yield running


def host(server) -> str:
    return server.url.split("//")[1]


def short(address: str) -> str:
    """As js/app/views.js `shortAddress` shows an address."""
    return f"{address[:14]}…{address[-6:]}"


async def import_key(page: Page, url: str, who: Identity) -> None:
    await page.goto(url + "/")
    await page.set_input_files(
        "#key-file",
        files=[{"name": "key.json", "mimeType": "application/json",
                "buffer": who.to_keyfile().encode()}],
    )  # fmt: skip
    await expect(page.locator("#app")).to_be_visible()
    await expect(page.locator("#live")).to_have_text("live")


async def account(page: Page, url: str, username: str) -> None:
    await page.goto(url + "/")
    await page.fill("#acc-user", username)
    await page.fill("#acc-pass", "correct horse 3")
    await page.click("#acc-register")
    await expect(page.locator("#app")).to_be_visible()


async def copy_of(client: FluxClient, msg_id: str) -> dict[str, Any]:
    """The message `msg_id` in `client`'s inbox, once it is there (up to 30 s)."""
    for _ in range(300):
        found = [m for m in (await client.inbox(limit=100)).messages if m["id"] == msg_id]
        if found:
            return found[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"{msg_id} never reached {client.address}")


async def send_with_bcc(page: Page, to: str, bcc: str, subject: str, *, encrypt: bool) -> str:
    """Compose and send from `page`; the id of the message (from Alice's sent mail)."""
    await page.keyboard.press("c")
    await expect(page.locator("#compose")).to_be_visible()
    await page.fill("#c-to", to)
    await page.fill("#c-bcc", bcc)
    await page.fill("#c-subject", subject)
    await page.fill("#c-body", f"{subject}: the budget is final.")
    state = page.locator("#c-enc-state")
    await expect(state).to_contain_text("Encrypted end to end for 2 recipients")
    if not encrypt:
        await page.click("#c-encrypt")
        await expect(state).to_contain_text("Not encrypted: you turned")
    await page.click("#c-send")
    await expect(page.locator("#compose")).to_be_hidden()
    await expect(page.locator("#toast")).to_contain_text("Sent encrypted" if encrypt else "Sent:")
    sent = await page.evaluate("fluxApp.state.api.sent({limit: 50})")
    (msg,) = [m for m in sent["messages"] if m.get("subject") == subject]
    return msg["id"]


@dataclass
class Scene:
    """Alice (key, A) has sent `plain` and `sealed` to Bob (account, B), Carol (C) in Bcc."""

    alice: Identity
    alice_page: Page
    alice_log: PageLog
    bob_page: Page
    bob_log: PageLog
    carol: Identity
    carol_client: FluxClient
    plain: str
    sealed: str


async def bcc_scene(browser: FluxBrowser, servers: dict) -> Scene:
    a, b, c = servers["a"], servers["b"], servers["c"]
    alice, carol = Identity.generate(), Identity.generate()
    carol_client = FluxClient(carol, c.url)
    await carol_client.register()
    alice_page, alice_log = await browser.new_page()
    bob_page, bob_log = await browser.new_page()
    for page in (alice_page, bob_page):
        await page.set_viewport_size({"width": 1100, "height": 760})
    await import_key(alice_page, a.url, alice)
    await account(bob_page, b.url, "bob")
    to, bcc = f"bob@{host(b)}", f"{carol.address}@{host(c)}"
    plain = await send_with_bcc(alice_page, to, bcc, "Plain budget", encrypt=False)
    sealed = await send_with_bcc(alice_page, to, bcc, "Sealed budget", encrypt=True)
    return Scene(
        alice, alice_page, alice_log, bob_page, bob_log, carol, carol_client, plain, sealed
    )


async def test_bcc_reaches_its_recipient_and_no_one_else_sees_it(browser, servers) -> None:
    scene = await bcc_scene(browser, servers)
    carol, bob = scene.carol, scene.bob_page
    try:
        # Carol has both, her copy naming her alone in bcc, the sealed one readable by her
        for msg_id, subject in ((scene.plain, "Plain budget"), (scene.sealed, "Sealed budget")):
            got = await copy_of(scene.carol_client, msg_id)
            assert got["bcc"] == [carol.address]
            assert got["subject"] == subject
            text = decrypt_content(got, carol) if got.get("encrypted") else got["content"]
            assert text == f"{subject}: the budget is final."
        assert (await copy_of(scene.carol_client, scene.sealed)).get("encrypted") is True

        # Bob's copies, as his server hands them to him: no bcc, Carol's address nowhere
        for subject in ("Plain budget", "Sealed budget"):
            row = bob.locator("#list li.row", has_text=subject)
            await expect(row).to_be_visible(timeout=20_000)
        listing = await bob.evaluate("fluxApp.state.api.list({limit: 100})")
        mine = [m for m in listing["messages"] if m["id"] in (scene.plain, scene.sealed)]
        assert len(mine) == 2
        for msg in mine:
            assert "bcc" not in msg
            assert carol.address not in json.dumps(msg)
        # ...and as his page renders them: not in the text, not in any attribute
        for subject in ("Plain budget", "Sealed budget"):
            await bob.locator("#list li.row", has_text=subject).click()
            await expect(bob.locator("#reader .msg-subject")).to_have_text(subject)
            await expect(bob.locator("#reader .trust")).to_contain_text("Route verified")
            html = await bob.evaluate("document.documentElement.outerHTML")
            assert carol.address not in html and short(carol.address) not in html, subject
            assert carol.address[:10] not in html, subject
        await expect(bob.locator("#reader .headers")).not_to_contain_text("Bcc")

        # Alice's sent view: Bob's and Carol's delivery states as her server tracks them,
        # Carol marked Bcc (her copy went to server C, queued and then delivered)
        alice = scene.alice_page
        await alice.click(".box[data-box=sent]")
        sealed_row = alice.locator("#list li.row", has_text="Sealed budget")
        await expect(sealed_row).to_contain_text(f"Bcc: {short(carol.address)}")
        await expect(sealed_row).to_contain_text("2 delivered", timeout=20_000)
        await sealed_row.click()
        await expect(alice.locator("#reader .content")).to_have_text(
            "Sealed budget: the budget is final."
        )
        await expect(alice.locator("#reader .headers dd.bcc")).to_have_text(carol.address)
        carol_row = alice.locator(f"#reader table.delivery tr[data-recipient='{carol.address}']")
        await expect(carol_row.locator(".chip.bcc")).to_have_text("bcc")
        await expect(carol_row.locator(".state")).to_have_text("delivered")
        await expect(carol_row).to_contain_text("delivered to the receiving server")
        await expect(alice.locator("#reader table.delivery tbody tr")).to_have_count(2)
        await shot(alice, "sent-bcc")
        assert scene.alice_log.errors == [] and scene.bob_log.errors == []
    finally:
        await scene.carol_client.close()


async def test_sent_view_shows_the_bcc_recipient_with_its_delivery_state(browser, servers) -> None:
    """What the server keeps, not what a browser remembers: Alice in a fresh browser (no
    storage of the first) sees Carol in Bcc of both messages, delivered; and the page keeps
    no list of Bcc recipients of its own."""
    scene = await bcc_scene(browser, servers)
    carol = scene.carol
    try:
        for msg_id in (scene.plain, scene.sealed):
            await copy_of(scene.carol_client, msg_id)
        stored = await scene.alice_page.evaluate("JSON.stringify(Object.keys(localStorage))")
        assert "flux.sent-bcc" not in stored
        alice, log = await browser.new_page()
        await alice.set_viewport_size({"width": 1100, "height": 760})
        await import_key(alice, servers["a"].url, scene.alice)
        await alice.click(".box[data-box=sent]")
        for subject in ("Plain budget", "Sealed budget"):
            row = alice.locator("#list li.row", has_text=subject)
            await expect(row).to_contain_text(f"Bcc: {short(carol.address)}")
            await expect(row).to_contain_text("2 delivered", timeout=20_000)
            await row.click()
            await expect(alice.locator("#reader .msg-subject")).to_have_text(subject)
            await expect(alice.locator("#reader .headers dd.bcc")).to_contain_text(carol.address)
            carol_row = alice.locator(
                f"#reader table.delivery tr[data-recipient='{carol.address}']"
            )
            await expect(carol_row.locator(".state")).to_have_text("delivered")
            await expect(carol_row.locator(".chip.bcc")).to_have_text("bcc")
        # the sent record as the server gives it: Carol in `_delivery`, in no envelope field
        listing = await alice.evaluate("fluxApp.state.api.sent({limit: 50})")
        for msg in (m for m in listing["messages"] if m["id"] in (scene.plain, scene.sealed)):
            assert msg["_delivery"][carol.address]["state"] == "delivered"
            assert "bcc" not in msg and carol.address not in json.dumps(
                {k: v for k, v in msg.items() if k != "_delivery"}
            )
        assert log.errors == []
    finally:
        await scene.carol_client.close()
