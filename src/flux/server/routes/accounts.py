"""Account routes: `/account/*` and the session-authenticated `/mail/*` (docs/API.md,
"Accounts").

`/account/register|login|logout|me|claim` are thin over `flux.accounts.Accounts`. The
`/mail/*` routes serve password accounts, whose key the server holds: the caller sends the
session token from `/account/login` in `X-Flux-Session`, and the mailbox is always the
session's own (a request naming another `address` is refused, 403), so no request can
reach another account's mail. Mailbox reads and changes go through the same `Mailbox` as
`/inbox` and friends; `/mail/send` composes and signs with the account's key (unwrapped for
this one request) through `flux.protocol.compose`, then hands every copy to the same
`Submitter.submit` as `POST /send`, so every check applies to it as to any other message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from aiohttp import web

from ...accounts import Account, Accounts
from ...accounts.service import MAX_PASSWORD
from ...accounts.store import ActiveSession
from ...protocol.e2e import decrypt_content
from ...protocol.errors import InvalidValue, TooLarge, WrongType
from ...protocol.identity import Identity
from ...protocol.limits import MAX_CONTENT_BYTES, MAX_RECIPIENTS, MAX_SUBJECT_BYTES
from ...protocol.outgoing import Outgoing, compose
from ...store.base import MessageStatus, Store, StoreOutcome
from .. import wire
from ..errors import Forbidden, UnknownRecipient
from ..fair import client_bucket, request_client
from ..mailbox import (
    Mailbox,
    list_query,
    parse_move,
    parse_refs,
    parse_tag,
    unread_wire,
    updated_wire,
)
from ..submission import NOT_HOSTED, Submitter
from .mail import changes_query, find_sent, message_ref, sent_page

SESSION_HEADER = "X-Flux-Session"
MAX_RECIPIENT_CHARS = 320  #: `fx1…@domain` or `name@domain`
SEND_FIELDS = frozenset({"to", "content", "subject", "cc", "bcc", "tags", "re", "expires",
                         "encrypt", "address"})  # fmt: skip
REGISTER_FIELDS = frozenset({"username", "password", "invite"})
LOGIN_FIELDS = frozenset({"username", "password"})
PASSWORD_FIELDS = frozenset({"password", "new_password"})
CLAIM_FIELDS = frozenset({"username", "address", "pub", "t", "sig", "invite"})
REFS_FIELDS = frozenset({"address", "ids", "id", "from"})
TAG_FIELDS = frozenset({"address", "id", "from", "add", "remove"})
MOVE_FIELDS = frozenset({"address", "id", "from", "inbox"})
LIST_QUERY = frozenset({"address", "inbox", "status", "tag", "from", "limit", "cursor"})
T = TypeVar("T")


def optional(body: Mapping[str, Any], name: str, parse: Callable[[Mapping[str, Any], str], T]) -> T | None:  # fmt: skip
    """`parse(body, name)`, or None when the field is absent or null."""
    return None if body.get(name) is None else parse(body, name)


def boolean(body: Mapping[str, Any], name: str) -> bool:
    value = wire.field(body, name)
    if not isinstance(value, bool):
        raise WrongType(f"{name} must be true or false", field=name)
    return value


def subject_text(body: Mapping[str, Any], name: str) -> str:
    return wire.string(body, name, max_len=MAX_SUBJECT_BYTES)  # bytes are checked by compose


def per_field(
    recipients: Mapping[str, str], written: Mapping[str, list[tuple[str, str]]]
) -> dict[str, Any]:
    """The outcome by field, as the prototype's /mail/send answered it: `delivery` (the
    `to` recipient's), and `cc` / `bcc`: {recipient as written: outcome}."""
    to = written.get("to", [])
    return {
        "delivery": recipients.get(to[0][1]) if to else None,
        "cc": {item: recipients.get(fx1) for item, fx1 in written.get("cc", [])},
        "bcc": {item: recipients.get(fx1) for item, fx1 in written.get("bcc", [])},
    }


