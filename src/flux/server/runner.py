"""Running a server: `start_server` (in a running loop: tests, the demo) and `run_server`
(blocking, for `flux server`: uvloop, SIGTERM/SIGINT → graceful shutdown).

Connections: aiohttp's keep-alive timer closes idle ones; connections.py adds the header,
body and response (write stall) deadlines and the per-address cap, and aborts whatever it
gives up on.

Shutdown order: stop accepting connections, close WebSockets (1001), let in-flight requests
finish (their store commits complete) for up to `shutdown_timeout_s`, then close the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import signal
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from ..accounts import AccountStore
from ..store.base import Store
from .app import create_app
from .config import Backend, ServerConfig
from .connections import ConnectionPolicy, GuardedAppRunner, RequestBudget
from .keys import load_or_create
from .logs import RedactingFilter, redacted_logger

log = logging.getLogger("flux.server")


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def private_dir(path: Path) -> None:
    """Create a data directory readable by its owner only (0700): it holds the database,
    password hashes, sealed keys and the server key. An existing one is left as it is."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)


def open_configured_store(config: ServerConfig, clock: Callable[[], int]) -> Store:
    from ..store import MemoryStore, SQLiteStore  # the store pulls in sqlite only when used

    if config.backend is Backend.MEMORY:
        return MemoryStore(clock=clock)
    if config.backend is Backend.POSTGRES:
        from ..store.postgres import PostgresStore  # asyncpg is imported only for this one

        assert config.db_url is not None  # ServerConfig refuses postgres without a URL
        return PostgresStore(
            config.db_url, clock=clock, pool_max=config.db_pool_max,
            statement_timeout_ms=config.db_statement_timeout_ms,
        )  # fmt: skip
    private_dir(config.database.parent)
    return SQLiteStore(str(config.database), clock=clock)


def open_configured_accounts(config: ServerConfig) -> AccountStore:
    """The accounts store: in memory with the memory backend; with PostgreSQL, in the same
    database as the mail (its own tables and migrations), so every process serving the
    domain, on any machine, sees the same accounts; else its own SQLite file."""
    from ..accounts import MemoryAccountStore, SQLiteAccountStore

    if config.backend is Backend.MEMORY:
        return MemoryAccountStore()
    if config.backend is Backend.POSTGRES:
        from ..accounts.postgres import PostgresAccountStore  # asyncpg only for this one

        assert config.db_url is not None  # ServerConfig refuses postgres without a URL
        return PostgresAccountStore(config.db_url)
    private_dir(config.accounts_database.parent)
    return SQLiteAccountStore(config.accounts_database)


@dataclass
class RunningServer:
    app: web.Application
    runner: web.AppRunner
    store: Store
    port: int
    host: str
    owns_store: bool
    tls: bool = False
    accounts_store: AccountStore | None = None  #: opened by start_server, closed by stop()
    _stopped: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    async def stop(self) -> None:
        """Graceful: stop accepting, finish in-flight requests, then close the store."""
        if self._stopped:
            return
        self._stopped = True
        await self.runner.cleanup()
        if self.owns_store:
            await self.store.close()
        if self.accounts_store is not None:
            await self.accounts_store.close()
        log.info("event=server_stopped url=%s", self.url)


async def start_server(
    config: ServerConfig,
    store: Store | None = None,
    *,
    clock: Callable[[], int] = wall_clock_ms,
) -> RunningServer:
    """Start serving `config` in the running loop; `port=0` binds an ephemeral port.

    Without `store`, the configured one is opened here and closed by `stop()`.
    """
    owns = store is None
    if store is None:
        store = open_configured_store(config, clock)
        await store.open()
    key = load_or_create(config.data_dir, config.domain, clock())
    accounts = open_configured_accounts(config)
    await accounts.open()
    app = create_app(config, store, key, clock, accounts_store=accounts)
    runner = GuardedAppRunner(
        app,
        policy=connection_policy(config),
        handle_signals=False,
        access_log=redacted_logger("flux.access") if config.access_log else None,
        shutdown_timeout=config.shutdown_timeout_s,
        max_line_size=config.max_header_bytes,
        max_field_size=config.max_header_bytes,
        max_headers=config.max_headers,
        # aiohttp's idle timer: from accept and after each response, not pushed back by
        # incoming bytes, so it also ends a request head that never completes
        keepalive_timeout=config.keepalive_timeout_s,
    )
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, ssl_context=server_tls(config))
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        await accounts.close()
        if owns:
            await store.close()
        raise
    port = _bound_port(runner) or config.port
    log.info("event=server_started domain=%s host=%s port=%d", config.domain, config.host, port)
    tls = config.tls_cert is not None
    return RunningServer(app, runner, store, port, config.host, owns, tls, accounts)


def connection_policy(config: ServerConfig) -> ConnectionPolicy:
    """The deadlines, per-address cap and per-address request budget aiohttp has no
    setting for (connections.py)."""
    return ConnectionPolicy(
        header_timeout_s=config.header_timeout_s, body_timeout_s=config.body_timeout_s,
        response_timeout_s=config.response_timeout_s,
        max_per_address=config.max_connections_per_address,
        trusted_proxies=config.trusted_proxies, requests=RequestBudget.from_config(config),
    )  # fmt: skip


def server_tls(config: ServerConfig) -> ssl.SSLContext | None:
    """The HTTPS context for `config`, or None to serve plain HTTP."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


def _bound_port(runner: web.AppRunner) -> int | None:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg (key=value pairs kept in msg)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())  # no secret in any line (logs.py)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def run_server(config: ServerConfig) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully (blocking)."""
    configure_logging(getattr(logging, config.log_level.upper()))
    try:
        import uvloop  # not on Windows

        runner: Callable[..., None] = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(_serve_until_signalled(config))


async def _serve_until_signalled(config: ServerConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # Windows
            loop.add_signal_handler(sig, stop.set)
    server = await start_server(config)
    # What starting made (modules, routes, prepared statements) lives as long as the
    # process: frozen out of the collector's reach, a full collection under load scans only
    # what requests made. Measured under ingest load: a full collection over the start-up
    # objects stalled the event loop 20-300 ms, every push and answer waiting behind it
    # (gc.freeze's documented use; benchmarks/README.md, issue 15 aim 2).
    gc.collect()
    gc.freeze()
    print(f"FLUX server for {config.domain} at {server.url}", file=sys.stderr, flush=True)
    try:
        await stop.wait()
    finally:
        log.info("event=shutdown_requested")
        await server.stop()
