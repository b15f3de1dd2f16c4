"""The prototype's HTTP dialect, translated at the edge (docs/API.md, "Dialects").

One middleware (`middleware`) sits between the error mapping and the routes. The routes
only ever see FLUX requests and only ever answer FLUX's shapes; this module rewrites the
few prototype forms on the way in and the few conflicting shapes on the way out.

Requests (any caller: these forms are unambiguous, so no dialect is needed to read them):

| route                  | the prototype sends              | the route gets               |
|------------------------|----------------------------------|------------------------------|
| `POST /tag`, `/mail/tag` | `{id, tag, action: add|remove}` | `{id, add: [tag]}` / `{id, remove: [tag]}` |
| `POST /mail/send`      | `reply_to`                       | `re`                         |
| `POST /account/register` | `display_name: null`           | (dropped; a non-null one is refused naming `display_name`: FLUX accounts have no display name) |

Answers. Fields the prototype reads that do not contradict FLUX's answer are simply part
of FLUX's answers (`count` on /fetch, /inbox, /peek; `online` on /status; `session`,
`flux_address` on the account routes; `delivery`, `cc`, `bcc` on /mail/send), and the
few this middleware adds to every answer (`ALWAYS`: `read`, `deleted`, `moved`, the
prototype's /integrity/verify fields). `/send` and `/health` answer FLUX's shapes only
(docs/API.md, "Dialects", says what the prototype's code misses there).
Shapes that
do conflict are chosen per request (`request_dialect`):

- an `X-Flux-Dialect: flux|prototype` header decides;
- else, on a server with `--legacy-tokens`, a request presenting a legacy token (64 hex
  digits) in `X-Flux-Token` or `?token=`, as the prototype's client does, is answered in
  the prototype's dialect; anything else (a session token, `Authorization: Bearer`, no
  token) in FLUX's.

In the prototype's dialect: `GET /inboxes/{addr}` answers `inboxes` as a list of names
(`inbox` first) instead of `{name: {status: count}}`, and `POST /tag` adds `tag`, `action`
and `applied` to `tags`.

`POST /ack {id}` (the prototype client's `ack()`) is refused by name: it carries no
credential, so honouring it would let anyone mark anyone's mail; FLUX's delivery
acknowledgement is `/fetch` itself (it marks what it returns delivered) and, on a socket,
the pong (server/push.py). Its prototype server had no such route either.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from ..protocol.errors import FluxError, InvalidValue
from ..server import wire
from ..server.errors import BadRequest
from .ws import FLUX, PROTOTYPE, tag_change, tag_name

__all__ = ["DIALECT_HEADER", "middleware", "request_dialect", "routes"]

DIALECT_HEADER = "X-Flux-Dialect"
LEGACY_TOKEN_RE = re.compile(r"[0-9a-f]{64}\Z")  #: hex SHA-256 (protocol/tokens.py)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Body = dict[str, Any]


def request_dialect(request: web.Request, *, legacy_tokens: bool) -> str:
    """FLUX or PROTOTYPE for this request (module docstring). Raises InvalidValue naming
    the header for a value that is neither."""
    given = request.headers.getall(DIALECT_HEADER, [])
    if given:
        if len(given) > 1 or given[0] not in (FLUX, PROTOTYPE):
            raise InvalidValue(f'{DIALECT_HEADER} must be "flux" or "prototype"',
                               field=DIALECT_HEADER)  # fmt: skip
        return given[0]
    if not legacy_tokens or "Authorization" in request.headers:
        return FLUX
    token = request.headers.get("X-Flux-Token") or request.query.get("token") or ""
    return PROTOTYPE if LEGACY_TOKEN_RE.match(token) else FLUX


# -- requests --------------------------------------------------------------------------------


def _tag(body: Body) -> Body:
    return tag_change(body, "action")


def _mail_send(body: Body) -> Body:
    if "reply_to" not in body:
        return body
    if "re" in body and body["re"] != body["reply_to"]:
        raise InvalidValue("give re or reply_to, not both", field="reply_to")
    rest = {k: v for k, v in body.items() if k != "reply_to"}
    return {**rest, "re": body["reply_to"]}


def _register(body: Body) -> Body:
    if "display_name" not in body:
        return body
    if body["display_name"] not in (None, ""):
        raise InvalidValue("FLUX accounts have no display name: leave display_name out",
                           field="display_name")  # fmt: skip
    return {k: v for k, v in body.items() if k != "display_name"}


#: (method, route) -> the rewrite of its body
REQUESTS: dict[tuple[str, str], Callable[[Body], Body]] = {
    ("POST", "/tag"): _tag,
    ("POST", "/mail/tag"): _tag,
    ("POST", "/mail/send"): _mail_send,
    ("POST", "/account/register"): _register,
}


async def _rewrite_body(request: web.Request, rewrite: Callable[[Body], Body]) -> Body:
    """Hand the route the rewritten body (wire.read_object reads it); return the body as
    sent. A body that is not a JSON object is left to the route, which refuses it with its
    own error; a body over the size limit is refused here as it would be there (413)."""
    data = await request.read()
    try:
        body = wire.json_object(data)
    except FluxError:
        return {}
    request[wire.EDGE_BODY] = rewrite(body)
    return body


async def _read_body(request: web.Request) -> Body:
    """The body as sent (the route reads the same bytes again); {} if it is no object."""
    try:
        return wire.json_object(await request.read())
    except FluxError:
        return {}


# -- answers ---------------------------------------------------------------------------------


def _inboxes(request: Mapping[str, Any], answer: Body) -> Body:
    names = list(answer.get("inboxes") or {})
    ordered = ["inbox", *sorted(n for n in names if n != "inbox")]
    return {**answer, "inboxes": ordered}


def _tag_answer(request: Mapping[str, Any], answer: Body) -> Body:
    if "tag" not in request:
        return answer
    return {**answer, "tag": tag_name(request["tag"]), "action": request.get("action", "add"),
            "applied": True}  # fmt: skip


ANSWERS: dict[tuple[str, str], Callable[[Mapping[str, Any], Body], Body]] = {
    ("GET", "/inboxes/{address}"): _inboxes,
    ("POST", "/tag"): _tag_answer,
}


def _flag(name: str) -> Callable[[Mapping[str, Any], Body], Body]:
    """The prototype's yes/no for a mark (`read`, `deleted`): did it change anything."""

    def add(request: Mapping[str, Any], answer: Body) -> Body:
        return {**answer, name: bool(answer.get("updated"))}

    return add


