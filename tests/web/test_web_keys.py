"""The web client's key in the browser, its plain-language warnings, and its habits.

A key made in the browser (backup offered, registered, kept across a reload and listed at
sign-in); the keyboard (j/k/o, ?, c, Esc); a page served outside a secure context says so
instead of failing; a name whose key changed since this browser last saw it is flagged.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest_asyncio
from playwright.async_api import Page, expect
from tests.web.conftest import INSECURE_HOST

from flux.client import FluxClient
from flux.protocol import Identity
from flux.server.runner import RunningServer

#: a shared 2-core machine can be slow: each expectation waits up to 15 s (not 5)
expect.set_options(timeout=15_000)


@pytest_asyncio.fixture(loop_scope="session", autouse=True)
async def _close_pages(browser):
    """Each test's pages end with it (a page left open would go on polling a stopped server)."""
    yield
    await browser.close_contexts()


@pytest_asyncio.fixture(loop_scope="session")
async def server(flux_server: RunningServer) -> RunningServer:
    return flux_server


def row(page: Page, text: str):
    return page.locator("#list li.row", has_text=text)


async def test_new_key_in_browser(browser, server: RunningServer) -> None:
    page, log = await browser.new_page()
    await page.goto(server.url + "/")
    await expect(page.locator("#insecure")).to_be_hidden()
    await expect(page.locator(".firstrun")).to_contain_text("your address is made from a key")
    await page.click("#key-generate")
    await expect(page.locator("#app")).to_be_visible()
    backup = page.locator("#backup-link")
    await expect(backup).to_be_visible()
    async with page.expect_download() as download_info:
        await backup.click()
    download = await download_info.value
    key_file = json.loads(Path(await download.path()).read_text())
    me = Identity.from_keyfile(json.dumps(key_file))
    await expect(page.locator("#me")).to_contain_text(me.address[:10])
    await expect(page.locator("#live")).to_have_text("live")

    # mail from someone else arrives by push; the keyboard moves and opens
    async with FluxClient(Identity.generate(), server.url) as other:
        await other.send(me.address, "first", subject="One")
        await other.send(me.address, "second", subject="Two")
    await expect(page.locator("#list li.row")).to_have_count(2, timeout=15_000)
    await page.locator("#list").focus()
    await page.keyboard.press("j")
    await page.keyboard.press("j")
    await page.keyboard.press("k")
    await page.keyboard.press("o")
    await expect(page.locator("#reader .msg-subject")).to_have_text("Two")
    await page.keyboard.press("?")
    await expect(page.locator("#help")).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(page.locator("#help")).to_be_hidden()
    await page.keyboard.press("c")
    await expect(page.locator("#compose")).to_be_visible()
    await expect(page.locator("#c-to")).to_be_focused()
    await page.keyboard.press("Escape")

    await page.keyboard.press("f")  # forward: the text quoted, a new recipient to write
    await expect(page.locator("#c-subject")).to_have_value("Fwd: Two")
    await expect(page.locator("#c-body")).to_have_value(re.compile(r"Subject: Two\n\nsecond"))
    await expect(page.locator("#c-to")).to_have_value("")
    await page.keyboard.press("Escape")

    # the mailbox actions with a key session (/tag, /unread, /move, /delete)
    await page.fill("#tag-input", "keep")
    await page.click("#tag-form button")
    await expect(row(page, "Two")).to_contain_text("keep")
    await page.click("[data-action=unread]")
    await expect(row(page, "Two")).to_have_class(re.compile(r"\bunread\b"))
    await row(page, "Two").click()
    # the reader shows it before its form is used (a reader drawn late would empty the input)
    await expect(page.locator("#reader .msg-subject")).to_have_text("Two")
    await page.fill("#move-input", "projects")
    await page.click("#move-form button")
    await expect(row(page, "Two")).to_have_count(0)
    await expect(page.locator(".box[data-box='box:projects']")).to_be_visible()
    await page.click(".box[data-box='box:projects']")
    await row(page, "Two").click()
    await expect(page.locator("#reader .msg-subject")).to_have_text("Two")
    await page.keyboard.press("#")
    await expect(row(page, "Two")).to_have_count(0)
    await page.click(".box[data-box=inbox]")

    # mail to a domain that does not exist: queued, then bounced with the reason, live
    nowhere = Identity.generate().address
    await page.keyboard.press("c")
    await page.fill("#c-to", f"{nowhere}@nowhere.invalid")
    await expect(page.locator("#c-enc-state")).to_contain_text("no key known")
    await page.fill("#c-subject", "Into the void")
    await page.fill("#c-body", "Is anyone there?")
    await page.click("#c-send")
    # (the toast saying "queued" is soon replaced by the bounce message's arrival)
    await expect(page.locator("#compose")).to_be_hidden()
    await page.click(".box[data-box=sent]")
    await row(page, "Into the void").click()
    bounced = page.locator("#reader table.delivery tr.delivery-bounced")
    await expect(bounced).to_contain_text("nowhere.invalid does not exist")
    await expect(row(page, "Into the void")).to_contain_text("1 bounced")
    await page.click(".box[data-box=inbox]")

    # a reload keeps the session (the key is in IndexedDB, the session in this tab)
    await page.reload()
    await expect(page.locator("#app")).to_be_visible()
    await expect(page.locator("#list li.row")).to_have_count(2)
    # signing out leaves the key listed at sign-in
    await page.click("#signout")
    await expect(page.locator("#signin")).to_be_visible()
    await expect(page.locator(".use-key")).to_contain_text(me.address[:10])
    await page.click(".use-key")
    await expect(page.locator("#app")).to_be_visible()
    await expect(page.locator("#list li.row")).to_have_count(2)
    secret = me.seed.hex()
    assert not any(secret in r for r in log.sent())
    # the one refusal this test provokes: no key for an address at a domain that does not
    # exist (Chromium logs every 4xx answer to a fetch as a console error)
    expected = "/web/resolve/"
    assert [e for e in log.errors if expected not in e] == []


