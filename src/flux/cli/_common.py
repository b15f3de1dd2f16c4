"""What every command shares: consoles, the --key/--server options, running a client, and
turning any failure into one line on stderr."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

from ..client import FluxClient, FluxClientError
from ..identity import FluxIdentity
from ..protocol.errors import FluxError

T = TypeVar("T")

DEFAULT_SERVER = "http://localhost:8765"
out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)

KeyOption = typer.Option(
    None,
    "--key",
    "-k",
    envvar="FLUX_KEY",
    help="Key file (default: $FLUX_KEY).",
    show_default=False,
)
ServerOption = typer.Option(
    DEFAULT_SERVER, "--server", "-s", envvar="FLUX_SERVER", help="Server URL ($FLUX_SERVER)."
)
LegacySecretOption = typer.Option(
    None,
    "--legacy-secret",
    envvar="FLUX_LEGACY_SECRET",
    help=(
        "The server's FLUX_SECRET: authenticate with the prototype's shared-secret token "
        "(a prototype server, or a FLUX server run with --legacy-tokens) "
        "($FLUX_LEGACY_SECRET). Anyone holding it can read any mailbox there."
    ),
    show_default=False,
)


class CliError(Exception):
    """A failure the user can act on, shown as its message alone."""


def describe(exc: BaseException) -> str:
    """One line saying what went wrong, without a traceback."""
    if isinstance(exc, CliError):
        text = str(exc)
    elif isinstance(exc, FluxClientError):
        text = f"server refused: {exc}" if exc.status is not None else exc.message
    elif isinstance(exc, FluxError):
        where = f" (field {exc.field})" if exc.field else ""
        text = f"{exc.code}: {exc.message}{where}"
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    elif isinstance(exc, TimeoutError):
        text = "timed out"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def fail(exc: BaseException | str) -> NoReturn:
    message = exc if isinstance(exc, str) else describe(exc)
    err.print(f"[bold red]error:[/] {message}", markup=True)
    raise SystemExit(1)


def load_identity(key: Path | None) -> FluxIdentity:
    if key is None:
        raise CliError("no key: pass --key PATH or set FLUX_KEY (make one with `flux keygen`)")
    path = Path(key).expanduser()
    if not path.exists():
        raise CliError(f"key file not found: {path}")
    passphrase = None
    if FluxIdentity.file_is_protected(path):
        passphrase = os.environ.get("FLUX_PASSPHRASE") or typer.prompt(
            f"passphrase for {path}", hide_input=True, err=True
        )
    return FluxIdentity.load(path, passphrase)


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


def with_client(
    key: Path | None,
    server: str,
    action: Callable[[FluxClient], Awaitable[T]],
    legacy_secret: str | None = None,
) -> T:
    """Load the key, open a client to `server` (with the prototype's token when
    `legacy_secret` is given), run `action(client)`, close the client."""
    identity = load_identity(key)

    async def go() -> T:
        async with FluxClient(identity, server, legacy_secret=legacy_secret) as client:
            return await action(client)

    return run(go())


def when(ms: Any) -> str:
    """A message time (unix ms) as local date and time."""
    if not isinstance(ms, int):
        return "?"
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def short(address: Any, keep: int = 14) -> str:
    text = str(address)
    return text if len(text) <= keep + 4 else f"{text[:keep]}…{text[-4:]}"


def ok(text: str) -> None:
    out.print(f"[green]✓[/] {text}")


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()
