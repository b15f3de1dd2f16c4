"""`flux folders`: the folders of your mailbox with their counts (deleted mail not
counted), so you know what `flux inbox --inbox NAME` and `flux move ID NAME` can name
(GET /inboxes/{addr}, or /mail/inboxes for a password account: docs/API.md, "Mail")."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from ._common import KeyOption, LegacySecretOption, ServerOption, out, run, with_client
from .mail import _account
from .safe_text import json_text, one_line

if TYPE_CHECKING:  # the client is imported where a command runs (_common.py says why)
    from ..client import FluxClient

__all__ = ["folders"]

UNREAD = ("pending", "delivered")


def folders(
    as_json: bool = typer.Option(
        False, "--json", help="Print the server's {folder: {status: count}}."
    ),
    key: Path | None = KeyOption,
    server: str = ServerOption,
    legacy_secret: str | None = LegacySecretOption,
) -> None:
    """List your folders with how many unread and read messages each holds.

    Deleted mail is in no folder's count: `flux inbox --status deleted` lists it."""

    def show(found: dict[str, Any]) -> None:
        if as_json:
            print(json_text(found, indent=2))
            return
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        for column in ("folder", "unread", "read"):
            table.add_column(column, justify="left" if column == "folder" else "right")
        for name, counts in sorted(found.items()):
            counts = counts if isinstance(counts, dict) else {}
            unread = sum(int(counts.get(s) or 0) for s in UNREAD)
            # Text: a folder name is never read as markup (`[/x]` is a valid name)
            table.add_row(Text(one_line(name)), str(unread), str(counts.get("read") or 0))
        if not found:
            table.caption = "no mail yet: the first message lands in `inbox`"
        out.print(table)

    if api := _account(key, legacy_secret, server):
        show(dict(run(api.call("GET", "/mail/inboxes")).get("inboxes") or {}))
        return

    async def go(client: FluxClient) -> None:
        show(await client.inboxes())

    with_client(key, server, go, legacy_secret)
