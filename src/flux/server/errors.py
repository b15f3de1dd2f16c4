"""The one table from error codes to the wire, and the middleware that applies it.

Every failure the server reports is a `FluxError` (flux.protocol.errors, plus the server's
own classes below) and leaves as `{"ok": false, "error", "code", "field"?}`: over HTTP with
the status from `TABLE`, over the WebSocket as an error frame (the socket stays open) or,
when authentication fails, as an error frame followed by a close with `ws_close`. Anything
that is not a `FluxError` is a bug: it is logged with its traceback and answered with a
generic 500 that reveals nothing. One exception is no bug: `StoreUnavailable` (the database
cannot be reached) becomes `Unavailable`, a 503 the client may retry, logged as one warning
line (`event=store_unavailable`) without a traceback; `unexpected` is where that happens,
for HTTP and the WebSocket alike.

The table is keyed by `code`, not by class, because the code is what the protocol fixes:
two classes with one code (such as the chain's internal hop failure and `ChainError`) must
map alike. `tests/server/test_errors.py` checks that every class has its row.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..protocol.errors import FluxError, InvalidInput
from ..store.base import StoreFull, StoreUnavailable

log = logging.getLogger("flux.server")


# -- the server's own errors --------------------------------------------------------------


class ServerError(FluxError):
    """A refusal by the server (not a fault of the message format itself)."""

    code = "server_error"


class Unauthorized(ServerError):
    """No credentials, or credentials that are not (or no longer) valid."""

    code = "unauthorized"


class AuthFailed(Unauthorized):
    """A session request whose signature does not verify (wrong key, domain or challenge)."""

    code = "auth_failed"


class BadChallenge(Unauthorized):
    """A challenge that is not this server's, has expired, or was already used."""

    code = "bad_challenge"


class Forbidden(ServerError):
    """Valid credentials for another address than the one asked about."""

    code = "forbidden"


class RegistrationClosed(Forbidden):
    code = "registration_closed"


class BadInvite(Forbidden):
    code = "bad_invite"


class Quarantined(Forbidden):
    """A message that passed through a quarantined server."""

    code = "quarantined"


class RelayDenied(Forbidden):
    """Mail for another domain from a sender this server does not host (no open relay)."""

    code = "relay_denied"


class NotFound(ServerError):
    code = "not_found"


class UnknownRecipient(NotFound):
    """Hosted mode: no recipient of the message is registered here."""

    code = "unknown_recipient"


class MethodNotAllowed(ServerError):
    code = "method_not_allowed"


class Conflict(ServerError):
    """The message id is already stored for a recipient with another body."""

    code = "conflict"


class Ambiguous(Conflict):
    """A bare id names messages of several senders in the caller's own mailbox; the answer
    lists them (`ambiguous: [{id, senders}]`) so the client can repeat with `from`."""

    code = "ambiguous"

    def __init__(self, candidates: Mapping[str, Sequence[str]]) -> None:
        super().__init__("several senders' messages have this id: name one with `from`", field="from")
        self.candidates = {k: list(v) for k, v in candidates.items()}

    def to_dict(self) -> dict[str, Any]:
        found = [{"id": k, "senders": v} for k, v in self.candidates.items()]
        return {**super().to_dict(), "ambiguous": found}


class PayloadTooLarge(ServerError):
    code = "payload_too_large"


class QuotaExceeded(ServerError):
    """A recipient already has the maximum number of pending messages."""

    code = "quota_exceeded"


class SpamRefused(ServerError):
    """Refused by the spam heuristics; `reasons` lists every one that applied."""

    code = "spam"

    def __init__(self, reasons: Sequence[str]) -> None:
        super().__init__("refused as spam: " + "; ".join(reasons))
        self.reasons = list(reasons)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "reasons": self.reasons}


class UnknownAction(InvalidInput):
    """A WebSocket frame whose `action` is not one the server knows."""

    code = "unknown_action"


class CannotCalculateChanges(InvalidInput):
    """`/changes?since=S` with a state this server never issued for the mailbox (above its
    current state, or not a state at all) or one older than the change log still holds:
    the client must drop its copy and fetch everything again (JMAP's rule, RFC 8620 §5.2).
    Answering such a state with an empty page would leave the client waiting forever."""

    code = "cannot_calculate_changes"


class BadRequest(InvalidInput):
    """A request aiohttp itself refused (bad headers, bad upgrade...)."""

    code = "bad_request"


class Unavailable(ServerError):
    """The server is shutting down, or cannot reach its database: try again later."""

    code = "unavailable"


class InternalError(ServerError):
    """A bug. The message is generic on purpose; the traceback is in the log."""

    code = "internal_error"


SERVER_ERROR_CLASSES: tuple[type[FluxError], ...] = (
    ServerError, Unauthorized, AuthFailed, BadChallenge, Forbidden, RegistrationClosed,
    BadInvite, Quarantined, NotFound, UnknownRecipient, MethodNotAllowed, Conflict,
    PayloadTooLarge, QuotaExceeded, SpamRefused, UnknownAction, BadRequest, Unavailable,
    InternalError, CannotCalculateChanges,
)  # fmt: skip


# -- the table ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    status: int  #: HTTP status
    ws_close: int | None = None  #: close code when this error ends a WebSocket (auth phase)


