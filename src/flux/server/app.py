"""`create_app`: one FLUX server as one aiohttp application, its state built once here.

Every piece of state (store, key, clock, push hub, rate limiter, metrics registry) is made
or passed in here and handed to the parts that need it; nothing lives in module globals,
so one process can run several servers (tests, the demo) without them sharing anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from ..accounts import (
    Accounts,
    AccountStore,
    Admission,
    LoginLimiter,
    MemoryAccountStore,
    custody_key_for,
)
from ..accounts.kdf import KdfQueue
from ..accounts.limiter import MAX_FAILURES, WINDOW_MS
from ..background import running
from ..compat import http as compat_http
from ..federation.delivery import DeliveryWorker
from ..federation.mesh import load_meshes
from ..federation.peers import PeerClient, ReportSender
from ..protocol.chain import ServerSigner
from ..protocol.identity import address_from_pub
from ..store.base import Store, StoreUnavailable, StrangerShare
from .auth import Authenticator, OperatorAuth, mac_key_for
from .config import Backend, ServerConfig
from .errors import FluxError, error_middleware
from .fair import ClientLimits
from .fanout import Dispatcher, LocalFanout, PostgresFanout, new_process_id
from .keys import ServerKey
from .limits import HitCounter, MemoryHitCounter, hit_counter
from .mailbox import Mailbox
from .metrics import Metrics
from .names import NameResolver
from .push import Hub, push_delivery
from .reputation import Reputation
from .routes import (
    AccountRoutes,
    AuthRoutes,
    FederationRoutes,
    IntegrityRoutes,
    MailRoutes,
    OpsRoutes,
)
from .routes.web import WebRoutes
from .submission import Submitter
from .ws import WebSocketEndpoint

log = logging.getLogger("flux.server")
Clock = Callable[[], int]

#: The parts of a running app, for tests and tools (`app[PARTS]`); handlers never use it.
PARTS = web.AppKey("flux_parts", dict)


def create_app(
    config: ServerConfig,
    store: Store,
    signer: ServerSigner | ServerKey,
    clock: Clock,
    *,
    accounts_store: AccountStore | None = None,
) -> web.Application:
    """Build the application. The store must be open; the caller closes it after the app.
    So must `accounts_store` (runner.py opens the configured one); without it, accounts
    live in memory for the app's lifetime.

    `signer` is the server's persistent key (keys.load_or_create), or a bare ServerSigner
    (published as valid from 0). `clock` returns unix ms.
    """
    key = signer if isinstance(signer, ServerKey) else ServerKey(signer, 0)
    if key.signer.name != config.domain:
        raise ValueError(f"signer is for {key.signer.name}, the config for {config.domain}")
    metrics = Metrics()
    hub = Hub(metrics, config.ws_queue_frames)
    reputation = Reputation(store, config.quarantine_threshold)
    auth = Authenticator(
        store=store,
        domain=config.domain,
        clock=clock,
        mac_key=mac_key_for(key.signer.identity.seed),
        session_ttl_ms=config.session_ttl_ms,
        challenge_ttl_ms=config.challenge_ttl_ms,
        legacy_secret=config.secret if config.legacy_tokens else None,
    )
    # Processes sharing a PostgreSQL database share their limits and their pushes.
    cluster = config.backend is Backend.POSTGRES
    #: messages per sender per minute (the spam rate limit), counted in the store when
    #: processes share one (limits.py)
    rate = hit_counter(limit=config.spam_rate_per_minute, window_ms=60_000,
                       shared=store if cluster else None)  # fmt: skip
    fanout = make_fanout(config, Dispatcher(store, hub, new_process_id()))
    accounts = build_accounts(config, store, key, clock, accounts_store or MemoryAccountStore())
    # the server's own keys sign its bounces, shown as from mailer-daemon@domain
    own = [address_from_pub(k.pub) for k in key.all_published()]
    mailbox = Mailbox(store, fanout, names=NameResolver(accounts, clock, server_addresses=own))
    meshes = load_meshes(config.mesh_path)
    limits = client_limits(config, store, clock)
    submitter = Submitter(
        store=store, signer=key.signer, clock=clock, rate=rate, fanout=fanout, metrics=metrics,
        reputation=reputation, open_mode=config.open_mode, pending_quota=config.pending_quota,
        enforce_quarantine=config.enforce_quarantine, meshes=meshes,
        refused_domain=config.peer_policy.literal_refused,
        stranger_share=StrangerShare(config.stranger_pending_total, config.stranger_pending_per_sender),
        limits=limits,
    )  # fmt: skip

    peers = PeerClient(
        clock=clock, insecure_peers=config.insecure_peers, ca_file=config.peer_ca_file,
        meshes=meshes, policy=config.peer_policy,
    )  # fmt: skip

    reports = ReportSender(peers, key.signer.name)
    delivery = DeliveryWorker(
        store=store, signer=key.signer, peers=peers, clock=clock, bounces=submitter,
        policy=config.queue_policy,
    )  # fmt: skip
    submitter.on_queued = delivery.kick
    delivery.on_settled = metrics.count_settled
    delivery.on_delivery = lambda changes: push_delivery(hub, changes)  # senders' sockets

    def on_error(exc: FluxError) -> None:
        metrics.refused(exc.code)

    app = web.Application(
        client_max_size=config.max_body_bytes,
        # refusals as errors; the prototype's dialect translated inside that (compat/http.py)
        middlewares=[error_middleware(on_error), limits.middleware(),
                     compat_http.middleware(legacy_tokens=config.legacy_tokens)],
    )  # fmt: skip
    parts = [
        MailRoutes(auth=auth, mailbox=mailbox, submitter=submitter, page_limit=config.page_limit,
                   online=hub.listening, public_presence=config.legacy_tokens),
        AuthRoutes(auth=auth, store=store, clock=clock, registration=config.registration,
                   invites=config.invites),
        IntegrityRoutes(key=key, reputation=reputation),
        OpsRoutes(store=store, key=key, metrics=metrics, hub=hub, clock=clock,
                  started_at=clock(), open_mode=config.open_mode,
                  registration=str(config.registration), accounts=accounts,
                  operator=OperatorAuth(config.operator_token, config.trusted_proxies)),
        AccountRoutes(accounts=accounts, mailbox=mailbox, submitter=submitter, hosts=store,
                      page_limit=config.page_limit, trusted_proxies=config.trusted_proxies),
        FederationRoutes(key=key, submitter=submitter, fetcher=peers.fetcher, store=store,
                         clock=clock, reports=reports, peer_heard=delivery.peer_heard,
                         meshes=meshes),
        WebSocketEndpoint(config=config, auth=auth, store=store, hub=hub, mailbox=mailbox,
                          submitter=submitter, metrics=metrics, accounts=accounts),
        # the web client at / and /web/... (its lookups use the federation's key cache)
        WebRoutes(key=key, auth=auth, accounts=accounts, fetcher=peers.fetcher),
    ]  # fmt: skip
    for part in parts:
        app.add_routes(part.routes())
    app.add_routes(compat_http.routes())
    app[PARTS] = {"config": config, "store": store, "key": key, "hub": hub, "metrics": metrics,
                  "limiter": rate, "submitter": submitter, "auth": auth,
                  "reports": reports, "delivery": delivery,
                  "accounts": accounts, "fanout": fanout}  # fmt: skip
    app.cleanup_ctx.append(fanout.lifespan)
    app.cleanup_ctx.append(peers.lifespan)
    app.cleanup_ctx.append(delivery.lifespan)  # after the peers: it posts through them
    app.cleanup_ctx.append(_sweeper(store, rate, metrics, clock, config.expire_interval_s,
                                    keep_ms=int(config.expired_keep_s * 1000)))  # fmt: skip

    async def close_sockets(_: web.Application) -> None:
        await hub.close_all()

    async def drop_reports(_: web.Application) -> None:
        await reports.close()

    app.on_shutdown.append(close_sockets)
    app.on_shutdown.append(drop_reports)
    return app


def make_fanout(config: ServerConfig, dispatcher: Dispatcher) -> LocalFanout:
    """Events to sockets: in this process only, or across every process of the domain
    when they share a PostgreSQL database (fanout.py)."""
    if config.backend is Backend.POSTGRES and config.db_url:
        return PostgresFanout(dispatcher, config.db_url, config.domain)
    return LocalFanout(dispatcher)


def client_limits(config: ServerConfig, store: Store, clock: Clock) -> ClientLimits:
    """The per-address and per-peer budgets (fair.py). Per address they count in the store
    when processes share one (limits.py); per peer in each process, since a batch counts
    each of its up to 100 messages and a database write per message would cost more than
    the limit saves (so a cluster of n processes lets a peer hand on n times the limit)."""
    shared = store if config.backend is Backend.POSTGRES else None
    return ClientLimits(
        submissions=hit_counter(limit=config.submit_per_ip_per_minute, window_ms=60_000, shared=shared),
        registrations=hit_counter(limit=config.register_per_ip_per_hour, window_ms=3_600_000,
                                  shared=shared),
        peers=MemoryHitCounter(limit=config.peer_messages_per_minute, window_ms=60_000),
        clock=clock, trusted_proxies=config.trusted_proxies,
    )  # fmt: skip


def build_accounts(
    config: ServerConfig, store: Store, key: ServerKey, clock: Clock, accounts_store: AccountStore
) -> Accounts:
    """The account service (flux.accounts): its own store, the main store (to host account
    addresses and spend invites), a login limiter of its own, and the custody key derived
    from the server's signing key, which never enters the accounts database. The limiter
    counts in the main store when processes share a PostgreSQL database (limits.py)."""
    shared = store if config.backend is Backend.POSTGRES else None
    limiter = LoginLimiter(
        hit_counter(limit=MAX_FAILURES, window_ms=WINDOW_MS, shared=shared),
        per_client=hit_counter(limit=config.login_failures_per_ip, window_ms=WINDOW_MS, shared=shared),
        per_account=hit_counter(limit=config.login_failures_per_account, window_ms=WINDOW_MS,
                                shared=shared),
    )  # fmt: skip
    kdf = KdfQueue(slots=config.kdf_slots, max_waiting=config.kdf_queue,
                   per_client=config.kdf_per_client, max_wait_s=config.kdf_wait_s)  # fmt: skip
    return Accounts(
        store=accounts_store, hosts=store, clock=clock, domain=config.domain,
        limiter=limiter, admission=Admission(config.registration, config.invites, store),
        custody_key=custody_key_for(key.custody),
        session_ttl_ms=config.account_session_ttl_ms, kdf=kdf,
    )  # fmt: skip


def _sweeper(
    store: Store, rate: HitCounter, metrics: Metrics, clock: Clock, interval_s: float,
    *, keep_ms: int,
) -> Callable[[web.Application], contextlib.AbstractAsyncContextManager[None]]:
    """A background task (for the app's lifetime) that expires mail, removes for good the
    mail expired more than `keep_ms` ago (nobody can read it: kept, it would be disk no
    quota counts) and prunes the rate counter."""

    async def sweep_forever() -> None:
        while True:
            await asyncio.sleep(interval_s)  # a timer, not synchronisation
            try:
                now = clock()
                swept = await store.expire(now)
                purged = await store.purge_expired(now - keep_ms)
                if purged:
                    log.info("event=purged_expired count=%d", purged)
                await rate.prune(now)
                if swept:
                    metrics.expired.inc(swept)
                    log.info("event=expired count=%d", swept)
            except StoreUnavailable as exc:  # an outage, not a bug: one line, next round
                log.warning("event=sweep_skipped reason=%s", exc)
            except Exception:
                log.exception("event=sweep_failed")

    @contextlib.asynccontextmanager
    async def ctx(_: web.Application) -> AsyncIterator[None]:
        async with running(sweep_forever(), "flux-sweeper"):
            yield

    return ctx
