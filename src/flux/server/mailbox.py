"""Mailbox operations shared by the HTTP routes and the WebSocket actions.

The caller has already proved it owns `address`; this module reads and changes that one
mailbox through the store and tells the owner's other sockets what changed ("changed"
frames), so every device stays in step whichever one made the change.

Message identity (docs/API.md, "Message identity"; PROTOCOL.md §4.5). A message is named by
its sender and id together: the id is the sender's choice, so two senders may use one id.
Requests keep naming a message by bare id (`id`, `ids`), with an optional `from` (the
sender) to choose; `ids` items may also be `{id, from}`. A bare id that names messages of
several senders in this mailbox is refused with 409 `ambiguous` listing their senders —
only the owner sees their own mailbox, so that tells them nothing about anyone else's.

Short ids (docs/API.md, "Short ids"). Wherever a request names a message of the caller's
own mailbox by id, it may give a prefix of the id instead (8-31 lower-case hex digits, as
git's abbreviated hashes), resolved here before the store is asked, and only inside that
mailbox (`Store.match_prefix`): a prefix that matches one id is that id (with `from` if
given: several senders holding that one id is still the 409 above, field `from`); one that
matches nothing is the same answer as an unknown id; one that matches several ids is 409
`ambiguous` with field `id` (or `ids`) and `candidates` ({id, from, subject}, at most 10)
and `count`. A short id is a lookup convenience only: it is never written into an
envelope (`re` of a new message stays a full id, checked by the envelope's own rules).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..protocol.errors import InvalidValue, MissingField, TooLarge, WrongType
from ..store.base import (
    MAX_CANDIDATES,
    AmbiguousMessage,
    ChangeKind,
    ListQuery,
    MessageRef,
    MessageStatus,
    PrefixMatches,
    SentMessage,
    Store,
    StoredMessage,
)
from . import wire
from .errors import Ambiguous, CannotCalculateChanges, NotFound
from .fanout import CHANGED, LocalFanout, MailEvent
from .names import NameResolver
from .push import Connection

Wire = dict[str, Any]
ID_DIGITS = 32  #: a whole message id; anything shorter that passed the edge is a prefix


@dataclass(frozen=True, slots=True)
class TagRequest:
    id: str
    add: list[str]
    remove: list[str]
    sender: str | None = None  #: the `from` naming which sender's message, if given


def parse_sender(obj: Mapping[str, Any], name: str = "from") -> str | None:
    """The optional sender (`from`) that chooses among messages sharing an id."""
    value = obj.get(name)
    return None if value is None else wire.check_address(value, name)


def parse_ref(obj: Mapping[str, Any]) -> MessageRef:
    """`{id, from?}`; `id` may be a short id (a prefix: module notes)."""
    return MessageRef(wire.check_id_or_prefix(wire.field(obj, "id")), parse_sender(obj))


def parse_refs(obj: Mapping[str, Any]) -> list[MessageRef]:
    """`ids: [id | {id, from?}, ...]` or a single `id`, each with the request's `from`
    unless the item names its own; each id may be a short id (module notes)."""
    default = parse_sender(obj)
    if "ids" not in obj:
        if "id" in obj:
            return [MessageRef(wire.check_id_or_prefix(obj["id"]), default)]
        raise MissingField("ids (or id) is required", field="ids")
    ids = obj["ids"]
    if not isinstance(ids, list):
        raise WrongType("ids must be a list of message ids", field="ids")
    if len(ids) > wire.MAX_IDS:
        raise TooLarge(f"at most {wire.MAX_IDS} ids at once", field="ids")
    refs: list[MessageRef] = []
    for n, item in enumerate(ids):
        if isinstance(item, Mapping):
            sender = parse_sender(item, "from") if "from" in item else default
            msg_id = wire.check_id_or_prefix(item.get("id"), f"ids[{n}].id")
            refs.append(MessageRef(msg_id, sender))
        elif isinstance(item, str):
            refs.append(MessageRef(wire.check_id_or_prefix(item, f"ids[{n}]"), default))
        else:
            raise WrongType("ids items are message ids or {id, from}", field=f"ids[{n}]")
    return list(dict.fromkeys(refs))


def parse_tag(obj: Mapping[str, Any]) -> TagRequest:
    ref = parse_ref(obj)
    return TagRequest(ref.id, wire.tag_list(obj, "add"), wire.tag_list(obj, "remove"), ref.sender)


def parse_move(obj: Mapping[str, Any]) -> tuple[MessageRef, str]:
    return parse_ref(obj), wire.inbox(obj)


def ref_wire(row: StoredMessage) -> dict[str, str]:
    """How a client addresses one message: `{id, from}`."""
    return {"id": row.id, "from": row.sender}


class AmbiguousPrefix(Ambiguous):
    """A short id that matches several messages of the caller's own mailbox (module notes):
    409 `ambiguous` (the same code and row as Ambiguous), naming the request's id field,
    with `prefix`, `count` (every match), `candidates` (at most MAX_CANDIDATES: {id, from,
    subject?}) and, as the sender 409 has it, `ambiguous: [{id, senders}]`."""

    def __init__(self, prefix: str, found: PrefixMatches, field: str) -> None:
        senders: dict[str, list[str]] = {}
        for m in found.items:
            senders.setdefault(m.id, []).append(m.sender)
        super().__init__(senders)
        self.message = f"{found.count} messages have an id starting with {prefix}: give more of it"
        self.field = field
        self.prefix = prefix
        self.count = found.count
        self.found = [_candidate(m) for m in found.items]

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "prefix": self.prefix, "count": self.count,
                "candidates": self.found}  # fmt: skip


def _candidate(row: StoredMessage) -> dict[str, Any]:
    out = ref_wire(row)
    if isinstance(row.envelope.get("subject"), str):
        out["subject"] = row.envelope["subject"]
    return out


@contextlib.contextmanager
def _one_sender() -> Iterator[None]:
    """The store's AmbiguousMessage as the 409 `ambiguous` answer."""
    try:
        yield
    except AmbiguousMessage as exc:
        raise Ambiguous(exc.candidates) from None


