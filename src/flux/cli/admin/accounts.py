"""`flux admin accounts list|disable|enable`: the server's accounts (accounts/store.py).

A disabled account cannot log in: the right password gets "disabled by this server's
operator" (403 `forbidden`), a wrong one the usual "wrong username or password", so a
stranger learns nothing. Disabling revokes its live sessions at once (a session opened at
that very moment is refused at its first use). Its mail still arrives and waits: the
address stays hosted, and `enable` gives the person back a mailbox with everything sent
to them meanwhile. A claimed name (a key its owner holds) has no login here to refuse: the
owner signs in with the key, so disabling one is refused with that explanation.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from .._common import CliError, ok, out, run
from ._base import DataDirOption, JsonOption, account_store, config, now_ms, print_json, when

if TYPE_CHECKING:  # imported where a command runs (_base.py says why)
    from ...accounts.store import Account

__all__ = ["accounts"]

accounts = typer.Typer(help="Accounts: list, disable, enable.", no_args_is_help=True)


def _json(a: Account) -> dict[str, Any]:
    return {
        "username": a.username, "kind": str(a.kind), "address": a.address,
        "created_at": a.created_at, "last_login_at": a.last_login_at,
        "disabled": a.disabled_at is not None, "disabled_at": a.disabled_at,
    }  # fmt: skip


@accounts.command("list")
def list_(
    ctx: typer.Context, as_json: bool = JsonOption, data_dir: Path | None = DataDirOption
) -> None:
    """Every account, by username: kind, address, created, last login, disabled."""
    from ...server.config import Backend

    found = config(ctx, data_dir)

    async def fetch() -> list[Account]:
        if found.backend is Backend.SQLITE and not found.accounts_database.exists():
            return []  # no account was ever made (and listing creates no database)
        async with account_store(found) as store:
            return await store.accounts()

    listed = run(fetch())
    if as_json:
        print_json([_json(a) for a in listed])
        return
    if not listed:
        out.print("no accounts")
        return
    table = Table(title="accounts")
    for column in ("username", "kind", "address", "created", "last login", "disabled"):
        table.add_column(column)
    for a in listed:
        table.add_row(
            escape(a.username), str(a.kind), a.address, when(a.created_at),
            when(a.last_login_at) or "never",
            "" if a.disabled_at is None else f"since {when(a.disabled_at)}",
        )  # fmt: skip
    out.print(table)


def _set(ctx: typer.Context, username: str, data_dir: Path | None, disable: bool) -> None:
    from ...accounts.store import AccountKind

    found = config(ctx, data_dir)
    name = username.strip().lower()

    async def change() -> tuple[Account, int]:
        async with account_store(found) as store:
            account = await store.account(name)
            if account is None:
                raise CliError(f"no account {username}; see `flux admin accounts list`")
            if disable and account.kind is AccountKind.CLAIMED:
                raise CliError(
                    f"{name} is a claimed name: its owner signs in with their own key, so "
                    "there is no login here to disable"
                )
            now = now_ms()
            return account, await store.set_disabled(name, now if disable else None, now)

    account, revoked = run(change())
    if not disable:
        ok(f"{name} is enabled: it can log in again")
        return
    was = " (it was disabled already)" if account.disabled_at is not None else ""
    ok(f"{name} is disabled{was}: logins refused, {revoked} live session"
       f"{'s' if revoked != 1 else ''} revoked; mail to it still arrives and waits")  # fmt: skip


@accounts.command()
def disable(
    ctx: typer.Context,
    username: str = typer.Argument(..., help="The account's username."),
    data_dir: Path | None = DataDirOption,
) -> None:
    """Refuse the account's logins and revoke its live sessions; its mail still arrives.

    Logins get "disabled by this server's operator"; mail to it waits for `enable`."""
    _set(ctx, username, data_dir, True)


@accounts.command()
def enable(
    ctx: typer.Context,
    username: str = typer.Argument(..., help="The account's username."),
    data_dir: Path | None = DataDirOption,
) -> None:
    """Let a disabled account log in again."""
    _set(ctx, username, data_dir, False)
