"""The mailbox as a table that fits the terminal: at 80 columns every row is one line
(short id, sender, subject cut with …, date, flags); a wider terminal also gets the whole
id, the status, the folder and the tags.

Widths are rich's cell widths (an emoji counts two), and every column but the subject is
`no_wrap`: rich then shrinks the subject, and cuts it with an ellipsis, before any row would
wrap. Colour follows rich's rules: none when NO_COLOR is set or stdout is not a terminal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

from ._common import short
from .safe_text import one_line

__all__ = ["WIDE", "flags", "inbox_table", "relative_time", "unread_first"]

#: from this many columns on, the table shows the whole id, status, folder and tags
WIDE = 120
UNREAD = ("pending", "delivered")


def unread_first(messages: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Unread (pending or delivered) messages first, each group in the order given
    (newest first, as the server lists them)."""
    listed = list(messages)
    return [m for m in listed if m.get("_status") in UNREAD] + [
        m for m in listed if m.get("_status") not in UNREAD
    ]


def relative_time(ms: Any, now: datetime | None = None) -> str:
    """A message time (unix ms) in at most 10 cells: `now`, `5m ago`, `3h ago` within a
    day, else `Mar 14` this year, else `2025-03-14` (local time)."""
    if not isinstance(ms, int):
        return "?"
    when = datetime.fromtimestamp(ms / 1000, UTC).astimezone()
    now = now or datetime.now(UTC).astimezone()
    seconds = (now - when).total_seconds()
    if 0 <= seconds < 60:
        return "now"
    if 0 <= seconds < 3600:
        return f"{int(seconds // 60)}m ago"
    if 0 <= seconds < 86400:
        return f"{int(seconds // 3600)}h ago"
    return when.strftime("%b %d") if when.year == now.year else when.strftime("%Y-%m-%d")


def flags(msg: dict[str, Any]) -> str:
    """Letters, as mutt shows them: N new (unread), R read, D deleted, E encrypted,
    r a reply (`re`), T tagged."""
    status = msg.get("_status")
    letters = {"pending": "N", "delivered": "N", "read": "R", "deleted": "D"}.get(status, "?")
    letters += "E" if msg.get("encrypted") else ""
    letters += "r" if msg.get("re") else ""
    letters += "T" if msg.get("_tags") else ""
    return letters


def inbox_table(
    messages: list[dict[str, Any]],
    title: str,
    width: int,
    name_of: Callable[[str], str | None] = lambda _: None,
) -> Table:
    """The table of `messages` for a terminal `width` cells wide; `name_of(address)` gives a
    sender's known name (`bob@example.org`), shown instead of the fx1 address."""
    wide = width >= WIDE
    rows = [_cells(msg, wide, name_of) for msg in messages]

    def fit(index: int, header: str, cap: int) -> int:
        # a fixed width: such columns are never squeezed to nothing, the subject gives way
        return min(cap, max([len(header)] + [cell_len(str(r[index])) for r in rows]))

    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, expand=False)
    table.add_column("id", width=32 if wide else 8, no_wrap=True)
    table.add_column("from", width=fit(1, "from", 28 if wide else 16), no_wrap=True,
                     overflow="ellipsis")  # fmt: skip
    # the only column without a width: rich shrinks it first; its Text never wraps
    table.add_column("subject", overflow="ellipsis")
    if wide:
        table.add_column("status", width=fit(3, "status", 9), no_wrap=True)
        table.add_column("inbox", width=fit(4, "inbox", 12), no_wrap=True, overflow="ellipsis")
        table.add_column("tags", width=fit(5, "tags", 20), no_wrap=True, overflow="ellipsis")
    table.add_column("time", width=fit(-2, "time", 10), no_wrap=True)
    table.add_column("flags", width=5, no_wrap=True)
    for row in rows:
        table.add_row(*row)
    if not messages:
        table.caption = "no messages"
    return table


def _cells(msg: dict[str, Any], wide: bool, name_of: Callable[[str], str | None]) -> list[Any]:
    ident = str(msg.get("id", "?"))
    sender = str(msg.get("from", "?"))
    # the server's name for the sender (`_from_name`, where it knows the binding), else ours
    from_name = msg.get("_from_name")
    name = from_name if isinstance(from_name, str) and from_name else name_of(sender)
    who = one_line(name or short(sender, 14 if wide else 8))
    # cleaned before layout, so widths count what is shown (safe_text.py); one line too
    subject = Text(one_line(msg["subject"])) if msg.get("subject") else Text("(no subject)", "dim")
    if msg.get("encrypted"):
        subject = Text("🔒 ") + subject
    subject.no_wrap, subject.overflow = True, "ellipsis"
    style = "bold" if msg.get("_status") in UNREAD else ""
    row: list[Any] = [ident if wide else ident[:8], Text(who, style), subject]
    if wide:
        tags = ", ".join(str(t) for t in msg.get("_tags") or ())
        # Text, not str: rich reads a str cell as markup, and a tag or folder is anyone's
        # words (a sender's tags arrive with the message): `[/x]` would fail the listing
        row += [Text(one_line(msg.get("_status", "?"))), Text(one_line(msg.get("_inbox") or "")),
                Text(one_line(tags))]  # fmt: skip
    return [*row, relative_time(msg.get("t")), flags(msg)]
