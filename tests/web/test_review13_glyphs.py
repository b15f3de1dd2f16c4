"""What the page draws must not depend on fonts a system may lack (review of issue 13).

The padlock of encrypted mail was the emoji U+1F512: with no colour-emoji font (Debian's
Chromium here, and the README's screenshots taken with it) it showed as an empty box, next
to the one statement the page must make clearly: this message was encrypted. It is drawn
by the style sheet now. A key held in the browser sends encrypted mail to an account and
reads it back from Sent; no character from the emoji planes is left in the page's text.
"""

from __future__ import annotations

import aiohttp
import pytest_asyncio
from playwright.async_api import expect

from flux.server.runner import RunningServer
from web.boxes import settled_box

#: a shared 2-core machine can be slow: each expectation waits up to 15 s (not 5)
expect.set_options(timeout=15_000)


@pytest_asyncio.fixture(loop_scope="session", autouse=True)
async def _close_pages(browser):
    yield
    await browser.close_contexts()


async def test_the_padlock_is_drawn_not_an_emoji(browser, flux_server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        form = {"username": "ann", "password": "correct horse 13"}
        async with http.post(flux_server.url + "/account/register", json=form) as r:
            assert r.status == 200, await r.text()

    page, log = await browser.new_page()
    await page.set_viewport_size({"width": 1200, "height": 800})
    await page.goto(flux_server.url + "/")
    await page.click("#key-generate")
    await expect(page.locator("#live")).to_have_text("live")
    await page.keyboard.press("c")
    await page.fill("#c-to", "ann@web.test")
    await page.fill("#c-subject", "Sealed")
    await page.fill("#c-body", "only for ann")
    await page.click("#c-subject")  # the recipient's key is looked up on leaving the field
    await expect(page.locator("#c-encrypt")).to_be_checked()
    await page.click("#c-send")
    await expect(page.locator("#compose")).to_be_hidden()
    await page.click(".box[data-box=sent]")
    await page.locator("#list li.row", has_text="Sealed").click()
    await expect(page.locator("#reader .enc-line.encrypted")).to_contain_text(
        "Encrypted end to end"
    )

    locks = page.locator("#list .lock, #reader .lock")
    await expect(locks).to_have_count(2)
    for n in range(2):
        lock = locks.nth(n)
        box = await settled_box(lock)
        assert box is not None and box["width"] > 4 and box["height"] > 4, box
        assert await lock.text_content() == ""
        mask = await lock.evaluate("e => getComputedStyle(e).maskImage")
        assert "data:image/svg+xml" in mask, mask
    await expect(page.locator("#list .lock")).to_have_attribute("aria-label", "encrypted")

    emoji = await page.evaluate(
        """() => {
            const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
            const found = [];
            for (let n = walk.nextNode(); n; n = walk.nextNode()) {
                if (/[\\u{1F000}-\\u{1FAFF}]/u.test(n.data)) found.push(n.data.slice(0, 60));
            }
            return found;
        }"""
    )
    assert emoji == []
    assert log.errors == []
