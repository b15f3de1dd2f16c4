"""The server's configuration: one frozen object, built once (docs/API.md, STYLE.md §9).

Precedence, highest first: keyword overrides (the CLI's flags) > environment (`FLUX_*`) >
a TOML file > the defaults below. Nothing reads the environment after the object is built,
so two servers in one process can run with different configurations.
"""

from __future__ import annotations

import enum
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..federation.delivery import QueuePolicy
from ..federation.netguard import PeerPolicy
from ..protocol.envelope import SERVER_RE
from ..protocol.limits import MAX_PENDING_PER_ADDRESS, TAMPER_STRIKE_THRESHOLD, WS_HEARTBEAT_S
from ..protocol.tokens import PUBLISHED_DEFAULT_SECRET
from .wire import TrustedProxies

DAY_MS = 86_400_000


class Registration(enum.StrEnum):
    """Who may register an address (docs/API.md, "Hosted addresses")."""

    OPEN = "open"  #: any key that signs the registration
    INVITE = "invite"  #: a key with an unused invite code
    CLOSED = "closed"  #: nobody (403)


class Backend(enum.StrEnum):
    MEMORY = "memory"
    SQLITE = "sqlite"
    POSTGRES = "postgres"  #: needs `db_url`


#: what a `db_url` may start with
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """Everything a FLUX server is told. Times in ms unless the name says `_s`."""

    domain: str = "localhost"  #: this server's name: hop records, auth challenges, keys
    host: str = "127.0.0.1"
    port: int = 8765  #: 0 = an ephemeral port (tests)
    data_dir: Path = Path("flux-data")  #: holds the server key (and the database by default)
    backend: Backend = Backend.SQLITE
    db_path: Path | None = None  #: default: data_dir / "flux.db"
    #: the PostgreSQL database (postgresql://user:password@host:port/dbname) of the postgres
    #: backend; given without a backend, it selects that backend
    db_url: str | None = None
    #: PostgreSQL: connections per process for mail (accounts use 5 more, push 1)
    db_pool_max: int = 10
    #: PostgreSQL: a statement running longer is cancelled (503 to the client)
    db_statement_timeout_ms: int = 10_000
    #: serve HTTPS with this certificate chain and key (PEM); both or neither
    tls_cert: Path | None = None
    tls_key: Path | None = None
    accounts_db: Path | None = None  #: the accounts store; default: data_dir / "accounts.db"
    secret: str | None = None  #: FLUX_SECRET, only used for legacy tokens
    legacy_tokens: bool = False  #: accept the prototype's shared-secret token (insecure)
    log_level: str = "info"  #: debug | info | warning | error
    #: one log line per HTTP request; off by default (it costs ~10 % of peak throughput)
    access_log: bool = False
    open_mode: bool = False  #: accept mail for any address, not only registered ones
    registration: Registration = Registration.OPEN
    invites: frozenset[str] = frozenset()  #: invite codes, each usable once
    #: peers reached over plain HTTP (development); all others over verified HTTPS
    insecure_peers: frozenset[str] = frozenset()
    #: peers that may be reached at loopback/private/link-local addresses (development,
    #: private federations): CIDRs, host names or host:port (federation/netguard.py); the
    #: insecure peers are allowed too. Everything else must resolve to a global address.
    allow_private_peers: frozenset[str] = frozenset()
    #: `Authorization: Bearer <token>` for /metrics and the detailed /stats; unset: those
    #: are served to loopback clients only (docs/OPERATING.md)
    operator_token: str | None = None
    #: load balancers (addresses, CIDRs, names) whose X-Forwarded-For names the client
    trusted_proxies: frozenset[str] = TrustedProxies()
    #: a PEM CA bundle to trust for peers instead of the system's (tests, private networks)
    peer_ca_file: Path | None = None
    #: mesh relays (federation/mesh.py); default: data_dir / "mesh.config.json" if present
    mesh_config: Path | None = None
    #: the delivery queue (docs/FEDERATION.md, "Delivery queue")
    queue_retry_window_s: float = 5 * 86_400.0  #: then the sender gets a bounce
    queue_retry_base_s: float = 5.0  #: the first retry waits about this long, doubling
    queue_retry_cap_s: float = 3_600.0  #: no wait between attempts is longer
    queue_lease_s: float = 60.0  #: a crashed worker's destinations are retried after this
    queue_parallel: int = 8  #: destinations one process delivers to at once
    session_ttl_ms: int = 30 * DAY_MS
    #: password-account sessions: shorter, since each one can sign with a custodial key
    account_session_ttl_ms: int = 7 * DAY_MS
    challenge_ttl_ms: int = 5 * 60_000
    pending_quota: int = MAX_PENDING_PER_ADDRESS  #: pending messages per recipient (429)
    spam_rate_per_minute: int = 20  #: messages per sender per minute before "rate limit"
    #: pending messages all senders a recipient never wrote to may hold together, and any
    #: one of them (store/base.py StrangerShare); 429 beyond
    stranger_pending_total: int = 100
    stranger_pending_per_sender: int = 20
    #: messages submitted from one client address (an IPv6 /64) per minute (server/fair.py)
    submit_per_ip_per_minute: int = 120
    #: registrations and name claims from one client address per hour
    register_per_ip_per_hour: int = 30
    #: messages one peer server may hand on per minute (/federation/deliver, /mesh/relay)
    peer_messages_per_minute: int = 6000
    #: failed logins per 15 minutes from one client address (any usernames) and for one
    #: username (from any addresses), beside 5 per (username, address)
    login_failures_per_ip: int = 30
    login_failures_per_account: int = 100
    #: argon2id work: at once, waiting in all, waiting per client address, and how long a
    #: login may wait for a slot before 503 (accounts/kdf.py)
    kdf_slots: int = 2
    kdf_queue: int = 64
    kdf_per_client: int = 2
    kdf_wait_s: float = 10.0
    #: expired mail is removed for good (bodies included) this long after its `expires`
    expired_keep_s: float = 3_600.0
    quarantine_threshold: int = TAMPER_STRIKE_THRESHOLD
    #: False = report-only: strikes are counted and reported, quarantined routes only logged
    #: (to watch what quarantine would refuse before enforcing it)
    enforce_quarantine: bool = True
    max_body_bytes: int = 256 * 1024  #: request bodies (413 beyond)
    max_header_bytes: int = 8190  #: one request line or header field
    max_headers: int = 64
    ws_max_msg_bytes: int = 256 * 1024  #: one WebSocket frame (closed with 1009 beyond)
    ws_heartbeat_s: float = float(WS_HEARTBEAT_S)  #: ping period; no pong in half of it: closed
    ws_auth_timeout_s: float = 10.0  #: the auth frame must come within this
    ws_queue_frames: int = 256  #: frames queued per socket before it is closed with 1008
    #: connections (docs/OPERATING.md, "Timeouts and connection caps"); 0 turns one off
    keepalive_timeout_s: float = 75.0  #: an idle connection (no request yet, or between two)
    header_timeout_s: float = 10.0  #: a request head must be complete this long after it began
    body_timeout_s: float = 60.0  #: a request body must be complete this long after its head
    response_timeout_s: float = 60.0  #: a response whose writing stalls must resume within this
    max_connections_per_address: int = 64  #: per client IPv4 address or IPv6 /64
    #: requests (and WebSocket frames) one client address may make per second once its
    #: burst is spent (an IPv6 /64; behind a trusted proxy, the forwarded client); past it
    #: they wait their turn with reading paused (connections.py RequestBudget). 0 = off
    requests_per_address_per_s: float = 100.0
    request_burst_per_address: int = 200  #: requests one address may make at once
    #: a request that would wait longer than this for its turn is refused: 429 + Retry-After
    request_delay_max_s: float = 2.0
    page_limit: int = 500  #: the largest `limit` a listing accepts
    expire_interval_s: float = 60.0  #: how often expired messages are swept
    shutdown_timeout_s: float = 10.0  #: how long in-flight requests get on shutdown
    extra: Mapping[str, Any] = field(default_factory=dict)  #: unknown TOML keys, kept for tools

    def __post_init__(self) -> None:
        # Values given directly (not through from_env) get the same parsing: "memory" ->
        # Backend.MEMORY, "/var/flux" -> Path, "a,b" -> frozenset...
        for f in fields(self):
            if f.name != "extra":
                object.__setattr__(self, f.name, _coerce(f.name, getattr(self, f.name), f.name))
        if not SERVER_RE.match(self.domain) or self.domain == "local":
            raise ValueError(f"domain {self.domain!r} is not a host name (or host:port)")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is out of range")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both tls_cert and tls_key")
        if self.legacy_tokens and not self.secret:
            raise ValueError("legacy tokens need FLUX_SECRET")
        if self.legacy_tokens and self.secret == PUBLISHED_DEFAULT_SECRET:
            raise ValueError(
                "FLUX_SECRET is the prototype's published default: anyone could derive every "
                "mailbox's legacy token; set a secret of your own (openssl rand -hex 32) on "
                "the server and on the prototype's clients"
            )
        if self.db_pool_max < 1 or self.db_statement_timeout_ms < 1:
            raise ValueError("db_pool_max and db_statement_timeout_ms must be positive")
        if self.backend is Backend.POSTGRES and not self.db_url:
            raise ValueError("the postgres backend needs db_url (FLUX_DB_URL)")
        if self.db_url is not None and not self.db_url.startswith(POSTGRES_SCHEMES):
            raise ValueError("db_url must be a postgresql:// URL")
        if self.operator_token is not None and len(self.operator_token) < 16:
            raise ValueError("operator_token must be at least 16 characters")
        if min(self.kdf_slots, self.kdf_queue, self.kdf_per_client) < 1:
            raise ValueError("kdf_slots, kdf_queue and kdf_per_client must be positive")
        if self.requests_per_address_per_s < 0 or self.request_delay_max_s < 0:
            raise ValueError("requests_per_address_per_s and request_delay_max_s must be >= 0")
        if self.request_burst_per_address < 1:
            raise ValueError("request_burst_per_address must be positive")
        self.peer_policy  # noqa: B018 -- refuses a malformed allow_private_peers entry now

    @property
    def peer_policy(self) -> PeerPolicy:
        """Where outbound connections may go (federation/netguard.py)."""
        return PeerPolicy.from_settings(self.allow_private_peers, self.insecure_peers)

    @property
    def mesh_path(self) -> Path:
        return self.mesh_config or self.data_dir / "mesh.config.json"

    @property
    def queue_policy(self) -> QueuePolicy:
        return QueuePolicy(
            parallel=self.queue_parallel, lease_ms=int(self.queue_lease_s * 1000),
            retry_base_ms=int(self.queue_retry_base_s * 1000),
            retry_cap_ms=int(self.queue_retry_cap_s * 1000),
            retry_window_ms=int(self.queue_retry_window_s * 1000),
        )  # fmt: skip

    @property
    def database(self) -> Path:
        return self.db_path or self.data_dir / "flux.db"

    @property
    def accounts_database(self) -> Path:
        return self.accounts_db or self.data_dir / "accounts.db"

    # -- building -------------------------------------------------------------------------

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> ServerConfig:
        """Defaults < environment < overrides. Raises ValueError naming a bad variable."""
        return cls._build({}, environ, overrides)

    @classmethod
    def from_toml(
        cls, path: str | Path, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> ServerConfig:
        """Defaults < TOML file (keys are the field names) < environment < overrides."""
        with open(path, "rb") as fh:
            table = tomllib.load(fh)
        section = table.get("server", table)
        return cls._build(dict(section), environ or {}, overrides)

    @classmethod
    def _build(
        cls, toml: dict[str, Any], environ: Mapping[str, str], overrides: Mapping[str, Any]
    ) -> ServerConfig:
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: _coerce(k, v, f"toml:{k}") for k, v in toml.items() if k in known}
        values.update(_from_environ(environ))
        for name, value in overrides.items():
            if name not in known:
                raise TypeError(f"unknown server option {name!r}")
            values[name] = _coerce(name, value, name)
        if values.get("db_url") and "backend" not in values:
            values["backend"] = Backend.POSTGRES  # a database URL says which backend
        extra = {k: v for k, v in toml.items() if k not in known}
        return cls(**values, extra=extra)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}

