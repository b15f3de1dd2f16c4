"""`flux admin …`: operator commands that work on a server's data directory directly.

They open the same database the server uses (SQLite in WAL mode lets them run beside a
live server; with PostgreSQL, FLUX_DB_URL names it) and change only what the operator
asks: reputation overrides, the delivery queue (queue.py), invites (invites.py), password
accounts (accounts.py); `doctor` (cli/doctor.py) checks a server's setup. A running
server reads strikes and overrides from the store at least once a second (its reputation
cache, server/reputation.py), so a change applies within a second; its delivery worker
looks at the queue at least every 10 seconds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from ...protocol.errors import KeyFileError
from .._common import CliError, out, run
from ..doctor import doctor
from ._base import DataDirOption, JsonOption, print_json
from ._base import config as _config
from ._base import now_ms as _now_ms
from ._base import settings as _settings
from .accounts import accounts
from .invites import invite
from .queue import queue

# The server's and the store's modules are imported where a command runs: every `flux`
# command imports this package (cli/__init__.py), and flux.server alone costs each of them
# a tenth of a second or more at start-up.
if TYPE_CHECKING:
    from ...server.config import ServerConfig
    from ...server.reputation import Reputation
    from ...store.base import Store

admin = typer.Typer(
    help="Operate a server: the delivery queue, invites, accounts, a health check "
    "(doctor), reputation, quarantine, key rotation.",
    no_args_is_help=True,
)
admin.add_typer(queue, name="queue")
admin.add_typer(invite, name="invite")
admin.add_typer(accounts, name="accounts")
admin.command()(doctor)

T = TypeVar("T")
Action = Callable[["Store", "Reputation", int], Awaitable[T]]


@admin.callback()
def _options(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None,
        "--config",
        help="The server's TOML file (as given to `flux server --config`); FLUX_* variables "
        "and --data-dir override it, as for the server.",
        show_default=False,
    ),
) -> None:
    ctx.obj = {"config": config}


async def _with_reputation(config: ServerConfig, action: Action[T]) -> T:
    from ...server.reputation import Reputation
    from ...server.runner import open_configured_store

    store = open_configured_store(config, _now_ms)
    await store.open()
    try:
        return await action(store, Reputation(store, config.quarantine_threshold), _now_ms())
    finally:
        await store.close()


@admin.command()
def reputation(
    ctx: typer.Context, data_dir: Path | None = DataDirOption, as_json: bool = JsonOption
) -> None:
    """Strikes (distinct proofs) per server, and who is quarantined."""

    async def show(store: Store, rep: Reputation, _now: int):
        return await rep.standing(), await store.quarantine_overrides()

    standing, overrides = run(_with_reputation(_config(ctx, data_dir), show))
    if as_json:
        print_json([
            {"server": server, "strikes": standing.strikes.get(server, 0),
             "quarantined": server in standing.quarantined,
             "override": None if server not in overrides
             else ("lifted" if overrides[server].lifted else "imposed")}
            for server in sorted(set(standing.strikes) | set(overrides))
        ])  # fmt: skip
        return
    table = Table(title="reputation")
    for column in ("server", "strikes", "quarantined", "operator override"):
        table.add_column(column)
    servers = sorted(set(standing.strikes) | set(overrides))
    for server in servers:
        decision = overrides.get(server)
        override = "" if decision is None else ("lifted" if decision.lifted else "imposed")
        quarantined = "yes" if server in standing.quarantined else "no"
        table.add_row(escape(server), str(standing.strikes.get(server, 0)), quarantined, override)
    out.print(table if servers else "no strikes, no quarantine")


def _override(ctx: typer.Context, data_dir: Path | None, server: str, lifted: bool) -> None:
    async def apply(store: Store, rep: Reputation, now: int):
        await store.set_quarantine_override(server, lifted, now)
        return await rep.standing()

    standing = run(_with_reputation(_config(ctx, data_dir), apply))
    state = "quarantined" if server in standing.quarantined else "not quarantined"
    out.print(f"✓ {escape(server)} is now {state}")


@admin.command()
def lift(ctx: typer.Context, server: str, data_dir: Path | None = DataDirOption) -> None:
    """Lift a server's quarantine: its strikes so far are forgiven.

    The strikes stay on record; new proofs of tampering quarantine it again at the
    threshold."""
    _override(ctx, data_dir, server, True)


@admin.command()
def quarantine(ctx: typer.Context, server: str, data_dir: Path | None = DataDirOption) -> None:
    """Quarantine a server by operator decision, whatever its strikes."""
    _override(ctx, data_dir, server, False)


@admin.command(name="rotate-key")
def rotate_key(ctx: typer.Context, data_dir: Path | None = DataDirOption) -> None:
    """Give the server a new signing key; the old one stays published as retired.

    Restart every server process that uses this data directory (copy the file to each
    machine of a cluster first). Peers fetch the new key when they meet it."""
    from ...protocol.encoding import b64e
    from ...server.keys import rotate

    config = _settings(ctx, data_dir)
    try:
        old, new = rotate(config.data_dir, _now_ms())
    except KeyFileError as exc:
        raise CliError(str(exc)) from exc
    out.print(f"✓ new key {b64e(new.pub)} valid from now")
    out.print(f"  retired {b64e(old.pub)} (still verifies what it signed before)")
    out.print("  restart the server (every process sharing this key file) to use it")
