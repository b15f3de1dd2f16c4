"""`FluxClient`: the FLUX library client over HTTP and WebSocket (docs/API.md).

    client = FluxClient(FluxIdentity.load("alice.json"), "http://localhost:8765")
    await client.send("fx1…", "Hello Bob")
    client.on_message(handler)
    await client.connect_ws()

Authentication is lazy: the first call that needs a session token runs the signed
challenge (`authenticate`), and a 401 later (token expired or revoked) runs it once more.
With `legacy_secret` the client instead presents the prototype's shared-secret token
(`X-Flux-Token`, PROTOCOL.md §10.4): that is how it talks to a prototype server, or to a
FLUX server whose operator turned legacy tokens on. Answers are read field by field
(client/answers.py): from any server, a missing or ill-typed field is a FluxClientError
naming it.
Every refusal from the server is a `FluxClientError` with the server's status, code and
field. Sending needs no token: the signature is the authority.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import aiohttp

from ..compat.federation import binding_of
from ..federation.keys import parse_info
from ..identity import FluxIdentity
from ..protocol import (
    ChainCheck,
    Identity,
    KeyLookup,
    PublishedKey,
    address_from_pub,
    b64d,
    compose,
    decrypt_content,
    is_address,
    verify_chain,
    verify_envelope,
)
from ..protocol.chain import sealed_servers_in_chain
from ..protocol.errors import InvalidInput
from ..protocol.tokens import legacy_token
from .answers import bad_answer, need, optional
from .bindings import KnownBindings
from .errors import AmbiguousId, FluxClientError
from .resolve import (
    Recipient,
    domain_url,
    get_json_capped,
    is_local,
    parse_recipient,
    resolve_name,
)
from .results import Changes, Page, Peek, SendResult, Status, Verified
from .ws import Backoff, Listener

__all__ = ["FluxClient"]

DEFAULT_URL = "http://localhost:8765"

Message = dict[str, Any]
Handler = Callable[[Message], Awaitable[None] | None]
#: message ids: one id, or several, each an id or `{"id": ..., "from": sender}`
Ids = str | Iterable[str | Mapping[str, str]]


class Unread(list[str]):
    """What `FluxClient.unread` changed: the ids that went from read back to delivered
    (the list), and `deleted`: ids named that are deleted (or expired, or read once) and
    so stay deleted (docs/API.md, "Unread")."""

    def __init__(self, updated: Iterable[str], deleted: Iterable[str] = ()) -> None:
        super().__init__(updated)
        self.deleted = list(deleted)


def _id_list(ids: Ids) -> list[Any]:
    return [ids] if isinstance(ids, str) else [i if isinstance(i, str) else dict(i) for i in ids]


def _with_sender(body: dict[str, Any], sender: str | None) -> dict[str, Any]:
    """`body` naming the message's sender as `from` when one is given (PROTOCOL.md §4.5:
    a message is named by its sender and id; the server needs `from` only when two
    senders' messages in the mailbox share the id, and says so with 409 `ambiguous`)."""
    return body if sender is None else {**body, "from": sender}


def _ids_field(ids: Ids) -> dict[str, Any]:
    # One bare id goes as `id`, which both FLUX and the prototype read; several as `ids`.
    return {"id": ids} if isinstance(ids, str) else {"ids": _id_list(ids)}


def _ambiguous_prefix(prefix: str, found: list[Message]) -> dict[str, Any]:
    """The server's 409 for a short id matching several messages (docs/API.md, "Short
    ids"), made by the client from a listing (a server without /message)."""
    ordered = sorted(found, key=lambda m: (m["id"], str(m.get("from"))))
    senders: dict[str, list[str]] = {}
    for m in ordered:
        senders.setdefault(m["id"], []).append(str(m.get("from")))
    candidates = [{"id": m["id"], "from": m.get("from"),
                   **({"subject": m["subject"]} if isinstance(m.get("subject"), str) else {})}
                  for m in ordered[:10]]  # fmt: skip
    return {"ok": False, "code": "ambiguous", "field": "id", "prefix": prefix,
            "error": f"{len(found)} messages have an id starting with {prefix}",
            "count": len(found), "candidates": candidates,
            "ambiguous": [{"id": k, "senders": v} for k, v in senders.items()]}  # fmt: skip


