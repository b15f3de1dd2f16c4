"""`flux admin doctor`: is this server set up right? One line per check, ✓ or ✗, and for
each ✗ the fix in one line; exit status 1 if anything failed (`--json` for scripts).

It reads what `flux server` would read (--config, FLUX_*, --data-dir) and changes
nothing: the databases are opened read-only (SQLite) or only queried (PostgreSQL), so an
outdated schema is reported, not migrated, and a key file with loose permissions is
reported, not fixed. Checks, in order:

* config: the settings parse; a server bound beyond loopback names a domain peers can
  reach (not `localhost`).
* data directory: exists, not writable by others; the key file is 0600.
* server key: loads, and matches the key the running server publishes at
  `/federation/info` (skipped with `--offline`).
* database: opens, its schema version is the one this FLUX knows, and (SQLite) `PRAGMA
  integrity_check` says ok; the same for the accounts database.
* peers: the destinations with queued mail (at most `--peers`, default 5), each asked for
  its `/federation/info` within `--timeout` seconds, and the clock skew against its
  `Date` header (more than a minute is a ✗: signed requests and messages carry times, and
  peers refuse ones off by more than PROTOCOL.md's window of 5 minutes).
"""

from __future__ import annotations

import email.utils
import json
import sqlite3
import stat
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from ._common import out, run
from .safe_text import json_text

# The server's modules are imported by the functions that run: every `flux` command
# imports this module (through `flux admin`), and importing flux.server costs each of them
# a tenth of a second or more at start-up.
if TYPE_CHECKING:
    from ..server.config import ServerConfig

__all__ = ["Check", "doctor"]

MAX_SKEW_OK_MS = 60_000  #: a minute: well inside the 5-minute window peers allow
LOOPBACK = ("127.", "::1", "localhost")


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None


def _passed(name: str, detail: str) -> Check:
    return Check(name, True, detail)


def _failed(name: str, detail: str, fix: str) -> Check:
    return Check(name, False, detail, fix)


# -- config and files ---------------------------------------------------------------------------
def check_config(found: ServerConfig) -> list[Check]:
    checks = [_passed("config", f"settings read: domain {found.domain}, backend {found.backend}, "
                                f"registration {found.registration}")]  # fmt: skip
    public = not found.host.startswith(LOOPBACK)
    if public and found.domain.split(":")[0] in ("localhost", "127.0.0.1", "::1"):
        checks.append(_failed(
            "domain", f"the server listens on {found.host} but calls itself {found.domain}",
            "set FLUX_DOMAIN (or --domain) to the name peers reach this server by",
        ))  # fmt: skip
    return checks


def check_files(found: ServerConfig) -> list[Check]:
    from ..server.keys import KEY_FILE

    data_dir = found.data_dir
    if not data_dir.is_dir():
        return [_failed("data directory", f"{data_dir} does not exist",
                        "pass the server's --data-dir (or set FLUX_DATA_DIR)")]  # fmt: skip
    checks = []
    mode = stat.S_IMODE(data_dir.stat().st_mode)
    if mode & 0o022:
        checks.append(_failed("data directory", f"{data_dir} is writable by others ({mode:o})",
                              f"chmod go-w {data_dir} (0700 is best)"))  # fmt: skip
    else:
        checks.append(_passed("data directory", f"{data_dir} ({mode:o})"))
    key = data_dir / KEY_FILE
    if not key.exists():
        checks.append(_failed("key file", f"no server key at {key}",
                              "start `flux server` once with this --data-dir: it creates it"))  # fmt: skip
        return checks
    key_mode = stat.S_IMODE(key.stat().st_mode)
    if key_mode & 0o077:
        checks.append(_failed("key file", f"{key} is readable by others ({key_mode:o})",
                              f"chmod 600 {key}"))  # fmt: skip
    else:
        checks.append(_passed("key file", f"{key} (600)"))
    return checks


def load_key(found: ServerConfig) -> tuple[Check, bytes | None]:
    """The server key as the server would load it, read without touching the file."""
    from ..protocol.identity import Identity
    from ..server.keys import KEY_FILE

    path = found.data_dir / KEY_FILE
    if not path.exists():
        return _failed("server key", "not found", "start `flux server` once to create it"), None
    try:
        identity = Identity.from_keyfile(path.read_text(encoding="utf-8"))
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError) as exc:
        return _failed("server key", f"{path} does not load: {exc}",
                       "restore it from a backup (or move it aside to start anew)"), None  # fmt: skip
    return _passed("server key", f"loads ({identity.address})"), identity.public_key


