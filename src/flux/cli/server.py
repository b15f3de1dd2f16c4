"""`flux server`: flags (and a TOML file) → one frozen `ServerConfig` → `run_server`.

Precedence (the server's own rule): flags, then FLUX_* environment variables, then the
--config file, then the defaults. The CLI only gathers settings; the server package owns their meaning and checks.
"""

from __future__ import annotations

import contextlib
import os
import tomllib
from pathlib import Path

import typer

from ._common import CliError


def server(
    host: str | None = typer.Option(
        None,
        "--host",
        help="Bind address; 0.0.0.0 serves the network [$FLUX_HOST; default 127.0.0.1].",
    ),
    port: int | None = typer.Option(
        None, "--port", help="Port; 0 picks a free one [$FLUX_PORT; default 8765]."
    ),
    domain: str | None = typer.Option(
        None,
        "--domain",
        help="This server's domain, host or host:port [$FLUX_DOMAIN; default localhost].",
    ),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Where keys and data live [$FLUX_DATA_DIR; default ./flux-data]."
    ),
    db: str | None = typer.Option(
        None,
        "--db",
        help="SQLite file [$FLUX_DB_PATH; default <data-dir>/flux.db] or postgresql:// URL "
        "[$FLUX_DB_URL].",
    ),
    backend: str | None = typer.Option(
        None, "--backend", help="memory|sqlite|postgres [$FLUX_BACKEND; default sqlite]."
    ),
    open_mode: bool | None = typer.Option(
        None,
        "--open/--hosted",
        help="Accept mail for any address (development), or only for addresses hosted here "
        "[$FLUX_OPEN; default --hosted].",
    ),
    registration: str | None = typer.Option(
        None,
        "--registration",
        help="Who may register: open|invite|closed [$FLUX_REGISTRATION; default open].",
    ),
    legacy_tokens: bool | None = typer.Option(
        None,
        "--legacy-tokens/--no-legacy-tokens",
        help="Accept the prototype's tokens (with $FLUX_SECRET) [$FLUX_LEGACY_TOKENS; default no].",
    ),
    tls_cert: Path | None = typer.Option(
        None, "--tls-cert", help="Serve HTTPS with this PEM certificate chain [$FLUX_TLS_CERT]."
    ),
    tls_key: Path | None = typer.Option(
        None, "--tls-key", help="The PEM private key for --tls-cert [$FLUX_TLS_KEY]."
    ),
    access_log: bool | None = typer.Option(
        None,
        "--access-log/--no-access-log",
        help="Log every HTTP request [$FLUX_ACCESS_LOG; default no].",
    ),
    config: Path | None = typer.Option(
        None, "--config", help="TOML file of these settings (and the rest: README, Configuration)."
    ),
) -> None:
    """Run a FLUX server until interrupted."""
    from ..server.config import ServerConfig
    from ..server.runner import run_server

    flags = {
        "host": host, "port": port, "domain": domain, "data_dir": data_dir,
        "backend": backend, "open_mode": open_mode, "registration": registration,
        "legacy_tokens": legacy_tokens, "access_log": access_log,
        "tls_cert": tls_cert, "tls_key": tls_key, **_database(db, backend),
    }  # fmt: skip
    overrides = {k: v for k, v in flags.items() if v is not None}
    try:
        if config is not None:
            settings = ServerConfig.from_toml(config, os.environ, **overrides)
        else:
            settings = ServerConfig.from_env(os.environ, **overrides)
    except (TypeError, ValueError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"bad server setting: {exc}") from exc
    try:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a foreground server stops
            run_server(settings)
    except ConnectionError as exc:  # the database is down or refuses us: say so, in one line
        raise CliError(str(exc)) from exc


def _database(db: str | None, backend: str | None) -> dict[str, object]:
    """--db: a postgresql:// URL selects the postgres backend; anything else is a SQLite
    file."""
    from ..server.config import POSTGRES_SCHEMES

    if db is None:
        return {}
    if not db.startswith(POSTGRES_SCHEMES):
        return {"db_path": Path(db)}
    if backend is not None and backend.strip().lower() != "postgres":
        raise CliError(f"--db {db.split('://')[0]}://… needs --backend postgres, not {backend}")
    return {"db_url": db, "backend": "postgres"}
