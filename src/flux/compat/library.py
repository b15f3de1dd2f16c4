"""The prototype's library names, where they differ from FLUX's (README "Using as a Library").

    from flux import FluxIdentity, build_message, verify_message, FluxClient, make_app, run_server
    from flux.auth import derive_token
    from flux.encryption import encrypt_message, decrypt_message

`FluxIdentity`, `build_message`, `FluxClient`, `flux.auth` and `flux.encryption` are FLUX's
own and take the prototype's call styles too (their docstrings say where they differ). This
module holds the three that are only a translation:

- `verify_message(msg) -> bool`: the prototype's yes/no answer over `verify_envelope`,
  which raises the reason instead.
- `make_app(...) -> aiohttp Application` and `run_server(...)` (blocking): the prototype's
  arguments mapped onto a FLUX `ServerConfig`; everything behind them is FLUX's server.

Two defaults follow the prototype rather than `flux server` (docs/API.md, "The prototype's
library"): mail is accepted for any address (`open_mode`, as the prototype stored mail
for anyone), and the prototype's shared-secret tokens are accepted when a secret is given
or FLUX_SECRET is set (never with a default secret: PROTOCOL.md §13 item 3). The server's
key persists in `data_dir` for `run_server`; `make_app` without `signer=` uses a fresh key
per app, as the prototype did (PROTOCOL.md §13 item 4 says why a real server must not).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..protocol import FluxError, Identity, verify_envelope
from ..protocol.errors import InvalidValue

if TYPE_CHECKING:
    from aiohttp import web

    from ..accounts import AccountStore
    from ..server.config import ServerConfig
    from ..server.keys import ServerKey
    from ..store.base import Store

__all__ = ["make_app", "run_server", "verify_message"]

log = logging.getLogger("flux.compat")
SECRET_ENV = "FLUX_SECRET"
PROTO_MESH_CONFIG = "mesh.config.json"  #: the prototype's default, relative to the cwd


def verify_message(msg: Mapping[str, Any]) -> bool:
    """True when `msg`'s signature verifies under its `pub` and `pub` hashes to `from`.

    The prototype's contract: never raises, and does not look at the time or the integrity
    chain. `flux.protocol.verify_envelope` raises the reason instead (PROTOCOL.md §4.3);
    `FluxClient.verify` also checks the chain. Unlike the prototype's, a message FLUX's
    parser refuses (unknown fields, limits, §4.1) is False here too.
    """
    try:
        verify_envelope(dict(msg))
    except (FluxError, TypeError, ValueError):
        return False
    return True


def _legacy_secret(secret: str | None) -> str | None:
    """The shared secret to accept legacy tokens under: the one given, else FLUX_SECRET,
    else none (legacy tokens off; there is no default secret)."""
    return secret or os.environ.get(SECRET_ENV) or None


def proto_config(
    *,
    domain: str | None,
    mesh_config_path: str | os.PathLike[str] | None,
    legacy_secret: str | None,
    open_mode: bool,
    **fields: Any,
) -> ServerConfig:
    """A FLUX ServerConfig for the prototype's server arguments (see the module docstring)."""
    from ..server.config import ServerConfig

    secret = _legacy_secret(legacy_secret)
    mesh = Path(mesh_config_path) if mesh_config_path is not None else None
    return ServerConfig(
        domain=domain or "localhost", open_mode=open_mode, legacy_tokens=secret is not None,
        secret=secret, mesh_config=mesh, **fields,
    )  # fmt: skip


def make_app(
    store: Store | None = None,
    presence: object = None,
    domain: str | None = None,
    accounts: AccountStore | None = None,
    mesh_config_path: str | os.PathLike[str] | None = PROTO_MESH_CONFIG,
    local_url: str = "",
    *,
    config: ServerConfig | None = None,
    signer: ServerKey | None = None,
    legacy_secret: str | None = None,
    open_mode: bool = True,
) -> web.Application:
    """The prototype's `make_app`: a FLUX server as an aiohttp Application (not started).

    `store`: an open FLUX Store (default: a MemoryStore this app closes on cleanup).
    `accounts`: an open FLUX AccountStore (default: in memory). `domain`: the hop name
    (default "localhost"). `mesh_config_path`: a mesh file, read if it exists.
    `local_url` is accepted and not needed: FLUX's relay knows itself by its domain.
    `presence` must be None: FLUX keeps WebSocket presence inside the app. `config`: a whole
    FLUX ServerConfig instead of the prototype's arguments. `signer`: the server's key
    (default: a fresh one). Raises InvalidValue (`presence`) and ValueError (config).
    """
    from ..server.app import create_app
    from ..server.keys import ServerKey
    from ..server.runner import wall_clock_ms
    from ..store import MemoryStore

    del local_url  # see the docstring: FLUX's mesh does not need the server's own URL
    if presence is not None:
        raise InvalidValue(
            "FLUX keeps WebSocket presence inside the app; pass presence=None", field="presence"
        )
    if config is None:
        config = proto_config(
            domain=domain, mesh_config_path=mesh_config_path, legacy_secret=legacy_secret,
            open_mode=open_mode, backend="memory",
        )  # fmt: skip
    if signer is None:
        from ..protocol.chain import ServerSigner

        signer = ServerKey(ServerSigner(config.domain, Identity.generate()), 0)
    own_store = store is None
    if store is None:
        store = MemoryStore(clock=wall_clock_ms)
    app = create_app(config, store, signer, wall_clock_ms, accounts_store=accounts)
    if own_store:

        async def close_store(_: web.Application) -> None:
            await store.close()

        app.on_cleanup.append(close_store)
    return app


def run_server(
    host: str | ServerConfig = "0.0.0.0",
    port: int = 8765,
    backend: str = "memory",
    db_path: str | os.PathLike[str] = "flux.db",
    accounts_db: str | os.PathLike[str] = "flux_accounts.db",
    domain: str | None = None,
    mesh_config_path: str | os.PathLike[str] | None = PROTO_MESH_CONFIG,
    *,
    legacy_secret: str | None = None,
    open_mode: bool = True,
    data_dir: str | os.PathLike[str] = "flux-data",
) -> None:
    """The prototype's `run_server`: serve until SIGTERM/SIGINT (blocking).

    Also `run_server(config)` with a FLUX ServerConfig (FLUX's own call). `backend` is
    "memory" or "sqlite" (the prototype's two; "postgres" needs a ServerConfig);
    `db_path`/`accounts_db` are the SQLite files; the server's key lives in `data_dir`.
    The default host is the prototype's 0.0.0.0 (every interface), where `flux server`
    binds 127.0.0.1. Raises ValueError for a bad argument (ServerConfig's checks).
    """
    from ..server.config import ServerConfig
    from ..server.runner import run_server as run_flux_server

    if isinstance(host, ServerConfig):
        run_flux_server(host)
        return
    if backend not in ("memory", "sqlite"):
        raise InvalidValue(f"backend must be 'memory' or 'sqlite', not {backend!r}", field="backend")  # fmt: skip
    config = proto_config(
        domain=domain, mesh_config_path=mesh_config_path, legacy_secret=legacy_secret,
        open_mode=open_mode, host=host, port=port, backend=backend, db_path=Path(db_path),
        accounts_db=Path(accounts_db), data_dir=Path(data_dir),
    )  # fmt: skip
    if config.legacy_tokens:
        log.warning("event=legacy_tokens_on reason=FLUX_SECRET anyone holding it reads any mailbox")
    run_flux_server(config)
