"""Text from other people, made safe to print on a terminal.

A subject, a sender's name, a tag, a folder, a body or a server's error message is chosen
by someone else. Printed raw, its control characters drive the reader's terminal: ESC
sequences recolour or clear the screen, retitle the window, rewrite earlier lines (a
forged "✓ signature verifies"), or, on some terminals, write to the clipboard; bidi
controls (U+202A-U+202E, U+2066-U+2069) reorder what is shown, so `gpj.exe` reads as
`exe.jpg`. rich passes ESC and C1 controls through as they are (it strips only BEL, BS,
VT, FF and CR).

So every console of the CLI is a `SafeConsole`: whatever it renders, each control
character in the text (not in rich's own styling, which is added after rendering) becomes
U+FFFD, so the reader sees that something was there. Commands that lay text out in
columns clean it first with `one_line` or `block`, so widths are counted on what is
shown. JSON for scripts (`json_text`) keeps every character, escaped: C0 controls are
escaped by JSON itself, C1 and bidi controls by `json_text`, so the output is the same
JSON value and still safe to print.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from rich.console import Console, ConsoleOptions, RenderableType
from rich.segment import Segment

__all__ = ["SafeConsole", "block", "json_text", "one_line"]

SHOWN_FOR_CONTROL = "\ufffd"

#: C0 controls but tab and newline, DEL, C1 controls, and the bidi embeddings, overrides
#: and isolates (Unicode TR9; "Trojan Source", CVE-2021-42574)
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
#: what JSON leaves raw but a terminal may act on: DEL, C1 and the bidi controls
_JSON_RAW_CONTROL = re.compile("[\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def one_line(value: Any) -> str:
    """`value` as text for one line of a listing: runs of whitespace (newlines and tabs
    included) become one space, control characters U+FFFD."""
    return _CONTROL.sub(SHOWN_FOR_CONTROL, " ".join(str(value).split()))


def block(value: Any) -> str:
    """`value` as a block of text (a message body): newlines and tabs kept, CR dropped
    before a newline, every other control character U+FFFD."""
    text = str(value).replace("\r\n", "\n")
    return _CONTROL.sub(SHOWN_FOR_CONTROL, text)


def json_text(value: Any, *, indent: int | None = None, separators: Any = None) -> str:
    """`json.dumps(value, ensure_ascii=False)` with DEL, C1 and bidi controls written as
    `\\u` escapes: the same JSON value, and nothing in it acts on a terminal."""
    text = json.dumps(value, ensure_ascii=False, indent=indent, separators=separators)
    return _JSON_RAW_CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class SafeConsole(Console):
    """A rich Console that never writes a control character it was given as text.

    `render` is where every renderable (a string, a Text, a table and each of its cells, a
    panel) becomes segments; rich applies styles (its own escape sequences) only later,
    when the segments are written, and marks its own cursor controls as control segments.
    So cleaning the text of every non-control segment here reaches everything printed,
    and nothing of rich's own."""

    def render(
        self, renderable: RenderableType, options: ConsoleOptions | None = None
    ) -> Iterable[Segment]:
        for segment in super().render(renderable, options):
            if segment.control or not _CONTROL.search(segment.text):
                yield segment
            else:
                yield Segment(block(segment.text), segment.style, segment.control)