def _messages(
    body: Mapping[str, Any], where: str, field: str = "messages", *, required: bool = True
) -> list[Message]:
    """`body[field]`: a list of message objects (checked, since callers index them)."""
    found = need(body, field, list, where) if required else optional(body, field, list, where, [])
    if not all(isinstance(m, dict) for m in found):
        raise bad_answer(where, field, "every entry must be an object", body)
    return list(found)


def _strings(body: Mapping[str, Any], field: str, where: str) -> list[str]:
    found = need(body, field, list, where)
    if not all(isinstance(v, str) for v in found):
        raise bad_answer(where, field, "every entry must be a string", body)
    return list(found)


def _updated(body: Mapping[str, Any], proto_field: str, ids: Ids) -> list[str]:
    """The ids a /read or /delete changed: FLUX's `updated`, or from the prototype's one
    bool (`read`/`deleted`) for the one id it takes."""
    where = f"POST /{'read' if proto_field == 'read' else 'delete'}"
    if "updated" not in body and isinstance(ids, str) and proto_field in body:
        return [ids] if need(body, proto_field, bool, where) else []
    return _strings(body, "updated", where)


def _send_outcomes(answer: Mapping[str, Any], audience: list[str]) -> dict[str, str]:
    """Each recipient's outcome: FLUX's `recipients`, or the prototype's one `delivery`
    ("queued"/"realtime") for everyone the copy was addressed to."""
    if "recipients" not in answer and "delivery" in answer:
        delivery = need(answer, "delivery", str, "POST /send")
        return dict.fromkeys(audience, delivery)
    recipients = need(answer, "recipients", dict, "POST /send")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in recipients.items()):
        raise bad_answer("POST /send", "recipients", "expected {address: outcome}", answer)
    return dict(recipients)


