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
  reset as soon as it is accepted, while other addresses are served;
- one client address gets at most its fair share of the event loop, whatever it asks for
  (`RequestBudget`, below): requests and WebSocket frames are counted per address before
  they are routed, and past the address's budget they wait, with reading paused.

Every connection given up on is *aborted* (`transport.abort()`): `close()` waits to flush
what is buffered for a client that may never read it, which leaves the socket open.

Addresses. IPv6 clients are counted per /64 (one subscriber holds a whole /64, so
counting single addresses would cap nothing). Connections from `trusted_proxies` are not
capped: every client behind the proxy shares its address, so a per-address cap there
would cap everyone together; the real client is only known per request (X-Forwarded-For),
after the connection was accepted. Behind a proxy, its own per-client limits apply
(nginx `limit_conn`, HAProxy `maxconn`/`sc_conn_cur`).

Turns on the loop (issue 10 §2: "no stranger takes what belongs to others"). Refusing a
request cheaply is not enough: eight connections hammering `/account/login` after their
argon2 budget was spent got cheap 429s, and still took two thirds of the loop from
everyone else, because each one was parsed, routed, answered in JSON and logged. The same
holds for junk federation requests, 404s or WebSocket frames: any endpoint will do. So
every request and every WebSocket frame first takes a turn from its client address's
budget (`RequestBudget`, counted by `RequestTurns`, nginx's `limit_req` with a burst and
a delay), in `GuardedRequestHandler._handle_request`, before the app sees it:

- within the burst, it goes at once; past it, it waits for its turn with the connection's
  reading paused (backpressure: the client's further bytes stay in its socket buffers, and
  the loop spends a timer on it, nothing else);
- a request whose turn is more than `delay_max_s` away is answered 429 `rate_limited` with
  `Retry-After` by a prepared response (no routing, middleware or log line; one summary
  line every LOG_EVERY_S) and its connection is closed. A client connecting directly holds
  at most `max_per_address` connections, each waiting for one turn at a time, so with the
  defaults (64 connections, 100 a second, 2 s) it is only ever slowed, never refused;
- WebSocket frames (counted by their headers, FrameCounter) are already read when they are
  counted: past the budget the socket is simply not read again until the address's turn;
- a large body costs more than an empty one (`turns_for`: one turn, and one per 16 KiB), since
  reading, parsing and hashing it does: no input costs the loop more than its size. The
  bytes are counted as they are read, not taken from `Content-Length`, so a chunked body
  pays the same; a request takes at most a burst when it is admitted, and the rest of its
  body pays while it is read, only within the address's burst (reading waits otherwise), so
  the largest legitimate body (an 8 MiB federation transaction) is slowed, never refused
  for its size, and a body never puts its address in debt ahead of a neighbour.

Which address: the same as every per-address budget (`fair.client_bucket` of
`wire.client_address`): IPv4 address, IPv6 /64, and behind `trusted_proxies` the
right-most address the proxies did not write. A trusted proxy's own requests (those that
carry no forwarded client, such as a load balancer's health checks) are not counted.

Clients that share one address (a NAT, an office, a carrier's CGNAT) share its budget. The
budget is counted before anyone is authenticated, and it must be: keyed by an unverified
token, it would give an attacker a budget per made-up token. What keeps users behind one
address from starving each other is that turns are handed out in arrival order: a request
waits behind at most the requests already waiting from that address (at most one per
connection, so at most `max_per_address / per_s` seconds: 0.64 s with the defaults), never
behind the flood as a whole. The defaults are far above what one person's clients make (a
web client's page load, a sync, a bulk sender within its message budget: tens of requests
at once, a few a second); a large NAT raises them (FLUX_REQUESTS_PER_ADDRESS_PER_S,
FLUX_REQUEST_BURST_PER_ADDRESS).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from . import wire
from .config import ServerConfig
from .errors import error_response
from .fair import RateLimited, client_bucket

log = logging.getLogger("flux.server")


@dataclass(frozen=True, slots=True)
class RequestBudget:
    """What one client address may ask of the event loop (nginx's `limit_req` with a
    burst and a delay): `burst` requests at once, then `per_s` a second. A request past
    the budget waits for its turn; one whose turn is more than `delay_max_s` away is
    refused (429 `rate_limited`, `Retry-After`). `per_s` 0 turns the budget off."""

    per_s: float = 100.0
    burst: int = 200
    delay_max_s: float = 2.0

    @classmethod
    def from_config(cls, config: ServerConfig) -> RequestBudget:
        """The budget `config` sets (FLUX_REQUESTS_PER_ADDRESS_PER_S, ..._BURST_..., ...)."""
        return cls(config.requests_per_address_per_s, config.request_burst_per_address,
                   config.request_delay_max_s)  # fmt: skip


