"""Server keys: what each server publishes at its own domain, fetched and cached.

A hop seal, a tamper report or a signed request counts only under a key its server
publishes (PROTOCOL.md §10.1), so verifying needs those keys at hand. `parse_info` (pure)
reads a `/federation/info` answer; `KeyCache` (pure, clock passed in) decides when to ask
again; `KeyFetcher` does the asking over HTTPS.

Refreshing. A cached answer is used for `max_age_ms` (1 h). A server can rotate keys
within that hour, so a signature that fails under the cached keys may ask for a refresh,
but at most once per `miss_interval_ms` (1 min) per server: otherwise anyone could make
this server fetch from a peer at will by sending bad signatures. A failed fetch is cached
the same way (for the miss interval), so an unreachable server is not hammered either.

Where to ask. Server names are `host` or `host:port` (§2.4): never a URL, so a name taken
from a message cannot point the fetch at another path or scheme. HTTPS with certificate
verification is the rule; plain HTTP only for servers the operator lists as insecure.
The address a name resolves to must pass the outbound policy (netguard.py).

Bounds (issue 9): one fetch in flight per server, 5 s for the whole exchange, 64 KiB of
answer at most, no redirects, and a cache of at most 10,000 servers that forgets the least
recently used, so a flood of made-up names costs neither memory nor connections.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp

from ..protocol.chain import PublishedKey, is_server_name
from ..protocol.encoding import b64d
from ..protocol.errors import FluxError, InvalidValue
from .netguard import INFO_MAX_BYTES, PeerPolicy, read_capped

log = logging.getLogger("flux.federation")
Clock = Callable[[], int]
MAX_KEYS = 16
MAX_CACHED_SERVERS = 10_000  #: servers whose keys are kept (least recently used go)


def parse_info(body: Any) -> tuple[PublishedKey, ...]:
    """The keys (current and retired) of a `/federation/info` answer; raises InvalidValue."""
    if not isinstance(body, dict):
        raise InvalidValue("federation info is not an object", field="info")
    for field in ("keys", "retired_keys"):
        # absent or null is no list; any other value that is not a list (`{}`, `false`,
        # `0`, `""` too) refuses the whole answer (PROTOCOL.md §10.1)
        if body.get(field) is not None and not isinstance(body[field], list):
            raise InvalidValue(f"{field} is not a list", field=field)
    entries = [*(body.get("keys") or []), *(body.get("retired_keys") or [])]
    if not entries or len(entries) > MAX_KEYS:
        raise InvalidValue(f"federation info must list 1-{MAX_KEYS} keys", field="keys")
    return tuple(_parse_key(entry) for entry in entries)


def _parse_key(entry: Any) -> PublishedKey:
    if not isinstance(entry, dict):
        raise InvalidValue("a key entry is not an object", field="keys")
    valid_from, valid_until = entry.get("valid_from", 0), entry.get("valid_until")
    if not _is_int(valid_from) or not (valid_until is None or _is_int(valid_until)):
        raise InvalidValue("valid_from / valid_until must be integers (ms)", field="keys")
    return PublishedKey(
        b64d(entry.get("pub"), field="keys.pub", length=32), valid_from, valid_until
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class _Entry:
    keys: tuple[PublishedKey, ...]
    fetched_at: int
    failed: bool = False  #: the last fetch failed: asked again after the miss interval


class KeyCache:
    """Keys per server, with the refresh rules of the module doc, holding at most
    `max_servers` entries: past that the least recently used is forgotten (a flood of
    made-up names cannot grow memory; a forgotten server is fetched again when it next
    matters). Not thread-safe (one loop)."""

    def __init__(
        self,
        *,
        max_age_ms: int = 3_600_000,
        miss_interval_ms: int = 60_000,
        max_servers: int = MAX_CACHED_SERVERS,
    ) -> None:
        self.max_age_ms = max_age_ms
        self.miss_interval_ms = miss_interval_ms
        self.max_servers = max_servers
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, server: str) -> tuple[PublishedKey, ...]:
        """What is cached for `server` (a `KeyLookup` for the pure checks)."""
        entry = self._entries.get(server)
        if entry is None:
            return ()
        self._entries.move_to_end(server)
        return entry.keys

    def wants_fetch(self, server: str, now_ms: int, *, after_miss: bool = False) -> bool:
        """Fetch when nothing is cached, when it is stale, or after a signature missed the
        cached keys if the last fetch is at least the miss interval old."""
        entry = self._entries.get(server)
        if entry is None:
            return True
        age = now_ms - entry.fetched_at
        if entry.failed:  # whatever the caller: a failed fetch is not repeated sooner
            return age >= self.miss_interval_ms
        return age >= self.max_age_ms or (after_miss and age >= self.miss_interval_ms)

    def put(
        self, server: str, keys: tuple[PublishedKey, ...], now_ms: int, *, failed: bool = False
    ) -> None:
        self._entries[server] = _Entry(keys, now_ms, failed)
        self._entries.move_to_end(server)
        while len(self._entries) > self.max_servers:
            self._entries.popitem(last=False)

    def fetch_failed(self, server: str, now_ms: int) -> None:
        """Remember a failed fetch for the miss interval (keeps what was known before).
        A signature miss does not shorten it: otherwise every request naming an
        unreachable server would make this server try it again."""
        old = self._entries.get(server)
        self.put(server, old.keys if old else (), now_ms, failed=True)


class KeyFetcher:
    """Fetches `https://{server}/federation/info` into a `KeyCache`.

    Bounded on every side, because the names it is asked for come from strangers: one
    fetch per server at a time (concurrent askers await the same fetch), an answer of at
    most `max_bytes` read in chunks and dropped past it, `timeout_s` for the whole exchange
    (connect, headers and body), no redirect followed, and the connection made through
    `policy` (netguard.py). The session should be the fetcher's own, with its own small
    connection limits (PeerClient makes it), so key fetches never take connections that
    deliveries need.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        cache: KeyCache,
        clock: Clock,
        *,
        insecure_peers: Iterable[str] = (),
        ssl_context: ssl.SSLContext | None = None,
        timeout_s: float = 5.0,
        max_bytes: int = INFO_MAX_BYTES,
        policy: PeerPolicy | None = None,
    ) -> None:
        self.session = session
        self.cache = cache
        self.clock = clock
        self.insecure_peers = frozenset(insecure_peers)
        self.ssl_context = ssl_context
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.max_bytes = max_bytes
        self.policy = policy or PeerPolicy.from_settings((), self.insecure_peers)
        self._in_flight: dict[str, asyncio.Future[None]] = {}
        self.fetches = 0  #: fetches started (not joined), for metrics and tests

    def info_url(self, server: str) -> str:
        if not is_server_name(server):
            raise InvalidValue(f"{server[:60]!r} is not a server name", field="server")
        scheme = "http" if server in self.insecure_peers else "https"
        return f"{scheme}://{server}/federation/info"

    async def keys(self, server: str, *, after_miss: bool = False) -> tuple[PublishedKey, ...]:
        """The keys `server` publishes, fetched when the cache rules say so."""
        now = self.clock()
        if self.cache.wants_fetch(server, now, after_miss=after_miss):
            await self._fetch_once(server, now)
        return self.cache.lookup(server)

    async def prefetch(self, servers: Iterable[str], *, limit: int = 8) -> None:
        """Fetch what these servers publish, at most `limit` at a time (deduplicated)."""
        gate = asyncio.Semaphore(limit)

        async def one(server: str) -> None:
            async with gate:
                await self.keys(server)

        await asyncio.gather(*(one(s) for s in dict.fromkeys(servers)))

    async def _fetch_once(self, server: str, now: int) -> None:
        """One fetch per server in flight; later askers wait for it (and never fail:
        `_fetch` records failures in the cache)."""
        running = self._in_flight.get(server)
        if running is not None:
            await asyncio.shield(running)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._in_flight[server] = future
        try:
            await self._fetch(server, now)
        finally:
            del self._in_flight[server]
            future.set_result(None)

    async def _fetch(self, server: str, now: int) -> None:
        self.fetches += 1
        try:
            url = self.policy.guard_url(self.info_url(server))
            ssl_arg: ssl.SSLContext | bool = self.ssl_context or True
            async with asyncio.timeout(self.timeout.total), self.session.get(
                url, timeout=self.timeout, allow_redirects=False,
                ssl=False if url.startswith("http:") else ssl_arg,
            ) as response:  # fmt: skip
                data = await read_capped(response, self.max_bytes)
                if response.status != 200:
                    raise InvalidValue(f"HTTP {response.status}", field="info")
            self.cache.put(server, parse_info(json.loads(data)), now)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, FluxError) as exc:
            log.warning("event=key_fetch_failed server=%s reason=%s", server, exc)
            self.cache.fetch_failed(server, now)
