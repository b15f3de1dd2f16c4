"""Reply-all in the web client across three federated servers, in a real Chromium.

Alice holds her key in the browser on server A. Bob (server B) writes to her with Carol
(server C), Dave (Bob's own server B) and Erin (Alice's own server A) in Cc. An envelope
names its recipients bare (fx1…, no server), so reply-all must find each one's home
(js/app/homes.js): Erin is hosted at A (written bare), Dave is confirmed at Bob's server,
and Carol, whom this browser has never heard of, is unknown: the draft puts her at Bob's
server, the sender's, and says so under Cc, so Alice corrects her to C before sending. The
reply (encrypted) then reaches Bob, Carol, Dave and Erin in their real mailboxes, each
able to decrypt it, and not Alice. A second reply-all, now that Carol's home is known
(confirmed when the first reply went out), places her at C with no note, and a plain reply
reaches her too. No console error on the page.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest_asyncio
from playwright.async_api import Page, expect

from federation.fed_helpers import local_servers
from flux.client import FluxClient
from flux.protocol import Identity
from flux.protocol.e2e import decrypt_content
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


async def import_key(page: Page, url: str, who: Identity) -> None:
    """Sign in on `url` with `who`'s key file, imported into the browser (and registered)."""
    await page.goto(url + "/")
    await page.set_input_files(
        "#key-file",
        files=[{"name": "key.json", "mimeType": "application/json",
                "buffer": who.to_keyfile().encode()}],
    )  # fmt: skip
    await expect(page.locator("#app")).to_be_visible()
    await expect(page.locator("#live")).to_have_text("live")


async def replies_to(client: FluxClient, original: str, *, want: int = 1) -> list[dict[str, Any]]:
    """The messages in `client`'s inbox answering `original` (`re`), once there are `want`
    of them (waits up to 30 s: they cross servers through the delivery queue)."""
    found: list[dict[str, Any]] = []
    for _ in range(300):
        page = await client.inbox(limit=100)
        found = [m for m in page.messages if m.get("re") == original]
        if len(found) >= want:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"{client.address}: {len(found)} replies to {original}, not {want}")


def host(server) -> str:
    return server.url.split("//")[1]


