"""A hop made by a server whose key this server does not know, in the web client.

js/app/trust.js `ServerKeys.lookup` throws for a server whose keys are not on record here
(never an empty key list a caller could read as "nothing to check"), and the reader turns
that into a plain warning: the hop is shown as not verified, never as sealed, and never as
tampering either, while the rest of the chain is still judged. Two messages, each written
into the store as a server would hand it over: one whose route passes through
ghost.example (a server nobody here has heard of) and is otherwise sound, and one with the
same unknown hop whose own server's record was changed after sealing (still an alarm).
"""

from __future__ import annotations

import time

import aiohttp
import pytest_asyncio
from playwright.async_api import Page, expect

from flux.protocol import Identity
from flux.protocol.chain import ServerSigner, append_hop
from flux.protocol.envelope import body_hash
from flux.protocol.outgoing import compose
from flux.server.app import PARTS
from flux.server.runner import RunningServer
from flux.store.base import Incoming

#: a shared 2-core machine can be slow: each expectation waits up to 15 s (not 5)
expect.set_options(timeout=15_000)

PASSWORD = "correct horse 13"
GHOST = "ghost.example"


@pytest_asyncio.fixture(loop_scope="session", autouse=True)
async def _close_pages(browser):
    yield
    await browser.close_contexts()


def via_ghost(server: RunningServer, to: str, subject: str, *, tamper: bool) -> Incoming:
    """A message to `to` first sealed by GHOST (its key known nowhere), then by `server`
    as stored; with `tamper`, `server`'s record has its time moved after sealing."""
    now = int(time.time() * 1000)
    out = compose(Identity.generate(), to, "Minutes of the meeting.", subject=subject,
                  now_ms=now - 2_000)  # fmt: skip
    ghost = ServerSigner(GHOST, Identity.generate())
    own = server.app[PARTS]["key"].signer
    hopped = append_hop(out.primary, ghost, next_hop=own.name, now_ms=now - 1_000)
    stamped = append_hop(hopped, own, next_hop="local", now_ms=now)
    if tamper:
        last = stamped["integrity_chain"][1]
        stamped["integrity_chain"][1] = {**last, "t": last["t"] - 60_000}
    return Incoming(stamped, body_hash(stamped), (to,), now)


async def open_message(page: Page, subject: str) -> None:
    row = page.locator("#list li.row", has_text=subject)
    await expect(row).to_be_visible()
    await row.click()
    await expect(page.locator("#reader .msg-subject")).to_have_text(subject)


async def test_a_hop_of_a_server_with_no_known_key_is_a_warning_not_a_pass(
    browser, flux_server: RunningServer
) -> None:
    async with aiohttp.ClientSession() as http:
        form = {"username": "ghosted", "password": PASSWORD}
        async with http.post(flux_server.url + "/account/register", json=form) as r:
            assert r.status == 200, await r.text()
            address = (await r.json())["address"]
    store = flux_server.app[PARTS]["store"]
    await store.store_message(via_ghost(flux_server, address, "Sound route", tamper=False))
    await store.store_message(via_ghost(flux_server, address, "Changed route", tamper=True))
    own = flux_server.app[PARTS]["key"].signer.name

    page, log = await browser.new_page()
    await page.goto(flux_server.url + "/")
    await page.fill("#acc-user", "ghosted")
    await page.fill("#acc-pass", PASSWORD)
    await page.click("#acc-login")

    # intact, but the ghost's seal cannot be checked: a warning naming it, not a pass
    await open_message(page, "Sound route")
    trust = page.locator("#reader .trust")
    route = trust.locator(".check", has_text="Route")
    await expect(route).to_have_class("check warn")
    await expect(route).to_contain_text(f"no key on record for {GHOST}")
    await expect(route).to_contain_text("The rest of the route holds")
    await expect(trust).not_to_contain_text("Route verified")
    await expect(trust).not_to_contain_text("Broken chain")
    await expect(trust).not_to_have_class("trust alarm")
    await expect(trust.locator(".hop.unknown")).to_have_count(1)
    await expect(trust.locator(".hop.unknown .server")).to_have_text(GHOST)
    await expect(trust.locator(".hop.unknown")).to_contain_text("not verified")
    await expect(trust.locator(".hop.sealed")).to_have_count(1)
    await expect(trust.locator(".hop.sealed .server")).to_have_text(own)

    # the same unknown hop does not excuse a record changed after sealing: still an alarm
    await open_message(page, "Changed route")
    trust = page.locator("#reader .trust")
    await expect(trust).to_have_class("trust alarm")
    route = trust.locator(".check", has_text="Route")
    await expect(route).to_contain_text("Broken chain")
    await expect(route).to_contain_text(f"at {own}")
    await expect(trust.locator(".hop.sealed")).to_have_count(0)
    # the lookup itself: a known server's keys, a throw (not an empty list) for the others
    got = await page.evaluate(
        """async ([own, ghost]) => {
            const keys = fluxApp.state.keys;
            await keys.fetch([own, ghost]);
            const out = {own: keys.lookup(own).keys.length};
            for (const name of [ghost, "never.asked.example"]) {
                try {
                    out[name] = ["returned", keys.lookup(name)];
                } catch (err) {
                    out[name] = [err.name, err.message, err.server];
                }
            }
            return out;
        }""",
        [own, GHOST],
    )
    assert got["own"] >= 1
    assert got[GHOST] == [
        "UnknownServerKeys",
        f"your server has no key on record for {GHOST}",
        GHOST,
    ]
    assert got["never.asked.example"][0] == "UnknownServerKeys"

    # the only console line: Chromium's own report of /web/keys's 404 for the ghost (how
    # that route says "no keys known here"); nothing else went wrong on the page
    unknown_keys = f"/web/keys/{GHOST}"
    assert [e for e in log.errors if not ("404" in e and unknown_keys in e)] == []
