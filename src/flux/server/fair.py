"""Fair shares of one server among the clients and peers that use it (issue 10 §2).

A key costs nothing to make, so a limit per sender address stops nobody who means harm:
what a stranger cannot multiply for free is its network address and, for a server, its
name (authenticated by its signature). So besides the per-sender limits:

* submissions (`POST /send`, WebSocket `send`, `/mail/send`, each copy counted as one
  message) are limited per client address: `submit_per_ip_per_minute`;
* registrations (`/register`, `/account/register`, `/account/claim`) per client address:
  `register_per_ip_per_hour`;
* messages handed on by one peer server (`/federation/deliver`, `/mesh/relay`) per peer:
  `peer_messages_per_minute`, counted message by message, so a batch of 100 costs 100.

The client address is `wire.client_address` (the connection's, or behind
`FLUX_TRUSTED_PROXIES` the right-most address the proxies did not write). An IPv6 client
is counted by its /64: one host is routinely given a whole /64, and counting per address
would give it 2^64 budgets.

How the address reaches the submit pipeline: the middleware below works it out once per
request and keeps it on the request (`request_client`); the routes pass it to
`Submitter.submit(raw, client=...)`, and the WebSocket handler keeps its upgrade request's
on the connection for every frame it submits. A submission made outside any request (a
bounce, a test calling the submitter) has none and is not counted.

A refusal is 429 `rate_limited`, naming what was counted, with `Retry-After`.

Besides its budget of messages, a peer gets its turn (`PeerTurns`): at most
PEER_BATCHES_IN_WORK of its batches are checked at a time, and beside them one small batch
(at most SMALL_BATCH messages: another sender's few, which the peer's delivery queue sends
in a lane of their own while a flood's transaction is checked here, so they are not held
behind it); a few more wait, and past those it is told to come back (503 `unavailable`,
`Retry-After`). A batch is up to 100 messages of Ed25519 and canonical JSON in a worker
thread, and every such thread holds the GIL the loop needs between its syscalls: one peer
sending batches in parallel would take every worker and the loop's turns with them (issue
10 §1; benchmarks/federation_batch.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from . import wire
from .errors import ServerError, Unavailable
from .limits import HitCounter

__all__ = [
    "CLIENT_KEY",
    "REGISTRATION_PATHS",
    "ClientLimits",
    "PeerBusy",
    "PeerTurns",
    "RateLimited",
    "client_bucket",
    "request_client",
]  # fmt: skip

#: the client address of a request, kept on it by the middleware (module docstring)
CLIENT_KEY = web.RequestKey("flux_client_address", str)


def request_client(request: web.Request) -> str | None:
    """The client address the middleware found for `request` (None outside it)."""
    return request.get(CLIENT_KEY)


#: POST paths that create an address or account here
REGISTRATION_PATHS = frozenset({"/register", "/account/register", "/account/claim"})


class RateLimited(ServerError):
    """Too many requests from one client address or one peer server (429, `Retry-After`)."""

    code = "rate_limited"

    def __init__(self, message: str, *, field: str | None = None, retry_after_s: int) -> None:
        super().__init__(message, field=field)
        self.retry_after_s = retry_after_s


class PeerBusy(Unavailable):
    """The peer already has its batches in work and waiting (503, `Retry-After`)."""

    def __init__(self, message: str, *, field: str | None = None, retry_after_s: int) -> None:
        super().__init__(message, field=field)
        self.retry_after_s = retry_after_s


#: one peer's batches checked at a time (two cores: a second would only take the loop's share)
PEER_BATCHES_IN_WORK = 1
#: one peer's batches that may wait for their turn; more are refused at once (PeerBusy)
PEER_BATCHES_WAITING = 8
#: a batch of at most this many messages takes the peer's small turn, checked beside its
#: large one (module docstring): at most 8 % more work at once than a full batch of 100
SMALL_BATCH = 8


class PeerTurns:
    """Each peer's batches take turns (module docstring); one instance per server."""

    def __init__(
        self, *, in_work: int = PEER_BATCHES_IN_WORK, waiting: int = PEER_BATCHES_WAITING
    ) -> None:
        self.in_work = in_work
        self.waiting = waiting
        #: per peer: its turns, large batches' and small ones'
        self._turns: dict[str, tuple[asyncio.Semaphore, asyncio.Semaphore]] = {}
        self._holders: dict[str, int] = {}  #: per peer: batches in work or waiting

    @contextlib.asynccontextmanager
    async def turn(self, peer: str, size: int | None = None) -> AsyncIterator[None]:
        """Wait for `peer`'s turn for a batch of `size` messages (None: a large one) and hold
        it for the block: `in_work` large batches at a time, and one of at most SMALL_BATCH
        beside them. Raises PeerBusy when the peer already has `in_work + waiting` batches
        here, of either size."""
        holders = self._holders.get(peer, 0)
        if holders >= self.in_work + self.waiting:
            raise PeerBusy(
                f"{holders} batches from {peer} are already in work or waiting here; "
                "send one at a time",
                field="messages",
                retry_after_s=1,
            )
        self._holders[peer] = holders + 1
        large, small = self._turns.setdefault(
            peer, (asyncio.Semaphore(self.in_work), asyncio.Semaphore(1))
        )
        try:
            async with small if size is not None and size <= SMALL_BATCH else large:
                yield
        finally:
            self._holders[peer] -= 1
            if not self._holders[peer]:  # no entry outlives its peer's last batch
                del self._holders[peer], self._turns[peer]


