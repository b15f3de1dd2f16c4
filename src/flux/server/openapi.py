"""The OpenAPI 3.1 description of every HTTP endpoint (served at /openapi.json), and /docs.

Hand-written, so it says what the server promises rather than what a framework guessed;
tests/server/test_openapi.py checks that every route is described and runs schemathesis
against it. /docs renders it with Swagger UI from files this server ships (static/docs.py).
"""

from __future__ import annotations

from typing import Any

ADDRESS = {"type": "string", "pattern": "^fx1[0-9a-f]{40}$", "description": "an fx1 address"}
MSG_ID = {"type": "string", "pattern": "^[0-9a-f]{32}$", "description": "a message id"}
#: Where a request names a message of the caller's own mailbox (docs/API.md, "Short ids").
ID_OR_PREFIX = {
    "type": "string",
    "pattern": "^[0-9a-f]{8,32}$",
    "description": "a message id, or a short id: a prefix of 8+ of its hex digits, resolved "
    "in the caller's own mailbox only (several matches: 409 `ambiguous` with `candidates`)",
}
B64 = {"type": "string", "description": "padded base64url"}
TAG = {"type": "string", "minLength": 1, "maxLength": 64}
INBOX = {"type": "string", "minLength": 1, "maxLength": 64}
STATUS = {"type": "string", "enum": ["pending", "delivered", "read", "deleted"]}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: list[str], extra: bool = True, **props: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props, "required": required}
    if not extra:
        schema["additionalProperties"] = False
    return schema


def ok_obj(**props: Any) -> dict[str, Any]:
    return obj(["ok", *props], ok={"const": True}, **props)


ENVELOPE = obj(
    ["v", "id", "from", "to", "t", "content", "sig", "pub"],
    v={"type": "string", "const": "1.0"},
    id=MSG_ID,
    **{"from": ADDRESS},
    to=ADDRESS,
    t={"type": "integer", "description": "unix ms"},
    content={"type": "string", "maxLength": 65536},
    sig=B64,
    pub=B64,
    subject={"type": "string"},
    re=MSG_ID,
    cc={"type": "array", "items": ADDRESS, "maxItems": 100},
    bcc={"type": "array", "items": ADDRESS, "maxItems": 100},
    tags={"type": "array", "items": TAG, "maxItems": 32},
    expires={"type": "integer", "minimum": 0},
    route={"type": "array", "items": {"type": "object"}},
    integrity_chain={"type": "array", "items": {"type": "object"}},
    encrypted={"const": True},
    content_enc=B64,
    enc_recipients={"type": "object", "additionalProperties": B64},
)
MESSAGE = {
    "allOf": [
        ENVELOPE,
        obj(["_status", "_inbox", "_tags"], _status=STATUS, _inbox=INBOX,
            _tags={"type": "array", "items": TAG},
            _from_name={"type": "string", "description": "the sender's name@domain, when "
                        "this server binds the sender's address to one of its names"}),
    ]
}  # fmt: skip
ERROR = obj(
    ["ok", "error", "code"],
    ok={"const": False},
    error={"type": "string", "description": "a human sentence"},
    code={"type": "string", "description": "the stable code (see flux/server/errors.py)"},
    field={"type": "string", "description": "the field to blame, when there is one"},
    reasons={"type": "array", "items": {"type": "string"}, "description": "spam only"},
    ambiguous={
        "type": "array",
        "description": "409 `ambiguous` only: each id the request named without `from` and "
        "the senders whose messages in this mailbox have it",
        "items": obj(
            ["id", "senders"], id=MSG_ID, senders={"type": "array", "items": ADDRESS, "minItems": 1}
        ),
    },
    prefix={"type": "string", "description": "409 `ambiguous` for a short id: the prefix"},
    count={"type": "integer", "description": "409 `ambiguous` for a short id: every match"},
    candidates={
        "type": "array",
        "maxItems": 10,
        "description": "409 `ambiguous` for a short id: the first matches by (id, from)",
        "items": obj(["id", "from"], id=MSG_ID, subject={"type": "string"}, **{"from": ADDRESS}),
    },
)
#: 409 `ambiguous` (PROTOCOL.md §4.5): an Error that lists the candidates
AMBIGUOUS_ERROR = {
    "allOf": [
        ref("Error"),
        obj(
            ["code", "field", "ambiguous"],
            code={"const": "ambiguous"},
            field={"enum": ["from", "id", "ids"]},
        ),
    ]
}
MESSAGES = {"type": "array", "items": ref("Message")}
#: one recipient's delivery state (docs/API.md, "Sent mail"; PROTOCOL.md §10.3)
DELIVERY_STATE = {
    "type": "object", "required": ["state", "at"],
    "properties": {
        "state": {"enum": ["stored", "queued", "delivered", "bounced"]},
        "at": {"type": "integer", "description": "unix ms of this state"},
        "attempts": {"type": "integer", "description": "queued: failed attempts so far"},
        "next_retry_at": {"type": "integer", "description": "queued: unix ms of the next try"},
        "error": {"type": ["string", "null"], "description": "queued: the last failure, in words"},
        "reason": {"type": "string", "description": "bounced: why, in words"},
    },
}  # fmt: skip
SENT_MESSAGE = {
    "type": "object", "required": ["id", "from", "_sent_at", "_delivery"],
    "description": "the envelope as sent, plus when and each recipient's delivery state",
    "properties": {
        "_sent_at": {"type": "integer", "description": "unix ms"},
        "_delivery": {"type": "object", "additionalProperties": DELIVERY_STATE},
    },
}  # fmt: skip
#: a conversation: received messages as listings show them, and the caller's own sent
#: ones as GET /sent shows them plus `_folder: "sent"` (docs/API.md, "Threads")
THREAD = {"type": "array", "items": {"oneOf": [
    ref("Message"),
    {"allOf": [SENT_MESSAGE, obj(["_folder"], _folder={"const": "sent"})]},
]}}  # fmt: skip
#: a message's text as its owner reads it (GET /mail/message/{id}/plain)
PLAIN = ok_obj(id={"type": "string"}, encrypted={"type": "boolean"},
               content={"type": "string"}, **{"from": {"type": "string"}})  # fmt: skip
