"""`flux admin invite create|list|revoke`: invites kept in the server's store
(accounts/admission.py). A code is shown once, at `create`: the store keeps only its
SHA-256, so a lost code is revoked and replaced, never looked up. A code admits `--uses`
registrations of either kind (a key, `flux register --invite`; an account, `flux account
register --invite`) while the server's registration is `invite` (FLUX_REGISTRATION); the
static FLUX_INVITES codes keep working beside them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from .._common import CliError, err, ok, out
from ._base import DataDirOption, JsonOption, config, now_ms, print_json, when, with_store

if TYPE_CHECKING:  # imported where a command runs (_base.py says why)
    from ...server.config import ServerConfig
    from ...store.base import Invite

__all__ = ["invite", "parse_duration"]

invite = typer.Typer(help="Invites: create (the code is shown once), list, revoke.",
                     no_args_is_help=True)  # fmt: skip

UNITS_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}
DURATION = re.compile(r"(\d+)\s*([smhdw])")


def parse_duration(text: str) -> int:
    """`7d`, `12h`, `30m`, `2w`, `90s` (or several: `1d12h`) in ms. Raises CliError."""
    compact = text.strip().lower().replace(" ", "")
    parts = DURATION.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise CliError(f"--expires {text!r}: give a duration such as 7d, 12h, 30m or 2w")
    total = sum(int(n) * UNITS_MS[u] for n, u in parts)
    if total <= 0:
        raise CliError(f"--expires {text!r}: the duration must be longer than 0")
    return total


@invite.command()
def create(
    ctx: typer.Context,
    uses: int = typer.Option(1, "--uses", min=1, help="How many registrations it admits."),
    expires: str | None = typer.Option(
        None,
        "--expires",
        help="Valid for this long: 7d, 12h, 30m, 2w (default: no expiry).",
        show_default=False,
    ),
    note: str = typer.Option("", "--note", help="Why, or for whom (shown by `list`)."),
    as_json: bool = JsonOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """Make an invite and print its code (shown this once: the server keeps only a hash)."""
    from ...accounts.admission import new_invite

    found = config(ctx, data_dir)
    now = now_ms()
    expires_at = now + parse_duration(expires) if expires else None
    made, code, code_hash = new_invite(uses=uses, expires_at=expires_at, note=note.strip(),
                                       now_ms=now)  # fmt: skip
    with_store(found, lambda s: s.create_invite(made, code_hash))
    if as_json:
        print_json({**_json(made, now), "code": code})
        return
    ok(f"invite {made.id}: {uses} use{'s' if uses != 1 else ''}"
       + (f", until {when(expires_at)}" if expires_at else ", no expiry"))  # fmt: skip
    out.print(code, markup=False, highlight=False)
    out.print("  give this code out now: it is not shown again (the server keeps only a hash)")
    _policy_hint(found)


def _policy_hint(found: ServerConfig) -> None:
    # What this command reads (environment, --config file) is not necessarily how the
    # running server was started (`flux server --registration invite` is a flag there), so
    # the note says where the setting comes from rather than what the server does.
    from ...server.config import Registration

    if found.registration is not Registration.INVITE:
        err.print(
            f"note: registration here is {found.registration} in the configuration this "
            "command reads (environment, --config): only a server started with "
            "--registration invite (or FLUX_REGISTRATION=invite) asks for invites",
            markup=False,
        )


def _state(i: Invite, now: int) -> str:
    if i.revoked_at is not None:
        return "revoked"
    if i.expires_at is not None and i.expires_at <= now:
        return "expired"
    return "used up" if i.uses_left <= 0 else "active"


def _json(i: Invite, now: int) -> dict[str, Any]:
    return {
        "id": i.id, "state": _state(i, now), "uses": i.max_uses, "uses_left": i.uses_left,
        "expires_at": i.expires_at, "note": i.note, "created_at": i.created_at,
        "revoked_at": i.revoked_at,
        "used_by": [{"by": who, "at": at} for who, at in i.used_by],
    }  # fmt: skip


@invite.command("list")
def list_(
    ctx: typer.Context, as_json: bool = JsonOption, data_dir: Path | None = DataDirOption
) -> None:
    """Every invite, newest first: id, state, uses left, expiry, note, who used it.

    The codes themselves cannot be shown: only their hashes are kept."""
    found = config(ctx, data_dir)
    invites = with_store(found, lambda s: s.invites())
    now = now_ms()
    if as_json:
        print_json([_json(i, now) for i in invites])
        return
    if not invites:
        out.print("no invites (make one with `flux admin invite create`)")
        return
    table = Table(title="invites")
    for column in ("id", "state", "uses left", "expires", "created", "note", "used by"):
        table.add_column(column)
    for i in invites:
        table.add_row(
            i.id, _state(i, now), f"{i.uses_left}/{i.max_uses}",
            when(i.expires_at) if i.expires_at else "never", when(i.created_at),
            escape(i.note), escape(", ".join(who for who, _ in i.used_by)),
        )  # fmt: skip
    out.print(table)


@invite.command()
def revoke(
    ctx: typer.Context,
    invite_id: str = typer.Argument(..., metavar="ID", help="The invite's id, as `list` shows."),
    data_dir: Path | None = DataDirOption,
) -> None:
    """Revoke an invite: its code admits nobody from now on (uses already made stay)."""
    found = config(ctx, data_dir)
    if not with_store(found, lambda s: s.revoke_invite(invite_id.strip(), now_ms())):
        raise CliError(
            f"no unrevoked invite {invite_id}; see the ids with `flux admin invite list`"
        )
    ok(f"invite {invite_id.strip()} revoked")
