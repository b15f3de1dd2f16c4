"""Mailbox operations shared by the HTTP routes and the WebSocket actions.

The caller has already proved it owns `address`; this module reads and changes that one
mailbox through the store and tells the owner's other sockets what changed ("changed"
frames), so every device stays in step whichever one made the change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..protocol.errors import InvalidValue
from ..store.base import ChangeKind, ListQuery, MessageStatus, Store, StoredMessage
from . import wire
from .errors import NotFound
from .fanout import CHANGED, LocalFanout, MailEvent
from .push import Connection

Wire = dict[str, Any]


@dataclass(frozen=True, slots=True)
class TagRequest:
    id: str
    add: list[str]
    remove: list[str]


def parse_tag(obj: Mapping[str, Any]) -> TagRequest:
    req = TagRequest(wire.message_id(obj), wire.tag_list(obj, "add"), wire.tag_list(obj, "remove"))
    return req


def parse_move(obj: Mapping[str, Any]) -> tuple[str, str]:
    return wire.message_id(obj), wire.inbox(obj)


def parse_status(text: str | None) -> MessageStatus | None:
    if text is None or text == "":
        return None
    try:
        return MessageStatus(text)
    except ValueError:
        allowed = ", ".join(MessageStatus)
        raise InvalidValue(f"status must be one of {allowed}", field="status") from None


class Mailbox:
    def __init__(self, store: Store, fanout: LocalFanout) -> None:
        self.store = store
        self.fanout = fanout

    async def _changed(
        self, address: str, rows: Sequence[StoredMessage], origin: Connection | None
    ) -> None:
        """Tell the address's other sockets (in every process) what changed."""
        if rows:
            event = MailEvent(address, CHANGED, tuple(r.id for r in rows),
                              max(r.seq for r in rows), self.fanout.origin(origin))  # fmt: skip
            await self.fanout.publish(event)

    # -- reading ----------------------------------------------------------------------------

    async def fetch(self, address: str, limit: int) -> list[Wire]:
        rows = await self.store.fetch_pending(address, limit)
        return [r.to_wire() for r in rows]

    async def list(self, address: str, query: ListQuery) -> tuple[list[Wire], str | None]:
        page = await self.store.list(address, query)
        return [r.to_wire() for r in page.items], page.next_cursor

    async def peek(self, address: str, limit: int) -> tuple[int, list[Wire]]:
        page = await self.store.list(address, ListQuery(status=MessageStatus.PENDING, limit=limit))
        return await self.store.pending_count(address), [r.to_wire() for r in page.items]

    async def get(self, address: str, msg_id: str) -> Wire:
        row = await self.store.get(address, msg_id)
        if row is None:
            raise NotFound("no such message in this mailbox", field="id")
        return row.to_wire()

    async def thread(self, address: str, msg_id: str) -> list[Wire]:
        rows = await self.store.thread(address, msg_id)
        if not rows and await self.store.get(address, msg_id) is None:
            raise NotFound("no such message in this mailbox", field="id")
        return [r.to_wire() for r in rows]

    async def changes(self, address: str, since: int, limit: int) -> dict[str, Any]:
        found = await self.store.changes(address, since, limit)
        kinds: dict[str, ChangeKind] = {}
        for change in found.changes:  # a row created and then changed is reported as created
            kinds.setdefault(change.msg_id, change.kind)
        created: list[Wire] = []
        updated: list[Wire] = []
        for msg_id, kind in kinds.items():
            row = await self.store.get(address, msg_id)
            if row is not None:
                (created if kind == ChangeKind.CREATED else updated).append(row.to_wire())
        return {"state": found.state, "has_more": found.has_more, "created": created,
                "updated": updated}  # fmt: skip

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
        ids: Sequence[str],
        status: MessageStatus,
        origin: Connection | None = None,
    ) -> list[str]:
        rows = await self.store.mark(address, ids, status)
        await self._changed(address, rows, origin)
        return [r.id for r in rows]

    async def tag(
        self, address: str, req: TagRequest, origin: Connection | None = None
    ) -> list[str]:
        before = await self.store.get(address, req.id)
        row = await self.store.tag(address, req.id, req.add, req.remove)
        if row is None or before is None:
            raise NotFound("no such message in this mailbox", field="id")
        if row.seq != before.seq:
            await self._changed(address, [row], origin)
        return list(row.tags)

    async def move(
        self, address: str, msg_id: str, inbox: str, origin: Connection | None = None
    ) -> str:
        before = await self.store.get(address, msg_id)
        row = await self.store.move(address, msg_id, inbox)
        if row is None or before is None:
            raise NotFound("no such message in this mailbox", field="id")
        if row.seq != before.seq:
            await self._changed(address, [row], origin)
        return row.inbox
