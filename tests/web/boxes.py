"""Measuring an element the web client may draw again at any moment.

The client redraws parts of the page on live updates (a pushed message, a state marked
read): between `expect(...).to_be_visible()` and `bounding_box()` the element measured can
be replaced, and the box of the one that left is None. A test that measures layout takes
the box of the element in place, trying again while it is being replaced.
"""

from __future__ import annotations

from playwright.async_api import FloatRect, Locator, expect


async def settled_box(locator: Locator, tries: int = 20) -> FloatRect | None:
    """`locator`'s bounding box (CSS pixels) once one element is in place to measure; None
    if it kept being replaced `tries` times in a row."""
    for _ in range(tries):
        await expect(locator).to_be_visible()
        box = await locator.bounding_box()
        if box is not None:
            return box
    return None