COUNT = {
    "type": "integer",
    "description": "how many messages this answer holds (pending, for peek)",
}
COUNTS = {"type": "object", "additionalProperties": {"type": "integer"}}
INBOXES = {"type": "object", "additionalProperties": COUNTS}

ERROR_TEXT = {
    "400": "Malformed input: the code and field say what and where",
    "401": "No valid session token",
    "403": "Not this caller's mailbox, or refused by policy",
    "404": "Not found",
    "409": "Already taken (the code says what)",
    "409-conflict": "`conflict`: this sender already sent a message with this id and another body "
    "to a recipient (another sender's message with the same id is another message and "
    "changes nothing)",
    "409-ambiguous": "`ambiguous`: an id named without `from` matches messages of several "
    "senders in this mailbox (`field` `from`; `ambiguous` lists them, repeat with `from`), "
    "or a short id matches several messages (`field` `id` or `ids`; `candidates` lists up to "
    "10 with `count` of all, repeat with more digits)",
    "413": "Request body too large",
    "429": "Too many: the recipient's pending quota or its stranger share is full (`field` "
    "`to` or `from`), or `rate_limited` (this client address, peer server or username has "
    "spent its budget; `Retry-After` says when to come back)",
    "451": "Refused as spam (with reasons)",
    "503": "The database is unreachable (or the server is stopping); try again",
}


def _errors(*codes: str) -> dict[str, Any]:
    out = {}
    for code in ("400", "405", "413", *codes):
        text = ERROR_TEXT.get(code, "Method not allowed")
        status = code.split("-")[0]  # "409-ambiguous": which 409 this operation answers
        schema = ref("Ambiguous") if code == "409-ambiguous" else ref("Error")
        out[status] = {"description": text, "content": {"application/json": {"schema": schema}}}  # fmt: skip
    return out


def op(
    summary: str,
    answer: dict[str, Any],
    *,
    errors: tuple[str, ...] = (),
    body: dict[str, Any] | None = None,
    params: list[dict[str, Any]] | None = None,
    auth: bool = False,
    content_type: str = "application/json",
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {"description": "OK", "content": {content_type: {"schema": answer}}}
    }
    responses.update(_errors(*(("401", "403") if auth else ()), *errors))
    out: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        out["parameters"] = params
    if auth:
        out["security"] = [{"bearer": []}, {"fluxToken": []}]
    return out


