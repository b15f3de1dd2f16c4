"""The WebSocket endpoint /ws (docs/API.md, "WebSocket").

The first frame must authenticate within `ws_auth_timeout_s`; a refusal is an error frame
and a close (4401/4403, 1008 for a malformed auth frame). It names a key session (`token`,
or the prototype's legacy token) or a password account's session (`session`, the
X-Flux-Session of /account/login); either way the socket then acts for one address, the
same for both, except that an account's socket does not `send` (below).

A socket lives only as long as its session. Its expiry is known from the auth and
checked before every request frame (from memory: no store read on the send path); the
store is asked again every `session_check_s` (the heartbeat period by default), and at
once when this process revokes a session of its address (logout, a password change: the
watchers of Authenticator and Accounts); a session found revoked, expired or (an account)
disabled gets an error frame (`action: "auth"`, 401 `unauthorized`) and a close with 4401.
The periodic check is what finds revocations made elsewhere: another process sharing the
database, or the operator's `flux admin accounts disable`.

`send` on an account's socket is refused (`unknown_action`, naming POST /mail/send): the
frame carries an envelope signed by the client, and an account's client holds no key;
composing and signing for it is /mail/send's, which a socket would only duplicate.

After `authed`, every frame is a request answered by exactly one frame echoing its `rid`:
`{"ok": true, "action", ...}` or the error shape of errors.py. A bad frame gets an error
frame and the socket stays open. All outgoing frames (answers and pushes) go through the
socket's one bounded queue, so they leave in order and a client that stops reading is
closed (1008) rather than buffered; the one exception is the frame ending a dead session,
written directly just before the close that drops the queue.

Liveness: aiohttp pings every `ws_heartbeat_s` and closes a socket that does not answer
within half of that. A frame over `ws_max_msg_bytes` closes the socket with 1009. No frame
this server sends is over WS_MAX_FRAME_BYTES (the client's limit too): `authed` carries
only the pending mail that fits.

Dialects: each socket speaks FLUX's frames or the prototype's, chosen by its auth frame
(flux.compat.ws explains how); the prototype's request forms are rewritten to FLUX's before
an action sees them, and every frame sent on a prototype socket is rendered in its
dialect, so an action and the hub never deal with the prototype's shapes. Every action
refuses, by name, a frame field it does not take (`FIELDS`).

Delivered means acknowledged: mail in `authed` or a pushed `message` stays pending until the
client's pong to the ping written after it (push.py explains why a pong is the ack); this
module handles pings and pongs itself (`autoping=False`) to see those pongs, and marks what
they acknowledge delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from ..accounts.errors import NoSession
from ..compat import ws as compat
from ..protocol.errors import FluxError, InvalidValue, WrongType
from ..protocol.limits import WS_MAX_FRAME_BYTES
from ..store.base import ListQuery, MessageStatus, Store, StoreUnavailable
from . import wire
from .auth import Authenticator, Principal
from .config import ServerConfig
from .errors import (
    Forbidden,
    Unauthorized,
    UnknownAction,
    dumps,
    error_body,
    row_for,
    unexpected,
)
from .fair import request_client
from .mailbox import Mailbox, parse_move, parse_refs, parse_tag, unread_wire, updated_wire
from .metrics import Metrics
from .push import Connection, Hub, delivered_wire
from .submission import Submitter

if TYPE_CHECKING:
    from ..accounts import Accounts

log = logging.getLogger("flux.server")

Action = Callable[[Principal, dict[str, Any], Connection], Awaitable[dict[str, Any]]]
#: every field a frame may carry, by action: any other is refused by name (a field that
#: would be ignored is a request answered `ok` while doing nothing)
COMMON = frozenset({"action", "rid", "address"})
FIELDS: dict[str, frozenset[str]] = {
    "auth": COMMON | {"token", "session", "inbox", "dialect"},
    "send": COMMON | {"message", "domains"},
    "read": COMMON | {"ids", "id", "from"},
    "unread": COMMON | {"ids", "id", "from"},
    "delete": COMMON | {"ids", "id", "from"},
    "tag": COMMON | {"id", "from", "add", "remove"},
    "move": COMMON | {"id", "from", "inbox"},
    "ping": COMMON,
}
#: actions FLUX added after the prototype: a prototype-dialect socket is answered
#: `unknown_action` for them, as the prototype's server answered (its dialect stays as it was)
FLUX_ONLY = frozenset({"unread"})
MAX_RID_CHARS = 128
AUTHED_BATCH = 100  #: pending messages handed out with `authed` (the rest: /fetch, /changes)
#: the `authed` frame's messages stop before this many bytes (the rest: /fetch); the room
#: left under WS_MAX_FRAME_BYTES is for the frame's other fields
AUTHED_MAX_BYTES = WS_MAX_FRAME_BYTES - 4096


def authed_batch(messages: list[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """The longest prefix of `messages` (wire forms) that fits in `budget` bytes."""
    batch: list[dict[str, Any]] = []
    for message in messages:
        size = len(dumps(message).encode()) + 1  # and its comma
        if size > budget:
            break
        budget -= size
        batch.append(message)
    return batch


@dataclass(frozen=True, slots=True)
class SocketOwner:
    """Who a socket acts for: `principal` (its address), and `session`, the password
    account's X-Flux-Session when the socket authenticated with one (None: a key session
    or a legacy token, whose check is the principal's token hash)."""

    principal: Principal
    session: str | None = None

    @property
    def address(self) -> str:
        return self.principal.address

    def expired(self, now_ms: int) -> bool:
        """Whether the session's known end has come (a legacy token has none)."""
        return self.principal.expires_at is not None and now_ms >= self.principal.expires_at


