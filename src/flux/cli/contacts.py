"""`flux contacts`: the names and keys this machine has seen (client/bindings.py), with a
warning, as ssh gives for a changed host key, where a name now resolves to another key than
the one first seen (trust on first use)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from ._common import contacts as known_contacts
from ._common import err, out, short
from .safe_text import json_text

if TYPE_CHECKING:
    from ..client import KnownBindings


def _day(seconds: object) -> str:
    if not isinstance(seconds, int):
        return "?"
    return datetime.fromtimestamp(seconds, UTC).astimezone().strftime("%Y-%m-%d")


def contacts(
    as_json: bool = typer.Option(False, "--json", help="Print names and keys as JSON."),
    accept: str | None = typer.Option(
        None,
        "--accept",
        metavar="NAME",
        help="Trust NAME's new key (after checking it with its owner).",
    ),
) -> None:
    """Names and keys seen, warning where a name's key changed since first seen.

    Kept in $XDG_CONFIG_HOME/flux/contacts.json (else ~/.config/flux/contacts.json)."""
    known = known_contacts()
    if accept is not None:
        _accept(known, accept)
        return
    names, keys = known.names(), known.keys()
    if as_json:
        print(json_text({"names": names, "keys": keys}, indent=2))
        return
    if not names and not keys:
        out.print("no contacts yet: names are remembered when you send to name@domain, "
                  "keys when you `flux read` mail")  # fmt: skip
        return
    for handle, entry in names.items():
        out.print(f"{escape(handle)}  {entry['address']}  since {_day(entry.get('first_seen'))}")
        for change in entry.get("changed") or ():
            err.print(f"[bold red]warning:[/] {escape(handle)} now resolves to "
                      f"{change.get('address')} (seen {_day(change.get('seen'))}), not the "
                      f"key first seen; check with its owner, then "
                      f"`flux contacts --accept {escape(handle)}`")  # fmt: skip
    named = {e["address"] for e in names.values()}
    for address, entry in keys.items():
        if address not in named:
            out.print(f"{short(address, 40)}  key seen {_day(entry.get('first_seen'))}")


def _accept(known: KnownBindings, handle: str) -> None:
    entry = known.names().get(handle.lower())
    changes = (entry or {}).get("changed") or []
    if not changes:
        raise typer.BadParameter(f"{handle}: no changed key to accept", param_hint="--accept")
    latest = changes[-1]
    known.accept(handle, latest["address"], latest.get("pub", ""))
    out.print(f"{escape(handle)} is now {latest['address']}")
