"""`flux sent` and `flux status ID`: what you sent, and where each copy stands.

Each recipient of a sent message has a delivery state (docs/API.md, "Sent mail";
PROTOCOL.md §10.3): `stored` (in a mailbox of your server), `queued` (waiting for another
server: attempts, next try, the last error in words), `delivered` (the receiving server
took it) or `bounced` (with the reason). `--json` prints the server's answer as it is.

Registered in flux/cli/__init__.py as `app.command()(sent.sent)` and
`app.command()(sent.status)`; `app` below holds the two for tests that call them directly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from ..client import FluxClient
from ..client.sent import delivery_state
from ..client.sent import sent as list_sent
from ._common import KeyOption, LegacySecretOption, ServerOption, out, short, when, with_client

__all__ = ["app", "describe_state", "sent", "status"]

#: how each state is shown (colour, then the word)
STYLE = {"stored": "green", "delivered": "green", "queued": "yellow", "bounced": "red"}


def describe_state(state: Mapping[str, Any]) -> str:
    """One recipient's state in a line: `delivered 2026-12-01 04:31:07`, `queued (2
    attempts): the receiving server did not answer (connection refused); next try at
    04:40 UTC`, `bounced: the domain x.invalid does not exist (no such domain)`."""
    name = str(state.get("state", "?"))
    if name == "queued":
        attempts = state.get("attempts") or 0
        if not attempts:
            return "queued (not tried yet)"
        tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
        return f"queued ({tries}): {state.get('error') or 'no answer yet'}"
    if name == "bounced":
        return f"bounced: {state.get('reason') or 'no reason given'}"
    return f"{name} {when(state.get('at'))}"


def _recipient_lines(client: FluxClient, message: Mapping[str, Any]) -> None:
    delivery = message.get("_delivery")
    for rcpt, state in (delivery if isinstance(delivery, Mapping) else {}).items():
        state = state if isinstance(state, Mapping) else {}
        who = client.bindings.name_of(str(rcpt)) or short(rcpt)
        colour = STYLE.get(str(state.get("state")), "white")
        out.print(f"  → {escape(who)}  [{colour}]{escape(describe_state(state))}[/]")


def _summary(message: Mapping[str, Any]) -> str:
    states = [s.get("state") for s in (message.get("_delivery") or {}).values()]
    if "bounced" in states:
        return "[red]bounced[/]"
    if "queued" in states:
        return "[yellow]queued[/]"
    return "[green]done[/]"


def sent(
    limit: int = typer.Option(20, "--limit", "-n", min=1, max=500, help="How many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print the messages as a JSON list."),
    key: Path | None = KeyOption,
    server: str = ServerOption,
    legacy_secret: str | None = LegacySecretOption,
) -> None:
    """List what you sent, newest first, with the delivery state of each recipient."""

    async def go(client: FluxClient) -> None:
        items, _ = await list_sent(client, limit=limit)
        if as_json:
            print(json.dumps(items, ensure_ascii=False, indent=2))
            return
        if not items:
            out.print("nothing sent yet")
            return
        for msg in items:
            out.print(f"[bold]{str(msg.get('id'))[:8]}[/] {when(msg.get('_sent_at'))} "
                      f"{_summary(msg)} [bold]{escape(str(msg.get('subject') or ''))}[/]")  # fmt: skip
            _recipient_lines(client, msg)

    with_client(key, server, go, legacy_secret)


def status(
    message_id: str = typer.Argument(
        ..., metavar="ID", help="Sent message id or its first 8+ hex digits."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the message and its state."),
    key: Path | None = KeyOption,
    server: str = ServerOption,
    legacy_secret: str | None = LegacySecretOption,
) -> None:
    """Show where one message you sent stands, recipient by recipient."""

    async def go(client: FluxClient) -> None:
        msg = await delivery_state(client, message_id)
        if as_json:
            print(json.dumps(msg, ensure_ascii=False, indent=2))
            return
        out.print(f"[bold]{msg.get('id')}[/] sent {when(msg.get('_sent_at'))} "
                  f"[bold]{escape(str(msg.get('subject') or ''))}[/]")  # fmt: skip
        _recipient_lines(client, msg)

    with_client(key, server, go, legacy_secret)


#: the two commands on their own (the `flux` app registers the functions themselves)
app = typer.Typer(pretty_exceptions_enable=False, no_args_is_help=True)
app.command()(sent)
app.command()(status)
