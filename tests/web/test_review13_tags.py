"""Many and hostile tags in the web client (review of issue 13), in a real Chromium.

A message can carry any number of tags, each up to the server's length, holding markup or
bidi characters. The page must keep them text (no element made from them), keep a row of
the list one row (its sender and subject in view however many tags there are), keep the
reader's message in view under its tags, and list the tags of the mail it loaded as
mailboxes as soon as it signs in (they raced the mailbox counts and were lost).
"""

from __future__ import annotations

import aiohttp
import pytest_asyncio
from playwright.async_api import expect

from flux.server.runner import RunningServer
from web.boxes import settled_box

#: a shared 2-core machine can be slow: each expectation waits up to 15 s (not 5)
expect.set_options(timeout=15_000)

PASSWORD = "correct horse 13"
HOSTILE_TAG = "<img src=x onerror=alert(1)>"


@pytest_asyncio.fixture(loop_scope="session", autouse=True)
async def _close_pages(browser):
    yield
    await browser.close_contexts()


async def _account_with_tagged_mail(url: str, tags: list[str]) -> None:
    """Registers `tam`, sends one message to herself and gives it `tags` (32 at a time)."""
    async with aiohttp.ClientSession() as http:
        form = {"username": "tam", "password": PASSWORD}
        async with http.post(url + "/account/register", json=form) as r:
            assert r.status == 200, await r.text()
            session = {"X-Flux-Session": (await r.json())["session"]}
        mail = {"to": "tam@web.test", "subject": "Tagged to the hilt", "content": "hello"}
        async with http.post(url + "/mail/send", json=mail, headers=session) as r:
            assert r.status == 200, await r.text()
        async with http.get(url + "/mail/inbox", headers=session) as r:
            msg_id = (await r.json())["messages"][0]["id"]
        for start in range(0, len(tags), 32):
            change = {"id": msg_id, "add": tags[start : start + 32]}
            async with http.post(url + "/mail/tag", json=change, headers=session) as r:
                assert r.status == 200, await r.text()


async def test_many_hostile_tags_stay_text_and_in_bounds(
    browser, flux_server: RunningServer
) -> None:
    tags = [HOSTILE_TAG, "\u202egnp.exe", "p\u0430ypal"]
    tags += [f"tag-{n:03d}-" + "x" * 40 for n in range(157)]
    await _account_with_tagged_mail(flux_server.url, tags)

    page, log = await browser.new_page()
    await page.set_viewport_size({"width": 1200, "height": 800})
    await page.goto(flux_server.url + "/")
    await page.fill("#acc-user", "tam")
    await page.fill("#acc-pass", PASSWORD)
    await page.click("#acc-login")
    row = page.locator("#list li.row", has_text="Tagged to the hilt")
    await expect(row).to_be_visible()

    # the tags of the loaded mail are mailboxes at once, as text, bidi marked
    boxes = page.locator("#boxes")
    await expect(boxes.locator(".box", has_text=HOSTILE_TAG)).to_have_count(1)
    await expect(boxes.locator(".box", has_text="[U+202E]gnp.exe")).to_have_count(1)
    await expect(boxes.locator(".box", has_text="tag-156-")).to_have_count(1)

    # one row stays one row: sender and subject in view, tags clipped after the time
    box = await settled_box(row)  # the list may be drawn again between two steps
    assert box is not None and box["height"] < 120, box
    await expect(row.locator(".from")).to_be_in_viewport()
    await expect(row.locator(".subject")).to_be_in_viewport()
    await expect(row.locator("time")).to_be_in_viewport()

    # the reader: tags in their own bounded box, the message's checks and text in view
    await row.click()
    reader = page.locator("#reader")
    await expect(reader.locator(".content")).to_contain_text("hello")
    tag_box = await settled_box(reader.locator(".headers .tags"))  # drawn after the text
    assert tag_box is not None and tag_box["height"] < 150, tag_box
    await expect(reader.locator(".content")).to_be_in_viewport()
    chip = reader.locator(".chip", has_text=HOSTILE_TAG)
    await expect(chip).to_have_attribute("title", HOSTILE_TAG)
    made = await page.evaluate("document.querySelectorAll('body img, body script').length")
    assert made == 0
    assert log.errors == []
