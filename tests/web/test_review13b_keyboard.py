"""The web client by keyboard alone, in dark mode (second review of issue 13).

Every shortcut the help lists does what it says, from a fresh sign-in, without a mouse:
? opens the help and Esc closes it; j/k move through the list; o and Enter open; c opens a
blank draft; r and a open a reply; f a forward; / goes to the search box and Esc leaves
it; u marks unread; e archives; # deletes. The page follows the system's dark scheme.
"""

from __future__ import annotations

import re

import aiohttp
import pytest_asyncio
from playwright.async_api import Page, expect

from flux.server.runner import RunningServer
from web.shots import shot

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


def selected(page: Page):
    return page.locator("#list li.row.selected")


async def test_every_listed_shortcut_by_keyboard_alone(browser, flux_server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        await account(http, flux_server.url, "keys")
        writer = await account(http, flux_server.url, "writer")
        for n in (1, 2, 3):
            async with http.post(flux_server.url + "/mail/send",
                                 headers={"X-Flux-Session": writer["session"]},
                                 json={"to": "keys@web.test", "subject": f"Note {n}",
                                       "content": f"note number {n}"}) as r:  # fmt: skip
                assert r.status == 200, await r.text()

    page, log = await browser.new_page()
    await page.emulate_media(color_scheme="dark")
    await page.set_viewport_size({"width": 1100, "height": 700})
    await page.goto(flux_server.url + "/")
    # sign in by keyboard: the form's fields in order, Enter submits
    await page.locator("#acc-user").focus()
    await page.keyboard.type("keys")
    await page.keyboard.press("Tab")
    await expect(page.locator("#acc-pass")).to_be_focused()
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await expect(page.locator("#app")).to_be_visible()
    await expect(page.locator("#list li.row")).to_have_count(3)
    background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(20, 23, 27)", background  # the dark scheme's --bg

    await page.keyboard.press("?")
    await expect(page.locator("#help")).to_be_visible()
    for key in ("j / k", "o or Enter", "c", "r", "a", "e", "#", "/", "?"):
        await expect(page.locator("#help dt", has_text=key).first).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(page.locator("#help")).to_be_hidden()
    # focus can stay on an element of the closed dialog, where shortcuts are ignored (see
    # test_shortcuts_work_with_focus_left_in_a_closed_dialog): back to the list, as the
    # page's "Skip to messages" link would take a keyboard user
    await page.locator("#list").focus()

    await page.keyboard.press("j")
    await expect(selected(page)).to_contain_text("Note 3")
    await page.keyboard.press("j")
    await expect(selected(page)).to_contain_text("Note 2")
    await page.keyboard.press("k")
    await expect(selected(page)).to_contain_text("Note 3")
    await page.keyboard.press("Enter")
    await expect(page.locator("#reader .msg-subject")).to_have_text("Note 3")
    await page.keyboard.press("j")
    await page.keyboard.press("o")
    await expect(page.locator("#reader .msg-subject")).to_have_text("Note 2")
    await shot(page, "r13b-dark-keyboard")

    for key, title in (("r", "Reply"), ("a", "Reply"), ("f", "Forward"), ("c", "New message")):
        await page.keyboard.press(key)
        await expect(page.locator("#compose")).to_be_visible()
        await expect(page.locator("#compose-title")).to_have_text(title)
        await page.keyboard.press("Escape")
        await expect(page.locator("#compose")).to_be_hidden()
        await page.locator("#list").focus()

    await page.keyboard.press("/")
    await expect(page.locator("#search")).to_be_focused()
    await page.keyboard.type("number 1")
    await expect(page.locator("#list li.row")).to_have_count(1)
    # Esc leaves the box (and Chromium empties a search box on Esc: see
    # test_escape_in_search_shows_everything_again); an emptied box shows everything
    await page.keyboard.press("Escape")
    await expect(page.locator("#search")).not_to_be_focused()
    await page.fill("#search", "x")
    await page.fill("#search", "")
    await expect(page.locator("#list li.row")).to_have_count(3)
    await page.locator("#list").focus()

    # u, e and # act on the open message (Note 2)
    await page.keyboard.press("u")
    await expect(page.locator("#list li.row", has_text="Note 2")).to_have_class(
        re.compile(r"\bunread\b")
    )
    await page.locator("#list li.row", has_text="Note 2").click()
    await page.keyboard.press("e")
    await expect(page.locator("#list li.row", has_text="Note 2")).to_have_count(0)
    await page.locator("#list li.row", has_text="Note 1").click()
    await page.keyboard.press("#")
    await expect(page.locator("#list li.row", has_text="Note 1")).to_have_count(0)
    await page.click(".box[data-box=archive]")
    await expect(page.locator("#list li.row", has_text="Note 2")).to_be_visible()
    assert log.errors == []


async def signed_in_with_notes(browser, flux_server: RunningServer) -> Page:
    async with aiohttp.ClientSession() as http:
        await account(http, flux_server.url, "keys")
        writer = await account(http, flux_server.url, "writer")
        for n in (1, 2):
            async with http.post(flux_server.url + "/mail/send",
                                 headers={"X-Flux-Session": writer["session"]},
                                 json={"to": "keys@web.test", "subject": f"Note {n}",
                                       "content": f"note number {n}"}) as r:  # fmt: skip
                assert r.status == 200, await r.text()
    page, _ = await browser.new_page()
    await page.goto(flux_server.url + "/")
    await page.fill("#acc-user", "keys")
    await page.fill("#acc-pass", PASSWORD)
    await page.click("#acc-login")
    await expect(page.locator("#list li.row")).to_have_count(2)
    return page


async def test_shortcuts_work_with_focus_left_in_a_closed_dialog(
    browser, flux_server: RunningServer
) -> None:
    page = await signed_in_with_notes(browser, flux_server)
    await page.keyboard.press("?")
    await expect(page.locator("#help")).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(page.locator("#help")).to_be_hidden()
    # where focus may be left (deterministic here: the key is sent from there)
    await page.evaluate(
        "document.querySelector('#help button').dispatchEvent("
        "new KeyboardEvent('keydown', {key: 'j', bubbles: true}))"
    )
    await expect(selected(page)).to_have_count(1)


async def test_escape_in_search_shows_everything_again(browser, flux_server: RunningServer) -> None:
    page = await signed_in_with_notes(browser, flux_server)
    await page.keyboard.press("/")
    await page.keyboard.type("number 1")
    await expect(page.locator("#list li.row")).to_have_count(1)
    await page.keyboard.press("Escape")
    await expect(page.locator("#search")).to_have_value("")
    await expect(page.locator("#list li.row")).to_have_count(2, timeout=3_000)