async def test_reply_all_reaches_each_recipient_at_its_own_server(browser, servers) -> None:
    a, b, c = servers["a"], servers["b"], servers["c"]
    a_name, b_name, c_name = host(a), host(b), host(c)
    alice = Identity.generate()
    bob, carol, dave, erin = (Identity.generate() for _ in range(4))
    clients = {
        "bob": FluxClient(bob, b.url), "carol": FluxClient(carol, c.url),
        "dave": FluxClient(dave, b.url), "erin": FluxClient(erin, a.url),
    }  # fmt: skip
    try:
        for client in clients.values():
            await client.register()
        page, log = await browser.new_page()
        await page.set_viewport_size({"width": 1100, "height": 760})
        await import_key(page, a.url, alice)

        first = await clients["bob"].send(
            f"{alice.address}@{a_name}", "Shall we meet on Monday?", subject="Planning",
            cc=[f"{carol.address}@{c_name}", dave.address, f"{erin.address}@{a_name}"],
        )  # fmt: skip
        row = page.locator("#list li.row", has_text="Planning")
        await expect(row).to_be_visible(timeout=20_000)
        await row.click()
        await expect(page.locator("#reader .content")).to_have_text("Shall we meet on Monday?")

        # reply-all: Bob at his server; Carol unknown (guessed at B, with a note); Dave
        # confirmed at B; Erin hosted here, bare; Alice herself nowhere
        await page.keyboard.press("a")
        await expect(page.locator("#compose")).to_be_visible()
        await expect(page.locator("#c-to")).to_have_value(f"{bob.address}@{b_name}")
        await expect(page.locator("#c-cc")).to_have_value(
            f"{carol.address}@{b_name}, {dave.address}@{b_name}, {erin.address}"
        )
        note = page.locator("#c-notes li.note")
        await expect(note).to_have_count(1)
        await expect(note).to_have_attribute("data-address", carol.address)
        await expect(note).to_contain_text(f"Home server of {carol.address} unknown")
        await expect(note).to_contain_text(f"guessed {b_name}")
        fields = await page.evaluate(
            "['c-to', 'c-cc', 'c-bcc'].map((id) => document.getElementById(id).value).join(' ')"
        )
        assert alice.address not in fields
        await shot(page, "reply-all-guess")

        # Alice knows better: Carol is at C; the note goes with the guess
        await page.fill(
            "#c-cc", f"{carol.address}@{c_name}, {dave.address}@{b_name}, {erin.address}"
        )
        await expect(note).to_have_count(0)
        await expect(page.locator("#c-enc-state")).to_contain_text(
            "Encrypted end to end for 4 recipients"
        )
        await page.locator("#c-body").press("Control+Home")
        await page.locator("#c-body").type("Monday works for me. ")
        await page.click("#c-send")
        await expect(page.locator("#compose")).to_be_hidden()
        await expect(page.locator("#toast")).to_contain_text("Sent encrypted")

        # every other recipient has it, in its own mailbox, and can read it
        for who, ident in (("bob", bob), ("carol", carol), ("dave", dave), ("erin", erin)):
            (reply,) = await replies_to(clients[who], first.id)
            assert reply["from"] == alice.address
            assert reply["to"] == bob.address
            assert reply["cc"] == [carol.address, dave.address, erin.address]
            assert decrypt_content(reply, ident).startswith("Monday works for me. "), who
        # ...and Alice's own mailbox holds no copy: she was neither in To nor in Cc
        mine = await page.evaluate("fluxApp.state.api.list({limit: 100})")
        assert [m for m in mine["messages"] if m.get("re") == first.id] == []
        sent = page.locator(".box[data-box=sent]")
        await sent.click()
        # sent mail: Erin stored here, the three others delivered to their servers
        summary = page.locator("#list li.row", has_text="Re: Planning").locator(".delivery-summary")
        await expect(summary).to_contain_text("3 delivered", timeout=20_000)
        await expect(summary).to_contain_text("1 stored")
        await page.click(".box[data-box=inbox]")

        # a second thread: Carol's home is known now (confirmed when the reply went out),
        # so reply-all places her at C without a note; this reply goes out plain
        second = await clients["bob"].send(
            f"{alice.address}@{a_name}", "Agenda attached below.", subject="Agenda",
            cc=[f"{carol.address}@{c_name}"],
        )  # fmt: skip
        row = page.locator("#list li.row", has_text="Agenda")
        await expect(row).to_be_visible(timeout=20_000)
        await row.click()
        await expect(page.locator("#reader .msg-subject")).to_have_text("Agenda")
        await page.locator("#reader button[data-action=reply-all]").click()
        await expect(page.locator("#c-to")).to_have_value(f"{bob.address}@{b_name}")
        await expect(page.locator("#c-cc")).to_have_value(f"{carol.address}@{c_name}")
        await expect(page.locator("#c-notes li.note")).to_have_count(0)
        await expect(page.locator("#c-encrypt")).to_be_checked()
        await page.click("#c-encrypt")
        await expect(page.locator("#c-enc-state")).to_contain_text("Not encrypted: you turned")
        await page.locator("#c-body").press("Control+Home")
        await page.locator("#c-body").type("Looks fine. ")
        await page.click("#c-send")
        await expect(page.locator("#compose")).to_be_hidden()
        for who in ("bob", "carol"):
            (reply,) = await replies_to(clients[who], second.id)
            assert reply.get("encrypted") is not True
            assert reply["content"].startswith("Looks fine. "), who

        # plain reply (not all) still goes to the sender alone
        await page.keyboard.press("r")
        await expect(page.locator("#c-to")).to_have_value(f"{bob.address}@{b_name}")
        await expect(page.locator("#c-cc")).to_have_value("")
        await page.click("#c-cancel")
        # Chromium reports each 404 of a lookup as a console line: "not hosted here" for
        # Carol and Dave (/federation/resolve) and "not at B" for Carol (/web/resolve) are
        # such answers, asked on purpose; anything else is a fault
        asked = (f"/federation/resolve/{carol.address}", f"/federation/resolve/{dave.address}",
                 "/web/resolve/" + quote(f"{carol.address}@{b_name}", safe=""))  # fmt: skip
        faults = [e for e in log.errors if not ("404" in e and any(u in e for u in asked))]
        assert faults == [], "\n".join(log.errors)
    finally:
        for client in clients.values():
            await client.close()
