"""`flux export`: a mailbox as JSON lines, one stored envelope a line, each verifiable offline
with `flux verify` (the server's `_status`/`_inbox`/`_tags` annotations are left out: they are
not part of what was signed). Progress goes to stderr when it is a terminal."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import typer

from ._common import KeyOption, LegacySecretOption, ServerOption, err, run, with_client
from .mail import _account, stored_json

if TYPE_CHECKING:  # the client is imported where a command runs (_common.py says why)
    from ..client import FluxClient
    from ._account_api import AccountApi

PAGE = 500  # the server's largest page (docs/API.md: limit 1-500)


async def _pages_key(
    client: FluxClient, box: str | None, status: str | None
) -> AsyncIterator[list[dict[str, Any]]]:
    cursor = None
    while True:
        page = await client.inbox(box, status=status, limit=PAGE, cursor=cursor)
        yield page.messages
        if not (cursor := page.next_cursor):
            return


async def _pages_account(
    api: AccountApi, box: str | None, status: str | None
) -> AsyncIterator[list[dict[str, Any]]]:
    cursor = None
    while True:
        params = {"inbox": box, "status": status, "limit": PAGE, "cursor": cursor}
        answer = await api.call("GET", "/mail/inbox", params=params)
        yield list(answer.get("messages") or [])
        if not (cursor := answer.get("next_cursor")):
            return


async def _write(pages: AsyncIterator[list[dict[str, Any]]], sink: TextIO) -> int:
    from rich.progress import Progress, SpinnerColumn, TextColumn

    progress = Progress(SpinnerColumn(), TextColumn("exporting: {task.completed} messages"),
                        console=err, transient=True)  # fmt: skip
    count = 0
    with progress if err.is_terminal else nullcontext():
        task = progress.add_task("export", total=None)
        async for messages in pages:
            for msg in messages:
                sink.write(stored_json(msg) + "\n")
            count += len(messages)
            progress.update(task, completed=count)
    return count


def export(
    output: Path | None = typer.Option(
        None, "--output", "-o", help="File to write (default: stdout).", show_default=False
    ),
    box: str | None = typer.Option(None, "--inbox", help="Only this folder (default: all)."),
    status: str | None = typer.Option(
        None,
        "--status",
        help="Only this status: pending|delivered|read|deleted (default: all but deleted).",
    ),
    key: Path | None = KeyOption,
    server: str = ServerOption,
    legacy_secret: str | None = LegacySecretOption,
) -> None:
    """Write your mailbox as JSON lines: one envelope a line, as stored, newest first."""
    sink = sys.stdout if output is None else _open(output)
    try:
        if api := _account(key, legacy_secret, server):
            count = run(_write(_pages_account(api, box, status), sink))
        else:

            async def go(client: FluxClient) -> int:
                return await _write(_pages_key(client, box, status), sink)

            count = with_client(key, server, go, legacy_secret)
    finally:
        if output is not None:
            sink.close()
    if output is not None:
        err.print(f"exported {count} message(s) to {output}", markup=False)


def _open(path: Path) -> TextIO:
    """The export file, created 0600: it is the owner's mail."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return os.fdopen(fd, "w", encoding="utf-8")