#: refusals are logged at most once in this many seconds (each one would cost a log line)
LOG_EVERY_S = 10.0
#: a request costs one turn, and one more for every this many bytes of body (or of frames):
#: reading, parsing and hashing grow with the size, so a flood of 64 KiB bodies gets a
#: fifth of the turns a flood of empty requests gets
BYTES_PER_TURN = 16 * 1024


def turns_for(size: int | None) -> int:
    """The turns a request (or a WebSocket read) of `size` bytes takes: 1 + size / 16 KiB."""
    return 1 + (size or 0) // BYTES_PER_TURN


def most_turns_at_once(budget: RequestBudget) -> int:
    """The most turns one request takes when it is admitted: a full burst. Its body's
    further bytes take their turns as they are read (reading paused past the budget), so
    a large body is slowed, never refused for its size alone: 8 MiB (a full federation
    transaction, 513 turns) is more than an idle address may ever take at once with the
    defaults (200 + 2 s x 100), and asking for it in one go would be a 429 forever."""
    return max(1, budget.burst)


class RequestTurns:
    """Each client address's turns on the event loop, by the budget (RequestBudget).

    The generic cell rate algorithm (GCRA, ITU-T I.371): per address, the time at which
    its next request would be on schedule (`_due`, loop seconds). A request moves it on
    by 1/per_s; it may go at once while that stays within `burst` requests of now, else it
    waits until it is. Turns are handed out in arrival order, so no request of an address
    waits behind more than the requests already waiting from that same address, and an
    address is never slowed by another one: the limit is on each address alone.

    One number per address, and an address whose schedule is in the past holds nothing
    it would not be given again: those entries are dropped once there are `max_addresses`,
    so memory is bounded by the addresses active in the last few seconds. A sweep that
    drops little is not repeated until the table has doubled again: with every entry still
    on schedule (many addresses, each with turns ahead of it), sweeping on every new
    address would cost each request a pass over all of them.
    """

    def __init__(self, budget: RequestBudget, *, max_addresses: int = 100_000) -> None:
        self.budget = budget
        self.max_addresses = max_addresses
        self._due: dict[str, float] = {}
        #: the table's size at which stale entries are next swept out
        self._sweep_at = max_addresses
        #: how many requests or frames waited for their turn, and how many were refused
        self.delayed = 0
        self.refused = 0
        self._quiet_until = float("-inf")

    @property
    def on(self) -> bool:
        return self.budget.per_s > 0

    def take(self, key: str, now: float, cost: int = 1) -> float:
        """Take `cost` turns for `key` at loop time `now`; the seconds to wait before the
        work may go (0: at once). Never refuses: for frames already read (WebSocket)."""
        interval = 1.0 / self.budget.per_s
        if key not in self._due and len(self._due) >= self._sweep_at:
            self._forget(now)
        due = max(self._due.get(key, now), now) + cost * interval
        self._due[key] = due
        wait = due - now - self.budget.burst * interval
        if wait > 0:
            self.delayed += 1
            return wait
        return 0.0

    def take_within(self, key: str, now: float, cost: int) -> tuple[bool, float]:
        """Take `cost` turns for bytes already read (a body) if they fit in the address's
        burst now: (True, 0.0). Else nothing is taken: (False, seconds until they would
        fit), and reading waits until then. A body never puts its address in debt: a
        neighbour behind the same address waits behind at most one read per connection,
        it is not refused for half a minute because a flood's bodies were read first."""
        interval = 1.0 / self.budget.per_s
        due = max(self._due.get(key, now), now) + cost * interval
        wait = due - now - self.budget.burst * interval
        if wait <= 0:
            return True, self.take(key, now, cost)
        return False, wait

    def admit(self, key: str, now: float, cost: int = 1) -> float | None:
        """Take `cost` turns for a request from `key`: the seconds to wait (0: at once), or
        None when its turn is more than `delay_max_s` away (nothing is taken then: refuse
        it, `retry_after_s` says for how long)."""
        before = self._due.get(key)
        wait = self.take(key, now, cost)
        if wait <= self.budget.delay_max_s:
            return wait
        self.delayed -= 1
        self.refused += 1
        if now >= self._quiet_until:  # one line per LOG_EVERY_S, whatever the flood
            self._quiet_until = now + LOG_EVERY_S
            log.warning("event=requests_refused reason=per_address_budget peer=%s refused=%d",
                        key, self.refused)  # fmt: skip
        if before is None:
            del self._due[key]
        else:
            self._due[key] = before
        return None

    def retry_after_s(self, key: str, now: float) -> int:
        """Whole seconds until a request from `key` would wait no more than `delay_max_s`."""
        interval = 1.0 / self.budget.per_s
        due = self._due.get(key, now) + interval
        wait = due - now - self.budget.burst * interval - self.budget.delay_max_s
        return max(1, math.ceil(wait))

    def _forget(self, now: float) -> None:
        self._due = {key: due for key, due in self._due.items() if due > now}
        self._sweep_at = max(self.max_addresses, 2 * len(self._due))


