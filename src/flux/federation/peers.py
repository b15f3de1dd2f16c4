"""The HTTP client a server uses to reach its peers, open for the application's lifetime.

Every request this server makes to another one goes through here (key fetches through the
`KeyFetcher` it owns), so the rules of issue 9 §2 live in one place:

* Three connection pools, each with a total and a per-peer limit: key fetches, deliveries
  and mesh relays, tamper reports. Junk that makes the server fetch keys or send reports
  can exhaust only its own pool, never the one real mail goes through.
* Every connection goes through the outbound address policy (netguard.py): names are
  resolved and pinned to checked addresses, IP literals checked before the request.
* No redirect is ever followed: a 3xx is a failure with its reason. A signed request is
  signed for one `@authority`, and following a redirect would hand it (its Signature
  header included) to another host; a delegation read from a redirect would let any host
  that can redirect choose where mail goes.
* Every answer is read with a size cap and the request has a total deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from ..compat.federation import ProtoPeers, ProtoRoute
from ..protocol.chain import is_server_name
from ..protocol.errors import FluxError
from .keys import KeyCache, KeyFetcher
from .mesh import Mesh, mesh_header
from .netguard import ANSWER_MAX_BYTES, PeerPolicy, guarded_session, json_or_none, read_capped

log = logging.getLogger("flux.federation")

#: `/.well-known/flux` is one small JSON object
WELL_KNOWN_MAX_BYTES = 8 * 1024


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """Connections per pool (total, per peer). Deliveries go in up to two lanes per
    destination (delivery.py, "Lanes"), so 3 per peer leaves room for a mesh relay beside
    them."""

    keys: tuple[int, int] = (32, 2)
    deliveries: tuple[int, int] = (64, 3)
    reports: tuple[int, int] = (8, 1)
    key_timeout_s: float = 5.0
    well_known_timeout_s: float = 5.0


class PeerClient:
    def __init__(
        self,
        *,
        clock: Callable[[], int],
        insecure_peers: Iterable[str],
        ca_file: Path | None,
        meshes: Mapping[str, Mesh] | None = None,
        policy: PeerPolicy | None = None,
        limits: PoolLimits = PoolLimits(),
    ) -> None:
        self.clock = clock
        self.meshes = dict(meshes or {})
        self.insecure_peers = frozenset(insecure_peers)
        self.ca_file = ca_file
        self.policy = policy or PeerPolicy.from_settings((), self.insecure_peers)
        self.limits = limits
        self.cache = KeyCache()  # outlives sessions: keys stay cached across restarts of it
        self._fetcher: KeyFetcher | None = None
        self._deliveries: aiohttp.ClientSession | None = None
        self._reports: aiohttp.ClientSession | None = None
        #: which peers speak the prototype's dialect (compat/federation.py)
        self.prototypes = ProtoPeers(self.meshes, clock)

    def fetcher(self) -> KeyFetcher:
        if self._fetcher is None:
            raise RuntimeError("the peer client is not running (the app has not started)")
        return self._fetcher

    def _session(self, which: aiohttp.ClientSession | None) -> aiohttp.ClientSession:
        if which is None:
            raise RuntimeError("the peer client is not running (the app has not started)")
        return which

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Any) -> AsyncIterator[None]:
        """For `app.cleanup_ctx`: the three connection pools while the server runs."""
        context = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None

        def pool(limits: tuple[int, int]) -> aiohttp.ClientSession:
            return guarded_session(
                self.policy, limit=limits[0], limit_per_host=limits[1], ssl_context=context
            )

        async with (
            pool(self.limits.keys) as keys,
            pool(self.limits.deliveries) as deliveries,
            pool(self.limits.reports) as reports,
        ):
            self._fetcher = KeyFetcher(
                keys, self.cache, self.clock, insecure_peers=self.insecure_peers,
                ssl_context=context, policy=self.policy, timeout_s=self.limits.key_timeout_s,
            )  # fmt: skip
            self._deliveries, self._reports = deliveries, reports
            try:
                yield
            finally:
                self._fetcher = self._deliveries = self._reports = None

    def mesh_headers(self, via: str, signed: Mapping[str, str]) -> dict[str, str]:
        """The Flux-Mesh header for a request relayed through mesh `via` (none if "")."""
        return mesh_header(self.meshes[via], signed["Signature"]) if via else {}

    async def dialect(self, server: str, via: str) -> ProtoRoute | None:
        """The one seam to the prototype's dialect: a ProtoRoute when `server` (reached
        through mesh `via`, "" for a delivery) is a prototype peer, None when it speaks
        FLUX's signed transactions (compat/federation.py)."""
        return await self.prototypes.route(self, server, via)

    def base_url(self, server: str) -> str:
        """`https://{server}` (plain HTTP for peers listed insecure); raises InvalidValue
        for anything that is not a `host[:port]` server name, RefusedAddress (an OSError)
        for an IP literal the address policy refuses."""
        url = self.fetcher().info_url(server).removesuffix("/federation/info")
        return self.policy.guard_url(url)

    def _ssl(self, url: str) -> ssl.SSLContext | bool:
        return False if url.startswith("http:") else (self.fetcher().ssl_context or True)

    async def post(
        self,
        server: str,
        path: str,
        body: bytes,
        headers: dict[str, str],
        *,
        timeout_s: float,
        reports: bool = False,
        base: str | None = None,
    ) -> tuple[int, Any]:
        """POST a JSON body; (status, parsed answer or None). Through the delivery pool, or
        the report pool with `reports`. Never follows a redirect; reads at most
        ANSWER_MAX_BYTES within `timeout_s` in all. `base`: the base URL a mesh config
        gave for `server` (a prototype peer's `http://host:port`), checked by the address
        policy as any. Raises aiohttp.ClientError, TimeoutError, OSError (RefusedAddress)
        or ValueError (InvalidValue: not a server name; RedirectRefused, AnswerTooLarge)."""
        url = (self.policy.guard_url(base) if base else self.base_url(server)) + path
        session = self._session(self._reports if reports else self._deliveries)
        async with asyncio.timeout(timeout_s), session.post(
            url, data=body, headers={**headers, "Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=timeout_s), ssl=self._ssl(url),
            allow_redirects=False,
        ) as response:  # fmt: skip
            data = await read_capped(response, ANSWER_MAX_BYTES)
            return response.status, json_or_none(data)

    async def get_json(
        self, server: str, path: str, *, timeout_s: float, max_bytes: int
    ) -> tuple[int, Any]:
        """GET through the delivery pool under the same rules as `post` (no redirect, at
        most `max_bytes`, `timeout_s` in all); (status, parsed answer or None)."""
        url = self.base_url(server) + path
        async with asyncio.timeout(timeout_s), self._session(self._deliveries).get(
            url, timeout=aiohttp.ClientTimeout(total=timeout_s), ssl=self._ssl(url),
            allow_redirects=False,
        ) as response:  # fmt: skip
            return response.status, json_or_none(await read_capped(response, max_bytes))

    async def delegated_server(self, domain: str) -> str:
        """The server `domain` names in `/.well-known/flux`, else the domain itself.

        Mail keeps flowing if the well-known answer is missing (most domains serve FLUX
        themselves); an answer that is not a server name is ignored, so a domain can point
        delivery at a host but never at another scheme or path. A redirect is not followed
        (it counts as no answer), and a delegation to an address the policy refuses is
        ignored: the post to the domain itself is then judged on its own.
        """
        try:
            url = self.base_url(domain) + "/.well-known/flux"
            async with asyncio.timeout(self.limits.well_known_timeout_s), self._session(
                self._deliveries
            ).get(
                url, timeout=self.fetcher().timeout, ssl=self._ssl(url), allow_redirects=False
            ) as response:  # fmt: skip
                data = await read_capped(response, WELL_KNOWN_MAX_BYTES)
                body = json_or_none(data) if response.status == 200 else None
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, FluxError) as exc:
            log.info("event=well_known_ignored domain=%s reason=%s", domain, exc)
            return domain
        server = body.get("server") if isinstance(body, dict) else None
        if not isinstance(server, str) or not is_server_name(server.lower()):
            return domain
        if self.policy.literal_refused(server.lower()):
            log.warning("event=delegation_refused domain=%s server=%s", domain, server[:100])
            return domain
        return server.lower()