TABLE: dict[str, Row] = {
    # shape of the input (PROTOCOL.md §9.1)
    "flux_error": Row(400, 1008),
    "invalid_input": Row(400, 1008),
    "malformed_json": Row(400, 1008),
    "missing_field": Row(400, 1008),
    "wrong_type": Row(400, 1008),
    "invalid_value": Row(400, 1008),
    "unknown_version": Row(400, 1008),
    "too_large": Row(400, 1008),  # a field over its limit; the whole body over it is 413
    "unknown_action": Row(400, 1008),
    "bad_request": Row(400, 1008),
    "cannot_calculate_changes": Row(400, 1008),  # resync (RFC 8620 §5.2)
    # authenticity (§9.2): the message is refused as sent
    "verification_failed": Row(400, 1008),
    "address_mismatch": Row(400, 1008),
    "bad_signature": Row(400, 1008),
    "stale": Row(400, 1008),
    "future": Row(400, 1008),
    "chain_invalid": Row(400, 1008),
    "invalid_proof": Row(400, 1008),
    "unknown_server_key": Row(400, 1008),
    "bad_request_signature": Row(401, 4401),  # a peer that cannot prove who it is
    # confidentiality (§9.3): a server decrypts only for a password account whose key it
    # holds, for that account's session (GET /mail/message/{id}/plain)
    "decryption_failed": Row(400, 1008),
    "not_a_recipient": Row(400, 1008),
    "bad_key_file": Row(400, 1008),
    # the server's refusals
    "unauthorized": Row(401, 4401),
    "auth_failed": Row(401, 4401),
    "bad_challenge": Row(401, 4401),
    "forbidden": Row(403, 4403),
    "registration_closed": Row(403, 4403),
    "bad_invite": Row(403, 4403),
    "account_disabled": Row(403, 4403),
    "quarantined": Row(403, 4403),
    "relay_denied": Row(403, 4403),
    "not_found": Row(404, 1008),
    "unknown_recipient": Row(404, 1008),
    "method_not_allowed": Row(405, 1008),
    "conflict": Row(409, 1008),
    "ambiguous": Row(409, 1008),
    "payload_too_large": Row(413, 1009),
    "quota_exceeded": Row(429, 1008),
    "spam": Row(451, 1008),
    # accounts (flux.accounts.errors; its other classes reuse the codes above)
    "account_error": Row(400, 1008),
    "login_failed": Row(401, 4401),
    "username_taken": Row(409, 1008),
    "address_taken": Row(409, 1008),
    "rate_limited": Row(429, 1008),
    "server_error": Row(500, 1011),
    "internal_error": Row(500, 1011),
    "unavailable": Row(503, 1001),
}

GENERIC_500 = "internal server error"
DATABASE_DOWN = "the database is unreachable; try again"
STORE_FULL = "the server has no room to store anything now; try again later"


def row_for(exc: FluxError) -> Row:
    """The table's row for `exc`; a code without a row is a bug, answered as a 500."""
    row = TABLE.get(exc.code)
    if row is None:
        log.error("event=unmapped_error code=%s class=%s", exc.code, type(exc).__name__)
        return TABLE["internal_error"]
    return row


def error_body(exc: FluxError) -> dict[str, Any]:
    if exc.code not in TABLE:
        return {"ok": False, **InternalError(GENERIC_500).to_dict()}
    return {"ok": False, **exc.to_dict()}


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def error_response(exc: FluxError) -> web.Response:
    # A refusal that knows when to come back (rate limits, a full queue) says so.
    retry = getattr(exc, "retry_after_s", None)
    return web.Response(
        text=dumps(error_body(exc)), status=row_for(exc).status, content_type="application/json",
        headers={"Retry-After": str(retry)} if isinstance(retry, int) else None,
    )


def from_http_exception(exc: web.HTTPException) -> FluxError:
    """aiohttp's own refusals (no route, wrong method, body too large...) as FluxErrors."""
    if exc.status == 404:
        return NotFound("no such endpoint")
    if exc.status == 405:
        return MethodNotAllowed("method not allowed on this endpoint")
    if exc.status == 413:
        return PayloadTooLarge("request body too large", field="body")
    return BadRequest(exc.reason or "bad request")


def unexpected(exc: BaseException, where: str) -> ServerError:
    """The error the client sees for an exception that is not a FluxError.

    The store being unreachable is an outage, not a bug: one warning line, and 503
    `unavailable` (the request may be retried; nothing of it was acknowledged). Anything
    else is a bug: logged with its traceback, answered with the generic 500."""
    if isinstance(exc, StoreFull):  # a full disk: the same outage, its own line and text
        log.warning("event=store_full where=%s error=%s", where, " ".join(str(exc).split()))
        return Unavailable(STORE_FULL)
    if isinstance(exc, StoreUnavailable):
        log.warning("event=store_unavailable where=%s error=%s", where, " ".join(str(exc).split()))
        return Unavailable(DATABASE_DOWN)
    log.error("event=internal_error where=%s error=%s", where, type(exc).__name__, exc_info=exc)
    return InternalError(GENERIC_500)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_middleware(on_error: Callable[[FluxError], None]) -> Any:
    """The middleware that turns every exception into the JSON error shape.

    `on_error` is told of each refusal (for metrics). 2xx/3xx HTTPExceptions pass through.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except FluxError as exc:
            error: FluxError = exc
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            error = from_http_exception(exc)
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as exc:
            error = unexpected(exc, f"{request.method} {request.path}")
        on_error(error)
        return error_response(error)

    return middleware