def parse_since(text: str | None) -> int:
    """`since`: a state token (a non-negative integer; absent or empty is 0, everything).
    Anything else was never issued: CannotCalculateChanges, so the client resyncs."""
    if text is None or text == "":
        return 0
    if not (text.isascii() and text.isdigit() and len(text) <= 19):
        raise CannotCalculateChanges("since is not a state this server issued", field="since")
    return int(text)


def list_query(request: web.Request, *, limit: int) -> ListQuery:
    """A mailbox listing's query parameters (`?inbox= &status= &tag= &from= &cursor=`,
    each checked by the edge rules of wire.py), the same for `/inbox/{addr}` and
    `/mail/inbox`. `from`: only mail from that sender, a whole fx1 address (no prefix: it
    is an index range on the exact address; an `fx1…@domain` or a name is the client's
    to resolve first). Raises InvalidValue / TooLarge naming the parameter."""
    inbox = wire.query_str(request, "inbox")
    tag = wire.query_str(request, "tag")
    sender = wire.query_str(request, "from")
    return ListQuery(
        inbox=None if inbox is None else wire.check_inbox(inbox),
        status=parse_status(wire.query_str(request, "status")),
        tag=wire.check_tag(tag) if tag else None,
        sender=None if sender is None else wire.check_address(sender, "from"),
        limit=limit,
        cursor=wire.query_str(request, "cursor") or None,
    )


def parse_status(text: str | None) -> MessageStatus | None:
    if text is None or text == "":
        return None
    try:
        return MessageStatus(text)
    except ValueError:
        allowed = ", ".join(MessageStatus)
        raise InvalidValue(f"status must be one of {allowed}", field="status") from None