class FrameCounter:
    """Counts the frames in the bytes a WebSocket client sends (RFC 6455 §5.2), chunk by
    chunk: aiohttp's frame parser tells nobody how many it read. Only the headers are
    looked at; a payload is skipped by its length."""

    def __init__(self) -> None:
        self._skip = 0  #: payload bytes of the current frame still to come
        self._head = b""  #: the start of a header split between two chunks

    def feed(self, data: bytes) -> int:
        """The number of frames whose header completes in `data`."""
        buf = self._head + data if self._head else data
        end = len(buf)
        at = min(self._skip, end)
        self._skip -= at
        frames = 0
        while at < end:
            if at + 2 > end:
                break
            size = buf[at + 1] & 0x7F
            extra = 2 if size == 126 else 8 if size == 127 else 0
            head = 2 + extra + (4 if buf[at + 1] & 0x80 else 0)
            if at + head > end:
                break
            if extra:
                size = int.from_bytes(buf[at + 2 : at + 2 + extra], "big")
            frames += 1
            at += head
            step = min(size, end - at)
            at += step
            self._skip = size - step
        self._head = bytes(buf[at:]) if at < end else b""
        return frames


@dataclass(frozen=True, slots=True)
class ConnectionPolicy:
    """The limits one server applies to its client connections. 0 turns a limit off."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    response_timeout_s: float = 60.0
    max_per_address: int = 64
    #: exact addresses or CIDRs of proxies whose connections are not capped
    trusted_proxies: frozenset[str] = frozenset()
    #: each client address's share of the loop (RequestBudget's defaults when None)
    requests: RequestBudget | None = None

    def __post_init__(self) -> None:
        # one proxy rule everywhere: exact addresses, names and CIDRs (wire.TrustedProxies)
        object.__setattr__(self, "trusted_proxies", wire.TrustedProxies(self.trusted_proxies))

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
        return client_bucket(str(ip))  # an IPv4 address or an IPv6 /64, as every limit

    def request_key(self, request: web.BaseRequest) -> str | None:
        """What `request`'s turns are counted under (RequestTurns): its client's bucket,
        behind a trusted proxy the forwarded client's (`wire.client_address`, the rule every
        per-address budget uses). None for a trusted proxy's own requests (its health
        checks carry no forwarded address): they are not counted."""
        address = wire.client_address(request, self.trusted_proxies)
        if address is not None and address in self.trusted_proxies:
            return None
        return client_bucket(address)


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
        self._turns = manager.turns
        #: the address the last request was counted under; a WebSocket's frames count there
        self._key: str | None = None
        self._frames: FrameCounter | None = None
        #: reading is paused until the address's turn (RequestTurns); released by this timer
        self._held: asyncio.TimerHandle | None = None
        #: bytes read from the client and not yet paid for in turns: every byte read costs
        #: its turns once, whether its body says its length or comes chunked, and whether
        #: a handler reads it or aiohttp discards it
        self._unpaid = 0

    async def start(self) -> None:
        # A connection refused at accept (the per-address cap) is gone before its task
        # runs; aiohttp's start() would fail an assertion and log it, once per refusal.
        if self._manager is not None:
            await super().start()

    # -- each address's turns (RequestTurns) ------------------------------------------------

    async def _handle_request(
        self,
        request: web.BaseRequest,
        start_time: float | None,
        request_handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
    ) -> tuple[web.StreamResponse, bool]:
        # Before routing, middlewares, JSON and logs: a request past its address's budget
        # costs the loop its parse (done) and a timer, or a small prepared 429.
        if self._turns.on:
            key = self._key = self._policy.request_key(request)
            if key is not None:
                # the bytes read since the last payment: this request's head, and its body
                # as far as it came with it (the rest pays as it is read, _pay_bytes)
                cost = min(turns_for(self._unpaid), most_turns_at_once(self._turns.budget))
                wait = self._turns.admit(key, self._loop.time(), cost)
                if wait is None:
                    request_handler = self._refusal(key)
                else:
                    self._unpaid = max(0, self._unpaid - (cost - 1) * BYTES_PER_TURN)
                if wait:
                    self._hold(wait)  # nothing more is read from this connection meanwhile
                    await asyncio.sleep(wait)  # the address's turn: a schedule, not a poll
                    if self.transport is None:  # gone while waiting: no work for nobody
                        raise ConnectionResetError("the client left while waiting its turn")
        return await super()._handle_request(request, start_time, request_handler)

    def _refusal(self, key: str) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
        retry = self._turns.retry_after_s(key, self._loop.time())

        async def refuse(_: web.BaseRequest) -> web.StreamResponse:
            response = error_response(RateLimited(
                "more requests from your network address than it may make; retry later",
                retry_after_s=retry,
            ))  # fmt: skip
            response.force_close()  # a client this far over its budget reconnects first
            return response

        return refuse

    def set_parser(self, parser: Any, data_received_cb: Callable[[], None] | None = None) -> None:
        if self._upgraded and self._message_tail:  # frames sent with the upgrade request
            self._count_frames(self._message_tail)
        super().set_parser(parser, data_received_cb)

    def _count_frames(self, data: bytes) -> None:
        """A WebSocket's frames take turns like requests; frames are already read, so past
        the budget the socket is not read again until the address's turn comes."""
        if self._key is None or not self._turns.on:
            return
        if self._frames is None:
            self._frames = FrameCounter()
        frames = self._frames.feed(data)
        if frames:
            wait = self._turns.take(self._key, self._loop.time(), frames + turns_for(len(data)) - 1)
            if wait > 0:
                self._hold(wait)

    def _hold(self, wait: float) -> None:
        if self._held is not None:  # a later turn: the address's schedule only moves on
            self._held.cancel()
        self._held = self._loop.call_later(wait, self._release)
        self._pause_transport_reading()

    def _release(self) -> None:
        self._held = None
        if self._key is not None and self._unpaid >= BYTES_PER_TURN:
            self._settle()  # bytes still unpaid: their turn first
            if self._held is not None:
                return
        if not self._reading_paused and not self._buffer_paused:  # aiohttp's own holds
            super()._resume_transport_reading()

    def _resume_transport_reading(self) -> None:
        if self._held is None:  # aiohttp resumes when its buffers drain; a turn still holds
            super()._resume_transport_reading()

    # -- deadlines ----------------------------------------------------------------------

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

    def _pay_bytes(self, size: int) -> None:
        """Request bytes take their turns as they are read (chunked bodies, bodies past
        what their request paid for when admitted, bodies nobody reads and aiohttp
        discards while it lingers): only within the address's burst (take_within), so
        past it reading pauses until its turn, and a refused request (a 429 closes its
        connection) left the address nothing to pay."""
        self._unpaid += size
        if self._key is None or self._unpaid < BYTES_PER_TURN:
            return  # the first request's admission pays for what came before it
        self._settle()

    def _settle(self) -> None:
        """Pay for the bytes read (at most a burst at a time); what does not fit within
        the address's delay waits, with reading paused, and is paid on release."""
        turns = min(self._unpaid // BYTES_PER_TURN, most_turns_at_once(self._turns.budget))
        taken, wait = self._turns.take_within(self._key or "", self._loop.time(), turns)
        if taken:
            self._unpaid -= turns * BYTES_PER_TURN
        if wait > 0:
            self._hold(wait)

    def data_received(self, data: bytes) -> None:
        if self._upgraded and self._payload_parser is not None and data:
            self._count_frames(data)
        elif not self._upgraded and data and self._turns.on:
            self._pay_bytes(len(data))
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
        if self._held is not None:
            self._held.cancel()
            self._held = None
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
        #: every client address's turns on this server's loop
        self.turns = RequestTurns(policy.requests or RequestBudget())
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


__all__: Iterable[str] = [
    "ConnectionPolicy", "FrameCounter", "GuardedAppRunner", "GuardedServer", "RequestBudget",
    "RequestTurns",
]  # fmt: skip
