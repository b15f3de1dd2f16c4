"""Operator and discovery routes: health, stats, metrics, the API description, federation info.

Public answers reveal nothing about users: `/stats` tells anyone only aggregates (version,
uptime, counts, the queue's total). Which domains this server's users write to, and each
destination's last connection error, are operator detail (`/stats` with operator auth,
`/metrics`), see `OperatorAuth` in auth.py: an error text like "connection refused to
10.0.0.5:5432" answered to anyone would make the server a free internal port scanner.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ... import __version__
from ...accounts import Accounts
from ...compat.federation import prototype_binding
from ...protocol.chain import PublishedKey
from ...protocol.encoding import b64e
from ...protocol.identity import is_address
from ...store.base import Store, StoreUnavailable
from .. import openapi, wire
from ..auth import OperatorAuth
from ..errors import NotFound
from ..keys import ServerKey
from ..metrics import CONTENT_TYPE, Metrics
from ..push import Hub
from ..static.docs import CSP, DocsFiles, StaticFile


class OpsRoutes:
    def __init__(
        self,
        *,
        store: Store,
        key: ServerKey,
        metrics: Metrics,
        hub: Hub,
        clock: Callable[[], int],
        started_at: int,
        open_mode: bool,
        registration: str,
        accounts: Accounts | None = None,
        operator: OperatorAuth | None = None,
    ) -> None:
        self.store = store
        self.key = key
        self.metrics = metrics
        self.hub = hub
        self.clock = clock
        self.started_at = started_at
        self.open_mode = open_mode
        self.registration = registration
        self.accounts = accounts
        self.operator = operator or OperatorAuth(None)
        self._spec = openapi.document(key.signer.name, __version__)
        self._docs = DocsFiles()

    @property
    def domain(self) -> str:
        return self.key.signer.name

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/health", self.health),
            web.get("/stats", self.stats),
            web.get("/metrics", self.prometheus),
            web.get("/openapi.json", self.openapi),
            web.get("/docs", self.docs),
            web.get("/docs/assets/{name}", self.docs_asset),
            web.get("/federation/info", self.info),
            web.get("/.well-known/flux", self.well_known),
            web.get("/federation/resolve/{name}", self.resolve),
        ]

    async def health(self, request: web.Request) -> web.Response:
        """Alive and able to reach its store. While the database is unreachable this
        answers 503 `unavailable` (the store's StoreUnavailable, mapped in errors.py), not
        200 with a "database down" flag: a load balancer's health check looks at the status
        code, and a process that cannot store or read mail should be drained until its
        database is back (it recovers by itself; the check then passes again)."""
        await self.store.ping()
        return wire.ok(version=__version__, domain=self.domain)

    async def stats(self, request: web.Request) -> web.Response:
        """What this server is, for anyone; its counters (sockets, sessions, messages, the
        queue with each destination's attempts and last error) only for the operator: on a
        small server even a count of sockets tells when a given user is online."""
        public: dict[str, Any] = {
            "domain": self.domain,
            "version": __version__,
            "uptime_ms": self.clock() - self.started_at,
            "mode": "open" if self.open_mode else "hosted",
            "registration": self.registration,
        }
        if not self.operator.allows(request):
            return wire.ok(**public)
        queue = await self.store.queue_state()
        return wire.ok(
            **public,
            websockets=self.hub.count(),
            store=dict(await self.store.stats()),
            queue={
                "queued": sum(d.queued for d in queue),
                "destinations": [dataclasses.asdict(d) for d in queue],
            },
        )

    async def prometheus(self, request: web.Request) -> web.Response:
        """The metrics, for the operator only (they name destinations), also while the
        database is away (the queue gauges then keep their last values): an outage is
        exactly when an operator needs them."""
        self.operator.require(request)
        try:
            queue = await self.store.queue_state()
            self.metrics.queue_sizes({d.destination: d.queued for d in queue})
        except StoreUnavailable:
            pass
        body = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(self._spec)

    async def docs(self, request: web.Request) -> web.Response:
        """The API docs page (static/docs.py): Swagger UI rendering /openapi.json, every file
        from this server. The page itself is revalidated on each visit (`no-cache`, answered
        304 while unchanged), so a new version's page is seen at once. A query parameter
        is refused by name (400), as on every route: the page takes none."""
        wire.only_query(request, frozenset())
        return _static(request, await self._docs.page(), "no-cache")

    async def docs_asset(self, request: web.Request) -> web.Response:
        """A file the docs page loads: 404 `not_found` (field `name`) for any other name.
        Kept an hour, then revalidated by ETag. Takes no query parameter (400 naming it)."""
        wire.only_query(request, frozenset())
        asset = await self._docs.asset(request.match_info["name"])
        if asset is None:
            raise NotFound("no such docs asset", field="name")
        return _static(request, asset, "public, max-age=3600")

    async def well_known(self, request: web.Request) -> web.Response:
        """Where this domain's FLUX server is. A domain whose web site is elsewhere serves
        the same JSON as a static file there, naming its FLUX server (docs/FEDERATION.md)."""
        return wire.ok(server=self.key.signer.name)

    async def info(self, request: web.Request) -> web.Response:
        retired = [_key_entry(k) for k in self.key.retired]
        return wire.ok(
            domain=self.domain, version=__version__, protocol="1.0",
            keys=[_key_entry(self.key.published())], retired_keys=retired,
        )  # fmt: skip

    async def resolve(self, request: web.Request) -> web.Response:
        """fx1 addresses hosted here -> their key; account names (any kind) -> their
        address and key: `{ok, address, pub, domain[, name]}`, plus the same binding under
        the prototype's names (`flux_address`, `flux_pub_b64`, `username`), which its
        servers and clients read (PROTOCOL.md §13). 404 `not_found` naming `name`."""
        wire.only_query(request, frozenset())
        name = wire.path_str(request, "name")
        if not is_address(name) and self.accounts is not None:
            account = await self.accounts.resolve(name)
            if account is not None:
                return wire.ok(
                    address=account.address, pub=account.pub, name=account.username,
                    domain=self.domain, **prototype_binding(account.address, account.pub),
                    username=account.username,
                )  # fmt: skip
        hosted = await self.store.hosted(name) if is_address(name) else None
        if hosted is None:
            raise NotFound(f"{name[:60]} is not hosted here", field="name")
        return wire.ok(
            address=hosted.address, pub=hosted.pub, domain=self.domain,
            **prototype_binding(hosted.address, hosted.pub),
        )  # fmt: skip


def _key_entry(key: PublishedKey) -> dict[str, Any]:
    return {"pub": b64e(key.pub), "valid_from": key.valid_from, "valid_until": key.valid_until}


def _static(request: web.Request, file: StaticFile, cache: str) -> web.Response:
    """`file` with its caching and safety headers: 304 when the client holds this ETag, gzip
    when the client accepts it, and the docs page's Content-Security-Policy on every answer."""
    headers = {
        "Cache-Control": cache,
        "ETag": file.etag,
        "Vary": "Accept-Encoding",
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    if file.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    response = web.Response(body=file.body, content_type=file.content_type, charset="utf-8",
                            headers=headers)  # fmt: skip
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        response.body = file.gzipped
        response.headers["Content-Encoding"] = "gzip"
    return response
