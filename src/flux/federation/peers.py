"""The HTTP client a server uses to reach its peers, open for the application's lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from ..protocol.envelope import SERVER_RE
from ..protocol.errors import FluxError
from .keys import KeyCache, KeyFetcher
from .mesh import Mesh, mesh_header

log = logging.getLogger("flux.federation")


class PeerClient:
    def __init__(
        self,
        *,
        clock: Callable[[], int],
        insecure_peers: Iterable[str],
        ca_file: Path | None,
        meshes: Mapping[str, Mesh] | None = None,
    ) -> None:
        self.clock = clock
        self.meshes = dict(meshes or {})
        self.insecure_peers = frozenset(insecure_peers)
        self.ca_file = ca_file
        self.cache = KeyCache()  # outlives sessions: keys stay cached across restarts of it
        self._fetcher: KeyFetcher | None = None

    def fetcher(self) -> KeyFetcher:
        if self._fetcher is None:
            raise RuntimeError("the peer client is not running (the app has not started)")
        return self._fetcher

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Any) -> AsyncIterator[None]:
        """For `app.cleanup_ctx`: one connection pool while the server runs."""
        context = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None
        async with aiohttp.ClientSession() as session:
            self._fetcher = KeyFetcher(
                session, self.cache, self.clock, insecure_peers=self.insecure_peers,
                ssl_context=context,
            )  # fmt: skip
            try:
                yield
            finally:
                self._fetcher = None

    def mesh_headers(self, via: str, signed: Mapping[str, str]) -> dict[str, str]:
        """The Flux-Mesh header for a request relayed through mesh `via` (none if "")."""
        return mesh_header(self.meshes[via], signed["Signature"]) if via else {}

    def base_url(self, server: str) -> str:
        """`https://{server}` (plain HTTP for peers listed insecure); raises InvalidValue
        for anything that is not a `host[:port]` server name."""
        return self.fetcher().info_url(server).removesuffix("/federation/info")

    def _ssl(self, url: str) -> ssl.SSLContext | bool:
        return False if url.startswith("http:") else (self.fetcher().ssl_context or True)

    async def post(
        self, server: str, path: str, body: bytes, headers: dict[str, str], *, timeout_s: float
    ) -> tuple[int, Any]:
        """POST a JSON body; (status, parsed answer or None). Raises aiohttp.ClientError,
        TimeoutError or InvalidValue (not a server name)."""
        url = self.base_url(server) + path
        async with self.fetcher().session.post(
            url, data=body, headers={**headers, "Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=timeout_s), ssl=self._ssl(url),
        ) as response:  # fmt: skip
            try:
                answer = await response.json(content_type=None)
            except ValueError:
                answer = None
            return response.status, answer

    async def delegated_server(self, domain: str) -> str:
        """The server `domain` names in `/.well-known/flux`, else the domain itself.

        Mail keeps flowing if the well-known answer is missing (most domains serve FLUX
        themselves); an answer that is not a server name is ignored, so a domain can point
        delivery at a host but never at another scheme or path.
        """
        try:
            url = self.base_url(domain) + "/.well-known/flux"
            async with self.fetcher().session.get(
                url, timeout=self.fetcher().timeout, ssl=self._ssl(url)
            ) as response:
                body = await response.json(content_type=None) if response.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError, FluxError):
            return domain
        server = body.get("server") if isinstance(body, dict) else None
        if isinstance(server, str) and SERVER_RE.match(server.lower()):
            return server.lower()
        return domain


class ReportSender:
    """Sends signed tamper reports to the servers that sealed the message, in the background.

    The receivers come only from the *sealed* records of the chain (each named by a record
    its server signed), never from `route` or any other unsigned field, so a forged message
    cannot aim this server's requests at an address of the forger's choosing; the offender
    and this server are left out. Sending never delays the delivery that found the offense.
    """

    def __init__(self, peers: PeerClient, own_name: str) -> None:
        self.peers = peers
        self.own_name = own_name
        self.pending: set[asyncio.Task[None]] = set()

    def send(self, report: dict[str, Any], targets: Iterable[str]) -> None:
        for server in dict.fromkeys(targets):
            if server in (self.own_name, report.get("offender")):
                continue
            task = asyncio.create_task(self._post(server, report))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)

    async def _post(self, server: str, report: dict[str, Any]) -> None:
        body = json.dumps(report, ensure_ascii=False).encode()
        try:
            status, _ = await self.peers.post(
                server, "/integrity/tamper_report", body, {}, timeout_s=10.0
            )
            log.info("event=report_sent server=%s status=%d", server, status)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("event=report_failed server=%s reason=%s", server, exc)
