"""The FLUX protocol in the browser (js/flux), run in a real Chromium against spec/vectors
and against the Python implementation (flux.protocol)."""

from __future__ import annotations

from playwright.async_api import Page

from web.conftest import StaticSite


async def test_the_page_is_a_secure_context_with_the_algorithms(page: Page, web_origin: StaticSite) -> None:  # fmt: skip
    await page.goto(web_origin.blank)
    algorithms = await page.evaluate(
        """async () => {
            const ed = await crypto.subtle.generateKey({name: 'Ed25519'}, false, ['sign', 'verify']);
            const x = await crypto.subtle.generateKey({name: 'X25519'}, false, ['deriveBits']);
            return [isSecureContext, ed.privateKey.algorithm.name, x.privateKey.algorithm.name];
        }"""
    )
    assert algorithms == [True, "Ed25519", "X25519"]
