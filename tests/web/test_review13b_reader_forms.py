"""What a person types in the reader survives mail arriving (second review of issue 13).

The reader holds two small forms (tags, move to). The page draws the whole reader again
whenever anything about the open message may have changed: its checks come in, its
conversation loads, and every time new mail arrives (the catch-up after a pushed message
redraws it). Each redraw made the forms afresh, empty and unfocused: a person typing a tag
while a message arrived lost what they typed, and the next keys they pressed went to the
page's shortcuts (`#` deletes the open message, `e` archives it).
"""

from __future__ import annotations

import aiohttp
import pytest_asyncio
from playwright.async_api import expect

from flux.server.runner import RunningServer

#: a shared 2-core machine can be slow: each expectation waits up to 15 s (not 5)
expect.set_options(timeout=15_000)

PASSWORD = "correct horse 13b"


@pytest_asyncio.fixture(loop_scope="session", autouse=True)
async def _close_pages(browser):
    yield
    await browser.close_contexts()


async def account(http: aiohttp.ClientSession, url: str, username: str) -> dict:
    async with http.post(url + "/account/register",
                         json={"username": username, "password": PASSWORD}) as r:  # fmt: skip
        assert r.status == 200, await r.text()
        return await r.json()


async def send(http: aiohttp.ClientSession, url: str, session: str, subject: str) -> None:
    async with http.post(url + "/mail/send", headers={"X-Flux-Session": session},
                         json={"to": "reader@web.test", "subject": subject,
                               "content": "hello"}) as r:  # fmt: skip
        assert r.status == 200, await r.text()


async def test_typing_a_tag_survives_new_mail(browser, flux_server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        await account(http, flux_server.url, "reader")
        writer = await account(http, flux_server.url, "writer")
        await send(http, flux_server.url, writer["session"], "First")

        page, log = await browser.new_page()
        await page.goto(flux_server.url + "/")
        await page.fill("#acc-user", "reader")
        await page.fill("#acc-pass", PASSWORD)
        await page.click("#acc-login")
        await expect(page.locator("#live")).to_have_text("live")
        await page.locator("#list li.row", has_text="First").click()
        await expect(page.locator("#reader .trust")).to_contain_text("Route verified")
        await page.locator("#tag-input").click()
        await page.keyboard.type("for-later")

        await send(http, flux_server.url, writer["session"], "Second")
        await expect(page.locator("#list li.row", has_text="Second")).to_be_visible()
        # the catch-up after the pushed message has run (it redraws the open reader)
        await page.wait_for_function("!fluxApp.state.live.catching")
        await expect(page.locator("#tag-input")).to_have_value("for-later")
        await expect(page.locator("#tag-input")).to_be_focused()
        assert log.errors == []
