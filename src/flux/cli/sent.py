"""`flux sent` and `flux status ID`: what you sent, and where each copy stands.

Each recipient of a sent message has a delivery state (docs/API.md, "Sent mail";
PROTOCOL.md §10.3): `stored` (in a mailbox of your server), `queued` (waiting for another
server: attempts, next try, the last error in words), `delivered` (the receiving server
took it) or `bounced` (with the reason). `--json` prints the server's answer as it is.
With no key, both act as the logged-in password account (`GET /mail/sent`, `/mail/sent/{id}`).

Registered in flux/cli/__init__.py as `app.command()(sent.sent)` and
`app.command()(sent.status)`; `app` below holds the two for tests that call them directly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import typer
from rich.markup import escape

from ._common import (
    CliError,
    KeyOption,
    LegacySecretOption,
    ServerOption,
    contacts,
    out,
    run,
    short,
    typed_ids,
    when,
    with_client,
)
from .mail import _account
from .safe_text import json_text, one_line

if TYPE_CHECKING:  # the client is imported where a command runs (_common.py says why)
    from ..client import FluxClient

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


def _recipient_lines(message: Mapping[str, Any], name_of: Callable[[str], str | None]) -> None:
    delivery = message.get("_delivery")
    for rcpt, state in (delivery if isinstance(delivery, Mapping) else {}).items():
        state = state if isinstance(state, Mapping) else {}
        who = one_line(name_of(str(rcpt)) or short(rcpt))
        colour = STYLE.get(str(state.get("state")), "white")
        out.print(f"  → {escape(who)}  [{colour}]{escape(one_line(describe_state(state)))}[/]")


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

    def show(items: list[dict[str, Any]], more: Any) -> None:
        if as_json:
            print(json_text(items, indent=2))
            return
        if not items:
            out.print("nothing sent yet")
            return
        name_of = contacts().name_of
        for msg in items:
            out.print(f"[bold]{escape(str(msg.get('id'))[:8])}[/] {when(msg.get('_sent_at'))} "
                      f"{_summary(msg)} [bold]{escape(one_line(msg.get('subject') or ''))}[/]")  # fmt: skip
            _recipient_lines(msg, name_of)
        if more:
            out.print(f"[dim]more: use --limit to see more than {limit}[/]")

    # a password account's sent mail is its session's own (GET /mail/sent)
    if api := _account(key, legacy_secret, server):
        answer = run(api.call("GET", "/mail/sent", params={"limit": limit}))
        show(list(answer.get("messages") or []), answer.get("next_cursor"))
        return

    async def go(client: FluxClient) -> None:
        from ..client.sent import sent as list_sent

        items, more = await list_sent(client, limit=limit)
        show(items, more)

    with_client(key, server, go, legacy_secret)


def status(
    message_id: str = typer.Argument(
        ..., metavar="ID", help="Sent message id or its first 8+ hex digits.", callback=typed_ids
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the message and its state."),
    key: Path | None = KeyOption,
    server: str = ServerOption,
    legacy_secret: str | None = LegacySecretOption,
) -> None:
    """Show where one message you sent stands, recipient by recipient."""
    from ..client.errors import FluxClientError
    from ..client.sent import delivery_state

    def show(msg: dict[str, Any]) -> None:
        if as_json:
            print(json_text(msg, indent=2))
            return
        out.print(f"[bold]{escape(str(msg.get('id')))}[/] sent {when(msg.get('_sent_at'))} "
                  f"[bold]{escape(one_line(msg.get('subject') or ''))}[/]")  # fmt: skip
        _recipient_lines(msg, contacts().name_of)

    try:
        if api := _account(key, legacy_secret, server):
            answer = run(api.call("GET", f"/mail/sent/{quote(message_id, safe='')}"))
            show(dict(answer.get("message") or {}))
            return

        async def go(client: FluxClient) -> None:
            show(await delivery_state(client, message_id))

        with_client(key, server, go, legacy_secret)
    except FluxClientError as exc:
        if exc.code != "not_found":
            raise
        # the general fix points at the inbox; a sent id is found in `flux sent`
        raise CliError(
            f"server refused: {exc}; see `flux sent` for the ids of what you sent"
        ) from exc


#: the two commands on their own (the `flux` app registers the functions themselves)
app = typer.Typer(pretty_exceptions_enable=False, no_args_is_help=True)
app.command()(sent)
app.command()(status)
