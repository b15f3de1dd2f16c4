"""The first-run screen by keyboard and at 360 px (second review of issue 13).

The two ways in side by side; at 360 px nothing scrolls sideways. Tab goes through the
password form, then the key's passphrase, "Create a new key" and the key-file import, whose
real control (a hidden file input) shows its focus on the button drawn for it; the two
key buttons are drawn alike.
"""

from __future__ import annotations

import pytest_asyncio
from playwright.async_api import expect

from flux.server.runner import RunningServer
from web.shots import shot

#: a shared 2-core machine can be slow: each expectation waits up to 15 s (not 5)
expect.set_options(timeout=15_000)


@pytest_asyncio.fixture(loop_scope="session", autouse=True)
async def _close_pages(browser):
    yield
    await browser.close_contexts()


async def test_first_run_by_keyboard_and_narrow(browser, flux_server: RunningServer) -> None:
    page, log = await browser.new_page()
    await page.set_viewport_size({"width": 360, "height": 720})
    await page.goto(flux_server.url + "/")
    await expect(page.locator("#signin")).to_be_visible()
    await shot(page, "r13b-signin-narrow")
    wide = await page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
    assert wide[0] <= wide[1], wide

    order = []
    await page.locator("#acc-user").focus()
    for step in range(7):
        if step:
            await page.keyboard.press("Tab")
        order.append(await page.evaluate("document.activeElement.id"))
    assert order == ["acc-user", "acc-pass", "acc-login", "acc-register", "key-pass",
                     "key-generate", "key-file"], order  # fmt: skip
    # the hidden file input has focus: the button drawn for it shows it
    outline = await page.evaluate(
        "getComputedStyle(document.querySelector('label[for=key-file]')).outlineStyle"
    )
    assert outline == "solid"
    boxes = await page.evaluate(
        "['key-generate', 'key-file'].map((id) => {"
        " const el = id === 'key-file' ? document.querySelector('label[for=key-file]')"
        " : document.getElementById(id); const b = el.getBoundingClientRect();"
        " return [Math.round(b.height), getComputedStyle(el).fontSize]; })"
    )
    assert boxes[0] == boxes[1], boxes
    assert log.errors == []
