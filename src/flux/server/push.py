"""The push hub: which sockets are open for which address, and their outgoing queues.

Each socket has its own bounded queue, drained by its own writer task, so pushing never
waits on a reader: a push is a `put_nowait` per socket. A socket whose queue is full (the
client reads slower than mail arrives) is closed with 1008; the client catches up through
`/changes`. One slow reader therefore never delays anyone else.

Ordering. A socket is registered before its pending mail is fetched (so nothing can slip
between the fetch and the registration), but frames pushed in that window are held back
until the `authed` frame is queued, so `authed` is always the first frame a client gets.

Delivered means the client got it. Mail handed out on a socket (the `authed` batch, a
pushed `message`) stays *pending* in the store until the client acknowledges it, and the
acknowledgement is the WebSocket pong (RFC 6455 §5.5.2-3) to a ping sent after the frames
that carried it: frames on one socket arrive in order, so a pong for ping N proves the
client read everything written before ping N. Every WebSocket client answers pings (a
browser does it in the network stack; aiohttp in `receive()`, i.e. only once the
application has read the frames before it), so no client needs to know FLUX for this,
and the prototype's clients ack without trying. Ping payloads are a counter and a pong
acknowledges every ping up to its number: RFC 6455 lets a client answer only the latest
of several pings. A socket that dies, resets or never answers leaves its mail pending; the
next `authed` or /fetch hands it out again (FluxClient drops what it already has, by id).
The store marking is the caller's (ws.py): this module does no I/O but the socket's.

Dialects. A socket speaks FLUX's frames or the prototype's (flux.compat.ws, chosen at
auth). Every frame queued on it, pushes included, passes its `outbound` translation, so a
frame it acknowledges is always one its client can read: a prototype client that got
FLUX's `message` frame would pong it unread, and the mail would be marked delivered
without anyone having seen it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from ..protocol.limits import WS_MAX_FRAME_BYTES
from ..store.base import DeliveryUpdates, MessageRef, MessageStatus, StoredMessage
from .errors import dumps
from .metrics import Metrics

log = logging.getLogger("flux.server")

SLOW_READER = 1008
GOING_AWAY = 1001
TOO_BIG = 1009
CLOSE_WAIT_S = 5.0  #: a socket whose close does not complete in this long is reset


#: a socket's translation of the frames it is sent (module docstring, "Dialects")
Outbound = Callable[[Mapping[str, Any]], Mapping[str, Any]]


class FrameSink(Protocol):
    """What the hub needs from a WebSocket (aiohttp's WebSocketResponse is one)."""

    async def send_str(self, data: str) -> None: ...

    async def ping(self, message: bytes = ...) -> None: ...

    async def close(self, *, code: int = ..., message: bytes = ...) -> bool: ...


def delivered_wire(row: StoredMessage) -> dict[str, Any]:
    """A row as a socket hands it out: still pending in the store until the client acks
    the frame, but shown as it will stand then (delivered), as /fetch shows it."""
    if row.status is not MessageStatus.PENDING:
        return row.to_wire()
    return {**row.to_wire(), "_status": str(MessageStatus.DELIVERED)}


def ping_payload(number: int) -> bytes:
    return b"%d" % number


def pong_number(payload: bytes) -> int | None:
    """The ping a pong answers; None for one this server's acks did not send (aiohttp's
    heartbeat pings are empty; RFC 6455 also allows unsolicited pongs)."""
    if not payload or len(payload) > 20 or not payload.isdigit():
        return None
    return int(payload)


class Connection:
    """One authenticated socket: a bounded queue and the task that writes it out, and
    the mail written on it that the client has not acknowledged yet."""

    def __init__(
        self, ws: FrameSink, address: str, max_frames: int, metrics: Metrics,
        abort: Callable[[], None] | None = None, client: str | None = None,
        outbound: Outbound | None = None, dialect: str = "flux",
    ) -> None:  # fmt: skip
        self.ws = ws
        self.address = address
        self.dialect = dialect  #: "flux" or "prototype" (flux.compat.ws)
        self._outbound = outbound
        self.client = client  #: the network address the socket was opened from (fair.py)
        self._abort = abort
        self._max_frames = max_frames
        self._queue: asyncio.Queue[tuple[str, MessageRef | None]] = asyncio.Queue(max_frames)
        self._held: list[tuple[str, MessageRef | None]] | None = []  # pushed before `authed`
        #: refs queued or written here and not acknowledged yet: a message already on its
        #: way on this socket is not pushed onto it twice
        self._owed: set[MessageRef] = set()
        self._written: list[MessageRef] = []  # written since the last ack ping
        self._acks: dict[int, tuple[MessageRef, ...]] = {}  # ping number -> what it acks
        self._pings = 0
        self._metrics = metrics
        self._writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()

    def start(self, first: Mapping[str, Any] | None = None) -> None:
        """Queue `first` (if any), then whatever was held, and start writing. ws.py writes
        the `authed` frame itself before calling this, so it is still the first frame."""
        held, self._held = self._held or [], None
        for text, ref in ([(dumps(first), None)] if first is not None else []) + held:
            self._put(text, ref)
        self._writer = asyncio.create_task(self._write(), name=f"ws-writer:{self.address}")

    def render(self, frame: Mapping[str, Any]) -> Mapping[str, Any]:
        """`frame` as this socket's dialect has it."""
        return frame if self._outbound is None else self._outbound(frame)

    def send(self, frame: Mapping[str, Any]) -> bool:
        """Queue a frame without waiting; False if the socket is closed or was too slow.
        Answers are already in the socket's dialect (ws.py); `push` renders pushes."""
        return self.send_text(dumps(frame))

    def send_text(self, text: str, ref: MessageRef | None = None) -> bool:
        """Queue `text`; `ref`: the pending message it carries, to be acked by the client."""
        if self.closed.is_set():
            return False
        if ref is not None:
            if ref in self._owed:
                return True  # already on its way here (e.g. in `authed` and pushed)
            self._owed.add(ref)
        if self._held is not None:
            self._held.append((text, ref))
            return True
        return self._put(text, ref)

    def owes(self, ref: MessageRef) -> bool:
        """True if `ref` was queued or written here and not acknowledged yet."""
        return ref in self._owed

    async def hand_over(self, refs: Iterable[MessageRef]) -> None:
        """`refs` were just written on the socket (ws.py's `authed`): ask for their ack."""
        refs = tuple(refs)
        self._owed.update(refs)
        self._written.extend(refs)
        await self._ask_ack()

    async def _ask_ack(self) -> None:
        """Ping after what was written; its pong acknowledges it. More unanswered pings
        than the queue holds frames is a client that does not read: closed as too slow."""
        if not self._written:
            return
        if len(self._acks) >= self._max_frames:
            self._slow()
            return
        self._pings += 1
        self._acks[self._pings] = tuple(self._written)
        self._written = []
        await self.ws.ping(ping_payload(self._pings))

    def acked(self, payload: bytes) -> list[MessageRef]:
        """The refs a pong with `payload` acknowledges (every ping up to its number)."""
        number = pong_number(payload)
        if number is None:
            return []
        done = [n for n in self._acks if n <= number]
        refs = [ref for n in done for ref in self._acks.pop(n)]
        self._owed.difference_update(refs)
        return refs

    def _slow(self) -> None:
        log.warning("event=ws_slow_reader address=%s", self.address)
        self._metrics.slow_closed.inc()
        self.close(SLOW_READER, b"too slow: catch up through /changes")

    def _put(self, text: str, ref: MessageRef | None = None) -> bool:
        if len(text) > WS_MAX_FRAME_BYTES // 4 and len(text.encode()) > WS_MAX_FRAME_BYTES:
            # The client would refuse it and drop the socket; closing it here says why.
            # Nothing is lost: it reconnects and reads the message through /changes.
            log.warning("event=ws_frame_too_big address=%s", self.address)
            self.close(TOO_BIG, b"frame too big: read it through /changes")
            return False
        try:
            self._queue.put_nowait((text, ref))
        except asyncio.QueueFull:
            self._slow()
            return False
        self._metrics.queue_depth.inc()
        return True

    async def _write(self) -> None:
        while True:
            text, ref = await self._queue.get()
            self._metrics.queue_depth.dec()
            try:
                await self.ws.send_str(text)
                if ref is not None:
                    self._written.append(ref)
                if self._queue.empty():  # one ping after a burst, not one per frame
                    await self._ask_ack()
            except (ConnectionError, RuntimeError):
                self.close(GOING_AWAY, b"")
                return
            self._metrics.pushed.inc()

    def close(self, code: int, message: bytes) -> None:
        """Stop writing and close the socket (in the background; idempotent)."""
        if self.closed.is_set():
            return
        self.closed.set()
        if self._writer is not None:
            self._writer.cancel()
        self._drain_gauge()
        self._closer = asyncio.create_task(self._close(code, message))

    async def _close(self, code: int, message: bytes) -> None:
        # A client that stopped reading never reads the close frame either, and closing a
        # transport waits to flush what it holds: the socket would stay open. Reset it.
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=message), CLOSE_WAIT_S)
        except Exception:
            if self._abort is not None:
                self._abort()

    def _drain_gauge(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()
            self._metrics.queue_depth.dec()

    async def finish(self) -> None:
        """Wait for the writer and closer to end (called when the handler returns)."""
        self.closed.set()
        if self._writer is not None:
            self._writer.cancel()
        for task in (self._writer, self._closer):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._drain_gauge()


class Hub:
    """address -> live connections. Owned by one app; nothing here is global."""

    def __init__(self, metrics: Metrics, max_frames: int) -> None:
        self._metrics = metrics
        self.max_frames = max_frames
        self._by_address: dict[str, set[Connection]] = {}
        #: hands delivery-state changes to the other processes on one database (set by
        #: fanout.PostgresFanout; None with one process): `push_delivery` calls it
        self.relay_delivery: Callable[[DeliveryUpdates], None] | None = None

    def connect(
        self, ws: FrameSink, address: str, abort: Callable[[], None] | None = None,
        client: str | None = None, outbound: Outbound | None = None, dialect: str = "flux",
    ) -> Connection:  # fmt: skip
        conn = Connection(ws, address, self.max_frames, self._metrics, abort, client,
                          outbound, dialect)  # fmt: skip
        self._by_address.setdefault(address, set()).add(conn)
        self._metrics.sockets.inc()
        return conn

    def disconnect(self, conn: Connection) -> None:
        conns = self._by_address.get(conn.address)
        if conns is None or conn not in conns:
            return
        conns.discard(conn)
        if not conns:
            del self._by_address[conn.address]
        self._metrics.sockets.dec()

    def listening(self, address: str) -> bool:
        return bool(self._by_address.get(address))

    def count(self) -> int:
        return sum(len(c) for c in self._by_address.values())

    def sockets(self, address: str) -> Iterable[Connection]:
        return tuple(self._by_address.get(address, ()))

    def push(
        self, address: str, frame: Mapping[str, Any], exclude: Connection | None = None,
        ref: MessageRef | None = None,
    ) -> int:  # fmt: skip
        """Queue `frame` on every socket of `address` (but `exclude`); return how many took
        it. `ref`: the pending message the frame carries, delivered once a socket acks it."""
        conns = [c for c in self._by_address.get(address, ()) if c is not exclude]
        texts: dict[str, str] = {}  # each dialect's rendering, made once
        taken = 0
        for conn in conns:
            if conn.dialect not in texts:
                texts[conn.dialect] = dumps(conn.render(frame))
            taken += conn.send_text(texts[conn.dialect], ref)
        return taken

    def all(self) -> Iterable[Connection]:
        return [c for conns in self._by_address.values() for c in conns]

    async def close_all(self) -> None:
        """Close every socket with 1001 (server going away) and wait for them."""
        conns = list(self.all())
        for conn in conns:
            conn.close(GOING_AWAY, b"server shutting down")
        for conn in conns:
            await conn.finish()


def push_delivery(hub: Hub, changes: DeliveryUpdates) -> int:
    """Tell each sender's sockets that the delivery state of a message it sent changed
    (docs/API.md, "Sent mail"): `{"action": "delivery", "id", "delivery": {recipient:
    state}}` with the recipients that changed. This process's sockets get it here; the
    other processes sharing the database (if any) through `hub.relay_delivery` (fanout.py,
    kind DELIVERY). FLUX sockets only: the prototype's dialect has no such frame. A socket
    that misses it (closed, a lost NOTIFY) catches up from /changes (`sent`). Returns how
    many sockets of this process took a frame."""
    taken = push_delivery_here(hub, changes)
    if hub.relay_delivery is not None and changes:
        hub.relay_delivery(changes)
    return taken


def push_delivery_here(hub: Hub, changes: DeliveryUpdates) -> int:
    """`push_delivery` to this process's sockets only (what another process relayed)."""
    taken = 0
    for (sender, msg_id), states in changes.items():
        frame = {"action": "delivery", "id": msg_id, "delivery": states}
        for conn in hub.sockets(sender):
            if conn.dialect == "flux":
                taken += conn.send(frame)
    return taken
