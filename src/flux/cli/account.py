"""`flux account register|login|logout|whoami|passwd` (password accounts) and `flux logout`.

A password account's key is made and held by the server (docs/API.md, "Accounts"); the CLI
keeps the account's session in the session cache (client/session_cache.py), and the mail
commands run without `--key` then use it. `passwd` changes the password over the kept
session (`POST /account/password`): the server reseals the same key, so the address and
the mail stay, and logs out the account's other sessions; this one stays kept.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

from ._account_api import AccountApi, account_session
from ._common import CliError, KeyOption, ServerOption, load_identity, ok, out, run

account = typer.Typer(
    help="Password accounts: the server holds the key, you log in with a password.",
    no_args_is_help=True,
)

PASSWORD_ENV = "FLUX_PASSWORD"
NEW_PASSWORD_ENV = "FLUX_NEW_PASSWORD"
InviteOption = typer.Option(None, "--invite", help="Invite code, when the server wants one.")
AccountOption = typer.Option(
    None,
    "--account",
    "-a",
    envvar="FLUX_ACCOUNT",
    help="Which logged-in account (default: the one that logged in last).",
    show_default=False,
)


def _password(confirm: bool, env: str = PASSWORD_ENV, prompt: str = "password") -> str:
    """$`env`, else asked for (hidden; read from stdin when it is not a terminal)."""
    given = os.environ.get(env)
    if given:
        return given
    return str(typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm, err=True))


def _open(server: str, path: str, username: str, invite: str | None, confirm: bool) -> dict:
    password = _password(confirm)
    return run(AccountApi(server).open(path, username, password, invite))


@account.command()
def register(
    username: str = typer.Argument(..., help="1-32 of a-z 0-9 . _ -, starting with a letter."),
    invite: str | None = InviteOption,
    server: str = ServerOption,
) -> None:
    """Create a password account (the server makes its key) and log in.

    The password comes from $FLUX_PASSWORD, else it is asked for twice."""
    answer = _open(server, "/account/register", username, invite, confirm=True)
    ok(f"registered {answer['name']} ({answer['address']}) at {server}; logged in")


@account.command()
def login(
    username: str = typer.Argument(..., help="The account's username."),
    server: str = ServerOption,
) -> None:
    """Log in to a password account; the session is kept for the next commands.

    The password comes from $FLUX_PASSWORD, else it is asked for."""
    answer = _open(server, "/account/login", username, None, confirm=False)
    ok(f"logged in as {answer['name']} ({answer['address']}) at {server}")


def _session_or_fail(server: str, username: str | None) -> Any:
    session = account_session(server, username)
    if session is None:
        who = f"as {username} " if username else ""
        raise CliError(f"not logged in {who}at {server}: run `flux account login NAME`")
    return session


@account.command("logout")
def account_logout(
    username: str | None = AccountOption,
    server: str = ServerOption,
) -> None:
    """Log out: the server revokes the session and this machine forgets it."""
    from ..client.session_cache import SessionCache

    session = _session_or_fail(server, username)
    try:
        run(AccountApi(server, session).call("POST", "/account/logout"))
    finally:
        SessionCache().drop(server, session.identity)
    ok(f"logged out {session.username} at {server}")


@account.command()
def whoami(
    username: str | None = AccountOption,
    as_json: bool = typer.Option(False, "--json", help="Print the account as JSON."),
    server: str = ServerOption,
) -> None:
    """Show the account you are logged in as (asks the server, so the session is checked)."""
    session = _session_or_fail(server, username)
    answer = run(AccountApi(server, session).call("GET", "/account/me"))
    answer.pop("ok", None)
    if as_json:
        out.print_json(json.dumps(answer))
        return
    out.print(f"{answer.get('name')} ({answer.get('address')}), {answer.get('kind')} account")


@account.command()
def passwd(
    username: str | None = AccountOption,
    server: str = ServerOption,
) -> None:
    """Change the password of the account you are logged in as.

    The current password comes from $FLUX_PASSWORD and the new one from $FLUX_NEW_PASSWORD;
    each is asked for when its variable is unset (hidden; the new one twice). The key and
    the address stay the same; the account's other sessions are logged out, this one stays."""
    session = _session_or_fail(server, username)
    current = _password(False, PASSWORD_ENV, "current password")
    new = _password(True, NEW_PASSWORD_ENV, "new password")
    body = {"password": current, "new_password": new}
    answer = run(AccountApi(server, session).call("POST", "/account/password", json=body))
    revoked = answer.get("sessions_revoked", 0)
    others = f"{revoked} other session{'' if revoked == 1 else 's'} logged out"
    ok(f"password changed for {session.username} at {server}; {others}")


def logout(
    key: Path | None = KeyOption,
    username: str | None = AccountOption,
    server: str = ServerOption,
) -> None:
    """Revoke the session kept for this server and forget it.

    With --key (or $FLUX_KEY) the key's session, else the password account's."""
    from ..client import FluxClient
    from ..client.session_cache import SessionCache

    if key is None:
        account_logout(username, server)
        return
    identity = load_identity(key)
    kept = SessionCache().drop(server, identity.address)
    if kept is None:
        ok(f"no session kept for {identity.address} at {server}")
        return

    async def go() -> None:
        # A kept token the server no longer knows gets a 401, and the client then proves the
        # key and revokes that fresh session instead: either way none is left open.
        async with FluxClient(identity, server) as client:
            client.use_token(kept.token)
            await client.logout()

    run(go())
    ok(f"logged out {identity.address} at {server}")