#: environment variable -> field
ENV_VARS = {
    "FLUX_SECRET": "secret",
    "FLUX_BACKEND": "backend",
    "FLUX_DB_PATH": "db_path",
    "FLUX_DB_URL": "db_url",
    "FLUX_TLS_CERT": "tls_cert",
    "FLUX_TLS_KEY": "tls_key",
    "FLUX_ACCOUNTS_DB": "accounts_db",
    "FLUX_PORT": "port",
    "FLUX_HOST": "host",
    "FLUX_DOMAIN": "domain",
    "FLUX_DATA_DIR": "data_dir",
    "FLUX_OPEN": "open_mode",
    "FLUX_REGISTRATION": "registration",
    "FLUX_LEGACY_TOKENS": "legacy_tokens",
    "FLUX_ACCESS_LOG": "access_log",
    "FLUX_ENFORCE_QUARANTINE": "enforce_quarantine",
    "FLUX_INVITES": "invites",
    "FLUX_INSECURE_PEERS": "insecure_peers",
    "FLUX_ALLOW_PRIVATE_PEERS": "allow_private_peers",
    "FLUX_OPERATOR_TOKEN": "operator_token",
    "FLUX_PEER_CA": "peer_ca_file",
    "FLUX_TRUSTED_PROXIES": "trusted_proxies",
    "FLUX_LOG_LEVEL": "log_level",
    "FLUX_DB_POOL_MAX": "db_pool_max",
    "FLUX_DB_STATEMENT_TIMEOUT_MS": "db_statement_timeout_ms",
    "FLUX_MESH_CONFIG": "mesh_config",
    "FLUX_SPAM_RATE_PER_MINUTE": "spam_rate_per_minute",
    "FLUX_PENDING_QUOTA": "pending_quota",
    "FLUX_STRANGER_PENDING_TOTAL": "stranger_pending_total",
    "FLUX_STRANGER_PENDING_PER_SENDER": "stranger_pending_per_sender",
    "FLUX_SUBMIT_PER_IP_PER_MINUTE": "submit_per_ip_per_minute",
    "FLUX_REGISTER_PER_IP_PER_HOUR": "register_per_ip_per_hour",
    "FLUX_PEER_MESSAGES_PER_MINUTE": "peer_messages_per_minute",
    "FLUX_LOGIN_FAILURES_PER_IP": "login_failures_per_ip",
    "FLUX_LOGIN_FAILURES_PER_ACCOUNT": "login_failures_per_account",
    "FLUX_KDF_SLOTS": "kdf_slots",
    "FLUX_KDF_QUEUE": "kdf_queue",
    "FLUX_KDF_PER_CLIENT": "kdf_per_client",
    "FLUX_KDF_WAIT_S": "kdf_wait_s",
    "FLUX_EXPIRED_KEEP_S": "expired_keep_s",
    "FLUX_QUEUE_RETRY_WINDOW_S": "queue_retry_window_s",
    "FLUX_QUEUE_RETRY_BASE_S": "queue_retry_base_s",
    "FLUX_QUEUE_RETRY_CAP_S": "queue_retry_cap_s",
    "FLUX_QUEUE_LEASE_S": "queue_lease_s",
    "FLUX_KEEPALIVE_TIMEOUT_S": "keepalive_timeout_s",
    "FLUX_HEADER_TIMEOUT_S": "header_timeout_s",
    "FLUX_BODY_TIMEOUT_S": "body_timeout_s",
    "FLUX_RESPONSE_TIMEOUT_S": "response_timeout_s",
    "FLUX_MAX_CONNECTIONS_PER_ADDRESS": "max_connections_per_address",
    "FLUX_REQUESTS_PER_ADDRESS_PER_S": "requests_per_address_per_s",
    "FLUX_REQUEST_BURST_PER_ADDRESS": "request_burst_per_address",
    "FLUX_REQUEST_DELAY_MAX_S": "request_delay_max_s",
}


