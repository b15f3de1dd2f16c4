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
request and sets `CLIENT` for the request's task. A ContextVar rather than an argument,
because the WebSocket handler submits frame after frame inside the upgrade request's task
and the routes call `Submitter.submit(raw)` without the request; the value is scoped to
one request (a task's context), never shared between requests, and a submission made
outside any request (a bounce, a test calling the submitter) has none and is not counted.

A refusal is 429 `rate_limited`, naming what was counted, with `Retry-After`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from contextvars import ContextVar

from aiohttp import web

from . import wire
from .errors import ServerError
from .limits import HitCounter

__all__ = ["CLIENT", "REGISTRATION_PATHS", "ClientLimits", "RateLimited", "client_bucket"]

#: the client address of the request being served (see the module docstring)
CLIENT: ContextVar[str | None] = ContextVar("flux_client_address", default=None)

#: POST paths that create an address or account here
REGISTRATION_PATHS = frozenset({"/register", "/account/register", "/account/claim"})


class RateLimited(ServerError):
    """Too many requests from one client address or one peer server (429, `Retry-After`)."""

    code = "rate_limited"

    def __init__(self, message: str, *, field: str | None = None, retry_after_s: int) -> None:
        super().__init__(message, field=field)
        self.retry_after_s = retry_after_s


def client_bucket(address: str | None) -> str:
    """What one client is counted as: its IPv4 address, its IPv6 /64, or "" unknown."""
    if not address:
        return ""
    try:
        ip = ipaddress.ip_address(address)
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
        self.trusted_proxies = trusted_proxies

    async def submission(self) -> None:
        """Count one message submitted by the current request's client (none outside a
        request). Raises RateLimited."""
        address = CLIENT.get()
        if address is None:
            return
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
        """Sets CLIENT for every request and counts registrations; put it inside the error
        middleware, so a refusal is answered like any other."""

        @web.middleware
        async def fair(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            address = wire.client_address(request, self.trusted_proxies)
            if request.method == "POST" and request.path in REGISTRATION_PATHS:
                await self.registration(address)
            token = CLIENT.set(address or "")
            try:
                return await handler(request)
            finally:
                CLIENT.reset(token)

        return fair
