"""Connections that never finish: deadlines and a per-address cap (docs/OPERATING.md,
"Timeouts and connection caps").

aiohttp already closes a connection that stays idle for `keepalive_timeout` (its timer
starts when the connection is made and again after each response, and it is not pushed
back by incoming bytes, so a request head that is still incomplete when it fires is cut
too). What aiohttp has no setting for:

- a request head must be complete within `header_timeout_s` of its first byte (a client
  sending one header byte every few seconds is cut off there, not at the idle timeout);
- a request body must be complete within `body_timeout_s` of its head (a byte-per-minute
  body would otherwise hold its handler and connection forever);
- a response whose writing stalls (the client stopped reading, the transport's buffer is
  full) must start moving again within `response_timeout_s`: a client that asks for a
  500-message page and never reads would otherwise hold its handler in `drain()` forever.
  The deadline runs only while writing is paused (asyncio's `pause_writing` /
  `resume_writing`), so a slow but reading client downloads as long as it keeps up, and
  nothing is timed while a handler computes its answer. WebSockets are left to their own
  heartbeat and slow-reader close (push.py);
- one client address holds at most `max_per_address` connections at once; the next one is
  reset as soon as it is accepted, while other addresses are served.

Every connection given up on is *aborted* (`transport.abort()`): `close()` waits to flush
what is buffered for a client that may never read it, which leaves the socket open.

Addresses. IPv6 clients are counted per /64 (one subscriber holds a whole /64, so
counting single addresses would cap nothing). Connections from `trusted_proxies` are not
capped: every client behind the proxy shares its address, so a per-address cap there
would cap everyone together; the real client is only known per request (X-Forwarded-For),
after the connection was accepted. Behind a proxy, its own per-client limits apply
(nginx `limit_conn`, HAProxy `maxconn`/`sc_conn_cur`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from .fair import client_bucket

log = logging.getLogger("flux.server")


@dataclass(frozen=True, slots=True)
class ConnectionPolicy:
    """The limits one server applies to its client connections. 0 turns a limit off."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    response_timeout_s: float = 60.0
    max_per_address: int = 64
    #: exact addresses or CIDRs of proxies whose connections are not capped
    trusted_proxies: frozenset[str] = frozenset()
    _networks: tuple[Any, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        networks = []
        for entry in self.trusted_proxies:
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                continue  # a host name: matched as an exact string only
        object.__setattr__(self, "_networks", tuple(networks))

    def counted_as(self, peer: str | None) -> str | None:
        """The key `peer`'s connections are counted under; None when not capped."""
        if peer is None or self.max_per_address <= 0 or peer in self.trusted_proxies:
            return None
        try:
            ip = ipaddress.ip_address(peer.split("%", 1)[0])
        except ValueError:
            return peer  # a Unix socket path or the like: count it as it is
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self._networks):
            return None
        return client_bucket(str(ip))  # an IPv4 address or an IPv6 /64, as every limit


def abort(handler: RequestHandler) -> None:
    """Tear the connection down now: reset the socket, then stop the handler."""
    transport = handler.transport
    if transport is not None:
        transport.abort()
    handler.force_close()


class GuardedRequestHandler(RequestHandler):
    """aiohttp's protocol plus the header, body and response deadlines of the module
    docstring."""

    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._policy = manager.policy
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._policy.response_timeout_s > 0 and not self._upgraded:
            self._write_timer = self._loop.call_later(
                self._policy.response_timeout_s, self._write_late
            )

    def resume_writing(self) -> None:
        super().resume_writing()
        self._cancel_write()

    def _write_late(self) -> None:
        self._write_timer = None
        log.info("event=connection_cut reason=response_timeout")
        abort(self)

    def _cancel_write(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if self._upgraded or self._force_close:  # a WebSocket keeps its own deadlines
            self._stop_timers()
            return
        completed = self._request_count - before
        if completed:
            self._cancel_head()
            for message, payload in list(self._messages)[-completed:]:
                if not payload.is_eof() and not getattr(message, "upgrade", False):
                    self._watch_body(payload)
        elif data and self._body_timer is None and self._head_timer is None:
            self._start_head()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_timers()
        super().connection_lost(exc)

    def _start_head(self) -> None:
        if self._policy.header_timeout_s > 0:
            self._head_timer = self._loop.call_later(self._policy.header_timeout_s, self._head_late)

    def _head_late(self) -> None:
        self._head_timer = None
        log.info("event=connection_cut reason=header_timeout")
        abort(self)

    def _cancel_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _watch_body(self, payload: Any) -> None:
        if self._policy.body_timeout_s <= 0:
            return
        if self._body_timer is not None:
            self._body_timer.cancel()
        self._body_timer = self._loop.call_later(
            self._policy.body_timeout_s, self._body_late, payload
        )

    def _body_late(self, payload: Any) -> None:
        self._body_timer = None
        if not payload.is_eof():
            log.info("event=connection_cut reason=body_timeout")
            abort(self)

    def _stop_timers(self) -> None:
        self._cancel_head()
        self._cancel_write()
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None


class GuardedServer(web.Server):
    """aiohttp's connection manager, counting open connections per client address."""

    def __init__(self, *args: Any, policy: ConnectionPolicy, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.policy = policy
        self._open: dict[str, int] = {}
        self._key_of: dict[RequestHandler, str] = {}

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, **self._kwargs)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        peer = transport.get_extra_info("peername")
        key = self.policy.counted_as(peer[0] if isinstance(peer, tuple) and peer else None)
        if key is None:
            return
        if self._open.get(key, 0) >= self.policy.max_per_address:
            log.warning("event=connection_refused reason=per_address_cap peer=%s", key)
            abort(handler)
            return
        self._open[key] = self._open.get(key, 0) + 1
        self._key_of[handler] = key

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        key = self._key_of.pop(handler, None)
        if key is not None:
            left = self._open[key] - 1
            if left:
                self._open[key] = left
            else:
                del self._open[key]
        super().connection_lost(handler, exc)

    def open_per_address(self) -> dict[str, int]:
        return dict(self._open)


class GuardedAppRunner(web.AppRunner):
    """`web.AppRunner` whose server is a GuardedServer."""

    def __init__(self, app: web.Application, *, policy: ConnectionPolicy, **kwargs: Any):
        super().__init__(app, **kwargs)
        self._policy = policy

    async def _make_server(self) -> web.Server:
        # The app builds its server (running its startup); the guarded one takes over the
        # same handler, request factory and per-connection settings (`Server._kwargs`).
        plain = await super()._make_server()
        return GuardedServer(
            plain.request_handler, request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation, policy=self._policy,
            **plain._kwargs,
        )  # fmt: skip


__all__: Iterable[str] = ["ConnectionPolicy", "GuardedAppRunner", "GuardedServer"]