def _from_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for var, name in ENV_VARS.items():
        if var in environ:
            out[name] = _coerce(name, environ[var], var)
    return out


def _bool(value: Any, source: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{source}: {value!r} is not a boolean")


def _path(value: Any, source: str) -> Path | None:
    return None if value is None or value == "" else Path(value)


def _name_set(value: Any, source: str) -> frozenset[str]:
    """A comma-separated string (or an iterable) of names, as written (invite codes)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return frozenset(str(i).strip() for i in items if str(i).strip())


def _host_set(value: Any, source: str) -> frozenset[str]:
    """A comma-separated string (or an iterable) of server names, host names, addresses or
    CIDRs, lower-cased: DNS names are case-insensitive and FLUX compares server names in
    lower case (PROTOCOL.md §2.4, §10.5), so `Peer.Example:8443` must match the name
    `peer.example:8443` rather than silently never match."""
    return frozenset(name.lower() for name in _name_set(value, source))


def _int(value: Any, source: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: {value!r} is not an integer") from exc


def _float(value: Any, source: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: {value!r} is not a number") from exc


def _enum(kind: type[enum.StrEnum]) -> Callable[[Any, str], Any]:
    def parse(value: Any, source: str) -> Any:
        try:
            return kind(str(value).strip().lower())
        except ValueError as exc:
            allowed = "|".join(kind)
            raise ValueError(f"{source}: {value!r} is not one of {allowed}") from exc

    return parse


def _str(value: Any, source: str) -> str:
    return str(value)


def _opt_str(value: Any, source: str) -> str | None:
    return None if value is None or value == "" else str(value)


def _log_level(value: Any, source: str) -> str:
    text = str(value).strip().lower()
    if text not in ("debug", "info", "warning", "error"):
        raise ValueError(f"{source}: {value!r} is not one of debug|info|warning|error")
    return text


_PARSERS: dict[str, Callable[[Any, str], Any]] = {
    "domain": lambda v, s: str(v).strip().lower(),
    "host": _str,
    "secret": _opt_str,
    "backend": _enum(Backend),
    "registration": _enum(Registration),
    "data_dir": lambda v, s: Path(v),
    "db_path": _path,
    "db_url": _opt_str,
    "tls_cert": _path,
    "tls_key": _path,
    "accounts_db": _path,
    "legacy_tokens": _bool,
    "access_log": _bool,
    "enforce_quarantine": _bool,
    "open_mode": _bool,
    "invites": _name_set,
    "insecure_peers": _host_set,
    "allow_private_peers": _host_set,
    "operator_token": _opt_str,
    "trusted_proxies": lambda value, source: TrustedProxies(_host_set(value, source)),
    "log_level": _log_level,
    "peer_ca_file": _path,
    "ws_heartbeat_s": _float,
    "ws_auth_timeout_s": _float,
    "expire_interval_s": _float,
    "shutdown_timeout_s": _float,
    "mesh_config": _path,
    "queue_retry_window_s": _float,
    "queue_retry_base_s": _float,
    "queue_retry_cap_s": _float,
    "queue_lease_s": _float,
    "kdf_wait_s": _float,
    "expired_keep_s": _float,
    "keepalive_timeout_s": _float,
    "header_timeout_s": _float,
    "body_timeout_s": _float,
    "response_timeout_s": _float,
    "requests_per_address_per_s": _float,
    "request_delay_max_s": _float,
}


def _coerce(name: str, value: Any, source: str) -> Any:
    return _PARSERS.get(name, _int)(value, source)
