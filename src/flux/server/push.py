"""The push hub: which sockets are open for which address, and their outgoing queues.

Each socket has its own bounded queue, drained by its own writer task, so pushing never
waits on a reader: a push is a `put_nowait` per socket. A socket whose queue is full (the
client reads slower than mail arrives) is closed with 1008; the client catches up through
`/changes`. One slow reader therefore never delays anyone else.

Ordering. A socket is registered before its pending mail is fetched (so nothing can slip
between the fetch and the registration), but frames pushed in that window are held back
until the `authed` frame is queued, so `authed` is always the first frame a client gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from ..protocol.limits import WS_MAX_FRAME_BYTES
from .errors import dumps
from .metrics import Metrics

log = logging.getLogger("flux.server")

SLOW_READER = 1008
GOING_AWAY = 1001
TOO_BIG = 1009
CLOSE_WAIT_S = 5.0  #: a socket whose close does not complete in this long is reset


class FrameSink(Protocol):
    """What the hub needs from a WebSocket (aiohttp's WebSocketResponse is one)."""

    async def send_str(self, data: str) -> None: ...

    async def close(self, *, code: int = ..., message: bytes = ...) -> bool: ...


class Connection:
    """One authenticated socket: a bounded queue and the task that writes it out."""

    def __init__(
        self, ws: FrameSink, address: str, max_frames: int, metrics: Metrics,
        abort: Callable[[], None] | None = None,
    ) -> None:  # fmt: skip
        self.ws = ws
        self.address = address
        self._abort = abort
        self._queue: asyncio.Queue[str] = asyncio.Queue(max_frames)
        self._held: list[str] | None = []  # frames pushed before `authed`
        self._metrics = metrics
        self._writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()

    def start(self, first: Mapping[str, Any] | None = None) -> None:
        """Queue `first` (if any), then whatever was held, and start writing. ws.py writes
        the `authed` frame itself before calling this, so it is still the first frame."""
        held, self._held = self._held or [], None
        for frame in ((dumps(first),) if first is not None else ()) + tuple(held):
            self._put(frame)
        self._writer = asyncio.create_task(self._write(), name=f"ws-writer:{self.address}")

    def send(self, frame: Mapping[str, Any]) -> bool:
        """Queue a frame without waiting; False if the socket is closed or was too slow."""
        return self.send_text(dumps(frame))

    def send_text(self, text: str) -> bool:
        if self.closed.is_set():
            return False
        if self._held is not None:
            self._held.append(text)
            return True
        return self._put(text)

    def _put(self, text: str) -> bool:
        if len(text) > WS_MAX_FRAME_BYTES // 4 and len(text.encode()) > WS_MAX_FRAME_BYTES:
            # The client would refuse it and drop the socket; closing it here says why.
            # Nothing is lost: it reconnects and reads the message through /changes.
            log.warning("event=ws_frame_too_big address=%s", self.address)
            self.close(TOO_BIG, b"frame too big: read it through /changes")
            return False
        try:
            self._queue.put_nowait(text)
        except asyncio.QueueFull:
            log.warning("event=ws_slow_reader address=%s", self.address)
            self._metrics.slow_closed.inc()
            self.close(SLOW_READER, b"too slow: catch up through /changes")
            return False
        self._metrics.queue_depth.inc()
        return True

    async def _write(self) -> None:
        while True:
            text = await self._queue.get()
            self._metrics.queue_depth.dec()
            try:
                await self.ws.send_str(text)
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

    def connect(
        self, ws: FrameSink, address: str, abort: Callable[[], None] | None = None
    ) -> Connection:
        conn = Connection(ws, address, self.max_frames, self._metrics, abort)
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
        self, address: str, frame: Mapping[str, Any], exclude: Connection | None = None
    ) -> int:
        """Queue `frame` on every socket of `address` (but `exclude`); return how many took it."""
        conns = [c for c in self._by_address.get(address, ()) if c is not exclude]
        if not conns:
            return 0
        text = dumps(frame)
        return sum(conn.send_text(text) for conn in conns)

    def all(self) -> Iterable[Connection]:
        return [c for conns in self._by_address.values() for c in conns]

    async def close_all(self) -> None:
        """Close every socket with 1001 (server going away) and wait for them."""
        conns = list(self.all())
        for conn in conns:
            conn.close(GOING_AWAY, b"server shutting down")
        for conn in conns:
            await conn.finish()
