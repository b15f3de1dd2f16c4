"""The web client across two federated FLUX servers, in two real Chromium contexts.

Kay holds her key in the browser on server A (imported from a key file made here, so the
test knows the secret it must never see in a request); Bob has a password account on
server B. Between them: names resolved across servers, a plain and an encrypted send,
arrival without reload (Bob's page polls; Kay's WebSocket pushes), reply and conversation,
delivery state of sent mail, decryption in the browser, catch-up through /changes after
the socket was away, a message with a tampered hop chain (the warning), and hostile
content (script tags, HTML, an RTL override, 64 KiB of text) that stays inert. Every
request of Kay's page is checked for her key; no console error on either page.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import aiohttp
import pytest_asyncio
from playwright.async_api import Page, expect

from federation.fed_helpers import local_servers
from flux.client import FluxClient
from flux.protocol import Identity
from flux.protocol.chain import append_hop
from flux.protocol.envelope import body_hash
from flux.protocol.outgoing import compose
from flux.server.app import PARTS
from flux.server.runner import RunningServer
from flux.store.base import Incoming
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
    async with local_servers(tmp_path, ["a", "b"]) as running:
        yield running


def secrets_of(who: Identity) -> list[str]:
    seed = who.seed
    b64 = base64.urlsafe_b64encode(seed).decode()
    return [seed.hex(), b64, b64.rstrip("="), base64.b64encode(seed).decode().rstrip("=")]


async def import_key(page: Page, url: str, who: Identity) -> None:
    await page.goto(url + "/")
    await page.set_input_files(
        "#key-file",
        files=[{"name": "kay.json", "mimeType": "application/json",
                "buffer": who.to_keyfile().encode()}],
    )  # fmt: skip
    await expect(page.locator("#app")).to_be_visible()
    await expect(page.locator("#live")).to_have_text("live")


async def account(page: Page, url: str, username: str) -> None:
    await page.goto(url + "/")
    await page.fill("#acc-user", username)
    await page.fill("#acc-pass", "correct horse 2")
    await page.click("#acc-register")
    await expect(page.locator("#app")).to_be_visible()


def row(page: Page, text: str):
    return page.locator("#list li.row", has_text=text)


def tampered_for(server: RunningServer, to: str) -> Incoming:
    """A message to `to` as `server` would store it, with its hop record rewritten after
    sealing (its time moved): the seal no longer holds."""
    sender = Identity.generate()
    out = compose(sender, to, "Please wire the money today.", subject="Invoice",
                  now_ms=int(time.time() * 1000))  # fmt: skip
    signer = server.app[PARTS]["key"].signer
    stamped = append_hop(out.primary, signer, next_hop="local", now_ms=int(time.time() * 1000))
    stamped["integrity_chain"][0] = {**stamped["integrity_chain"][0],
                                     "t": stamped["integrity_chain"][0]["t"] - 60_000}  # fmt: skip
    return Incoming(stamped, body_hash(stamped), (to,), int(time.time() * 1000))


async def test_key_and_account_across_servers(browser, servers) -> None:
    a, b = servers["a"], servers["b"]
    a_name, b_name = a.url.split("//")[1], b.url.split("//")[1]
    kay_id = Identity.generate()
    kay, kay_log = await browser.new_page()
    bob, bob_log = await browser.new_page()
    for page in (kay, bob):
        await page.set_viewport_size({"width": 1100, "height": 720})
    dialogs: list[str] = []
    kay.on("dialog", lambda d: dialogs.append(d.message))

    await import_key(kay, a.url, kay_id)
    await expect(kay.locator("#me")).to_contain_text("key in this browser")
    await account(bob, b.url, "bob")

    # Kay -> bob@B, plain: Bob's key is known (resolved through A), so encryption starts on
    await kay.keyboard.press("c")
    await kay.fill("#c-to", f"bob@{b_name}")
    await expect(kay.locator("#c-encrypt")).to_be_checked()
    await expect(kay.locator("#c-enc-state")).to_contain_text("Encrypted end to end")
    await kay.click("#c-encrypt")
    await expect(kay.locator("#c-enc-state")).to_contain_text("Not encrypted: you turned")
    await kay.fill("#c-subject", "Hello over federation")
    await kay.fill("#c-body", "Hi Bob, this crossed two servers.")
    await kay.click("#c-send")
    await expect(kay.locator("#toast")).to_contain_text("queued")

    # and an encrypted one
    await kay.keyboard.press("c")
    await kay.fill("#c-to", f"bob@{b_name}")
    await kay.fill("#c-subject", "Secret plans")
    await kay.fill("#c-body", "The plans are in the blue folder.")
    await expect(kay.locator("#c-encrypt")).to_be_checked()
    await kay.click("#c-send")
    await expect(kay.locator("#toast")).to_contain_text("Sent encrypted")

    # Bob's page shows both without a reload
    await expect(row(bob, "Hello over federation")).to_be_visible(timeout=20_000)
    await row(bob, "Hello over federation").click()
    await expect(bob.locator("#reader .content")).to_have_text("Hi Bob, this crossed two servers.")
    trust = bob.locator("#reader .trust")
    await expect(trust).to_contain_text("Signature verified in this browser")
    await expect(trust).to_contain_text("Route verified: 2 servers")
    await expect(bob.locator("#reader .hops li.sealed")).to_have_count(2)
    await expect(row(bob, "Secret plans")).to_be_visible(timeout=20_000)
    await row(bob, "Secret plans").click()
    # Bob's key is on his server (a password account): it decrypts for his session
    await expect(bob.locator("#reader .content")).to_have_text("The plans are in the blue folder.")

    # Bob replies to Kay at A; Kay's page gets it pushed over the WebSocket
    await row(bob, "Hello over federation").click()
    await bob.keyboard.press("r")
    await expect(bob.locator("#c-to")).to_have_value(f"{kay_id.address}@{a_name}")
    await expect(bob.locator("#c-enc-state")).to_contain_text("encrypt only for addresses it hosts")
    await bob.locator("#c-body").press("Control+Home")
    await bob.locator("#c-body").type("Got it, thanks. ")
    await bob.click("#c-send")
    await expect(bob.locator("#compose")).to_be_hidden()
    reply = row(kay, "Re: Hello over federation")
    await expect(reply).to_be_visible(timeout=20_000)
    await reply.click()
    await expect(kay.locator("#reader .content")).to_contain_text("Got it, thanks.")
    await expect(kay.locator("#reader .trust")).to_contain_text("Route verified: 2 servers")
    await expect(kay.locator("#reader .thread")).to_contain_text("Conversation (2 messages)")
    await shot(kay, "message-verified")

    # Kay's sent mail: delivery state per recipient, and her encrypted copy decrypted here
    await kay.click(".box[data-box=sent]")
    await expect(row(kay, "Hello over federation")).to_contain_text("1 delivered", timeout=20_000)
    await row(kay, "Secret plans").click()
    await expect(kay.locator("#reader .content")).to_have_text("The plans are in the blue folder.")
    await expect(kay.locator("#reader .enc-line")).to_contain_text("decrypted in this browser")
    await expect(kay.locator("#reader table.delivery")).to_contain_text("delivered")
    await shot(kay, "sent-delivery")
    # search finds encrypted mail by its decrypted text
    await kay.fill("#search", "blue folder")
    await expect(kay.locator("#list li.row")).to_have_count(1)
    await expect(kay.locator("#list li.row")).to_contain_text("Secret plans")
    await kay.fill("#search", "")
    await kay.click(".box[data-box=inbox]")

    # away and back: what changed meanwhile comes through /changes
    await kay.evaluate("fluxApp.pause()")
    await expect(kay.locator("#live")).to_have_text("paused")
    token = await kay.evaluate("fluxApp.state.api.token")
    reply_id = await reply.get_attribute("data-key")
    async with aiohttp.ClientSession() as http:
        sender, msg_id = reply_id.split("|")
        async with http.post(a.url + "/tag", json={"address": kay_id.address, "id": msg_id,
                             "from": sender, "add": ["later"]},
                             headers={"Authorization": f"Bearer {token}"}) as r:  # fmt: skip
            assert r.status == 200, await r.text()
    await row(bob, "Hello over federation").click()
    await bob.keyboard.press("r")
    await bob.fill("#c-subject", "While you were away")
    await bob.click("#c-send")
    await expect(bob.locator("#compose")).to_be_hidden()
    await kay.wait_for_timeout(1500)  # the delivery lands at A while Kay's page is away
    await expect(row(kay, "While you were away")).to_have_count(0)
    await kay.evaluate("fluxApp.resume()")
    await expect(row(kay, "While you were away")).to_be_visible(timeout=20_000)
    await expect(row(kay, "Re: Hello over federation")).to_contain_text("later")

    # a message whose hop record was rewritten after sealing: a plain warning
    await a.app[PARTS]["store"].store_message(tampered_for(a, kay_id.address))
    await kay.click(".box[data-box=inbox]")
    await row(kay, "Invoice").click()
    warn = kay.locator("#reader .trust.alarm")
    await expect(warn).to_contain_text("Broken chain")
    await expect(warn).to_contain_text("may have been changed on the way")
    await shot(kay, "trust-warning")

    # hostile content from a stranger stays text
    stranger = FluxClient(Identity.generate(), a.url)
    hostile_subject = "<script>alert('subject')</script>\u202eexe.gnp"
    filler = "\n".join(f"line {n}: the quick brown fox {n * 7919 % 10007}" for n in range(2000))
    content = (
        "<img src=x onerror=alert('img')><b>bold?</b>"
        "<a href='https://example.com/x'>link</a>\u202e!\n" + filler
    )
    content = content.encode()[:65536].decode(errors="ignore")
    try:
        await stranger.send(kay_id.address, content, subject=hostile_subject)
    finally:
        await stranger.close()
    hostile = row(kay, "<script>")
    await expect(hostile).to_be_visible(timeout=20_000)
    await hostile.click()
    await expect(kay.locator("#reader .msg-subject")).to_contain_text("[U+202E]exe.gnp")
    await expect(kay.locator("#reader .content")).to_contain_text(
        "<img src=x onerror=alert('img')>"
    )
    made = await kay.evaluate(
        "document.querySelectorAll('#reader script, #reader img, #reader b, #reader a[href],"
        " #list script, #list img').length"
    )
    assert made == 0
    assert dialogs == []
    await shot(kay, "hostile-inert")

    # the key was never in any request of Kay's page; no console errors anywhere
    requests = kay_log.sent()
    assert len(requests) > 20
    for secret in secrets_of(kay_id):
        assert not any(secret in req for req in requests), "the key left the browser"
    assert not any(kay_id.to_keyfile() in req for req in requests)
    assert kay_log.errors == [] and bob_log.errors == []