class ReportSender:
    """Sends signed tamper reports to the servers that sealed the message, in the background.

    The receivers come only from the *sealed* records of the chain (each named by a record
    its server signed), never from `route` or any other unsigned field, so a forged message
    cannot aim this server's requests at an address of the forger's choosing; the offender
    and this server are left out. Sending never delays the delivery that found the offense.

    Bounded: at most `max_targets` receivers per report, `parallel` reports in flight (and
    the report pool's own connection limits), `max_backlog` waiting; past that a report is
    dropped and logged. Reports are advisory (each receiver re-proves them), so losing some
    under a flood costs little, and a flood can never grow memory or starve deliveries.
    """

    def __init__(
        self,
        peers: PeerClient,
        own_name: str,
        *,
        parallel: int = 4,
        max_backlog: int = 256,
        max_targets: int = 32,
        timeout_s: float = 10.0,
    ) -> None:
        self.peers = peers
        self.own_name = own_name
        self.max_backlog = max_backlog
        self.max_targets = max_targets
        self.timeout_s = timeout_s
        self.pending: set[asyncio.Task[None]] = set()
        self.dropped = 0
        self._gate = asyncio.Semaphore(parallel)

    def send(self, report: dict[str, Any], targets: Iterable[str]) -> None:
        receivers = [
            s for s in dict.fromkeys(targets) if s not in (self.own_name, report.get("offender"))
        ]
        for server in receivers[: self.max_targets]:
            if len(self.pending) >= self.max_backlog:
                self.dropped += 1
                log.warning("event=report_dropped server=%s reason=backlog_full", server)
                continue
            task = asyncio.create_task(self._post(server, report))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)

    async def close(self) -> None:
        """Cancel what is still waiting (for app shutdown)."""
        for task in list(self.pending):
            task.cancel()
        await asyncio.gather(*self.pending, return_exceptions=True)

    async def _post(self, server: str, report: dict[str, Any]) -> None:
        body = json.dumps(report, ensure_ascii=False).encode()
        try:
            async with self._gate:
                status, _ = await self.peers.post(
                    server, "/integrity/tamper_report", body, {}, timeout_s=self.timeout_s,
                    reports=True,
                )  # fmt: skip
            log.info("event=report_sent server=%s status=%d", server, status)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, RuntimeError) as exc:
            log.warning("event=report_failed server=%s reason=%s", server, exc)
