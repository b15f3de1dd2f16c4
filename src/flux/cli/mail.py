"""Commands that talk to a server: `register`, `send`, `inbox`, `read`, `watch`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..client import FluxClient, FluxClientError, Verified
from ..protocol import ChainCheck
from ..protocol.errors import DecryptionError, FluxError
from ._common import (
    CliError,
    KeyOption,
    LegacySecretOption,
    ServerOption,
    load_identity,
    ok,
    out,
    run,
    short,
    when,
    with_client,
)


def register(
    invite: str | None = typer.Option(None, "--invite", help="Invite code, when required."),
    key: Path | None = KeyOption,
    server: str = ServerOption,
) -> None:
    """Register your key at the server, so it accepts mail for your address."""

    async def go(client: FluxClient) -> None:
        await client.register(invite)
        await client.authenticate()
        ok(f"registered {client.address} at {client.url} (domain {client.domain})")

    with_client(key, server, go)


def _key_pairs(values: list[str]) -> dict[str, str]:
    pairs = {}
    for value in values:
        address, sep, pub = value.partition("=")
        if not sep:
            raise CliError(f"--recipient-key wants ADDRESS=PUBKEY, not {value!r}")
        pairs[address.strip()] = pub.strip()
    return pairs


def send(
    to: str = typer.Argument(..., help="fx1… address, fx1…@domain or name@domain."),
    content: str = typer.Argument(..., help="The message text; '-' reads it from stdin."),
    subject: str | None = typer.Option(None, "--subject", help="Subject line."),
    cc: list[str] = typer.Option([], "--cc", help="Carbon copy (repeatable)."),
    bcc: list[str] = typer.Option([], "--bcc", help="Blind copy, own signed copy (repeatable)."),
    tag: list[str] = typer.Option([], "--tag", help="Tag (repeatable)."),
    reply_to: str | None = typer.Option(None, "--reply-to", help="Id of the message answered."),
    expires: int | None = typer.Option(None, "--expires", help="0: gone after first read."),
    encrypt: bool = typer.Option(False, "--encrypt", help="End-to-end encrypt."),
    recipient_key: list[str] = typer.Option(
        [], "--recipient-key", help="ADDRESS=PUBKEY to encrypt for, when the server has none."
    ),
    key: Path | None = KeyOption,
    server: str = ServerOption,
    legacy_secret: str | None = LegacySecretOption,
) -> None:
    """Sign (and optionally encrypt) a message and send it."""
    text = sys.stdin.read() if content == "-" else content
    keys = _key_pairs(recipient_key)

    async def go(client: FluxClient) -> None:
        result = await client.send(
            to, text, subject=subject, cc=cc, bcc=bcc, tags=tag, reply_to=reply_to,
            expires=expires, encrypt=encrypt, keys=keys,
        )  # fmt: skip
        lock = " (encrypted)" if result.encrypted else ""
        ok(f"sent {result.id}{lock}")
        for address, outcome in result.recipients.items():
            out.print(f"  {address}: {outcome}")

    with_client(key, server, go, legacy_secret)


def inbox(
    box: str | None = typer.Option(None, "--inbox", help="Which inbox (default: all)."),
    status: str | None = typer.Option(None, "--status", help="pending|delivered|read|deleted"),
    tag: str | None = typer.Option(None, "--tag", help="Only messages with this tag."),
    limit: int = typer.Option(20, "--limit", help="How many (newest first)."),
    as_json: bool = typer.Option(False, "--json", help="Print the messages as JSON."),
    key: Path | None = KeyOption,
    server: str = ServerOption,
    legacy_secret: str | None = LegacySecretOption,
) -> None:
    """List your messages, newest first."""

    async def go(client: FluxClient) -> None:
        page = await client.inbox(box, status=status, tag=tag, limit=limit)
        if as_json:
            out.print_json(json.dumps(page.messages))
            return
        out.print(_table(page.messages, client.address))
        if page.next_cursor:
            out.print(f"[dim]more: use --limit to see more than {limit}[/]")

    with_client(key, server, go, legacy_secret)


def _table(messages: list[dict[str, Any]], me: str) -> Table:
    table = Table(title=f"inbox of {short(me)}", show_lines=False)
    for name in ("id", "from", "subject", "status", "time"):
        table.add_column(name, no_wrap=name in ("id", "time"))
    for msg in messages:
        subject = escape(str(msg["subject"])) if msg.get("subject") else "[dim](no subject)[/]"
        if msg.get("encrypted"):
            subject = f"🔒 {subject}"
        table.add_row(
            str(msg.get("id")), short(msg.get("from")), subject,
            str(msg.get("_status", "?")), when(msg.get("t")),
        )  # fmt: skip
    if not messages:
        table.caption = "no messages"
    return table


def read(
    message_id: str = typer.Argument(..., metavar="ID", help="The message id (from `inbox`)."),
    no_mark: bool = typer.Option(False, "--no-mark", help="Do not mark it read."),
    key: Path | None = KeyOption,
    server: str = ServerOption,
    legacy_secret: str | None = LegacySecretOption,
) -> None:
    """Show a message: verify its signature and chain, decrypt it, mark it read."""

    async def go(client: FluxClient) -> None:
        msg = await client.get(message_id)
        try:
            verified = await _verify(client, msg)
        except FluxError as exc:
            reason = f"{exc.code}: {exc.message}"
            raise CliError(f"message {message_id} does not verify: {reason}") from exc
        body = _plaintext(client, msg)
        if not no_mark:
            await client.read(message_id)
        chain = _chain_text(verified.chain)
        out.print(_panel(msg, body, chain))

    with_client(key, server, go, legacy_secret)


async def _verify(client: FluxClient, msg: dict[str, Any]) -> Verified:
    try:
        return await client.verify_online(msg)
    except FluxClientError as exc:
        if exc.code != "bad_answer" or exc.field != "domain":
            raise
    # A server that names no domain is the prototype's, which publishes no keys (PROTOCOL.md
    # §13 item 4): each hop is checked against the key in its own record only, and the
    # chain is then shown as "not all sealed".
    return client.verify(msg)


def _chain_text(check: ChainCheck) -> str:
    if not check.hops:
        return "no hops"
    if check.sealed:
        return f"{len(check.hops)} hop(s), each sealed under its server's published key"
    return f"{len(check.hops)} hop(s), intact, not all sealed (prototype hops)"


def _plaintext(client: FluxClient, msg: dict[str, Any]) -> Text:
    if not msg.get("encrypted"):
        return Text(str(msg.get("content", "")))
    try:
        return Text(client.decrypt(msg))
    except DecryptionError as exc:
        return Text(f"[cannot decrypt: {exc.message}]", style="red")


def _panel(msg: dict[str, Any], body: Text, chain: str) -> Panel:
    head = Text()
    rows = [
        ("From", msg.get("from")), ("To", msg.get("to")),
        ("Cc", ", ".join(msg.get("cc") or ()) or None), ("Subject", msg.get("subject")),
        ("Date", when(msg.get("t"))), ("Id", msg.get("id")), ("Re", msg.get("re")),
        ("Tags", ", ".join(msg.get("_tags") or msg.get("tags") or ()) or None),
    ]  # fmt: skip
    for label, value in rows:
        if value:
            head.append(f"{label:>8}: ", style="bold").append(f"{value}\n")
    head.append("    ✓ signature verifies", style="green")
    head.append(f"\n    ✓ integrity chain: {chain}", style="green")
    if msg.get("encrypted"):
        head.append("\n    🔒 end-to-end encrypted", style="cyan")
    head.append("\n\n").append(body)
    return Panel(head, title=str(msg.get("subject") or "message"), expand=False)


def watch(
    box: str | None = typer.Option(None, "--inbox", help="Which inbox to watch."),
    key: Path | None = KeyOption,
    server: str = ServerOption,
    legacy_secret: str | None = LegacySecretOption,
) -> None:
    """Print each message as it arrives (WebSocket push). Ctrl-C stops."""
    identity = load_identity(key)

    async def go() -> None:
        async with FluxClient(identity, server, legacy_secret=legacy_secret) as client:

            @client.on_message
            def show(msg: dict[str, Any]) -> None:
                out.print(_line(client, msg))

            task = await client.start_ws(inbox=box, timeout=client.timeout)
            out.print(f"watching {client.address} at {client.url} (Ctrl-C to stop)")
            await task

    try:
        run(go())
    except KeyboardInterrupt:
        out.print("stopped")


def _line(client: FluxClient, msg: dict[str, Any]) -> str:
    try:
        client.verify(msg)
        mark = "[green]✓[/]"
    except FluxError as exc:
        mark = f"[red]✗ {exc.code}[/]"
    text = escape(_plaintext(client, msg).plain.replace("\n", " "))
    subject = f" [bold]{escape(str(msg['subject']))}[/]:" if msg.get("subject") else ""
    return (
        f"{mark} {when(msg.get('t'))} {msg.get('id')} from {short(msg.get('from'))}{subject} {text}"
    )
