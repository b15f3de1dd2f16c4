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
from typing import Any, NoReturn

import typer
from rich.markup import escape

from .. import __version__
from . import account, admin, contacts, demo, export, folders, keys, mail, mailbox, sent, server
from ._common import err, fail
from .safe_text import one_line

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
    folders.folders,
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
        # standalone_mode=False: the command-line parser hands its refusals back instead of
        # drawing them in a box, so they are one line with the fix like every other failure
        code = app(args=argv, prog_name="flux", standalone_mode=False)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        kind = _parser_refusal(exc)
        if kind == "help":  # `flux` or `flux admin` alone: the help was printed
            sys.exit(getattr(exc, "exit_code", 2))
        if kind == "abort":  # Ctrl-C or end of input at a prompt
            err.print("aborted", markup=False)
            sys.exit(130)
        if kind is not None:
            usage_error(exc)
        if os.environ.get("FLUX_DEBUG"):
            raise
        fail(exc)
    sys.exit(code if isinstance(code, int) else 0)


def _parser_refusal(exc: BaseException) -> str | None:
    """What the command-line parser's exception `exc` is: `help` (no arguments: help
    shown), `abort`, `usage` (a bad command line) or `other` (its other refusals); None
    for anything else. By class name: typer 0.29 raises its own copy of click's classes,
    and other versions click's own."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "NoArgsIsHelpError" in names:
        return "help"
    if "Abort" in names:
        return "abort"
    if "UsageError" in names:
        return "usage"
    return "other" if "ClickException" in names else None


def usage_error(exc: Any) -> NoReturn:
    """A command line the parser refused (unknown option, missing or bad argument): one line
    saying what is wrong and where the help is; exit 2 (click's status for it)."""
    message = one_line(exc.format_message()).rstrip(".")
    ctx = getattr(exc, "ctx", None)
    where = f"; see `{ctx.command_path} --help`" if ctx is not None else ""
    err.print(f"[bold red]error:[/] {escape(message)}{escape(where)}")
    sys.exit(getattr(exc, "exit_code", 2))