def _aborter(request: web.Request) -> Callable[[], None]:
    """Reset the socket under `request` (for a peer that will not read its close frame)."""
    transport = request.transport

    def abort() -> None:
        if transport is not None:
            transport.abort()

    return abort


def _rid(frame: Mapping[str, Any]) -> dict[str, Any]:
    rid = frame.get("rid")
    ok = isinstance(rid, str | int) and not isinstance(rid, bool) and len(str(rid)) <= MAX_RID_CHARS
    return {"rid": rid} if ok else {}


def error_frame(exc: FluxError, action: Any, frame: Mapping[str, Any] | None = None) -> dict:
    name = action if isinstance(action, str) and len(action) <= 32 else None
    return {**error_body(exc), "action": name, **_rid(frame or {})}


class WebSocketEndpoint:
    def __init__(
        self,
        *,
        config: ServerConfig,
        auth: Authenticator,
        store: Store,
        hub: Hub,
        mailbox: Mailbox,
        submitter: Submitter,
        metrics: Metrics,
        accounts: Accounts | None = None,
        session_check_s: float | None = None,
    ) -> None:
        """`accounts`: the account service whose sessions a socket may present (None: no
        accounts, `session` is refused). `session_check_s`: how often an open socket's
        session is checked again (default: the heartbeat period)."""
        self.config = config
        self.auth = auth
        self.store = store
        self.hub = hub
        self.mailbox = mailbox
        self.submitter = submitter
        self.metrics = metrics
        self.accounts = accounts
        self.session_check_s = session_check_s or config.ws_heartbeat_s
        #: each open socket's owner, to check its session when its address's is revoked
        self._owners: dict[Connection, SocketOwner] = {}
        self._checks: set[asyncio.Task[bool]] = set()  # checks started by a revocation
        auth.watch_revocations(self._revoked)
        if accounts is not None:
            accounts.watch_revocations(self._revoked)
        self.actions: dict[str, Action] = {
            "send": self._send,
            "read": self._read,
            "unread": self._unread,
            "delete": self._delete,
            "tag": self._tag,
            "move": self._move,
            "ping": self._ping,
        }

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/ws", self.handle)]

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(
            heartbeat=self.config.ws_heartbeat_s, max_msg_size=self.config.ws_max_msg_bytes,
            autoping=False,  # pongs are acks (push.py); pings are answered in _next_frame
            # no permessage-deflate: a frame's turns (connections.py) are counted on the wire
            # bytes, and a 256 KiB frame deflated to 1 KiB would cost 1 turn, not 16
            compress=False,
        )  # fmt: skip
        await ws.prepare(request)
        owner, inbox, dialect = await self._authenticate(ws)
        if owner is None:
            return ws
        outbound = compat.to_prototype if dialect == compat.PROTOTYPE else None
        conn = self.hub.connect(
            ws, owner.address, abort=_aborter(request), client=request_client(request),
            outbound=outbound, dialect=dialect,
        )  # fmt: skip
        self._owners[conn] = owner
        watcher: asyncio.Task[None] | None = None
        try:
            if not await self._send_authed(ws, owner.address, conn, inbox):
                return ws
            conn.start()
            watcher = asyncio.create_task(self._watch_session(conn, owner))
            log.info("event=ws_open address=%s account=%s", owner.address, owner.session is not None)  # fmt: skip
            await self._serve(ws, owner, conn)
        finally:
            self._owners.pop(conn, None)
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            self.hub.disconnect(conn)
            await conn.finish()
            log.info("event=ws_closed address=%s code=%s", owner.address, ws.close_code)
        return ws

    # -- authentication ---------------------------------------------------------------------

    async def _authenticate(
        self, ws: web.WebSocketResponse
    ) -> tuple[SocketOwner | None, str | None, str]:
        """(owner, inbox, dialect) of an accepted auth frame; owner None after a refusal
        (the socket is then closed). The dialect: compat/ws.py."""
        refused: tuple[None, None, str] = (None, None, compat.FLUX)
        try:
            async with asyncio.timeout(self.config.ws_auth_timeout_s):
                msg = await self._next_frame(ws)
        except TimeoutError:
            await ws.close(code=1008, message=b"no auth frame")
            return refused
        if msg.type != WSMsgType.TEXT:
            if msg.type in (WSMsgType.BINARY,):
                await self._refuse(ws, WrongType("frames are JSON text"), None, None)
            return refused
        frame: Mapping[str, Any] = {}
        try:
            frame = wire.json_object(msg.data, "frame")
            if frame.get("action") != "auth":
                raise InvalidValue("the first frame must be {action: auth, token} or {action: auth, session}", field="action")  # fmt: skip
            wire.only(frame, FIELDS["auth"], "frame")
            claimed = frame.get("address")
            if claimed is not None:
                wire.check_address(claimed)
            inbox = frame.get("inbox")
            if inbox is not None:
                wire.check_inbox(inbox)
            owner = await self._owner(frame, claimed)
            if claimed is not None and claimed != owner.address:
                raise Forbidden("this token is not for that address", field="address")
            legacy = owner.principal.legacy
            return owner, inbox, compat.socket_dialect(frame, legacy=legacy)
        except FluxError as exc:
            await self._refuse(ws, exc, frame.get("action", "auth"), frame)
            return refused
        except StoreUnavailable as exc:  # 503-style refusal; the client retries
            await self._refuse(ws, unexpected(exc, "ws auth"), "auth", frame)
            return refused

    async def _owner(self, frame: Mapping[str, Any], claimed: str | None) -> SocketOwner:
        """Who the auth frame's `token` (a key session, or a legacy token for `claimed`) or
        `session` (a password account's) is. Raises InvalidValue (both, or `session` on a
        server without accounts), MissingField naming `token` (neither), Unauthorized."""
        if "session" not in frame:
            return SocketOwner(await self.auth.principal(wire.string(frame, "token", max_len=256), claimed))  # fmt: skip
        if "token" in frame:
            raise InvalidValue("give token (a key session) or session (a password account's), not both", field="session")  # fmt: skip
        session = wire.string(frame, "session", max_len=256)
        if self.accounts is None:
            raise InvalidValue("this server has no password accounts", field="session")
        active = await self.accounts.authenticate(session)
        principal = Principal(active.account.address, active.session.token_hash,
                              expires_at=active.session.expires_at)  # fmt: skip
        return SocketOwner(principal, session)

    async def _revocation(self, owner: SocketOwner) -> FluxError | None:
        """Why `owner`'s session may no longer be used (revoked, expired, its account
        disabled), or None while it may. A legacy token is the operator's secret: it has
        nothing to revoke. Raises StoreUnavailable."""
        if owner.session is not None and self.accounts is not None:
            try:
                await self.accounts.authenticate(owner.session)
            except NoSession as exc:
                return exc
            return None
        digest = owner.principal.token_hash
        if owner.principal.legacy or digest is None:
            return None
        if await self.store.session(digest, self.auth.clock()) is None:
            return Unauthorized("the session was revoked or has expired: log in again", field="token")  # fmt: skip
        return None

    async def _still_owned(self, conn: Connection, owner: SocketOwner) -> bool:
        """Check `owner`'s session (module docstring); if it is gone, send the error frame
        and close the socket with its code (4401), and answer False. A store that cannot
        answer leaves the socket open: the next check decides."""
        try:
            gone = await self._revocation(owner)
        except StoreUnavailable as exc:
            log.warning("event=ws_session_not_checked address=%s reason=%s", owner.address, exc)
            return True
        if gone is None:
            return not conn.closed.is_set()
        if conn.closed.is_set():
            return False
        self.metrics.refused(gone.code)
        log.info("event=ws_session_ended address=%s code=%s", owner.address, gone.code)
        frame = error_frame(gone, "auth")
        with contextlib.suppress(ConnectionError, RuntimeError):
            # written directly (the queue is dropped by the close below); frames are whole
            # writes on this uncompressed socket, so it cannot split one the writer sends
            await conn.ws.send_str(dumps(conn.render(frame)))
        conn.close(row_for(gone).ws_close or 1008, gone.code.encode())
        return False

    async def _watch_session(self, conn: Connection, owner: SocketOwner) -> None:
        """Check the socket's session every `session_check_s` until it closes."""
        while not conn.closed.is_set():
            await asyncio.sleep(self.session_check_s)
            if not await self._still_owned(conn, owner):
                return

    def _revoked(self, address: str) -> None:
        """A session of `address` was revoked in this process: check its sockets now."""
        for conn in self.hub.sockets(address):
            owner = self._owners.get(conn)
            if owner is not None:
                task = asyncio.create_task(self._still_owned(conn, owner))
                self._checks.add(task)
                task.add_done_callback(self._checks.discard)

    async def _refuse(
        self, ws: web.WebSocketResponse, exc: FluxError, action: Any, frame: Any
    ) -> None:
        self.metrics.refused(exc.code)
        await ws.send_str(dumps(error_frame(exc, action, frame)))
        await ws.close(code=row_for(exc).ws_close or 1008, message=exc.code.encode())

    async def _send_authed(
        self, ws: web.WebSocketResponse, address: str, conn: Connection, inbox: str | None
    ) -> bool:
        """Write the `authed` frame straight to the socket, then ping for its ack; False if
        the write failed. Its `state` is the mailbox's before the ack marks the batch
        delivered, so /changes from it lists those messages again as updated: harmless,
        and no frame is added to the protocol for it.

        The socket is already registered (push.py explains the order) and its writer not
        started yet, so this is the only writer and pushes wait until it is done. Pending
        mail is only *read* here: it becomes delivered when the client's pong acknowledges
        the frame, so a client that resets right after authenticating (or one that would
        refuse the frame as too large) loses nothing: it gets the mail next time, or through
        /fetch. A message already pushed onto this socket before `authed` is left to that
        push. The batch is cut by bytes so the frame stays under WS_MAX_FRAME_BYTES.
        `inbox` (the auth frame's): only that folder's pending mail is in the batch."""
        page = await self.store.list(
            address, ListQuery(inbox=inbox, status=MessageStatus.PENDING, limit=AUTHED_BATCH)
        )
        state = await self.store.state(address)
        oldest_first = [r for r in reversed(page.items) if not conn.owes(r.ref)]
        # a prototype socket's `authed` carries the batch twice (`messages` and `queued`,
        # compat/ws.py): half the room each, so the frame still fits WS_MAX_FRAME_BYTES
        twice = conn.dialect == compat.PROTOTYPE
        shown = [delivered_wire(r) for r in oldest_first]
        if self.mailbox.names is not None:  # named as every listing (names.py)
            shown = await self.mailbox.names.annotate(shown)
        batch = authed_batch(shown, AUTHED_MAX_BYTES // 2 if twice else AUTHED_MAX_BYTES)
        rows = oldest_first[: len(batch)]
        frame = {"ok": True, "action": "authed", "address": address,
                 "messages": batch, "state": state}  # fmt: skip
        try:
            await ws.send_str(dumps(conn.render(frame)))
            await conn.hand_over(r.ref for r in rows)
        except (ConnectionError, RuntimeError):
            return False
        return True

    async def _next_frame(self, ws: web.WebSocketResponse) -> Any:
        """The next message that is not a ping (answered here, as autoping would)."""
        while True:
            msg = await ws.receive()
            if msg.type != WSMsgType.PING:
                return msg
            with contextlib.suppress(ConnectionError):  # the read that follows says so
                await ws.pong(msg.data)

    async def _acked(self, address: str, conn: Connection, payload: bytes) -> None:
        """Mark delivered what the pong with `payload` acknowledges. If the store is away,
        the mail stays pending and is handed out again: never lost, at worst repeated."""
        refs = conn.acked(payload)
        if not refs:
            return
        try:
            await self.store.mark(address, refs, MessageStatus.DELIVERED)
        except StoreUnavailable as exc:
            log.warning("event=ws_ack_not_stored address=%s reason=%s", address, exc)

    # -- requests ---------------------------------------------------------------------------

    async def _serve(self, ws: web.WebSocketResponse, owner: SocketOwner, conn: Connection) -> None:
        principal = owner.principal
        async for msg in ws:
            if conn.closed.is_set():
                break
            if msg.type == WSMsgType.TEXT:
                # no request on an expired session (known from memory; revocations are
                # found by the watchers and the periodic check, not a store read per frame)
                if owner.expired(self.auth.clock()) and not await self._still_owned(conn, owner):
                    break
                conn.send(await self._answer(owner, msg.data, conn))  # in its dialect
            elif msg.type == WSMsgType.BINARY:
                conn.send(error_frame(WrongType("frames are JSON text", field="frame"), None))
            elif msg.type == WSMsgType.PING:
                with contextlib.suppress(ConnectionError):
                    await ws.pong(msg.data)
            elif msg.type == WSMsgType.PONG:
                await self._acked(principal.address, conn, msg.data)
            else:  # ERROR (e.g. a frame over the size limit): aiohttp closes the socket
                break

    async def _answer(self, owner: SocketOwner, data: str, conn: Connection) -> dict[str, Any]:
        principal = owner.principal
        frame: dict[str, Any] = {}
        action: Any = None
        try:
            frame = wire.json_object(data, "frame")
            action = wire.string(frame, "action", max_len=32)
            handler = self.actions.get(action)
            if conn.dialect == compat.PROTOTYPE and action in FLUX_ONLY:
                handler = None  # the prototype's socket keeps the prototype's actions
            if handler is None:
                raise UnknownAction(f"unknown action {action!r}", field="action")
            if action == "send" and owner.session is not None:
                raise UnknownAction("an account's socket does not send: POST /mail/send composes and signs with the account's key", field="action")  # fmt: skip
            request = compat.request_frame(frame)  # the prototype's forms, as FLUX's
            wire.only(request, FIELDS[action], "frame")
            claimed = frame.get("address", principal.address)
            if claimed != principal.address:
                raise Forbidden("this socket is authenticated for another address", field="address")  # fmt: skip
            answer = await handler(principal, request, conn)
            done = {"ok": True, "action": action, **_rid(frame), **answer}
            if conn.dialect == compat.PROTOTYPE:
                return dict(compat.prototype_answer(frame, done))
            return done
        except FluxError as exc:
            error = exc
        except Exception as exc:
            error = unexpected(exc, f"ws {action}")
        self.metrics.refused(error.code)
        return error_frame(error, action, frame)

    async def _send(self, p: Principal, frame: dict[str, Any], conn: Connection) -> dict[str, Any]:
        message = wire.field(frame, "message")
        if "domains" in frame:  # recipients at other domains, as in POST /send
            message = {"message": message, "domains": frame["domains"]}
        return (await self.submitter.submit(message, client=conn.client)).to_wire()

    async def _read(self, p: Principal, frame: dict[str, Any], conn: Connection) -> dict[str, Any]:
        rows = await self.mailbox.mark(p.address, parse_refs(frame), MessageStatus.READ, conn)
        return updated_wire(rows)

    async def _unread(self, p: Principal, frame: dict[str, Any], conn: Connection) -> dict[str, Any]:  # fmt: skip
        """As POST /unread: read → delivered; the socket's other siblings hear `changed`."""
        return unread_wire(await self.mailbox.unread(p.address, parse_refs(frame), conn))

    async def _delete(self, p: Principal, frame: dict[str, Any], conn: Connection) -> dict[str, Any]:  # fmt: skip
        rows = await self.mailbox.mark(p.address, parse_refs(frame), MessageStatus.DELETED, conn)
        return updated_wire(rows)

    async def _tag(self, p: Principal, frame: dict[str, Any], conn: Connection) -> dict[str, Any]:
        return {"tags": await self.mailbox.tag(p.address, parse_tag(frame), conn)}

    async def _move(self, p: Principal, frame: dict[str, Any], conn: Connection) -> dict[str, Any]:
        ref, inbox = parse_move(frame)
        return {"inbox": await self.mailbox.move(p.address, ref, inbox, conn)}

    async def _ping(self, p: Principal, frame: dict[str, Any], conn: Connection) -> dict[str, Any]:
        return {"action": "pong"}