# -- databases ----------------------------------------------------------------------------------
def _sqlite_checks(name: str, path: Path, version_sql: str, known: int) -> list[Check]:
    if not path.exists():
        return [_failed(name, f"no database at {path}",
                        "pass the server's --data-dir (or FLUX_DB_PATH)")]  # fmt: skip
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            version = conn.execute(version_sql).fetchone()[0] or 0
            result = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return [_failed(name, f"{path} does not open: {exc}",
                        "check the file and its permissions; restore a backup if it is damaged")]  # fmt: skip
    checks = [_version(name, version, known)]
    if result == ["ok"]:
        checks.append(_passed(f"{name} integrity", f"{path}: integrity_check ok"))
    else:
        checks.append(_failed(f"{name} integrity", f"{path}: {'; '.join(result[:3])}",
                              "stop the server and restore the latest backup"))  # fmt: skip
    return checks


def _version(name: str, version: int, known: int) -> Check:
    if version == known:
        return _passed(f"{name} schema", f"version {version}, current")
    if version < known:
        return _failed(f"{name} schema", f"version {version}, this FLUX knows {known}",
                       "start `flux server` once: it migrates the database")  # fmt: skip
    return _failed(f"{name} schema", f"version {version} is newer than this FLUX ({known})",
                   "upgrade FLUX to the version that wrote it")  # fmt: skip


def check_databases(found: ServerConfig) -> list[Check]:
    from ..accounts.store import STEPS as ACCOUNT_STEPS
    from ..server.config import Backend
    from ..store.migrations.sqlite import STEPS

    if found.backend is Backend.MEMORY:
        return [_failed("database", "the memory backend keeps nothing across restarts",
                        "use --backend sqlite or postgres for a real server")]  # fmt: skip
    if found.backend is Backend.POSTGRES:
        return run(_postgres_checks(found))
    checks = _sqlite_checks("database", found.database,
                            "SELECT MAX(version) FROM schema_version", len(STEPS))  # fmt: skip
    if found.accounts_database.exists():
        checks += _sqlite_checks("accounts database", found.accounts_database,
                                 "PRAGMA user_version", len(ACCOUNT_STEPS))  # fmt: skip
    return checks


async def _postgres_checks(found: ServerConfig) -> list[Check]:
    import asyncio

    import asyncpg

    from ..accounts.postgres import STEPS as ACCOUNT_STEPS
    from ..store._postgres_pool import redact
    from ..store.migrations.postgres import STEPS

    assert found.db_url is not None
    where = redact(found.db_url)
    try:
        conn = await asyncio.wait_for(asyncpg.connect(found.db_url), 10)
    except (OSError, asyncpg.PostgresError, TimeoutError, ValueError) as exc:
        return [_failed("database", f"{where} does not answer: {exc}",
                        "check FLUX_DB_URL and that PostgreSQL is running")]  # fmt: skip
    try:
        checks = [_passed("database", f"{where} answers")]
        for name, table, known in (("database", "schema_version", len(STEPS)),
                                   ("accounts database", "account_schema_version",
                                    len(ACCOUNT_STEPS))):  # fmt: skip
            exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table)
            version = await conn.fetchval(f'SELECT MAX(version) FROM "{table}"') if exists else 0
            checks.append(_version(name, version or 0, known))
        return checks
    finally:
        await conn.close()


# -- the running server and its peers ----------------------------------------------------------
def own_url(found: ServerConfig) -> str:
    """Where peers reach this server: https://{domain} (http for a loopback domain, with
    the listening port when the domain names none)."""
    domain = found.domain
    host = domain.rsplit(":", 1)[0].strip("[]") if ":" in domain else domain
    loopback = host.startswith(LOOPBACK)
    if loopback and ":" not in domain:
        domain = f"{domain}:{found.port}"
    scheme = "https" if found.tls_cert or not loopback else "http"
    return f"{scheme}://{domain}"


async def _info(url: str, found: ServerConfig, timeout_s: float) -> tuple[Any, int | None]:
    """GET `url`/federation/info: (the answer, the peer's clock from its Date header in
    unix ms, or None). Raises what aiohttp raises, TimeoutError, ValueError."""
    import ssl

    import aiohttp

    context: ssl.SSLContext | bool = (
        ssl.create_default_context(cafile=str(found.peer_ca_file)) if found.peer_ca_file
        else True
    )  # fmt: skip
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http,
        http.get(f"{url}/federation/info", ssl=context if url.startswith("https:") else False,
                 allow_redirects=False) as response,
    ):  # fmt: skip
        if response.status != 200:
            raise ValueError(f"HTTP {response.status}")
        body = json.loads(await response.content.read(256 * 1024))
        date = response.headers.get("Date")
        clock = int(email.utils.parsedate_to_datetime(date).timestamp() * 1000) if date else None
        return body, clock


async def check_published(
    found: ServerConfig, pub: bytes | None, server: str | None, timeout_s: float
) -> Check:
    from ..federation.keys import parse_info

    url = server or own_url(found)
    if pub is None:
        return _failed("published key", "no server key to compare", "see the key check above")
    try:
        body, _ = await _info(url, found, timeout_s)
        current = [k.pub for k in parse_info({"keys": body.get("keys") or []})]
    except Exception as exc:  # any failure is the check's answer
        return _failed("published key", f"{url}/federation/info: {_words(exc)}",
                       "start the server, or pass --server URL (or --offline)")  # fmt: skip
    if pub in current:
        return _passed("published key", f"{url} publishes this key")
    return _failed("published key", f"{url} publishes another key",
                   "restart every server process on this data directory (after a rotate-key)")  # fmt: skip