def path_param(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def query(name: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema}


ADDR_PATH = path_param("address", ADDRESS)
LIMIT = query("limit", {"type": "integer", "minimum": 1, "maximum": 500})

# Message identity (PROTOCOL.md §4.5, docs/API.md "Message identity"): a message is named
# by its sender and id. Every request naming one takes an optional `from`; without it, an
# id that several senders' messages in the mailbox share is a 409 `ambiguous`.
SENDER = {**ADDRESS, "description": "the sender (`from`) of the message meant: needed only "
          "when several senders' messages in this mailbox share the id"}  # fmt: skip
FROM_QUERY = {**query("from", SENDER), "description": SENDER["description"]}
REF = obj(["id", "from"], id=MSG_ID, **{"from": ADDRESS})
ID_ITEM = {"oneOf": [ID_OR_PREFIX, obj(["id"], id=ID_OR_PREFIX, **{"from": SENDER})],
           "description": "a message id, or {id, from} naming its sender"}  # fmt: skip
IDS = {"type": "array", "items": ID_ITEM}
UPDATED = ok_obj(
    updated={"type": "array", "items": MSG_ID, "description": "the ids whose status changed"},
    refs={"type": "array", "items": REF, "description": "the same messages as {id, from}"},
)
UNREAD = ok_obj(
    updated={"type": "array", "items": MSG_ID,
             "description": "the ids that went from read back to delivered"},
    refs={"type": "array", "items": REF, "description": "the same messages as {id, from}"},
    deleted={"type": "array", "items": REF, "description": "named messages that are deleted "
             "(or expired, or read once with expires 0): deleted is final, they stay so"},
)  # fmt: skip
#: `from` on a listing: only that sender's mail
FROM_FILTER = query("from", {**ADDRESS, "description": "only mail from this sender: a whole "
                             "fx1 address (no prefix, no name: resolve those first)"})  # fmt: skip
AMBIGUOUS = "409-ambiguous"
IDS_BODY = obj(["address"], address=ADDRESS, ids=IDS, id=ID_OR_PREFIX, **{"from": SENDER})


def transaction(summary: str) -> dict[str, Any]:
    """A server-to-server delivery transaction: /federation/deliver and /mesh/relay."""
    return op(
        summary,
        ok_obj(txn={"type": "string"}, results={"type": "array", "items": {"type": "object"}}),
        body=obj(["txn", "from_server", "messages"], txn={"type": "string"},
                 from_server={"type": "string"},
                 messages={"type": "array", "items": {"type": "object"}}),
        errors=("401", "429"),
    )  # fmt: skip


def docs_asset() -> dict[str, Any]:
    """GET /docs/assets/{name}: a script, stylesheet or licence the docs page loads."""
    out = op("A file the docs page loads (Swagger UI's bundle, its licence, FLUX's starter)",
             {"type": "string"}, params=[path_param("name", {"type": "string"})],
             errors=("404",))  # fmt: skip
    types = ("text/javascript", "text/css", "text/plain")
    out["responses"]["200"]["content"] = {t: {"schema": {"type": "string"}} for t in types}
    return out


def paths() -> dict[str, Any]:
    mail = {
        "/send": {"post": op(
            "Submit a signed envelope (no auth: the signature is the authority). To reach "
            "recipients at other domains, wrap it: {message, domains: {fx1: domain}}; "
            "those recipients are answered `queued`",
            ok_obj(id=MSG_ID, recipients={"type": "object", "additionalProperties": {"type": "string"}},
                   duplicate={"type": "boolean"}),
            body={"oneOf": [ref("Envelope"), obj(
                ["message"], message=ref("Envelope"),
                domains={"type": "object", "additionalProperties": {"type": "string"}})]},
            errors=("403", "404", "409-conflict", "429", "451"))},
        "/fetch/{address}": {"get": op(
            "Pending messages, now marked delivered", ok_obj(messages=MESSAGES, count=COUNT),
            params=[ADDR_PATH, LIMIT], auth=True)},
        "/inbox/{address}": {"get": op(
            "List messages, newest first", ok_obj(messages=MESSAGES, count=COUNT,
                                                  next_cursor={"type": ["string", "null"]}),
            params=[ADDR_PATH, query("inbox", INBOX), query("status", STATUS),
                    query("tag", TAG), FROM_FILTER, LIMIT, query("cursor", {"type": "string"})],
            auth=True)},
        "/inboxes/{address}": {"get": op(
            "Counts per inbox and status (a request in the prototype's dialect gets a list of "
            "names: docs/API.md, Dialects)", ok_obj(inboxes=INBOXES), params=[ADDR_PATH],
            auth=True)},
        "/peek/{address}": {"get": op(
            "Pending messages, not marked",
            ok_obj(pending={"type": "integer"}, count=COUNT, messages=MESSAGES),
            params=[ADDR_PATH, LIMIT], auth=True)},
        "/message/{address}/{id}": {"get": op(
            "One message, by id and (when the id is shared) `from`", ok_obj(message=ref("Message")),
            params=[ADDR_PATH, path_param("id", ID_OR_PREFIX), FROM_QUERY], auth=True,
            errors=("404", AMBIGUOUS))},
        "/read": {"post": op("Mark read", UPDATED, body=IDS_BODY, auth=True, errors=(AMBIGUOUS,))},
        "/unread": {"post": op(
            "Mark read messages unread (read → delivered; deleted stays deleted)", UNREAD,
            body=IDS_BODY, auth=True, errors=(AMBIGUOUS,))},
        "/delete": {"post": op("Soft-delete", UPDATED, body=IDS_BODY, auth=True,
                               errors=(AMBIGUOUS,))},
        "/tag": {"post": op(
            "Add and remove the caller's own tags (or the prototype's {tag, action})",
            ok_obj(tags={"type": "array", "items": TAG}),
            body=obj(["address", "id"], address=ADDRESS, id=ID_OR_PREFIX, add={"type": "array", "items": TAG},
                     remove={"type": "array", "items": TAG}, tag={"type": "string"},
                     action={"enum": ["add", "remove"]}, **{"from": SENDER}),
            auth=True, errors=("404", AMBIGUOUS))},
        "/move": {"post": op(
            "Move to another inbox", ok_obj(inbox=INBOX),
            body=obj(["address", "id", "inbox"], address=ADDRESS, id=ID_OR_PREFIX, inbox=INBOX,
                     **{"from": SENDER}),
            auth=True, errors=("404", AMBIGUOUS))},
        "/thread/{id}": {"get": op(
            "The conversation by `re`, oldest first (a reply joins its parent only if its "
            "sender is a participant of the parent), with the caller's own sent messages of "
            "it (`_folder: \"sent\"`, `_sent_at`, `_delivery`)", ok_obj(messages=THREAD),
            params=[path_param("id", ID_OR_PREFIX), query("address", ADDRESS, True), FROM_QUERY],
            auth=True, errors=("404", AMBIGUOUS))},
        "/changes": {"get": op(
            "What changed after state `since`",
            ok_obj(state={"type": "integer"}, has_more={"type": "boolean"}, created=MESSAGES,
                   updated=MESSAGES, sent={"type": "array", "items": SENT_MESSAGE}),
            params=[query("address", ADDRESS, True), query("since", {"type": "integer", "minimum": 0}),
                    LIMIT], auth=True)},
        "/sent/{address}": {"get": op(
            "The caller's sent mail, newest first, with each recipient's delivery state",
            ok_obj(messages={"type": "array", "items": SENT_MESSAGE}, count={"type": "integer"},
                   next_cursor={"type": ["string", "null"]}),
            params=[ADDR_PATH, LIMIT, query("cursor", {"type": "string"})],
            auth=True)},
        "/sent/{address}/{id}": {"get": op(
            "One sent message and its delivery state, by id or short id",
            ok_obj(message=SENT_MESSAGE),
            params=[ADDR_PATH, path_param("id", ID_OR_PREFIX)], auth=True,
            errors=("404", AMBIGUOUS))},
        "/status/{address}": {"get": op(
            "Owner: counters and presence; anyone else: whether the address is hosted (and, "
            "on a server with --legacy-tokens, whether it is online, as the prototype said)",
            obj(["ok", "hosted"], ok={"const": True}, hosted={"type": "boolean"},
                online={"type": "boolean"}, address=ADDRESS,
                pending={"type": "integer"}, total={"type": "integer"}, inboxes=INBOXES,
                state={"type": "integer"}),
            params=[ADDR_PATH])},
    }  # fmt: skip
    auth = {
        "/auth/challenge": {"get": op(
            "A single-use challenge to sign",
            ok_obj(challenge={"type": "string"}, domain={"type": "string"},
                   expires={"type": "integer"}),
            params=[query("address", ADDRESS, True)])},
        "/auth/session": {"post": op(
            "Exchange a signed challenge for a session token",
            ok_obj(address=ADDRESS, token={"type": "string"}, expires={"type": "integer"}),
            body=obj(["address", "pub", "challenge", "sig"], address=ADDRESS, pub=B64,
                     challenge={"type": "string"}, sig=B64),
            errors=("401",))},
        "/auth/logout": {"post": op(
            "Revoke the presented token", ok_obj(revoked={"type": "boolean"}), auth=True)},
        "/register": {"post": op(
            "A key registers itself (policy: open, invite or closed)",
            ok_obj(address=ADDRESS, registered={"type": "boolean"}),
            body=obj(["address", "pub", "t", "sig"], address=ADDRESS, pub=B64,
                     t={"type": "integer"}, sig=B64, invite={"type": "string"}),
            errors=("403", "429"))},
    }  # fmt: skip
    ops = {
        "/health": {"get": op("Liveness (503 while the database is unreachable)",
                              ok_obj(version={"type": "string"}, domain={"type": "string"}),
                              errors=("503",))},
        "/stats": {"get": op(
            "What the server is (domain, version, uptime, mode) for anyone. The operator "
            "(Authorization: Bearer FLUX_OPERATOR_TOKEN, or a local client when no token is "
            "set) also gets the counters: websockets, store and the queue, with each "
            "destination and its last error",
            obj(["ok", "domain", "version", "uptime_ms", "mode", "registration"],
                ok={"const": True}, domain={"type": "string"}, version={"type": "string"},
                uptime_ms={"type": "integer"}, mode={"enum": ["open", "hosted"]},
                registration={"type": "string"}, websockets={"type": "integer"}, store=COUNTS,
                queue=obj(["queued", "destinations"], queued={"type": "integer"},
                          destinations={"type": "array", "items": {"type": "object"}})))},
        "/metrics": {"get": op("Prometheus metrics (operator only: Bearer "
                               "FLUX_OPERATOR_TOKEN, or a local client when no token is set)",
                               {"type": "string"}, content_type="text/plain",
                               errors=("401",))},
        "/openapi.json": {"get": op("This document", {"type": "object"})},
        "/docs": {"get": op("This document as a web page (Swagger UI; every file it loads "
                            "comes from this server)", {"type": "string"},
                            content_type="text/html")},
        "/docs/assets/{name}": {"get": docs_asset()},
        "/federation/info": {"get": op(
            "Domain, version and the server's published signing keys",
            ok_obj(domain={"type": "string"}, version={"type": "string"},
                   keys={"type": "array", "items": obj(["pub", "valid_from"], pub=B64,
                         valid_from={"type": "integer"},
                         valid_until={"type": ["integer", "null"]})}))},
        "/federation/resolve/{name}": {"get": op(
            "The key of an address hosted here, or of an account name",
            ok_obj(address=ADDRESS, pub=B64),
            params=[path_param("name", {"type": "string"})], errors=("404",))},
        "/.well-known/flux": {"get": op(
            "Delegation: the FLUX server that serves this domain",
            ok_obj(server={"type": "string"}))},
        "/federation/deliver": {"post": transaction(
            "A peer server hands on sealed messages (signed request, docs/FEDERATION.md)")},
        "/mesh/relay": {"post": transaction(
            "A mesh peer hands on messages (as /federation/deliver, plus the Flux-Mesh "
            "membership MAC); what is not hosted here goes on through the mesh")},
        "/mesh/info": {"get": op(
            "The meshes this server relays for (names, modes, peers; never tokens)",
            ok_obj(server={"type": "string"}, meshes={"type": "array",
                   "items": {"type": "object"}}))},
        "/integrity/tamper_report": {"post": op(
            "A tamper report from a peer, re-proven here before it counts (PROTOCOL.md §7.6)",
            ok_obj(offender={"type": "string"}, kind={"type": "string"},
                   proof_id={"type": "string"}, counted={"type": "boolean"}),
            body={"type": "object"})},
        "/integrity/verify": {"post": op(
            "Check a message's signature and integrity chain (a report, not a refusal)",
            ok_obj(signature=obj(["valid"], valid={"type": "boolean"}),
                   chain=obj(["verdict", "hops"], verdict={"enum": ["none", "pass", "fail"]},
                             hops={"type": "array", "items": {"type": "object"}})),
            body={"type": "object"})},
        "/integrity/reputation": {"get": op(
            "Strikes per server and who is quarantined",
            ok_obj(strikes=COUNTS, quarantined={"type": "array", "items": {"type": "string"}}))},
    }  # fmt: skip
    compat = {
        "/ack": {"post": op(
            "The prototype client's ack(): refused by name (400 bad_request); /fetch marks "
            "what it returns delivered and a WebSocket acknowledges by its pong",
            ok_obj(), body=obj([], id=MSG_ID))},
    }  # fmt: skip
    return {**mail, **auth, **ops, **account_paths(), **web_paths(), **compat}


USERNAME = {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,31}$"}
PASSWORD = {"type": "string", "minLength": 8, "maxLength": 1024}
ACCOUNT = {"username": USERNAME, "name": {"type": "string", "description": "username@domain"},
           "address": ADDRESS, "pub": B64, "kind": {"enum": ["password", "claimed", "oauth"]},
           "domain": {"type": "string"},
           "flux_address": {**ADDRESS, "description": "= address (the prototype's name)"}}  # fmt: skip


def session_op(summary: str, answer: dict[str, Any], *, errors: tuple[str, ...] = (),
               **kwargs: Any) -> dict[str, Any]:  # fmt: skip
    """An operation authenticated by a password account's `X-Flux-Session` header."""
    return {**op(summary, answer, errors=("401", "403", *errors), **kwargs),
            "security": [{"fluxSession": []}]}  # fmt: skip


#: what the web client's files are served as (routes/web.py TYPES)
WEB_TYPES = ("text/html", "text/javascript", "text/css", "image/svg+xml", "image/png",
             "application/json", "text/plain", "font/woff2")  # fmt: skip


def web_paths() -> dict[str, Any]:
    """The web client (issue 13; routes/web.py): its page and files, and two lookups its
    signed-in pages make with a key session or an account session."""
    page = op("The web client's page (index.html)", {"type": "string"},
              content_type="text/html", errors=("404",))  # fmt: skip
    asset = op("A file of the web client; any other name is 404 naming `path`",
               {"type": "string"}, params=[path_param("path", {"type": "string"})],
               errors=("404",))  # fmt: skip
    asset["responses"]["200"]["content"] = {t: {"schema": {"type": "string"}} for t in WEB_TYPES}
    signed_in = [{"bearer": []}, {"fluxToken": []}, {"fluxSession": []}]
    key = obj(["pub", "valid_from"], pub=B64, valid_from={"type": "integer"},
              valid_until={"type": ["integer", "null"]})  # fmt: skip
    keys = op("A server's published keys: this server's, or a peer's already cached here "
              "(never fetched for the asking)",
              ok_obj(server={"type": "string"}, keys={"type": "array", "items": key}),
              params=[path_param("server", {"type": "string"})], errors=("401", "403", "404"))  # fmt: skip
    resolve = op("name@domain or fx1…@domain at any domain, as that domain binds it (the key "
                 "checked to hash to the address)",
                 ok_obj(address=ADDRESS, pub=B64, name={"type": ["string", "null"]},
                        domain={"type": "string"}),
                 params=[path_param("name", {"type": "string"})], errors=("401", "403", "404"))  # fmt: skip
    return {"/": {"get": page}, "/web/{path}": {"get": asset},
            "/web/keys/{server}": {"get": {**keys, "security": signed_in}},
            "/web/resolve/{name}": {"get": {**resolve, "security": signed_in}}}  # fmt: skip


#: `address` on a /mail/* query: optional, and only the session's own (403 otherwise)
OWN_ADDRESS = query("address", {**ADDRESS, "description": "the session's own address (any "
                                "other is refused, 403); it may be left out"})  # fmt: skip


def account_paths() -> dict[str, Any]:
    """docs/API.md, "Accounts"."""
    recipient = {"type": "string", "description": "fx1…, fx1…@domain, name or name@this-domain"}
    return {
        "/account/register": {"post": op(
            "Create a password account; the server makes and holds its key (sealed)",
            ok_obj(session={"type": "string"}, expires_at={"type": "integer"}, **ACCOUNT),
            body=obj(["username", "password"], username=USERNAME, password=PASSWORD,
                     invite={"type": "string"},
                     display_name={"type": "null", "description": "the prototype's; only null"}),
            errors=("403", "409", "429", "503"))},
        "/account/login": {"post": op(
            "Open a session for a password account (same 401 for any failure)",
            ok_obj(session={"type": "string"}, expires_at={"type": "integer"}, **ACCOUNT),
            body=obj(["username", "password"], username={"type": "string"},
                     password={"type": "string"}), errors=("401", "429", "503"))},
        "/account/logout": {"post": session_op(
            "Revoke the presented session", ok_obj(revoked={"type": "boolean"}))},
        "/account/me": {"get": session_op(
            "The session's account",
            ok_obj(created_at={"type": "integer"}, expires_at={"type": "integer"}, **ACCOUNT))},
        "/account/password": {"post": session_op(
            "Change the session's account password: the key is resealed (same address), "
            "the account's other sessions are revoked",
            ok_obj(sessions_revoked={"type": "integer", "minimum": 0}),
            body=obj(["password", "new_password"], password={"type": "string"},
                     new_password={"type": "string", "minLength": 8, "maxLength": 1024}),
            errors=("429", "503"))},
        "/account/claim": {"post": op(
            "Claim a name for a key you hold: sig over flux-claim:1:{domain}:{username}:{address}:{t}",
            ok_obj(created={"type": "boolean"}, **ACCOUNT),
            body=obj(["username", "address", "pub", "t", "sig"], username=USERNAME,
                     address=ADDRESS, pub=B64, t={"type": "integer"}, sig=B64,
                     invite={"type": "string"}), errors=("403", "409", "429"))},
        "/mail/send": {"post": session_op(
            "Compose, sign with the account's key and submit (as POST /send)",
            ok_obj(id=MSG_ID, recipients={"type": "object", "additionalProperties": {"type": "string"}},
                   duplicate={"type": "boolean"}, delivery={"type": ["string", "null"]},
                   cc={"type": "object", "additionalProperties": {"type": "string"}},
                   bcc={"type": "object", "additionalProperties": {"type": "string"}}),
            body=obj(["to", "content"], to=recipient, content={"type": "string"},
                     subject={"type": "string"}, cc={"type": "array", "items": recipient},
                     bcc={"type": "array", "items": recipient}, tags={"type": "array", "items": TAG},
                     re=MSG_ID, reply_to=MSG_ID, expires={"type": "integer"},
                     encrypt={"type": "boolean"}),
            errors=("404", "409-conflict", "429", "451"))},
        "/mail/inbox": {"get": session_op(
            "The session's messages, newest first (as GET /inbox/{address})",
            ok_obj(messages=MESSAGES, count=COUNT, next_cursor={"type": ["string", "null"]}),
            params=[OWN_ADDRESS, query("inbox", INBOX), query("status", STATUS),
                    query("tag", TAG), FROM_FILTER, LIMIT, query("cursor", {"type": "string"})])},
        "/mail/message/{id}": {"get": session_op(
            "One message of the session's mailbox (as GET /message/{address}/{id})",
            ok_obj(message=ref("Message")),
            params=[path_param("id", ID_OR_PREFIX), OWN_ADDRESS, FROM_QUERY],
            errors=("404", AMBIGUOUS))},
        "/mail/message/{id}/plain": {"get": session_op(
            "The text of one message of the session's mailbox, decrypted by this server "
            "with the account's key when it is end-to-end encrypted (the key is the "
            "account's, held here); 400 not_a_recipient / decryption_failed",
            PLAIN, params=[path_param("id", ID_OR_PREFIX), OWN_ADDRESS, FROM_QUERY],
            errors=("404", AMBIGUOUS))},
        "/mail/thread/{id}": {"get": session_op(
            "The conversation of one message of the session's mailbox (as GET /thread/{id})",
            ok_obj(messages=THREAD),
            params=[path_param("id", ID_OR_PREFIX), OWN_ADDRESS, FROM_QUERY],
            errors=("404", AMBIGUOUS))},
        "/mail/sent": {"get": session_op(
            "The account's sent mail, newest first, with each recipient's delivery state",
            ok_obj(messages={"type": "array", "items": SENT_MESSAGE}, count={"type": "integer"},
                   next_cursor={"type": ["string", "null"]}),
            params=[LIMIT, query("cursor", {"type": "string"})])},
        "/mail/sent/{id}": {"get": session_op(
            "One sent message and its delivery state, by id or short id",
            ok_obj(message=SENT_MESSAGE), params=[path_param("id", ID_OR_PREFIX)],
            errors=("404", AMBIGUOUS))},
        "/mail/sent/{id}/plain": {"get": session_op(
            "The text of one sent message, decrypted with the account's key (as "
            "GET /mail/message/{id}/plain)", PLAIN,
            params=[path_param("id", ID_OR_PREFIX), OWN_ADDRESS], errors=("404", AMBIGUOUS))},
        "/mail/changes": {"get": session_op(
            "What changed in the session's mailbox after state `since` (as GET /changes); "
            "400 cannot_calculate_changes for a state never issued: fetch everything again",
            ok_obj(state={"type": "integer"}, has_more={"type": "boolean"}, created=MESSAGES,
                   updated=MESSAGES, sent={"type": "array", "items": SENT_MESSAGE}),
            params=[OWN_ADDRESS, query("since", {"type": "integer", "minimum": 0}), LIMIT])},
        "/mail/inboxes": {"get": session_op(
            "Counts per inbox and status", ok_obj(inboxes=INBOXES))},
        "/mail/peek": {"get": session_op(
            "Pending messages, not marked",
            ok_obj(pending={"type": "integer"}, count=COUNT, messages=MESSAGES), params=[LIMIT])},
        "/mail/read": {"post": session_op(
            "Mark read", UPDATED, body=obj([], ids=IDS, id=ID_OR_PREFIX, **{"from": SENDER}),
            errors=(AMBIGUOUS,))},
        "/mail/unread": {"post": session_op(
            "Mark read messages unread (as POST /unread)", UNREAD,
            body=obj([], ids=IDS, id=ID_OR_PREFIX, **{"from": SENDER}), errors=(AMBIGUOUS,))},
        "/mail/delete": {"post": session_op(
            "Soft-delete", UPDATED, body=obj([], ids=IDS, id=ID_OR_PREFIX, **{"from": SENDER}),
            errors=(AMBIGUOUS,))},
        "/mail/tag": {"post": session_op(
            "Add and remove tags (or the prototype's {tag, action})",
            ok_obj(tags={"type": "array", "items": TAG}),
            body=obj(["id"], id=ID_OR_PREFIX, add={"type": "array", "items": TAG},
                     remove={"type": "array", "items": TAG}, tag={"type": "string"},
                     action={"enum": ["add", "remove"]}, **{"from": SENDER}),
            errors=("404", AMBIGUOUS))},
        "/mail/move": {"post": session_op(
            "Move to another inbox", ok_obj(inbox=INBOX),
            body=obj(["id", "inbox"], id=ID_OR_PREFIX, inbox=INBOX, **{"from": SENDER}),
            errors=("404", AMBIGUOUS))},
    }  # fmt: skip


def document(domain: str, version: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "FLUX client API",
            "version": version,
            "description": f"The FLUX server at {domain}. See docs/API.md; the WebSocket "
            "protocol at /ws is described there (OpenAPI does not describe WebSockets).",
        },
        "paths": paths(),
        "components": {
            "schemas": {
                "Envelope": ENVELOPE,
                "Message": MESSAGE,
                "Error": ERROR,
                "Ambiguous": AMBIGUOUS_ERROR,
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "fluxToken": {"type": "apiKey", "in": "header", "name": "X-Flux-Token"},
                "fluxSession": {"type": "apiKey", "in": "header", "name": "X-Flux-Session"},
            },
        },
    }