class AccountRoutes:
    def __init__(
        self,
        *,
        accounts: Accounts,
        mailbox: Mailbox,
        submitter: Submitter,
        hosts: Store,
        page_limit: int,
        trusted_proxies: frozenset[str] = frozenset(),
    ) -> None:
        self.accounts = accounts
        #: load balancers whose X-Forwarded-For names the client (login rate limits count
        #: per client address; behind a proxy the connection's address is the proxy's)
        self.trusted_proxies = wire.TrustedProxies(trusted_proxies)
        self.mailbox = mailbox
        self.submitter = submitter
        self.hosts = hosts
        self.page_limit = page_limit

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/account/register", self.register),
            web.post("/account/login", self.login),
            web.post("/account/logout", self.logout),
            web.get("/account/me", self.me),
            web.post("/account/password", self.password),
            web.post("/account/claim", self.claim),
            web.post("/mail/send", self.send),
            web.get("/mail/inbox", self.inbox),
            web.get("/mail/inboxes", self.inboxes),
            web.get("/mail/peek", self.peek),
            web.post("/mail/read", self.read),
            web.post("/mail/unread", self.unread),
            web.post("/mail/delete", self.delete),
            web.post("/mail/tag", self.tag),
            web.post("/mail/move", self.move),
            web.get("/mail/sent", self.sent),
            web.get("/mail/sent/{id}", self.sent_one),
            web.get("/mail/sent/{id}/plain", self.sent_plain),
            web.get("/mail/message/{id}", self.message),
            web.get("/mail/message/{id}/plain", self.message_plain),
            web.get("/mail/thread/{id}", self.thread),
            web.get("/mail/changes", self.changes),
        ]

    def _public(self, account: Account) -> dict[str, Any]:
        domain = self.accounts.domain
        # `flux_address`: the prototype's name for `address` (the fx1 address), kept so
        # its clients find it (compat/http.py)
        return {"username": account.username, "name": f"{account.username}@{domain}",
                "address": account.address, "flux_address": account.address,
                "pub": account.pub, "kind": str(account.kind), "domain": domain}  # fmt: skip

    # -- accounts -----------------------------------------------------------------------------

    async def register(self, request: web.Request) -> web.Response:
        body = await wire.read_object(request)
        wire.only(body, REGISTER_FIELDS)
        username = wire.string(body, "username", max_len=64)
        password = wire.string(body, "password", max_len=MAX_PASSWORD)
        invite = optional(body, "invite", wire.string)
        client = client_bucket(wire.client_address(request, self.trusted_proxies))
        login = await self.accounts.register_and_login(username, password, invite, client)
        return wire.ok(session=login.token, expires_at=login.expires_at,
                       **self._public(login.account))  # fmt: skip

    async def login(self, request: web.Request) -> web.Response:
        body = await wire.read_object(request)
        wire.only(body, LOGIN_FIELDS)
        username = wire.string(body, "username", max_len=64)
        password = wire.string(body, "password", max_len=MAX_PASSWORD)
        # counted per IPv4 address or IPv6 /64 (fair.py), as every per-client limit
        peer = client_bucket(wire.client_address(request, self.trusted_proxies))
        login = await self.accounts.login(username, password, peer)
        return wire.ok(session=login.token, expires_at=login.expires_at,
                       **self._public(login.account))  # fmt: skip

    async def logout(self, request: web.Request) -> web.Response:
        return wire.ok(revoked=await self.accounts.logout(request.headers.get(SESSION_HEADER)))

    async def me(self, request: web.Request) -> web.Response:
        active = await self.accounts.authenticate(request.headers.get(SESSION_HEADER))
        return wire.ok(created_at=active.account.created_at,
                       expires_at=active.session.expires_at, **self._public(active.account))  # fmt: skip

    async def password(self, request: web.Request) -> web.Response:
        """Change the session's account password: {password, new_password} -> {ok,
        sessions_revoked}. The session is checked first (401), so nothing is parsed or
        counted without one. Raises what Accounts.change_password raises."""
        active, _ = await self._session(request)
        body = await wire.read_object(request)
        wire.only(body, PASSWORD_FIELDS)
        password = wire.string(body, "password", max_len=MAX_PASSWORD)
        new_password = wire.string(body, "new_password", max_len=MAX_PASSWORD)
        # counted per client bucket under the account's name, as logins are (limiter.py)
        client = client_bucket(wire.client_address(request, self.trusted_proxies))
        revoked = await self.accounts.change_password(active, password, new_password, client)
        return wire.ok(sessions_revoked=revoked)

    async def claim(self, request: web.Request) -> web.Response:
        body = await wire.read_object(request)
        wire.only(body, CLAIM_FIELDS)
        account, created = await self.accounts.claim(
            username=wire.string(body, "username", max_len=64),
            address=wire.string(body, "address", max_len=64),
            pub=wire.string(body, "pub", max_len=64),
            t=wire.integer(body, "t"),
            sig=wire.string(body, "sig", max_len=100),
            invite=optional(body, "invite", wire.string),
        )
        return wire.ok(created=created, **self._public(account))

    # -- the session's own mailbox ----------------------------------------------------------

    async def _session(self, request: web.Request) -> tuple[ActiveSession, str]:
        token = request.headers.get(SESSION_HEADER) or ""
        return await self.accounts.authenticate(token), token

    @staticmethod
    def _own(active: ActiveSession, named: str | None) -> str:
        """The session's address; `named` (an `address` the request gave) must be it."""
        own = active.account.address
        if named is not None and named != own:
            raise Forbidden("a session reaches only its own mailbox", field="address")
        return own

    async def _owner(self, request: web.Request, query: frozenset[str]) -> str:
        active, _ = await self._session(request)
        wire.only_query(request, query)
        return self._own(active, wire.query_str(request, "address"))

    async def _owner_of_body(
        self, request: web.Request, fields: frozenset[str]
    ) -> tuple[str, dict[str, Any]]:
        active, _ = await self._session(request)  # first: without a session, nothing is parsed
        body = await wire.read_object(request)
        wire.only(body, fields)
        return self._own(active, optional(body, "address", wire.string)), body

    def _limit(self, request: web.Request) -> int:
        return wire.query_int(request, "limit", 50, low=1, high=self.page_limit)

    async def inbox(self, request: web.Request) -> web.Response:
        address = await self._owner(request, LIST_QUERY)
        query = list_query(request, limit=self._limit(request))
        messages, cursor = await self.mailbox.list(address, query)
        return wire.ok(messages=messages, next_cursor=cursor, count=len(messages))

    async def sent(self, request: web.Request) -> web.Response:
        """The account's sent mail with each recipient's delivery state (as GET /sent)."""
        address = await self._owner(request, frozenset({"address", "limit", "cursor"}))
        cursor = wire.query_str(request, "cursor")
        return wire.ok(**await sent_page(self.mailbox.store, address, self._limit(request), cursor))

    async def sent_one(self, request: web.Request) -> web.Response:
        """One sent message by id or short id (as GET /sent/{addr}/{id})."""
        address = await self._owner(request, frozenset({"address"}))
        msg_id = wire.check_id_or_prefix(request.match_info["id"])
        return wire.ok(message=(await find_sent(self.mailbox.store, address, msg_id)).to_wire())

    async def sent_plain(self, request: web.Request) -> web.Response:
        """The text of one sent message, decrypted with the account's key: as
        GET /mail/message/{id}/plain, for the session's sent mail."""
        active, token = await self._session(request)
        wire.only_query(request, frozenset({"address"}))
        address = self._own(active, wire.query_str(request, "address"))
        msg_id = wire.check_id_or_prefix(request.match_info["id"])
        sent = (await find_sent(self.mailbox.store, address, msg_id)).to_wire()
        return self._plain(sent, self.accounts.signer(active, token))

    async def inboxes(self, request: web.Request) -> web.Response:
        address = await self._owner(request, frozenset({"address"}))
        return wire.ok(inboxes=await self.mailbox.store.inboxes(address))

    async def peek(self, request: web.Request) -> web.Response:
        address = await self._owner(request, frozenset({"address", "limit"}))
        pending, messages = await self.mailbox.peek(address, self._limit(request))
        return wire.ok(pending=pending, count=pending, messages=messages)

    async def read(self, request: web.Request) -> web.Response:
        address, body = await self._owner_of_body(request, REFS_FIELDS)
        refs = parse_refs(body)
        return wire.ok(**updated_wire(await self.mailbox.mark(address, refs, MessageStatus.READ)))

    async def unread(self, request: web.Request) -> web.Response:
        """As POST /unread, for the session's own mailbox."""
        address, body = await self._owner_of_body(request, REFS_FIELDS)
        return wire.ok(**unread_wire(await self.mailbox.unread(address, parse_refs(body))))

    async def message(self, request: web.Request) -> web.Response:
        """One message of the session's mailbox by id or short id (`?from=` chooses the
        sender): the answer of GET /message/{address}/{id}."""
        address = await self._owner(request, frozenset({"address", "from"}))
        return wire.ok(message=await self.mailbox.get(address, message_ref(request)))

    async def message_plain(self, request: web.Request) -> web.Response:
        """The text of one message of the session's mailbox, end-to-end encrypted or not:
        `{ok, id, from, encrypted, content}`. A password account's key is on this server
        (sealed under the password, unwrapped for one request by the session), so this
        server, and only for the session's owner, decrypts what was encrypted for it
        (PROTOCOL.md §6.2); a key kept by its owner never reaches a server, so there is no
        such route for key sessions. 400 `not_a_recipient` when the message was not
        encrypted for the account, `decryption_failed` when it does not open; 404 and 409
        `ambiguous` as GET /mail/message/{id}."""
        active, token = await self._session(request)
        wire.only_query(request, frozenset({"address", "from"}))
        address = self._own(active, wire.query_str(request, "address"))
        msg = await self.mailbox.get(address, message_ref(request))
        return self._plain(msg, self.accounts.signer(active, token))

    @staticmethod
    def _plain(msg: Mapping[str, Any], identity: Identity) -> web.Response:
        content = decrypt_content(msg, identity)  # a plain message's content as it is
        encrypted = bool(msg.get("encrypted"))
        return wire.ok(id=msg["id"], encrypted=encrypted, content=content, **{"from": msg["from"]})

    async def thread(self, request: web.Request) -> web.Response:
        """The conversation of one message of the session's mailbox: the answer of
        GET /thread/{id}."""
        address = await self._owner(request, frozenset({"address", "from"}))
        return wire.ok(messages=await self.mailbox.thread(address, message_ref(request)))

    async def changes(self, request: web.Request) -> web.Response:
        """What changed in the session's mailbox after `since`: the answer of GET /changes
        (`{created, updated, sent, state, has_more}`; 400 `cannot_calculate_changes` for a
        state this server never issued: resync)."""
        address = await self._owner(request, frozenset({"address", "since", "limit"}))
        since, limit = changes_query(request, self.page_limit)
        return wire.ok(**await self.mailbox.changes(address, since, limit))

    async def delete(self, request: web.Request) -> web.Response:
        address, body = await self._owner_of_body(request, REFS_FIELDS)
        refs = parse_refs(body)
        return wire.ok(
            **updated_wire(await self.mailbox.mark(address, refs, MessageStatus.DELETED))
        )

    async def tag(self, request: web.Request) -> web.Response:
        address, body = await self._owner_of_body(request, TAG_FIELDS)
        return wire.ok(tags=await self.mailbox.tag(address, parse_tag(body)))

    async def move(self, request: web.Request) -> web.Response:
        address, body = await self._owner_of_body(request, MOVE_FIELDS)
        ref, inbox = parse_move(body)
        return wire.ok(inbox=await self.mailbox.move(address, ref, inbox))

    # -- sending ----------------------------------------------------------------------------

    async def send(self, request: web.Request) -> web.Response:
        """Compose, sign with the account's key, and submit every copy (module docstring).

        Raises what the body's checks, compose and Submitter.submit raise."""
        active, token = await self._session(request)
        body = await wire.read_object(request)
        self._own(active, optional(body, "address", wire.string))
        unknown = sorted(set(body) - SEND_FIELDS)
        if unknown:
            raise InvalidValue(f"unknown field {unknown[0][:64]!r}", field=unknown[0][:64])
        domains: dict[str, str] = {}
        written: dict[str, list[tuple[str, str]]] = {}  # field -> (as written, fx1)
        to = (await self._recipients(body, "to", domains, written, single=True))[0]
        cc = await self._recipients(body, "cc", domains, written)
        bcc = await self._recipients(body, "bcc", domains, written)
        encrypt = optional(body, "encrypt", boolean) or False
        outgoing = compose(
            self.accounts.signer(active, token),
            to,
            wire.string(body, "content", max_len=MAX_CONTENT_BYTES),
            subject=optional(body, "subject", subject_text),
            reply_to=optional(body, "re", wire.message_id),
            cc=cc,
            bcc=bcc,
            tags=optional(body, "tags", wire.tag_list),
            expires=optional(body, "expires", wire.integer),
            encrypt_for=await self._keys([to, *cc, *bcc]) if encrypt else None,
            now_ms=self.accounts.clock(),
        )
        answer = await self._submit(outgoing, domains, request_client(request))
        return wire.ok(**answer, **per_field(answer["recipients"], written))

    async def _recipients(
        self, body: Mapping[str, Any], name: str, domains: dict[str, str],
        seen: dict[str, list[tuple[str, str]]], *, single: bool = False,
    ) -> list[str]:  # fmt: skip
        """The fx1 addresses of `to` (a string) or `cc`/`bcc` (lists); other domains' are
        noted in `domains` so the submitter queues them for those servers, and each
        recipient as written and as resolved in `seen[name]`."""
        if single:
            written = [(name, wire.string(body, name, max_len=MAX_RECIPIENT_CHARS))]
        else:
            items = body.get(name) or []
            if not isinstance(items, list):
                raise WrongType(f"{name} must be a list of recipients", field=name)
            if len(items) > MAX_RECIPIENTS:
                raise TooLarge(f"{name} has more than {MAX_RECIPIENTS} recipients", field=name)
            written = [(f"{name}[{n}]", item) for n, item in enumerate(items)]
        out = []
        for where, item in written:
            if not isinstance(item, str) or len(item) > MAX_RECIPIENT_CHARS:
                raise WrongType(f"{where} must be a recipient (a string)", field=where)
            address, domain = await self.accounts.recipient(item, where)
            if domain is not None:
                domains[address] = domain
            out.append(address)
            seen.setdefault(name, []).append((item, address))
        return out

    async def _keys(self, addresses: list[str]) -> dict[str, str]:
        """Public keys to encrypt for: those of the addresses hosted here."""
        keys = {}
        for address in dict.fromkeys(addresses):
            hosted = await self.hosts.hosted(address)
            if hosted is None:
                raise InvalidValue(f"no key known here for {address}: cannot encrypt for it",
                                   field="encrypt")  # fmt: skip
            keys[address] = hosted.pub
        return keys

    async def _submit(
        self, outgoing: Outgoing, domains: dict[str, str], client: str | None
    ) -> dict[str, Any]:
        """Submit the primary copy and each BCC copy. A copy none of whose recipients is
        hosted is reported `not_hosted` rather than failing the others; only when no copy
        reaches anyone is the send refused (404)."""
        recipients: dict[str, str] = {}
        refused: UnknownRecipient | None = None
        for copy in outgoing.all:
            named = copy.get("bcc") or [copy["to"], *copy.get("cc", ())]
            wanted = {a: d for a, d in domains.items() if a in named}
            try:
                result = await self.submitter.submit(
                    {"message": copy, "domains": wanted} if wanted else copy,
                    client=client,
                )
            except UnknownRecipient as exc:
                refused = refused or exc
                recipients.update(dict.fromkeys(named, NOT_HOSTED))
                continue
            recipients.update(result.recipients)
        if refused is not None and set(recipients.values()) == {NOT_HOSTED}:
            raise refused
        fresh = {str(StoreOutcome.STORED), "queued"} & set(recipients.values())
        return {"id": outgoing.primary["id"], "recipients": recipients, "duplicate": not fresh}