def _words(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:200]


async def check_peers(found: ServerConfig, limit: int, timeout_s: float) -> list[Check]:
    # asyncio here and below: the offline commands (keygen, verify, --help) import this
    # module too, and start without an event loop's modules
    import asyncio

    from ..server.runner import open_configured_store

    store = open_configured_store(found, lambda: int(time.time() * 1000))
    await store.open()
    try:
        states = await store.queue_state()
    finally:
        await store.close()
    if not states:
        return [_passed("peers", "no queued mail: no peer to check")]
    waiting = sorted(states, key=lambda s: -s.queued)[:limit]
    results = await asyncio.gather(*(_peer(found, s.destination, timeout_s) for s in waiting))
    checks = [c for pair in results for c in pair]
    if len(states) > limit:
        checks.append(_passed("peers", f"{len(states) - limit} more destinations not checked "
                                       f"(--peers {len(states)} checks all)"))  # fmt: skip
    return checks


async def _peer(found: ServerConfig, destination: str, timeout_s: float) -> list[Check]:
    """Reach `destination` as the delivery worker does: the server its domain delegates to
    (/.well-known/flux), over HTTPS unless listed insecure, under the address policy."""
    import asyncio

    from ..federation.peers import PeerClient

    peers = PeerClient(clock=lambda: int(time.time() * 1000), insecure_peers=found.insecure_peers,
                       ca_file=found.peer_ca_file, policy=found.peer_policy)  # fmt: skip
    asked = time.time() * 1000
    try:
        async with peers.lifespan(None):
            server = await asyncio.wait_for(peers.delegated_server(destination), timeout_s)
            url = peers.base_url(server)
        _, clock = await _info(url, found, timeout_s)
    except Exception as exc:  # any failure is the check's answer
        return [_failed(f"peer {destination}", f"not reachable: {_words(exc)}",
                        f"`flux admin queue show` its mail; wait, or `flux admin queue hold "
                        f"{destination}`")]  # fmt: skip
    checks = [_passed(f"peer {destination}", "answers /federation/info")]
    if clock is not None:
        skew = clock - (asked + time.time() * 1000) / 2
        name = f"clock vs {destination}"
        if abs(skew) > MAX_SKEW_OK_MS:
            checks.append(_failed(name, f"off by {skew / 1000:+.0f} s",
                                  "run NTP (timedatectl set-ntp true) here, or tell the peer"))  # fmt: skip
        else:
            checks.append(_passed(name, f"within {abs(skew) / 1000:.0f} s"))
    return checks


# -- the command --------------------------------------------------------------------------------
def doctor(
    ctx: typer.Context,
    data_dir: Path | None = typer.Option(
        None,
        "--data-dir",
        help="The server's data directory (default: $FLUX_DATA_DIR, else ./flux-data).",
        show_default=False,
    ),
    server: str | None = typer.Option(
        None,
        "--server",
        help="Where the running server answers (default: from its domain).",
        show_default=False,
    ),
    offline: bool = typer.Option(False, "--offline", help="Skip the network checks."),
    peers: int = typer.Option(5, "--peers", min=0, help="Check at most this many peers."),
    timeout: float = typer.Option(3.0, "--timeout", min=0.1, help="Seconds per network check."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON array of the checks."),
) -> None:
    """Check the config, files, key, database, peers and clock; ✓ or ✗ with the fix.

    Checks config, data-dir permissions, the server key, the database, peers with queued
    mail and clock skew; each line ✓ or ✗ with the fix; exit 1 if anything failed."""
    from ..server.config import Backend
    from .admin._base import settings

    try:
        found = settings(ctx, data_dir)
    except Exception as exc:  # a bad setting is the first failed check
        _report([_failed("config", str(exc), "fix the setting named above")], as_json)
        raise typer.Exit(1) from None
    checks = check_config(found) + check_files(found)
    key_check, pub = load_key(found)
    checks.append(key_check)
    checks += check_databases(found)
    if not offline:
        checks.append(run(check_published(found, pub, server, timeout)))
        database_ok = all(c.ok for c in checks if c.name == "database")
        if database_ok and found.backend is not Backend.MEMORY:
            checks += run(check_peers(found, peers, timeout))
    _report(checks, as_json)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


def _report(checks: list[Check], as_json: bool) -> None:
    if as_json:
        print(json_text([asdict(c) for c in checks], indent=2))
        return
    for c in checks:
        mark = "[green]✓[/]" if c.ok else "[red]✗[/]"
        out.print(f"{mark} {escape(c.name)}: {escape(c.detail)}", highlight=False)
        if c.fix:
            out.print(f"    fix: {escape(c.fix)}", highlight=False)
