"""What every `flux admin` command shares: the server's settings as `flux server` reads
them, opening its stores, and printing JSON for scripts."""

from __future__ import annotations

import os
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from .._common import CliError, run
from ..safe_text import json_text

# flux.server and flux.store are imported by the functions that use them: this module is
# imported by every `flux` command (through cli/admin), which must start without them.
if TYPE_CHECKING:
    from ...server.config import ServerConfig
    from ...store.base import Store

T = TypeVar("T")

DataDirOption = typer.Option(
    None,
    "--data-dir",
    help="The server's data directory (default: $FLUX_DATA_DIR, else ./flux-data); the "
    "database is $FLUX_DB_PATH or $FLUX_DB_URL as for `flux server`.",
    show_default=False,
)
JsonOption = typer.Option(False, "--json", help="Print one JSON array (or object) for scripts.")
YesOption = typer.Option(False, "--yes", "-y", help="Do it without asking, whatever the count.")


def settings(ctx: typer.Context, data_dir: Path | None) -> ServerConfig:
    """The server's configuration as `flux server` would read it: --config file, FLUX_*
    variables, then --data-dir."""
    from ...server.config import ServerConfig

    overrides = {"data_dir": data_dir} if data_dir is not None else {}
    toml = _root(ctx).get("config")  # set by the admin group's --config
    try:
        if toml is not None:
            return ServerConfig.from_toml(toml, os.environ, **overrides)
        return ServerConfig.from_env(os.environ, **overrides)
    except (OSError, ValueError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"bad server setting: {exc}; fix it in --config or $FLUX_*") from exc


def _root(ctx: typer.Context) -> dict[str, Any]:
    obj = ctx.find_root().obj if ctx.obj is None else ctx.obj
    return obj if isinstance(obj, dict) else {}


def config(ctx: typer.Context, data_dir: Path | None) -> ServerConfig:
    """`settings`, refusing a SQLite data directory that has no database (a typo'd path
    would otherwise create an empty one)."""
    from ...server.config import Backend

    found = settings(ctx, data_dir)
    if found.backend is Backend.SQLITE and not found.database.exists():
        raise CliError(
            f"no FLUX database at {found.database}; pass the server's --data-dir "
            "(or set FLUX_DATA_DIR / FLUX_DB_PATH)"
        )
    return found


def now_ms() -> int:
    return int(time.time() * 1000)


@asynccontextmanager
async def mail_store(found: ServerConfig) -> AsyncIterator[Store]:
    """The server's mail store, opened (and migrated, as the server would) and closed."""
    from ...server.runner import open_configured_store

    store = open_configured_store(found, now_ms)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def with_store(found: ServerConfig, action: Callable[[Store], Awaitable[T]]) -> T:
    async def go() -> T:
        async with mail_store(found) as store:
            return await action(store)

    return run(go())


@asynccontextmanager
async def account_store(found: ServerConfig) -> AsyncIterator[Any]:
    """The server's accounts store (accounts/store.py, postgres.py), opened and closed."""
    from ...server.runner import open_configured_accounts

    store = open_configured_accounts(found)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def print_json(value: Any) -> None:
    print(json_text(value, indent=2))


def when(ms: int | None) -> str:
    if ms is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


def confirm(count: int, what: str, yes: bool) -> None:
    """Ask before a destructive change to more than one message: at a terminal, a
    question; otherwise `--yes` is required."""
    if yes or count <= 1:
        return
    if not sys.stdin.isatty():
        raise CliError(f"this would {what} {count} messages; add --yes to confirm")
    if not typer.confirm(f"{what} {count} messages?", err=True):
        raise CliError("nothing changed (not confirmed)")
