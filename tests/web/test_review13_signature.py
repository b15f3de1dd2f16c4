"""A message whose sender signature is wrong, in the web client (review of issue 13).

The server refuses such mail on arrival, so one is written into the store as a lying or
broken server would hand it over: its content changed after the sender signed it, then
sealed by the server (its seal verifies, over a body whose signature does not). The page,
which checks every signature itself, must say so plainly, and show the text as text only.
"""

from __future__ import annotations

import time

import aiohttp
import pytest_asyncio
from playwright.async_api import expect

from flux.protocol import Identity
from flux.protocol.chain import append_hop
from flux.protocol.envelope import body_hash
from flux.protocol.outgoing import compose
from flux.server.app import PARTS
from flux.server.runner import RunningServer
from flux.store.base import Incoming

#: a shared 2-core machine can be slow: each expectation waits up to 15 s (not 5)
expect.set_options(timeout=15_000)

PASSWORD = "correct horse 13"


@pytest_asyncio.fixture(loop_scope="session", autouse=True)
async def _close_pages(browser):
    yield
    await browser.close_contexts()


def forged_for(server: RunningServer, to: str) -> Incoming:
    """A message to `to` whose content was changed after signing, then sealed as stored."""
    now = int(time.time() * 1000)
    out = compose(Identity.generate(), to, "Pay 10 EUR to the usual account.",
                  subject="Refund", now_ms=now)  # fmt: skip
    changed = {**out.primary, "content": "Pay 10,000 EUR to <b>IBAN XX00</b> today."}
    signer = server.app[PARTS]["key"].signer
    stamped = append_hop(changed, signer, next_hop="local", now_ms=now)
    return Incoming(stamped, body_hash(stamped), (to,), now)


async def test_a_wrong_signature_is_named_and_stays_text(
    browser, flux_server: RunningServer
) -> None:
    async with aiohttp.ClientSession() as http:
        form = {"username": "sig", "password": PASSWORD}
        async with http.post(flux_server.url + "/account/register", json=form) as r:
            assert r.status == 200, await r.text()
            address = (await r.json())["address"]
    await flux_server.app[PARTS]["store"].store_message(forged_for(flux_server, address))

    page, log = await browser.new_page()
    await page.goto(flux_server.url + "/")
    await page.fill("#acc-user", "sig")
    await page.fill("#acc-pass", PASSWORD)
    await page.click("#acc-login")
    row = page.locator("#list li.row", has_text="Refund")
    await expect(row).to_be_visible()
    await row.click()

    reader = page.locator("#reader")
    await expect(reader.locator(".content")).to_contain_text("<b>IBAN XX00</b>")
    alarm = reader.locator(".trust .check.bad", has_text="Sender")
    await expect(alarm).to_contain_text("Bad signature")
    await expect(alarm).to_contain_text("Do not trust it")
    # the seal holds, so it proves that server passed on a body whose signature fails: it
    # is blamed (§7.4), and a blamed route is never called verified
    route = reader.locator(".trust .check", has_text="Route")
    await expect(route).to_contain_text("Blamed server:")
    await expect(route).not_to_contain_text("Route verified")
    assert await page.evaluate("document.querySelectorAll('#reader b').length") == 0
    assert log.errors == []
