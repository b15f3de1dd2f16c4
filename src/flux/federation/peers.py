"""The HTTP client a server uses to reach its peers, open for the application's lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp

from .keys import KeyCache, KeyFetcher

log = logging.getLogger("flux.federation")


class PeerClient:
    def __init__(
        self, *, clock: Callable[[], int], insecure_peers: Iterable[str], ca_file: Path | None
    ) -> None:
        self.clock = clock
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
        fetcher = self.peers.fetcher()
        try:
            url = fetcher.info_url(server).removesuffix("/federation/info")
            plain = url.startswith("http:")
            async with fetcher.session.post(
                f"{url}/integrity/tamper_report", json=report, timeout=fetcher.timeout,
                ssl=False if plain else (fetcher.ssl_context or True),
            ) as response:  # fmt: skip
                log.info("event=report_sent server=%s status=%d", server, response.status)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("event=report_failed server=%s reason=%s", server, exc)
