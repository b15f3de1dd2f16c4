"""How the web client turns untrusted strings into what it shows (second review of issue 13).

js/app/dom.js `visible` (names, subjects, tags) and `visibleText` (message text) run in a
real Chromium on the page's own modules. Besides controls and bidi characters, characters
drawn as nothing or as a blank (soft hyphen, Hangul filler, tag characters...) are marked,
so they can neither hide text nor fake a space; and a CRLF line end, as mail written
elsewhere often has, is a line end, not a [U+000D] at the end of every line.
"""

from __future__ import annotations

import pytest

CASES = [
    # (input, visible(input), visibleText(input))
    ("pay\u202egnp.exe", "pay[U+202E]gnp.exe", "pay[U+202E]gnp.exe"),
    ("a\u0007b\u001bc", "a[U+0007]b[U+001B]c", "a[U+0007]b[U+001B]c"),
    ("zero\u200bwidth\ufeff", "zero[U+200B]width[U+FEFF]", "zero[U+200B]width[U+FEFF]"),
    ("soft\u00adhyphen", "soft[U+00AD]hyphen", "soft[U+00AD]hyphen"),
    ("bank\u3164com", "bank[U+3164]com", "bank[U+3164]com"),
    ("half\uffa0width", "half[U+FFA0]width", "half[U+FFA0]width"),
    ("hidden\U000e0041\U000e0042", "hidden[U+E0041][U+E0042]", "hidden[U+E0041][U+E0042]"),
    ("mongolian\u180esep", "mongolian[U+180E]sep", "mongolian[U+180E]sep"),
    ("line one\r\nline two\r\n", "line one[U+000D]\nline two[U+000D]\n", "line one\nline two\n"),
    ("a lone\rCR", "a lone[U+000D]CR", "a lone[U+000D]CR"),
    ("tab\tand\nnewline", "tab\tand\nnewline", "tab\tand\nnewline"),
    ("plain ASCII, é, 日本語, emoji \u2764\ufe0f", None, None),  # unchanged
]


@pytest.mark.parametrize(("raw", "one_line", "text"), CASES)
async def test_visible_and_visible_text(page, web_origin, raw, one_line, text) -> None:
    await page.goto(web_origin.blank)
    got = await page.evaluate(
        """async ([url, raw]) => {
            const dom = await import(url);
            return [dom.visible(raw), dom.visibleText(raw), dom.hasDisguise(raw)];
        }""",
        [web_origin.module("js/app/dom.js"), raw],
    )
    want_line = raw if one_line is None else one_line
    want_text = raw if text is None else text
    assert got[0] == want_line
    assert got[1] == want_text
    assert got[2] == (one_line is not None and one_line != raw)