class Mailbox:
    def __init__(
        self, store: Store, fanout: LocalFanout, names: NameResolver | None = None
    ) -> None:
        self.store = store
        self.fanout = fanout
        self.names = names  #: adds `_from_name` to what is read (names.py)
        if fanout.dispatcher.names is None:
            # pushed mail is shown as read mail is: the one resolver (and its cache) serves
            # both (fanout.Dispatcher)
            fanout.dispatcher.names = names

    async def _named(self, rows: Sequence[StoredMessage]) -> list[Wire]:
        listed = [r.to_wire() for r in rows]
        return listed if self.names is None else await self.names.annotate(listed)

    async def _changed(
        self, address: str, rows: Sequence[StoredMessage], origin: Connection | None
    ) -> None:
        """Tell the address's other sockets (in every process) what changed."""
        if rows:
            event = MailEvent(address, CHANGED, tuple(r.ref for r in rows),
                              max(r.seq for r in rows), self.fanout.origin(origin))  # fmt: skip
            await self.fanout.publish(event)

    # -- short ids ----------------------------------------------------------------------------

    async def resolve(self, address: str, ref: MessageRef, field: str = "id") -> MessageRef | None:
        """`ref` with its id made whole if it is a short id (module notes); None if the
        prefix matches nothing in `address`'s mailbox. Raises AmbiguousPrefix."""
        if len(ref.id) == ID_DIGITS:
            return ref
        found = await self.store.match_prefix(address, ref.id, ref.sender, MAX_CANDIDATES)
        if found.count == 0:
            return None
        ids = {m.id for m in found.items}
        if len(ids) == 1 and found.count == len(found.items):
            return MessageRef(ids.pop(), ref.sender)  # several senders: the store's 409
        raise AmbiguousPrefix(ref.id, found, field)

    async def _resolve_one(self, address: str, ref: MessageRef) -> MessageRef:
        """Raises NotFound for a prefix that matches nothing (as for an unknown id)."""
        whole = await self.resolve(address, ref)
        if whole is None:
            raise NotFound("no such message in this mailbox", field="id")
        return whole

    async def _resolve_all(self, address: str, refs: Sequence[MessageRef]) -> list[MessageRef]:
        """Prefixes that match nothing are dropped: read/delete leave an unknown id
        un-updated rather than refusing the request."""
        field = "id" if len(refs) == 1 else "ids"
        found = [await self.resolve(address, r, field) for r in refs]
        return list(dict.fromkeys(r for r in found if r is not None))

    # -- reading ----------------------------------------------------------------------------

    async def fetch(self, address: str, limit: int) -> list[Wire]:
        return await self._named(await self.store.fetch_pending(address, limit))

    async def list(self, address: str, query: ListQuery) -> tuple[list[Wire], str | None]:
        page = await self.store.list(address, query)
        return await self._named(page.items), page.next_cursor

    async def peek(self, address: str, limit: int) -> tuple[int, list[Wire]]:
        page = await self.store.list(address, ListQuery(status=MessageStatus.PENDING, limit=limit))
        return await self.store.pending_count(address), await self._named(page.items)

    async def get(self, address: str, ref: MessageRef) -> Wire:
        """Raises NotFound, Ambiguous (409: the id names several senders' messages, or a
        short id several messages)."""
        ref = await self._resolve_one(address, ref)
        with _one_sender():
            row = await self.store.get(address, ref.id, ref.sender)
        if row is None:
            raise NotFound("no such message in this mailbox", field="id")
        return (await self._named([row]))[0]

    async def thread(self, address: str, ref: MessageRef) -> list[Wire]:
        """The conversation of one message (base.py, "Threads"), the owner's own sent
        messages included: each received one as listings show it, each sent one as
        `GET /sent/{addr}/{id}` does (`_sent_at`, `_delivery`) plus `_folder: "sent"`
        (docs/API.md, "Threads"). `ref` may name a received message or one the owner sent.
        Raises NotFound, Ambiguous."""
        ref = await self._thread_ref(address, ref)
        with _one_sender():
            rows = await self.store.thread(address, ref.id, ref.sender)
            if not rows and await self.store.get(address, ref.id, ref.sender) is None:
                raise NotFound("no such message in this mailbox", field="id")
        listed = [
            {**r.to_wire(), "_folder": "sent"} if isinstance(r, SentMessage) else r.to_wire()
            for r in rows
        ]
        return listed if self.names is None else await self.names.annotate(listed)

    async def _thread_ref(self, address: str, ref: MessageRef) -> MessageRef:
        """`ref` made whole: a short id is looked up in the mailbox AND in the owner's sent
        mail (when `from`, if given, is the owner), and must name one id across both.

        Why both: a thread may be asked for by a sent message's id, so a prefix that
        matches one received and one sent message names two conversations. Taking the
        received one because it was looked up first would let anyone who knows 8 digits
        of the owner's sent id (any recipient of it) send a message whose id starts the
        same and have the owner's `flux thread <prefix>` open theirs instead, silently.
        A message the owner sent to itself is one message in both lists, not two.

        Raises NotFound, AmbiguousPrefix (`count`: the mailbox's matches plus the sent
        ones, which stop at MAX_CANDIDATES + 1 as `GET /sent/{addr}/{id}` counts them)."""
        if len(ref.id) == ID_DIGITS:
            return ref
        got = await self.store.match_prefix(address, ref.id, ref.sender, MAX_CANDIDATES)
        sent: list[SentMessage] = []
        if ref.sender in (None, address):
            sent = await self.store.sent_prefix(address, ref.id, MAX_CANDIDATES + 1)
        held = {(m.id, m.sender) for m in got.items}
        extra = [s for s in sent if (s.id, s.sender) not in held]
        ids = {m.id for m in got.items} | {s.id for s in extra}
        if not ids:
            raise NotFound("no such message in this mailbox", field="id")
        if len(ids) == 1 and got.count == len(got.items) and len(sent) <= MAX_CANDIDATES:
            # one id: several senders of it (the owner's sent one among them) are the
            # store's 409 naming `from`, as for a whole id
            return MessageRef(ids.pop(), ref.sender)
        # a SentMessage names itself as a row does: id, sender, envelope
        rows = sorted([*got.items, *extra], key=lambda m: (m.id, m.sender))
        found = PrefixMatches(got.count + len(extra), rows[:MAX_CANDIDATES])  # type: ignore[arg-type]
        raise AmbiguousPrefix(ref.id, found, "id")

    async def changes(self, address: str, since: int, limit: int) -> dict[str, Any]:
        """What changed after state `since`. Raises CannotCalculateChanges for a state above
        the mailbox's current one: states only grow, so the server never issued it (a
        client of another server, or of this one restored from an older backup), and
        answering it would echo it back with nothing new until the mailbox caught up.
        The change log is never pruned, so no issued state is too old to answer; a store
        that prunes it must refuse states below what it still holds the same way."""
        if since > await self.store.state(address):
            raise CannotCalculateChanges(
                "since is newer than this mailbox's state: fetch everything again",
                field="since",
            )
        found = await self.store.changes(address, since, limit)
        kinds: dict[tuple[str, str], ChangeKind] = {}
        sent_ids: dict[str, None] = {}  # messages the address sent whose delivery changed
        for change in found.changes:  # a row created and then changed is reported as created
            if change.kind == ChangeKind.SENT:
                sent_ids.setdefault(change.msg_id)
            else:
                kinds.setdefault((change.sender, change.msg_id), change.kind)
        created_rows: list[StoredMessage] = []
        updated_rows: list[StoredMessage] = []
        for (sender, msg_id), kind in kinds.items():
            row = await self.store.get(address, msg_id, sender)
            if row is not None:
                (created_rows if kind == ChangeKind.CREATED else updated_rows).append(row)
        created, updated = await self._named(created_rows), await self._named(updated_rows)
        sent: list[Wire] = []  # each as it stands now, with every recipient's state
        for msg_id in sent_ids:
            record = await self.store.sent_message(address, msg_id)
            if record is not None:
                sent.append(record.to_wire())
        return {"state": found.state, "has_more": found.has_more, "created": created,
                "updated": updated, "sent": sent}  # fmt: skip

    async def status(self, address: str) -> dict[str, Any]:
        inboxes = await self.store.inboxes(address)
        total = sum(sum(counts.values()) for counts in inboxes.values())
        pending = await self.store.pending_count(address)
        return {"address": address, "pending": pending, "total": total, "inboxes": inboxes,
                "state": await self.store.state(address)}  # fmt: skip

    # -- changing -----------------------------------------------------------------------------

    async def mark(
        self,
        address: str,
        refs: Sequence[MessageRef],
        status: MessageStatus,
        origin: Connection | None = None,
    ) -> list[StoredMessage]:
        """The rows that changed. Raises Ambiguous (changing nothing) if any bare id names
        several senders' messages, or a short id several messages."""
        refs = await self._resolve_all(address, refs)
        with _one_sender():
            rows = await self.store.mark(address, refs, status) if refs else []
        await self._changed(address, rows, origin)
        return rows

    async def unread(
        self, address: str, refs: Sequence[MessageRef], origin: Connection | None = None
    ) -> tuple[list[StoredMessage], list[StoredMessage]]:
        """Mark read messages unread (read → delivered: store/base.py, "Unread"); the
        owner's other sockets hear `changed`. Returns (the rows that changed, the named rows
        that are deleted or expired): `deleted` is final, so those stay deleted, and the
        answer says so rather than leaving them out unexplained. Rows unread already and
        ids that match nothing are neither (as /read leaves them out). Raises Ambiguous."""
        refs = await self._resolve_all(address, refs)
        with _one_sender():
            rows = await self.store.mark_unread(address, refs) if refs else []
        await self._changed(address, rows, origin)
        done = {r.ref for r in rows}
        final: list[StoredMessage] = []
        for ref in refs:  # only the few that did not change are read again
            if ref.sender is not None and ref in done:
                continue
            with _one_sender():
                row = await self.store.get(address, ref.id, ref.sender)
            if row is not None and row.ref not in done and row.status is MessageStatus.DELETED:
                final.append(row)
        return rows, final

    async def tag(
        self, address: str, req: TagRequest, origin: Connection | None = None
    ) -> list[str]:
        """The message's tags after the change. Raises NotFound, Ambiguous."""
        ref = await self._resolve_one(address, MessageRef(req.id, req.sender))
        req = TagRequest(ref.id, req.add, req.remove, ref.sender)
        with _one_sender():
            before = await self.store.get(address, req.id, req.sender)
            row = await self.store.tag(address, req.id, req.add, req.remove, req.sender)
        if row is None or before is None:
            raise NotFound("no such message in this mailbox", field="id")
        if row.seq != before.seq:
            await self._changed(address, [row], origin)
        return list(row.tags)

    async def move(
        self, address: str, ref: MessageRef, inbox: str, origin: Connection | None = None
    ) -> str:
        """The message's inbox after the move. Raises NotFound, Ambiguous."""
        ref = await self._resolve_one(address, ref)
        with _one_sender():
            before = await self.store.get(address, ref.id, ref.sender)
            row = await self.store.move(address, ref.id, inbox, ref.sender)
        if row is None or before is None:
            raise NotFound("no such message in this mailbox", field="id")
        if row.seq != before.seq:
            await self._changed(address, [row], origin)
        return row.inbox


def updated_wire(rows: Sequence[StoredMessage]) -> dict[str, Any]:
    """The answer to read/delete: `updated` (ids, as before) and `refs` ({id, from})."""
    return {"updated": [r.id for r in rows], "refs": [ref_wire(r) for r in rows]}


def unread_wire(found: tuple[Sequence[StoredMessage], Sequence[StoredMessage]]) -> dict[str, Any]:
    """The answer to unread: `updated` and `refs` as read's, and `deleted` ({id, from}):
    the named messages that are deleted (or expired, or read once with `expires` 0),
    which cannot become unread (Mailbox.unread)."""
    rows, final = found
    return {**updated_wire(rows), "deleted": [ref_wire(r) for r in final]}
