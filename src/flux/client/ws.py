"""The client's WebSocket: push delivery that survives outages (docs/API.md, "WebSocket").

Acks. The server marks mail it handed out on the socket delivered only when this client's
pong answers the ping sent after it (docs/API.md, "Acknowledgement"). aiohttp answers a
ping inside `receive()`, so the pong leaves only once the frames before it went through
the handlers: nothing to do here but keep reading. Mail whose ack never made it (the
socket died) stays pending and comes again with the next `authed` or /fetch; the id
de-duplication below drops it.

Why catch-up is needed. The server pushes a message once, to the sockets open at that
moment. A message that arrives while this client's socket is down
is handed out with the `authed` frame (a first batch; the listener fetches the rest) only
if it is still *pending*: if another device fetched or read it meanwhile, or the server
pushed it onto a socket that was already dead, it is no longer pending and would never
reach this client. So the listener remembers the
last mailbox `state` it saw (every push and the `authed` frame carry one), and after each
reconnect it asks GET /changes?since=<that state> and delivers every message created since.
Messages are de-duplicated by id, so one that comes both ways reaches the handlers once.

Reconnects wait with capped, jittered exponential backoff ("equal jitter": half the delay
fixed, half random), so a restarted server is not hit by every client at the same instant.
The delay starts small again only after a connection that *stayed up* for `stable_s`
(30 s): a server or proxy that authenticates a socket and then drops it (or the server's
own slow-reader close) must not get a reconnect, a /fetch and a /changes every half second
forever, so authenticating is not enough to count as "it worked".
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import random
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp

from ..background import wait_at_most
from ..protocol.limits import WS_MAX_FRAME_BYTES
from .answers import bad_answer
from .errors import FluxClientError

if TYPE_CHECKING:
    from .client import FluxClient

__all__ = ["Backoff", "Listener"]

log = logging.getLogger("flux.client.ws")
_SEEN_LIMIT = 10_000
_MAX_DRAIN_ROUNDS = 100
STABLE_S = 30.0  #: a socket up this long after authenticating resets the backoff
_HEARTBEAT_S = 30.0  # the server pings every 20 s; a silent server is dropped after this
CANNOT_CALCULATE_CHANGES = "cannot_calculate_changes"  #: the server's "resync" answer


class Backoff:
    """Delay before reconnect attempt `n` (0-based): in [d/2, d], d = min(cap, base·2ⁿ)."""

    def __init__(
        self, base: float = 0.5, cap: float = 30.0, rand: Callable[[], float] = random.random
    ) -> None:
        self.base, self.cap, self._rand = base, cap, rand

    def delay(self, attempt: int) -> float:
        ceiling = min(self.cap, self.base * 2 ** min(attempt, 32))
        return ceiling / 2 + self._rand() * ceiling / 2


def backoff_step(attempt: int, lasted_s: float | None, stable_s: float) -> int:
    """The backoff step to wait before reconnecting, after `attempt` reconnects in a row
    and a socket that stayed up `lasted_s` after authenticating (None: it never did):
    back to 0 only if that was at least `stable_s`."""
    if lasted_s is not None and lasted_s >= stable_s:
        return 0
    return attempt


def _transient(exc: BaseException) -> bool:
    """Worth waiting out (network, server down or restarting), as opposed to a refusal."""
    if isinstance(exc, FluxClientError):
        if exc.code == "bad_answer" and exc.field is not None:
            # an answer that came but lacks a field (not an outage, such as a proxy's
            # 502 page): a server that answers so will not improve by waiting
            return False
        return exc.status is None or exc.status >= 500 or exc.status == 429
    return isinstance(exc, aiohttp.ClientError | OSError | TimeoutError | ValueError)


class Listener:
    """Runs one client's WebSocket: connect, authenticate, catch up, deliver, repeat."""

    def __init__(self, client: FluxClient, backoff: Backoff, stable_s: float = STABLE_S) -> None:
        self.client = client
        self.backoff = backoff
        self.stable_s = stable_s
        self._authed_at: float | None = None
        self.message_handlers: list[Callable[[dict[str, Any]], Any]] = []
        self.change_handlers: list[Callable[[list[str]], Any]] = []
        self.state: int | None = None
        self.connections = 0
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._connected = asyncio.Event()
        self._stopping = asyncio.Event()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._task: asyncio.Task[Any] | None = None
        self._rejected = 0

    # -- lifecycle ------------------------------------------------------------------------

    async def run(self, *, inbox: str | None, since: int | None) -> None:
        if since is not None:
            self.state = since
        self._stopping.clear()
        self._task = asyncio.current_task()
        attempt = 0
        while not self._stopping.is_set():
            self._authed_at = None
            try:
                await self._session(inbox)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._stopping.is_set():
                    break
                if not _transient(exc):
                    raise
                log.info("websocket to %s lost: %s", self.client.url, exc)
            finally:
                self._connected.clear()
                self._ws = None
            attempt = backoff_step(attempt, self._lasted(), self.stable_s)
            if self._stopping.is_set():
                break
            await wait_at_most(self._stopping, self.backoff.delay(attempt))
            attempt += 1

    def _lasted(self) -> float | None:
        """How long the last socket stayed up after authenticating (None: it never did)."""
        if self._authed_at is None:
            return None
        return asyncio.get_running_loop().time() - self._authed_at

    async def stop(self) -> None:
        self._stopping.set()
        if self._ws is not None:
            await self._ws.close()
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task() and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), self.client.timeout)
            except TimeoutError:
                task.cancel()
            except Exception:  # its outcome belongs to whoever awaits connect_ws
                pass

    async def wait_connected(self, task: asyncio.Task[Any] | None, timeout: float | None) -> None:
        """Return once authenticated; raise the task's error if it ends first."""
        waiter = asyncio.ensure_future(self._connected.wait())
        pending = {waiter} if task is None else {waiter, task}
        try:
            done, _ = await asyncio.wait(
                pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
        if task is not None and task in done:
            task.result()  # raises what ended it
            raise FluxClientError("the websocket stopped before it connected", code="ws_closed")
        if not done:
            raise TimeoutError("websocket did not connect in time")

    @property
    def socket(self) -> aiohttp.ClientWebSocketResponse | None:
        """The open WebSocket, while connected (`FluxClient.send_ws` writes to it)."""
        return self._ws if self._connected.is_set() else None

    # -- one connection ---------------------------------------------------------------------

    def _ws_url(self) -> str:
        url = self.client.url
        if url.startswith("https://"):
            return "wss://" + url[len("https://") :] + "/ws"
        return "ws://" + url.removeprefix("http://") + "/ws"

    async def _session(self, inbox: str | None) -> None:
        token = await self.client._ensure_token()
        http = await self.client._http()
        async with http.ws_connect(
            self._ws_url(), heartbeat=_HEARTBEAT_S, max_msg_size=WS_MAX_FRAME_BYTES
        ) as ws:
            self._ws = ws
            if self._stopping.is_set():
                return
            frame: dict[str, Any] = {"action": "auth", "token": token}
            if self.client.legacy_secret is not None:
                # a legacy token is derived from the address, so the server needs it; and
                # a FLUX server would otherwise answer such a socket in the prototype's
                # dialect (docs/API.md, "Dialects"; a prototype server ignores the field)
                frame["address"] = self.client.address
                frame["dialect"] = "flux"
            if inbox:
                frame["inbox"] = inbox
            await ws.send_json(frame)
            authed = await self._authed(ws, token)
            await self._on_authed(authed)
            async for raw in ws:
                if raw.type == aiohttp.WSMsgType.TEXT:
                    await self._on_frame(json.loads(raw.data))
                elif raw.type == aiohttp.WSMsgType.ERROR:
                    break

    async def _authed(self, ws: aiohttp.ClientWebSocketResponse, token: str) -> dict[str, Any]:
        raw = await ws.receive(timeout=self.client.timeout)
        if raw.type != aiohttp.WSMsgType.TEXT:
            raise FluxClientError("websocket closed before authenticating", code="ws_closed")
        answer = json.loads(raw.data)
        if not isinstance(answer, dict):
            raise bad_answer("the websocket's auth", "action", "the answer is not an object")
        if answer.get("ok") and answer.get("action") == "authed":
            self._rejected = 0
            return answer
        # A token can expire between two connections: get a fresh one and try again. A
        # fresh token refused too means the server will not have this key: give up.
        self.client._forget_token(token)
        self._rejected += 1
        error = FluxClientError.from_answer(401, answer)
        if self._rejected > 1:
            raise error
        raise FluxClientError(error.message, code=error.code)  # status None: retried

    async def _on_authed(self, answer: dict[str, Any]) -> None:
        previous = self.state
        # `messages` (FLUX, and the prototype's server); `queued` (the prototype's client)
        for field in ("messages", "queued"):
            batch = answer.get(field)
            if batch is None:
                continue
            if not isinstance(batch, list) or not all(isinstance(m, dict) for m in batch):
                raise bad_answer("the websocket's authed frame", field, "expected a list of messages", answer)  # fmt: skip
            for msg in batch:
                await self._deliver(msg)
        self._advance(answer.get("state"))
        await self._drain_pending()
        if previous is not None:
            await self._catch_up(previous)
        self.connections += 1
        self._authed_at = asyncio.get_running_loop().time()
        self._connected.set()

    async def _drain_pending(self) -> None:
        # `authed` carries only a first batch of what is pending; the rest would sit as
        # pending (never pushed, not in /changes after our state) until fetched.
        for _ in range(_MAX_DRAIN_ROUNDS):
            batch = await self.client.fetch()
            if not batch:
                return
            for msg in batch:
                await self._deliver(msg)

    async def _catch_up(self, since: int) -> None:
        while True:
            try:
                changes = await self.client.changes(since)
            except FluxClientError as exc:
                if exc.code != CANNOT_CALCULATE_CHANGES or since == 0:
                    raise
                # The server never issued our state (restored from a backup, another
                # server behind the same name) or no longer holds it: resync from the
                # start; messages already delivered are skipped by id.
                log.info("state %s unknown to %s: resyncing", since, self.client.url)
                self.state, since = None, 0
                continue
            for msg in changes.created:
                if msg.get("_status") != "deleted":
                    await self._deliver(msg)
            updated = [m["id"] for m in changes.updated if isinstance(m, dict) and "id" in m]
            if updated:
                await self._call_all(self.change_handlers, updated)
            self._advance(changes.state)
            if not changes.has_more or changes.state <= since:
                return
            since = changes.state

    async def _on_frame(self, frame: Any) -> None:
        if not isinstance(frame, dict):
            return
        action = frame.get("action")
        if action == "message" and isinstance(frame.get("message"), dict):
            await self._deliver(frame["message"])
        elif frame.get("type") == "msg" and isinstance(frame.get("msg"), dict):
            await self._deliver(frame["msg"])  # the prototype's push frame
        elif action == "changed" and isinstance(frame.get("ids"), list):
            await self._call_all(
                self.change_handlers, [i for i in frame["ids"] if isinstance(i, str)]
            )
        elif frame.get("ok") is False:
            log.warning("server error frame: %s", frame.get("error"))
        self._advance(frame.get("state"))

    # -- delivery ---------------------------------------------------------------------------

    def _advance(self, state: Any) -> None:
        if isinstance(state, int) and (self.state is None or state > self.state):
            self.state = state

    async def _deliver(self, msg: dict[str, Any]) -> None:
        key = msg.get("id")
        if not isinstance(key, str) or key in self._seen:
            return
        self._seen[key] = None
        if len(self._seen) > _SEEN_LIMIT:
            self._seen.popitem(last=False)
        await self._call_all(self.message_handlers, msg)

    async def _call_all(self, handlers: list[Callable[[Any], Any]], arg: Any) -> None:
        for handler in handlers:
            try:
                result = handler(arg)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                # A failing handler must not take the connection (and everyone else's
                # delivery) down with it.
                log.exception("message handler %r failed", handler)