async def test_insecure_context_says_so(browser, server: RunningServer) -> None:
    """Served under a name that is not localhost over plain HTTP, the page has no WebCrypto:
    it says so on the sign-in screen, offers no key, and a password account still works."""
    page, log = await browser.new_page()
    # the real server under a name the browser maps to 127.0.0.1 (conftest), WebSocket included
    port = urlsplit(server.url).port
    await page.goto(f"http://{INSECURE_HOST}:{port}/")
    assert await page.evaluate("isSecureContext") is False
    await expect(page.locator("#insecure")).to_be_visible()
    await expect(page.locator("#insecure")).to_contain_text("not a secure context")
    await expect(page.locator("#key-generate")).to_be_disabled()
    await page.fill("#acc-user", "plainhttp")
    await page.fill("#acc-pass", "correct horse 3")
    await page.click("#acc-register")
    await expect(page.locator("#app")).to_be_visible()
    assert log.errors == []


async def test_changed_key_behind_a_name(browser, server: RunningServer) -> None:
    pages = {}
    for name in ("eve", "frank"):
        page, log = await browser.new_page()
        await page.goto(server.url + "/")
        await page.fill("#acc-user", name)
        await page.fill("#acc-pass", "correct horse 4")
        await page.click("#acc-register")
        await expect(page.locator("#app")).to_be_visible()
        pages[name] = (page, log)
    eve, frank = pages["eve"][0], pages["frank"][0]
    # frank's browser remembers another key for eve@web.test
    await frank.evaluate(
        "localStorage.setItem('flux.seen-names.v1',"
        " JSON.stringify({'eve@web.test': 'fx1' + '0'.repeat(40)}))"
    )
    await eve.keyboard.press("c")
    await eve.fill("#c-to", "frank@web.test")
    await eve.fill("#c-subject", "It is me")
    await eve.click("#c-send")  # no text yet: the form asks for it, nothing is sent
    assert await eve.evaluate("document.getElementById('c-body').validity.valueMissing")
    await expect(eve.locator("#compose")).to_be_visible()
    await eve.fill("#c-body", "Yes, really.")
    await eve.click("#c-send")
    await expect(eve.locator("#compose")).to_be_hidden()
    await expect(row(frank, "It is me")).to_be_visible(timeout=15_000)
    await row(frank, "It is me").click()
    alarm = frank.locator("#reader .trust.alarm")
    await expect(alarm).to_contain_text("eve@web.test was a different key")
    await frank.click("#reader .trust button")
    await expect(frank.locator("#reader .trust")).not_to_have_class("trust alarm")
    await expect(frank.locator("#reader .trust")).to_contain_text("same key as before")
    assert pages["eve"][1].errors == [] and pages["frank"][1].errors == []


async def test_protected_key_files(browser, server: RunningServer) -> None:
    """A key file sealed under a passphrase (as `flux keygen --passphrase` writes it) opens
    with its passphrase only; a new key's backup is sealed when a passphrase is given."""
    page, log = await browser.new_page()
    await page.goto(server.url + "/")
    who = Identity.generate()
    sealed = who.to_keyfile(passphrase="a long passphrase").encode()
    file = {"name": "sealed.json", "mimeType": "application/json", "buffer": sealed}
    await page.set_input_files("#key-file", files=[file])
    await expect(page.locator("#signin-error")).to_contain_text("protected")
    await page.fill("#key-pass", "not the passphrase")
    await page.set_input_files("#key-file", files=[file])
    await expect(page.locator("#signin-error")).to_contain_text("wrong passphrase")
    await page.fill("#key-pass", "a long passphrase")
    await page.set_input_files("#key-file", files=[file])
    await expect(page.locator("#me")).to_contain_text(who.address[:10])

    await page.click("#signout")
    await expect(page.locator("#signin")).to_be_visible()
    await page.fill("#key-pass", "another passphrase")
    await page.click("#key-generate")
    backup = page.locator("#backup-link")
    await expect(backup).to_contain_text("protected by your passphrase")
    async with page.expect_download() as download_info:
        await backup.click()
    text = Path(await (await download_info.value).path()).read_text()
    assert "private_key_enc" in text and '"private_key"' not in text
    made = Identity.from_keyfile(text, passphrase="another passphrase")
    await expect(page.locator("#me")).to_contain_text(made.address[:10])
    assert not any(made.seed.hex() in r or who.seed.hex() in r for r in log.sent())
    assert log.errors == []