def _addr_list(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


class FluxClient:
    """An identity talking to its FLUX server.

    `session`: an aiohttp session to use (the caller keeps ownership); otherwise the client
    makes one and closes it in `close()`. `bindings`: a `KnownBindings` or the path of its
    JSON file, remembering which address each `name@domain` resolved to. `keys`: public
    keys already known, `{fx1 address: base64url key}` (each is checked against its
    address before use). `reconnect_base`/`reconnect_cap`: the WebSocket's backoff,
    seconds; it starts afresh only after a socket stayed up `reconnect_stable` seconds
    (client/ws.py says why). `legacy_secret`: the server's FLUX_SECRET, to authenticate
    with the prototype's derived token instead of a signed challenge. `server`: the
    prototype's keyword for `url` (give one of them; default http://localhost:8765).
    """

    def __init__(
        self,
        identity: Identity,
        url: str | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
        bindings: KnownBindings | str | os.PathLike[str] | None = None,
        keys: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        reconnect_base: float = 0.5,
        reconnect_cap: float = 30.0,
        reconnect_stable: float = 30.0,
        plain_http_domains: Iterable[str] | None = None,
        legacy_secret: str | None = None,
        server: str | None = None,
    ) -> None:
        self.identity = identity
        if url is not None and server is not None and url.rstrip("/") != server.rstrip("/"):
            raise TypeError("give the server's URL once: url or server (its prototype name)")
        self.url = (url or server or DEFAULT_URL).rstrip("/")
        self.timeout = timeout
        self.bindings = bindings if isinstance(bindings, KnownBindings) else KnownBindings(bindings)
        # Other domains are reached over HTTPS; plain HTTP only for these (None: localhost)
        plain = None if plain_http_domains is None else frozenset(plain_http_domains)
        self._plain_http: Callable[[str], bool] = is_local if plain is None else plain.__contains__
        self._session = session
        self._owns_session = session is None
        self.legacy_secret = legacy_secret or None
        self._token: str | None = (
            legacy_token(identity.address, legacy_secret) if legacy_secret else None
        )
        self._domain: str | None = None
        self.token_expires: int | None = None
        self._auth_lock = asyncio.Lock()
        self._keys: dict[str, str] = {}
        self._server_keys: dict[str, list[PublishedKey]] = {}
        for address, pub in (keys or {}).items():
            self.learn_key(address, pub)
        self.learn_key(identity.address, identity.pub_b64())
        self._listener = Listener(
            self, Backoff(reconnect_base, reconnect_cap), stable_s=reconnect_stable
        )

    @property
    def address(self) -> str:
        return self.identity.address

    @property
    def token(self) -> str | None:
        """The current session token, once `authenticate` has run."""
        return self._token

    def use_token(self, token: str) -> None:
        """Use a session token opened earlier (a cached one: the CLI keeps one per server
        and identity) instead of proving the key again. A 401 on it (expired, revoked)
        runs `authenticate` once, as for any token; `token_expires` then says the new
        session's expiry."""
        if self.legacy_secret is None:
            self._token = token

    @property
    def domain(self) -> str | None:
        """The server's domain, once learned (from the challenge or /health)."""
        return self._domain

    # -- plumbing ----------------------------------------------------------------------

    async def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            self._session = aiohttp.ClientSession(timeout=timeout)
            self._owns_session = True
        return self._session

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        auth: bool = True,
    ) -> dict[str, Any]:
        """One API call; returns the answer body or raises FluxClientError."""
        query = {k: str(v) for k, v in (params or {}).items() if v is not None}
        for attempt in range(2):
            headers = self._auth_headers(await self._ensure_token()) if auth else {}
            status, body = await self._exchange(method, path, json, query, headers)
            if status == 401 and auth and attempt == 0 and self.legacy_secret is None:
                self._token = None  # expired or revoked: prove the key again, once
                continue
            if status >= 400 or not isinstance(body, dict) or body.get("ok") is not True:
                raise FluxClientError.from_answer(status, body)
            return body
        raise AssertionError("unreachable")

    def _auth_headers(self, token: str) -> dict[str, str]:
        # The prototype reads only X-Flux-Token; a FLUX server reads it for legacy tokens too.
        # X-Flux-Dialect: a FLUX server answers a legacy token in the prototype's shapes
        # unless told otherwise (docs/API.md, "Dialects"); a prototype server ignores it.
        if self.legacy_secret is not None:
            return {"X-Flux-Token": token, "X-Flux-Dialect": "flux"}
        return {"Authorization": f"Bearer {token}"}

    async def _exchange(
        self, method: str, path: str, json: Any, query: dict, headers: dict
    ) -> tuple[int, Any]:
        session = await self._http()
        try:
            # Never follow a redirect: it would carry the bearer token (or the session) to
            # wherever the answer points. A server that moved is named in the error instead.
            async with session.request(
                method, self.url + path, json=json, params=query, headers=headers,
                allow_redirects=False,
            ) as resp:  # fmt: skip
                if 300 <= resp.status < 400:
                    where = resp.headers.get("Location", "")[:200]
                    raise FluxClientError(
                        f"{self.url} redirected to {where!r}; not followed (set the server "
                        "URL to where it points if you trust it)",
                        code="redirected",
                    )
                try:
                    body = await resp.json(content_type=None)
                except ValueError:
                    body = None
                return resp.status, body
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise FluxClientError(f"cannot reach {self.url}: {reason}", code="unreachable") from exc

    def _now_ms(self) -> int:
        return int(time.time() * 1000)

    # -- identity on the server ---------------------------------------------------------

    async def authenticate(self) -> str:
        """Prove the key to the server (signed challenge) and keep the session token.

        Signs "flux-auth:1:{domain}:{challenge}"; the domain comes from the server, so a
        proof made for one server is useless at another. With `legacy_secret` there is
        nothing to prove: returns the derived token. Raises FluxClientError.
        """
        if self.legacy_secret is not None:
            self._token = legacy_token(self.address, self.legacy_secret)
            return self._token
        async with self._auth_lock:
            params = {"address": self.address}
            where = "GET /auth/challenge"
            try:
                challenge = await self._request("GET", "/auth/challenge", params=params, auth=False)
            except FluxClientError as exc:
                if exc.status != 404:
                    raise
                # No signed challenge here: a prototype server (or not a FLUX server).
                raise FluxClientError(
                    f"{self.url} has no GET /auth/challenge: if it is a prototype server, "
                    "authenticate with its FLUX_SECRET (legacy_secret=..., CLI "
                    "--legacy-secret)",
                    status=404, code="no_challenge", field="legacy_secret",
                ) from exc  # fmt: skip
            self._domain = need(challenge, "domain", str, where)
            nonce = need(challenge, "challenge", str, where)
            payload = f"flux-auth:1:{self._domain}:{nonce}"
            body = {
                "address": self.address,
                "pub": self.identity.pub_b64(),
                "challenge": nonce,
                "sig": self.identity.sign(payload),
            }
            answer = await self._request("POST", "/auth/session", json=body, auth=False)
            self._token = need(answer, "token", str, "POST /auth/session")
            #: unix ms when the session opened last expires (None: the answer did not say)
            self.token_expires = optional(answer, "expires", int, "POST /auth/session", None)
            return self._token

    async def _ensure_token(self) -> str:
        return self._token or await self.authenticate()

    def _forget_token(self, token: str) -> None:
        if self._token == token and self.legacy_secret is None:
            self._token = None

    async def register(self, invite: str | None = None) -> dict[str, Any]:
        """Register this key at the server (POST /register), so it accepts mail for it.

        Signs "flux-register:1:{domain}:{address}:{t}". Raises FluxClientError (403 when
        registration is closed or the invite is wrong).
        """
        domain = await self.server_domain()
        t = self._now_ms()
        body: dict[str, Any] = {
            "address": self.address,
            "pub": self.identity.pub_b64(),
            "t": t,
            "sig": self.identity.sign(f"flux-register:1:{domain}:{self.address}:{t}"),
        }
        if invite is not None:
            body["invite"] = invite
        return await self._request("POST", "/register", json=body, auth=False)

    async def claim(self, username: str) -> dict[str, Any]:
        """Claim `username` at this server for this key (a non-custodial account): then
        `username@domain` resolves to this address. The server never holds the key."""
        domain = await self.server_domain()
        t = self._now_ms()
        body = {
            "username": username, "address": self.address, "pub": self.identity.pub_b64(),
            "t": t, "sig": self.identity.sign(f"flux-claim:1:{domain}:{username}:{self.address}:{t}"),
        }  # fmt: skip
        return await self._request("POST", "/account/claim", json=body, auth=False)

    async def logout(self) -> None:
        if self._token is not None and self.legacy_secret is None:
            await self._request("POST", "/auth/logout", json={})
            self._token = None

    async def health(self) -> dict[str, Any]:
        return await self._request("GET", "/health", auth=False)

    async def server_domain(self) -> str:
        """This client's server's domain (asked once). Raises FluxClientError (`bad_answer`,
        field `domain`) when /health does not say, as a prototype server's does not."""
        if self._domain is None:
            self._domain = need(await self.health(), "domain", str, "GET /health")
        return self._domain

    async def status(self, address: str | None = None) -> Status:
        """The /status answer: your own mailbox's counters, or `{hosted: bool}` for
        another address, plus `online` where the server says it. As a bool it is `online`
        (the prototype's `status(address)`; see `Status`)."""
        target = address or self.address
        mine = target == self.address
        return Status(await self._request("GET", f"/status/{target}", auth=mine))

    # -- recipients and keys ------------------------------------------------------------

    def learn_key(self, address: str, pub: str) -> None:
        """Remember `pub` for `address` if, and only if, it hashes to it."""
        try:
            raw = b64d(pub, length=32)
        except (InvalidInput, TypeError):
            return  # not a key at all: nothing to remember
        if is_address(address) and address_from_pub(raw) == address:
            self._keys[address] = pub

    def known_key(self, address: str) -> str | None:
        return self._keys.get(address)

    async def resolve(self, written: str, *, field: str = "to") -> Recipient:
        """Parse a recipient; resolve `name@domain` at its domain and check the binding.

        Raises InvalidValue (unparseable), FluxClientError (`resolve_failed`),
        AddressMismatch (the domain's key is not the address's) or BindingChanged.
        """
        recipient = parse_recipient(written, field=field)
        if not recipient.needs_resolution:
            return recipient
        assert recipient.domain is not None and recipient.name is not None
        session = await self._http()
        address, pub = await resolve_name(
            session, recipient.domain, recipient.name, plain_http=self._plain_http
        )
        self.bindings.check(recipient.handle or written, address, pub)
        self.learn_key(address, pub)
        return Recipient(written, address, recipient.domain, recipient.name, pub)

    async def fetch_key(self, address: str, domain: str | None = None) -> str:
        """The public key for an fx1 address, as known or from its server.

        Looked up, in order: keys given to the client or learned (from resolution and from
        every message verified), then GET /federation/resolve/{address} at `domain` (when
        the recipient was written `fx1…@domain`) or at this server, which answers for the
        keys it hosts. Any key is checked to hash to the address, so no source needs to be
        trusted. Raises FluxClientError `unknown_key`.
        """
        if address in self._keys:
            return self._keys[address]
        if domain is not None and domain != await self.server_domain():
            session = await self._http()
            _, pub = await resolve_name(session, domain, address, plain_http=self._plain_http)
            self.learn_key(address, pub)
            return self._keys[address]
        try:
            body = await self._request("GET", f"/federation/resolve/{address}", auth=False)
        except FluxClientError as exc:
            raise FluxClientError(
                f"no public key known for {address}; pass keys={{address: pub}}",
                status=exc.status,
                code="unknown_key",
                field="to",
            ) from exc
        given, pub = binding_of(body)  # FLUX's `address`/`pub`, or the prototype's names
        if given == address and isinstance(pub, str):
            self.learn_key(address, pub)
        if address not in self._keys:
            raise FluxClientError(
                f"the server gave no valid key for {address}", code="unknown_key", field="pub"
            )
        return self._keys[address]

    # -- sending ------------------------------------------------------------------------

    async def send(
        self,
        to: str,
        content: str,
        reply_to: str | None = None,
        *,
        subject: str | None = None,
        cc: str | Iterable[str] | None = None,
        bcc: str | Iterable[str] | None = None,
        tags: Iterable[str] | None = None,
        expires: int | None = None,
        encrypt: bool = False,
        keys: Mapping[str, str] | None = None,
    ) -> SendResult:
        """Sign (and with `encrypt=True` first encrypt) and hand every copy to the server.

        Recipients are `fx1…`, `fx1…@domain` or `name@domain` (resolved, binding checked).
        BCC recipients each get their own signed copy. Encryption needs every recipient's
        key: from `keys`, the client's known keys, resolution, or the server (`fetch_key`).
        `reply_to` may be given by position, as the prototype's `send(to, content,
        reply_to)`. The result is also the server's answer as a dict (`SendResult`).
        Raises InvalidInput subclasses for bad arguments, FluxClientError for refusals.
        """
        primary = await self.resolve(to)
        cc_r = [await self.resolve(a, field="cc") for a in _addr_list(cc)]
        bcc_r = [await self.resolve(a, field="bcc") for a in _addr_list(bcc)]
        for address, pub in (keys or {}).items():
            self.learn_key(address, pub)
        everyone = [r for r in (primary, *cc_r, *bcc_r) if r.address]
        encrypt_for = (
            {str(r.address): await self.fetch_key(str(r.address), r.domain) for r in everyone}
            if encrypt
            else None
        )
        # The server's domain is needed only to tell which recipients are elsewhere: a
        # prototype server does not name one, and bare fx1 recipients need no routing.
        named = [r for r in everyone if r.domain]
        own = await self.server_domain() if named else None
        domains = {str(r.address): r.domain for r in named if r.domain != own}
        out = compose(
            self.identity,
            str(primary.address),
            content,
            subject=subject,
            reply_to=reply_to,
            cc=[str(r.address) for r in cc_r],
            bcc=[str(r.address) for r in bcc_r],
            tags=tags,
            expires=expires,
            encrypt_for=encrypt_for,
            now_ms=self._now_ms(),
        )
        outcomes: dict[str, str] = {}
        answers = []
        for envelope in out.all:
            # Recipients at other domains ride in the submission's `domains` (the SMTP
            # envelope's role); the signed message itself names only fx1 addresses.
            audience = envelope.get("bcc") or [envelope["to"], *envelope.get("cc", ())]
            where = {a: domains[a] for a in audience if a in domains}
            body = {"message": envelope, "domains": where} if where else envelope
            answer = await self._request("POST", "/send", json=body, auth=False)
            outcomes.update(_send_outcomes(answer, audience))
            answers.append(answer)
        return SendResult(
            out.primary["id"], outcomes, tuple(out.all), encrypted=encrypt, answer=answers[0]
        )

    async def send_ws(self, to: str, content: str, reply_to: str | None = None) -> Message:
        """Sign a message to `to` and hand it in on the open WebSocket (the prototype's
        `send_ws`); returns the envelope sent. The server's answer arrives as a frame, not
        here: use `send` to learn the outcome. Raises FluxClientError `ws_closed` when
        `connect_ws` is not running, InvalidInput subclasses for bad arguments.
        """
        ws = self._listener.socket
        if ws is None or ws.closed:
            raise FluxClientError("the websocket is not connected: run connect_ws() first",
                                  code="ws_closed")  # fmt: skip
        recipient = await self.resolve(to)
        envelope = compose(
            self.identity, str(recipient.address), content, reply_to=reply_to,
            now_ms=self._now_ms(),
        ).primary  # fmt: skip
        # A prototype server reads the envelope from `msg`, FLUX's from `message`; a FLUX
        # server accepts `msg` too (docs/API.md, "WebSocket"), so legacy mode sends that.
        key = "msg" if self.legacy_secret is not None else "message"
        await ws.send_json({"action": "send", key: envelope})
        return envelope

    async def reply(self, msg: Mapping[str, Any], content: str, **options: Any) -> SendResult:
        """Answer `msg`: to its sender, `re` its id, encrypted when it was. Mail that came
        from another server goes back to the server that sealed its first hop (where the
        sender submitted it), as `fx1…@that-server`."""
        options.setdefault("reply_to", msg["id"])
        options.setdefault("encrypt", bool(msg.get("encrypted")))
        subject = msg.get("subject")
        if subject and "subject" not in options:
            options["subject"] = subject if subject.lower().startswith("re:") else f"Re: {subject}"
        if isinstance(msg.get("pub"), str):
            self.learn_key(msg["from"], msg["pub"])
        chain = msg.get("integrity_chain")
        first = chain[0] if isinstance(chain, list) and chain else None
        origin = first.get("server") if isinstance(first, dict) else None
        to = msg["from"]
        if isinstance(origin, str) and origin != await self.server_domain():
            to = f"{to}@{origin}"
        return await self.send(to, content, **options)

    # -- the mailbox --------------------------------------------------------------------

    async def inbox(
        self,
        inbox: str | None = None,
        *,
        status: str | None = None,
        tag: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        sender: str | None = None,
    ) -> Page:
        """One page of the mailbox, newest first (deleted only with status="deleted").
        `sender`: only mail from that whole fx1 address (sent as `from`; the server filters
        and pages, docs/API.md "Mail"). Raises FluxClientError (400 naming `from`)."""
        params = {"inbox": inbox, "status": status, "tag": tag, "limit": limit, "cursor": cursor,
                  "from": sender}  # fmt: skip
        body = await self._request("GET", f"/inbox/{self.address}", params=params)
        where = "GET /inbox"
        return Page(_messages(body, where), optional(body, "next_cursor", str, where, None))

    async def inboxes(self) -> dict[str, dict[str, int]]:
        """`{inbox name: counters}`. A prototype server lists only the names: then each
        name maps to an empty dict."""
        body = await self._request("GET", f"/inboxes/{self.address}")
        if isinstance(body.get("inboxes"), list):  # the prototype's list of names
            names = body["inboxes"]
            if not all(isinstance(n, str) for n in names):
                raise bad_answer("GET /inboxes", "inboxes", "names must be strings", body)
            return {name: {} for name in names}
        return dict(need(body, "inboxes", dict, "GET /inboxes"))

    async def fetch(self, limit: int | None = None) -> list[Message]:
        """Pending messages, which the server then marks delivered."""
        body = await self._request("GET", f"/fetch/{self.address}", params={"limit": limit})
        return _messages(body, "GET /fetch")

    async def peek(self) -> Peek:
        """Pending messages without marking them: an int (the count, as the prototype's
        `peek()`), with `.pending` and `.messages` (FLUX's servers send the first ones)."""
        body = await self._request("GET", f"/peek/{self.address}")
        where = "GET /peek"
        if "pending" not in body and "count" in body:  # the prototype names it `count`
            return Peek(need(body, "count", int, where))
        return Peek(need(body, "pending", int, where), _messages(body, where, required=False))

    # Every call naming a message takes `sender` (sent as `from`): needed only when two
    # senders' messages in this mailbox share the id, which the server refuses with 409
    # `ambiguous` (raised as AmbiguousId, listing the senders to choose from).
    # Every such `message_id` (and each id in `ids`) may also be a short id: a prefix of
    # 8-31 of its lower-case hex digits, resolved by the server inside this mailbox only
    # (docs/API.md, "Short ids"). A prefix that matches several messages raises AmbiguousId
    # with `field` "id" (or "ids") and the answer's `candidates` ({id, from, subject}, at
    # most 10) and `count` in `.body`; one that matches nothing is the unknown id's 404.

    async def get(self, message_id: str, *, sender: str | None = None) -> Message:
        """One message of this mailbox by id or short id (and `sender`). Raises
        AmbiguousId, FluxClientError (404 `not_found`, 400 naming `id`)."""
        path = f"/message/{self.address}/{message_id}"
        try:
            body = await self._request("GET", path, params={"from": sender})
        except FluxClientError as exc:
            if not (exc.status == 404 and exc.code == "bad_answer"):
                raise
            # No such route (a non-JSON 404, as the prototype's server answers): look
            # the message up in the mailbox listing instead.
            return await self._find_in_inbox(message_id, sender)
        return dict(need(body, "message", dict, "GET /message"))

    async def _find_in_inbox(self, message_id: str, sender: str | None) -> Message:
        """The prototype's server has no /message route: find the id, or the one id a short
        id starts with, in the listing, as FLUX's server would (AmbiguousId for several)."""
        found = [m for m in (await self.inbox()).messages
                 if isinstance(m.get("id"), str) and m["id"].startswith(message_id)
                 and sender in (None, m.get("from"))]  # fmt: skip
        exact = [m for m in found if m["id"] == message_id]
        if exact or len({m["id"] for m in found}) == 1:
            return (exact or found)[0]
        if not found:
            raise FluxClientError(f"no message {message_id} in this mailbox", status=404,
                                  code="not_found", field="id")  # fmt: skip
        raise AmbiguousId.from_answer(409, _ambiguous_prefix(message_id, found))

    async def read(self, ids: Ids, *, sender: str | None = None) -> list[str]:
        """Mark read; returns the ids whose status changed. `sender` names the sender of
        every bare id; an item `{"id", "from"}` names its own. Raises AmbiguousId."""
        body = _with_sender({"address": self.address, **_ids_field(ids)}, sender)
        return _updated(await self._request("POST", "/read", json=body), "read", ids)

    async def unread(self, ids: Ids, *, sender: str | None = None) -> Unread:
        """Mark read messages unread (read → delivered); `sender` and `ids` as for `read`.
        Returns the ids changed (a list), with `.deleted`: the named messages that are
        deleted and so stay so. Raises AmbiguousId; FluxClientError (404 `bad_answer`)
        from a server without the route (the prototype's, or FLUX before it)."""
        body = _with_sender({"address": self.address, **_ids_field(ids)}, sender)
        answer = await self._request("POST", "/unread", json=body)
        where = "POST /unread"
        deleted = optional(answer, "deleted", list, where, [])
        return Unread(_strings(answer, "updated", where),
                      [str(r.get("id")) for r in deleted if isinstance(r, Mapping)])  # fmt: skip

    async def delete(self, ids: Ids, *, sender: str | None = None) -> list[str]:
        """Soft-delete (the server keeps the message); returns the ids changed. `sender`
        and `ids` as for `read`. Raises AmbiguousId."""
        body = _with_sender({"address": self.address, **_ids_field(ids)}, sender)
        return _updated(await self._request("POST", "/delete", json=body), "deleted", ids)

    async def tag(
        self,
        message_id: str,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
        *,
        sender: str | None = None,
    ) -> list[str]:
        """Change this mailbox's tags on a message; returns its tags afterwards."""
        body = {"address": self.address, "id": message_id, "add": list(add), "remove": list(remove)}
        answer = await self._request("POST", "/tag", json=_with_sender(body, sender))
        return _strings(answer, "tags", "POST /tag")

    async def move(self, message_id: str, inbox: str, *, sender: str | None = None) -> str:
        body = _with_sender({"address": self.address, "id": message_id, "inbox": inbox}, sender)
        return need(await self._request("POST", "/move", json=body), "inbox", str, "POST /move")

    async def thread(self, message_id: str, *, sender: str | None = None) -> list[Message]:
        """The conversation `message_id` (from `sender`) belongs to (linked by `re`), oldest
        first. Raises AmbiguousId."""
        params = {"address": self.address, "from": sender}
        body = await self._request("GET", f"/thread/{message_id}", params=params)
        return _messages(body, "GET /thread")

    async def changes(self, since: int = 0, *, limit: int | None = None) -> Changes:
        """What changed in the mailbox after state `since` (0: everything). Raises
        FluxClientError with code `cannot_calculate_changes` for a state the server never
        issued or no longer holds: start again from 0 (the listener does)."""
        params = {"address": self.address, "since": since, "limit": limit}
        body = await self._request("GET", "/changes", params=params)
        where = "GET /changes"
        return Changes(
            need(body, "state", int, where),
            optional(body, "has_more", bool, where, False),
            _messages(body, where, "created", required=False),
            _messages(body, where, "updated", required=False),
        )

    # -- reading what arrived -----------------------------------------------------------

    def verify(self, msg: Mapping[str, Any], *, server_keys: KeyLookup | None = None) -> Verified:
        """Check the sender's signature and the integrity chain; learn the sender's key.

        With `server_keys` each seal must verify under a key its server publishes; without,
        seals are checked against the key in the record only (it shows the chain is intact,
        not who made it). Raises InvalidInput/VerificationError subclasses, ChainError.
        """
        envelope = verify_envelope(dict(msg))
        chain: ChainCheck = verify_chain(msg, server_keys)
        chain.raise_for_failure()
        self.learn_key(envelope.sender, str(msg["pub"]))
        return Verified(envelope, chain)

    async def verify_online(self, msg: Mapping[str, Any]) -> Verified:
        """`verify`, with each hop's seal checked under the keys its server publishes
        (GET /federation/info at that server; this client's own server at its URL). Only
        sealed records' servers are asked: a prototype record's `server` is a label whose
        check uses no key, and is never fetched (PROTOCOL.md §13.11)."""
        servers = sealed_servers_in_chain(msg)
        table = {name: await self.published_keys(name) for name in servers}
        return self.verify(msg, server_keys=lambda name: table.get(name, ()))

    async def published_keys(self, server: str) -> list[PublishedKey]:
        """The signing keys (current and retired) `server` publishes; cached per client.

        Raises FluxClientError when the server cannot be asked.
        """
        if server not in self._server_keys:
            domain = await self.server_domain()
            base = self.url if server == domain else domain_url(server, plain_http=self._plain_http)
            session = await self._http()
            try:  # another server's answer: no redirects, capped, with a deadline
                status, body = await get_json_capped(session, f"{base}/federation/info")
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                raise FluxClientError(
                    f"cannot get {server}'s keys: {exc}", code="unreachable"
                ) from exc
            if status != 200 or not isinstance(body, dict):
                raise FluxClientError.from_answer(status, body)
            try:
                self._server_keys[server] = list(parse_info(body))  # the servers' own reading
            except (InvalidInput, TypeError) as exc:  # TypeError: `keys` not a list
                field = getattr(exc, "field", None) or "keys"
                raise bad_answer(f"GET {server}/federation/info", field, str(exc), body) from exc
        return self._server_keys[server]

    def decrypt(self, msg: Mapping[str, Any]) -> str:
        """The plaintext (the content itself when not encrypted).

        Raises NotARecipient, or DecryptionError saying nothing more.
        """
        return decrypt_content(msg, self.identity)

    # -- real time ----------------------------------------------------------------------

    def on_message(self, handler: Handler) -> Handler:
        """Decorator: call `handler(msg)` (sync or async) for each new message, once each."""
        self._listener.message_handlers.append(handler)
        return handler

    def on_change(self, handler: Callable[[list[str]], Any]) -> Callable[[list[str]], Any]:
        """Decorator: call `handler(ids)` when messages change elsewhere (read, tagged...)."""
        self._listener.change_handlers.append(handler)
        return handler

    async def connect_ws(self, *, inbox: str | None = None, since: int | None = None) -> None:
        """Listen on the WebSocket until `close()`; reconnects by itself.

        After every reconnect it catches up through /changes from the last state it saw,
        so nothing that arrived while the socket was down is missed (`since` seeds that
        state, e.g. one saved from an earlier run). Raises FluxClientError only when the
        server refuses this key (not for outages, which it waits out).
        """
        await self._listener.run(inbox=inbox, since=since)

    async def start_ws(
        self, *, inbox: str | None = None, since: int | None = None, timeout: float | None = None
    ) -> asyncio.Task[None]:
        """Run `connect_ws` in a task and return it once the socket is authenticated."""
        task = asyncio.create_task(self.connect_ws(inbox=inbox, since=since))
        await self._listener.wait_connected(task, timeout)
        return task

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until the WebSocket is (again) authenticated and caught up."""
        await self._listener.wait_connected(None, timeout)

    @property
    def state(self) -> int | None:
        """The last mailbox state the WebSocket saw (pass it as `since` to resume)."""
        return self._listener.state

    @property
    def connections(self) -> int:
        """How many times the WebSocket has authenticated (1 + reconnects)."""
        return self._listener.connections

    async def close(self) -> None:
        await self._listener.stop()
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()

    async def __aenter__(self) -> FluxClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @classmethod
    def from_keyfile(
        cls, path: str | os.PathLike[str], url: str, *, passphrase: str | None = None, **kw: Any
    ) -> FluxClient:
        return cls(FluxIdentity.load(path, passphrase), url, **kw)
