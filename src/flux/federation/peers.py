"""The HTTP client a server uses to reach its peers, open for the application's lifetime."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp

from .keys import KeyCache, KeyFetcher


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