@functools.lru_cache(maxsize=4096)  # parsed on every request; few clients are active at once
def client_bucket(address: str | None) -> str:
    """What one client is counted as: its IPv4 address, its IPv6 /64, or "" unknown."""
    if not address:
        return ""
    try:
        ip = ipaddress.ip_address(wire.without_port(address))
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d is the IPv4 client a.b.c.d
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _seconds(ms: int) -> int:
    return max(1, -(-ms // 1000))


class ClientLimits:
    """The per-address and per-peer counters (module docstring), each a HitCounter."""

    def __init__(
        self,
        *,
        submissions: HitCounter,
        registrations: HitCounter,
        peers: HitCounter,
        clock: Callable[[], int],
        trusted_proxies: frozenset[str] = frozenset(),
    ) -> None:
        self.submissions = submissions
        self.registrations = registrations
        self.peers = peers
        self.clock = clock
        self.trusted_proxies = wire.TrustedProxies(trusted_proxies)

    async def submission(self, address: str) -> None:
        """Count one message submitted by the client at `address`. Raises RateLimited."""
        if await self.submissions.hit("ip-send:" + client_bucket(address), self.clock()):
            raise RateLimited(
                f"more than {self.submissions.limit} messages from your network address in "
                f"{self.submissions.window_ms // 1000} s",
                field="from",
                retry_after_s=_seconds(self.submissions.window_ms),
            )

    async def registration(self, address: str | None) -> None:
        """Count one registration from `address`. Raises RateLimited."""
        if await self.registrations.hit("ip-register:" + client_bucket(address), self.clock()):
            raise RateLimited(
                f"more than {self.registrations.limit} registrations from your network "
                f"address in {self.registrations.window_ms // 1000} s",
                field="address",
                retry_after_s=_seconds(self.registrations.window_ms),
            )

    async def peer_messages(self, peer: str, count: int) -> None:
        """Count `count` messages handed on by the authenticated server `peer`; raises
        RateLimited (the peer's delivery queue retries later) once its budget is spent."""
        now = self.clock()
        for _ in range(count):
            if await self.peers.hit("peer:" + peer, now):
                raise RateLimited(
                    f"more than {self.peers.limit} messages from {peer} in "
                    f"{self.peers.window_ms // 1000} s",
                    field="messages",
                    retry_after_s=_seconds(self.peers.window_ms),
                )

    def middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        """Keeps each request's client address on it and counts registrations; put it
        inside the error middleware, so a refusal is answered like any other."""

        @web.middleware
        async def fair(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            address = wire.client_address(request, self.trusted_proxies)
            if request.method == "POST" and request.path in REGISTRATION_PATHS:
                await self.registration(address)
            request[CLIENT_KEY] = address or ""
            return await handler(request)

        return fair
