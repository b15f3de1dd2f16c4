"""Mail routes: /send and the mailbox endpoints (docs/API.md, "Mail").

Each handler: parse (wire), authorise (the caller must own the address), call the mailbox
or the submitter, answer. Errors are raised, never answered here: errors.py maps them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ...protocol.errors import InvalidValue
from ...store.base import (
    MAX_CANDIDATES,
    MessageRef,
    MessageStatus,
    PrefixMatches,
    SentMessage,
    Store,
)
from .. import wire
from ..auth import Authenticator
from ..errors import NotFound
from ..fair import request_client
from ..mailbox import (
    ID_DIGITS,
    AmbiguousPrefix,
    Mailbox,
    list_query,
    parse_move,
    parse_refs,
    parse_since,
    parse_tag,
    unread_wire,
    updated_wire,
)
from ..submission import Submitter

REFS_FIELDS = frozenset({"address", "ids", "id", "from"})
TAG_FIELDS = frozenset({"address", "id", "from", "add", "remove"})
MOVE_FIELDS = frozenset({"address", "id", "from", "inbox"})
LIMIT = frozenset({"limit"})
LIST_QUERY = frozenset({"inbox", "status", "tag", "from", "limit", "cursor"})
NO_QUERY: frozenset[str] = frozenset()


def query_sender(request: web.Request) -> str | None:
    """The optional `from` query parameter choosing among senders sharing an id."""
    value = wire.query_str(request, "from")
    return None if value is None else wire.check_address(value, "from")


def message_ref(request: web.Request) -> MessageRef:
    """The message a `/…/{id}?from=` path names (shared with the account routes): the id
    or a short id, and the optional sender. Raises InvalidValue naming `id` or `from`."""
    return MessageRef(wire.check_id_or_prefix(request.match_info["id"]), query_sender(request))


class MailRoutes:
    def __init__(
        self, *, auth: Authenticator, mailbox: Mailbox, submitter: Submitter, page_limit: int,
        online: Callable[[str], bool] = lambda _address: False, public_presence: bool = False,
    ) -> None:  # fmt: skip
        """`online(address)`: a socket of `address` is open (here: this process's push
        hub). `public_presence`: /status tells anyone whether an address is online, as the
        prototype did (a server with --legacy-tokens); else only its owner."""
        self.auth = auth
        self.mailbox = mailbox
        self.submitter = submitter
        self.page_limit = page_limit
        self.online = online
        self.public_presence = public_presence

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/send", self.send),
            web.get("/fetch/{address}", self.fetch),
            web.get("/inbox/{address}", self.inbox),
            web.get("/inboxes/{address}", self.inboxes),
            web.get("/peek/{address}", self.peek),
            web.get("/message/{address}/{id}", self.message),
            web.post("/read", self.read),
            web.post("/unread", self.unread),
            web.post("/delete", self.delete),
            web.post("/tag", self.tag),
            web.post("/move", self.move),
            web.get("/thread/{id}", self.thread),
            web.get("/changes", self.changes),
            web.get("/status/{address}", self.status),
            web.get("/sent/{address}", self.sent),
            web.get("/sent/{address}/{id}", self.sent_one),
        ]

    # -- helpers --------------------------------------------------------------------------

    async def _owner_in_path(self, request: web.Request, query: frozenset[str]) -> str:
        wire.only_query(request, query)
        address = wire.check_address(request.match_info["address"])
        await self.auth.require(request, address)
        return address

    async def _owner_in_query(self, request: web.Request) -> str:
        address = wire.check_address(wire.query_str(request, "address", required=True))
        await self.auth.require(request, address)
        return address

    async def _owner_in_body(
        self, request: web.Request, fields: frozenset[str]
    ) -> tuple[str, dict]:
        body = await wire.read_object(request)
        wire.only(body, fields)
        address = wire.address(body)
        await self.auth.require(request, address)
        return address, body

    def _limit(self, request: web.Request, default: int = 50) -> int:
        return wire.query_int(request, "limit", default, low=1, high=self.page_limit)

    # -- handlers -------------------------------------------------------------------------

    async def send(self, request: web.Request) -> web.Response:
        result = await self.submitter.submit(await request.read(), client=request_client(request))
        return wire.ok(**result.to_wire())

    async def fetch(self, request: web.Request) -> web.Response:
        address = await self._owner_in_path(request, LIMIT)
        limit = self._limit(request, default=100)
        messages = await self.mailbox.fetch(address, limit)
        return wire.ok(messages=messages, count=len(messages))

    async def inbox(self, request: web.Request) -> web.Response:
        address = await self._owner_in_path(request, LIST_QUERY)
        query = list_query(request, limit=self._limit(request))
        messages, cursor = await self.mailbox.list(address, query)
        return wire.ok(messages=messages, next_cursor=cursor, count=len(messages))

    async def inboxes(self, request: web.Request) -> web.Response:
        address = await self._owner_in_path(request, NO_QUERY)
        return wire.ok(inboxes=await self.mailbox.store.inboxes(address))

    async def peek(self, request: web.Request) -> web.Response:
        address = await self._owner_in_path(request, LIMIT)
        pending, messages = await self.mailbox.peek(address, self._limit(request))
        return wire.ok(pending=pending, count=pending, messages=messages)

    async def message(self, request: web.Request) -> web.Response:
        address = await self._owner_in_path(request, frozenset({"from"}))
        return wire.ok(message=await self.mailbox.get(address, message_ref(request)))

    async def read(self, request: web.Request) -> web.Response:
        address, body = await self._owner_in_body(request, REFS_FIELDS)
        refs = parse_refs(body)
        return wire.ok(**updated_wire(await self.mailbox.mark(address, refs, MessageStatus.READ)))

    async def unread(self, request: web.Request) -> web.Response:
        """Mark read messages unread (read → delivered): `updated`/`refs` as /read, and
        `deleted`: the named ones that are deleted, which stay so (Mailbox.unread)."""
        address, body = await self._owner_in_body(request, REFS_FIELDS)
        return wire.ok(**unread_wire(await self.mailbox.unread(address, parse_refs(body))))

    async def delete(self, request: web.Request) -> web.Response:
        address, body = await self._owner_in_body(request, REFS_FIELDS)
        refs = parse_refs(body)
        return wire.ok(
            **updated_wire(await self.mailbox.mark(address, refs, MessageStatus.DELETED))
        )

    async def tag(self, request: web.Request) -> web.Response:
        address, body = await self._owner_in_body(request, TAG_FIELDS)
        return wire.ok(tags=await self.mailbox.tag(address, parse_tag(body)))

    async def move(self, request: web.Request) -> web.Response:
        address, body = await self._owner_in_body(request, MOVE_FIELDS)
        ref, inbox = parse_move(body)
        return wire.ok(inbox=await self.mailbox.move(address, ref, inbox))

    async def thread(self, request: web.Request) -> web.Response:
        wire.only_query(request, frozenset({"address", "from"}))
        ref = message_ref(request)
        address = await self._owner_in_query(request)
        return wire.ok(messages=await self.mailbox.thread(address, ref))

    async def sent(self, request: web.Request) -> web.Response:
        """The caller's sent mail, newest first, each with `_sent_at` and `_delivery` (every
        recipient's delivery state: docs/API.md, "Sent mail"); `cursor`: the next page
        (`next_cursor` of the previous one, null at the end; 400 naming `cursor` if it
        does not decode)."""
        address = await self._owner_in_path(request, frozenset({"limit", "cursor"}))
        cursor = wire.query_str(request, "cursor")
        return wire.ok(**await sent_page(self.mailbox.store, address, self._limit(request), cursor))

    async def sent_one(self, request: web.Request) -> web.Response:
        """One sent message by id or short id (8+ hex digits): 404 if the caller sent none
        with it, 409 `ambiguous` listing the candidates when a prefix names several."""
        address = await self._owner_in_path(request, NO_QUERY)
        msg_id = wire.check_id_or_prefix(request.match_info["id"])
        return wire.ok(message=(await find_sent(self.mailbox.store, address, msg_id)).to_wire())

    async def changes(self, request: web.Request) -> web.Response:
        wire.only_query(request, frozenset({"address", "since", "limit"}))
        since, limit = changes_query(request, self.page_limit)
        address = await self._owner_in_query(request)
        return wire.ok(**await self.mailbox.changes(address, since, limit))

    async def status(self, request: web.Request) -> web.Response:
        wire.only_query(request, NO_QUERY)
        address = wire.check_address(request.match_info["address"])
        caller = await self.auth.optional(request, address)
        hosted = await self._hosted(address)
        if caller is not None and caller.address == address:
            return wire.ok(hosted=hosted, online=self.online(address),
                           **await self.mailbox.status(address))  # fmt: skip
        if self.public_presence:
            return wire.ok(hosted=hosted, address=address, online=self.online(address))
        return wire.ok(hosted=hosted)

    async def _hosted(self, address: str) -> bool:
        return await self.mailbox.store.hosted(address) is not None


def changes_query(request: web.Request, page_limit: int) -> tuple[int, int]:
    """`?since= &limit=` of a changes request (shared with GET /mail/changes): the state
    token (absent: 0) and the page size (default 100, at most `page_limit`). Raises
    CannotCalculateChanges naming `since`, InvalidValue naming `limit`."""
    since = parse_since(wire.query_str(request, "since"))
    return since, wire.query_int(request, "limit", 100, low=1, high=page_limit)


async def sent_page(store: Store, address: str, limit: int, cursor: str | None) -> dict[str, Any]:
    """One page of `address`'s sent mail, newest first (shared with the account routes):
    `{messages, count, next_cursor}`. Raises InvalidValue naming `cursor`."""
    found = await store.sent(address, limit, sent_cursor(cursor))
    after = f"{found[-1].sent_at}.{found[-1].id}" if len(found) == limit else None
    return {"messages": [m.to_wire() for m in found], "count": len(found), "next_cursor": after}


async def find_sent(store: Store, address: str, msg_id: str) -> SentMessage:
    """`address`'s sent message by id or short id (shared with the account routes).
    Raises NotFound, or AmbiguousPrefix (409) listing up to MAX_CANDIDATES matches."""
    if len(msg_id) == ID_DIGITS:
        found = await store.sent_message(address, msg_id)
        matches = [] if found is None else [found]
    else:
        matches = await store.sent_prefix(address, msg_id, MAX_CANDIDATES + 1)
    if not matches:
        raise NotFound("you sent no message with this id", field="id")
    if len(matches) > 1:
        # the count past MAX_CANDIDATES is "more than": the range scan stops there
        found_ = PrefixMatches(len(matches), matches[:MAX_CANDIDATES])  # type: ignore[arg-type]
        raise AmbiguousPrefix(msg_id, found_, "id")
    return matches[0]


_SENT_CURSOR = re.compile(r"([0-9]{1,16})\.([0-9a-f]{32})")


def sent_cursor(value: str | None) -> tuple[int, str] | None:
    """A /sent page cursor, `<sent_at ms>.<id>` (the last item of the previous page), as
    (sent_at, id); None for none. Raises InvalidValue naming `cursor`."""
    if value is None or value == "":
        return None
    match = _SENT_CURSOR.fullmatch(value)
    if match is None:
        raise InvalidValue("cursor is not one this server gave", field="cursor")
    return int(match[1]), match[2]