def _moved(request: Mapping[str, Any], answer: Body) -> Body:
    return {**answer, "moved": True}  # an id not in the mailbox is a 404, not moved: false


def _verified(request: Mapping[str, Any], answer: Body) -> Body:
    """/integrity/verify: the prototype's four fields beside FLUX's report."""
    signature, chain = answer.get("signature") or {}, answer.get("chain") or {}
    hops = chain.get("hops") or []
    failed = next((h.get("server") for h in hops if h.get("status") == "failed"), None)
    return {**answer, "signature_valid": signature.get("valid") is True,
            "integrity_chain_valid": chain.get("verdict") != "fail",
            "offending_server": failed, "hop_count": len(hops)}  # fmt: skip


#: fields the prototype's answers have and FLUX's lack, added for every caller (they
#: contradict nothing in FLUX's answer, and the prototype's raw calls to these routes carry
#: no legacy token to tell their dialect by)
ALWAYS: dict[tuple[str, str], Callable[[Mapping[str, Any], Body], Body]] = {
    ("POST", "/read"): _flag("read"),
    ("POST", "/mail/read"): _flag("read"),
    ("POST", "/delete"): _flag("deleted"),
    ("POST", "/mail/delete"): _flag("deleted"),
    ("POST", "/move"): _moved,
    ("POST", "/mail/move"): _moved,
    ("POST", "/mail/tag"): _tag_answer,
    ("POST", "/integrity/verify"): _verified,
}
#: these need the request's body to answer (REQUESTS rewrite theirs anyway)
NEEDS_BODY = {("POST", "/mail/tag"), ("POST", "/integrity/verify")}


def _route(request: web.Request) -> tuple[str, str]:
    info = request.match_info.route.resource
    return request.method, (info.canonical if info is not None else request.path)


def middleware(*, legacy_tokens: bool) -> Any:
    """The edge translation (module docstring); install it inside the error middleware."""

    @web.middleware
    async def compat(request: web.Request, handler: Handler) -> web.StreamResponse:
        key = _route(request)
        if DIALECT_HEADER in request.headers:  # checked wherever it is sent, used where it matters
            request_dialect(request, legacy_tokens=legacy_tokens)
        original: Body = {}
        if key in REQUESTS:
            original = await _rewrite_body(request, REQUESTS[key])
        elif key in NEEDS_BODY:
            original = await _read_body(request)
        translate = ANSWERS.get(key)
        if translate is not None and request_dialect(request, legacy_tokens=legacy_tokens) != PROTOTYPE:  # fmt: skip
            translate = None
        always = ALWAYS.get(key)
        response = await handler(request)
        if translate is None and always is None:
            return response
        if not isinstance(response, web.Response) or response.status != 200:
            return response
        answer = wire.json_object(response.text or "{}", "answer")
        for step in (always, translate):
            if step is not None:
                answer = step(original, answer)
        return wire.ok(**{k: v for k, v in answer.items() if k != "ok"})

    return compat


# -- /ack ------------------------------------------------------------------------------------


async def ack(request: web.Request) -> web.Response:
    """`POST /ack`: refused by name (module docstring). Raises BadRequest."""
    raise BadRequest(
        "POST /ack is not part of FLUX: /fetch marks the mail it returns delivered, a "
        "WebSocket acknowledges by its pong, and POST /delete {address, id} with your "
        "token removes a message",
        field="ack",
    )


def routes() -> list[web.RouteDef]:
    return [web.post("/ack", ack)]
