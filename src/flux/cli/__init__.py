"""`flux`: the command line. Thin: arguments → config or client → print.

Every failure ends as one line on stderr and exit status 1 (set FLUX_DEBUG=1 for the
traceback). `--key` defaults to $FLUX_KEY and `--server` to $FLUX_SERVER (a URL without scheme:
http for localhost, else https). Sessions are kept per server and identity in
$XDG_CONFIG_HOME/flux/sessions.json (client/session_cache.py); `flux logout` ends one.
Names and keys seen are kept beside it in contacts.json (`flux contacts`). Shell completion:
`flux --install-completion` (or `--show-completion bash` to see the script).
"""

from __future__ import annotations

import os
import sys

import typer

from .. import __version__
from . import account, admin, contacts, demo, export, keys, mail, mailbox, sent, server
from ._common import fail

__all__ = ["app", "main"]

app = typer.Typer(
    name="flux",
    help="FLUX: mail where your identity is a key and every message is signed.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

for command in (
    keys.keygen, keys.selfcheck, server.server, mail.register, mail.send, mail.inbox,
    mail.read, mail.watch, keys.verify, demo.demo, account.logout, sent.sent, sent.status,
):  # fmt: skip
    app.command()(command)
# `flux tag ID +t -t`: a "-t" is a removal, not an unknown option
TAG_SETTINGS = {"ignore_unknown_options": True}
for command in (
    mailbox.reply, mailbox.forward, mailbox.thread, mailbox.tag, mailbox.move,
    mailbox.delete, mailbox.mark, export.export, mailbox.claim, contacts.contacts,
):  # fmt: skip
    app.command(context_settings=TAG_SETTINGS if command is mailbox.tag else None)(command)
app.add_typer(account.account, name="account")
app.add_typer(admin.admin, name="admin")


def _version(value: bool) -> None:
    if value:
        print(f"flux {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version."
    ),
) -> None:
    """FLUX: mail where your identity is a key and every message is signed."""


def main(argv: list[str] | None = None) -> None:
    """The `flux` console script."""
    try:
        app(args=argv, prog_name="flux")
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("FLUX_DEBUG"):
            raise
        fail(exc)
