"""Screenshots of the web client's main screens, taken by its browser tests.

Always taken (so the path is exercised); written to docs/screenshots/ only when
FLUX_WEB_SCREENSHOTS=1 (to refresh the committed ones: they change with every run's times
and addresses, and a test run should not dirty the checkout), else to a temporary folder.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from playwright.async_api import Page

DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def folder() -> Path:
    if os.environ.get("FLUX_WEB_SCREENSHOTS") == "1":
        return DOCS
    return Path(tempfile.gettempdir()) / "flux-web-screenshots"


async def shot(page: Page, name: str) -> Path:
    """Save a PNG of `page` as it is now, named `name`; returns where it went."""
    where = folder()
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{name}.png"
    await page.screenshot(path=str(path))
    return path
