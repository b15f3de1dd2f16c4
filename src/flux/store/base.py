"""The storage interface every FLUX server runs on (docs/OPERATING.md, "Storage").

One `Store` protocol; implementations: `MemoryStore` (tests), `SQLiteStore` (the embedded
default) and, later, PostgreSQL. One contract test module (tests/store/) runs against each.

Rules every implementation keeps:

* Durability: a coroutine that writes returns only after its transaction is committed to
  disk (for SQLite: WAL with synchronous=FULL). Concurrent writers share commits (group
  commit), so durability does not cap throughput.
* A message delivered to several local recipients is stored once (`messages`, keyed by
  its body hash) with one `Delivery` row per recipient, keyed by (recipient, id).
* Dedupe: storing (id, recipient) again with the same body is a no-op reported as
  DUPLICATE; with a different body it is refused as CONFLICT and never overwrites.
* Every change to a recipient's mailbox gets a new value of one store-wide, strictly
  increasing sequence number (`seq`); `changes(address, since)` replays them in order.
  A client's "state token" is the highest seq it has seen.
* Listing is keyset-paginated (cursor = opaque string from the previous page), newest
  first, so a mailbox with a million messages lists as fast as an empty one.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


class MessageStatus(enum.StrEnum):
    """The lifecycle of one message for one recipient (PROTOCOL.md §11.1).

    pending → delivered (fetched or pushed) → read → deleted (soft; the row is kept).
    A status never moves backwards, except that `deleted` is final.
    """

    PENDING = "pending"
    DELIVERED = "delivered"
    READ = "read"
    DELETED = "deleted"


STATUS_ORDER = {s: i for i, s in enumerate(MessageStatus)}


class StoreOutcome(enum.StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"  #: same (id, recipient) and same body: nothing changed
    CONFLICT = "conflict"  #: same (id, recipient), different body: refused


class ChangeKind(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"  #: status, tags or inbox changed


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message as one recipient sees it."""

    envelope: Mapping[str, Any]  #: the wire envelope as stored (route + chain included)
    recipient: str
    status: MessageStatus
    inbox: str
    tags: tuple[str, ...]  #: the recipient's own tags (envelope tags are in `envelope`)
    received_at: int  #: unix ms when this server stored it
    seq: int  #: seq of the last change to this row

    @property
    def id(self) -> str:
        return self.envelope["id"]

    def to_wire(self) -> dict[str, Any]:
        """The envelope plus the unsigned retrieval fields `_status`, `_inbox`, `_tags`."""
        return {**self.envelope, "_status": str(self.status), "_inbox": self.inbox,
                "_tags": list(self.tags)}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Page:
    items: Sequence[StoredMessage]
    next_cursor: str | None  #: pass back to get the next (older) page; None at the end


@dataclass(frozen=True, slots=True)
class Change:
    seq: int
    msg_id: str
    kind: ChangeKind


@dataclass(frozen=True, slots=True)
class Changes:
    changes: Sequence[Change]
    state: int  #: the new state token (highest seq included, or `since` if none)
    has_more: bool


@dataclass(frozen=True, slots=True)
class ListQuery:
    inbox: str | None = None
    status: MessageStatus | None = None
    tag: str | None = None
    include_deleted: bool = False
    limit: int = 50
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class HostedAddress:
    address: str
    pub: str
    registered_at: int


@dataclass(frozen=True, slots=True)
class Session:
    address: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class Strike:
    offender: str
    proof_id: str
    kind: str
    reporter: str
    msg_id: str
    t: int


@dataclass(frozen=True, slots=True)
class Incoming:
    """One message to store for the given local recipients (one transaction)."""

    envelope: Mapping[str, Any]
    body_hash: str
    recipients: Sequence[str]
    received_at: int
    #: per-recipient tags to start with (the envelope's own tags, lower-cased)
    tags: tuple[str, ...] = field(default=())


class Store(Protocol):
    """What a FLUX server needs from storage. All methods are coroutines unless noted."""

    async def open(self) -> None:
        """Connect and apply pending migrations (idempotent)."""

    async def close(self) -> None:
        """Finish in-flight commits, then release resources."""

    # -- hosted addresses -------------------------------------------------------------------
    async def register_address(self, address: str, pub: str, now_ms: int) -> bool:
        """Host `address`; False if it already was (not an error)."""

    async def hosted(self, address: str) -> HostedAddress | None: ...

    # -- mail -------------------------------------------------------------------------------
    async def store_message(self, incoming: Incoming) -> dict[str, StoreOutcome]:
        """Store once, one Delivery per recipient, atomically; outcome per recipient."""

    async def store_many(self, batch: Sequence[Incoming]) -> list[dict[str, StoreOutcome]]:
        """Several messages in one transaction (the group-commit path)."""

    async def pending_count(self, address: str) -> int: ...

    async def get(self, address: str, msg_id: str) -> StoredMessage | None: ...

    async def list(self, address: str, query: ListQuery) -> Page: ...

    async def fetch_pending(self, address: str, limit: int) -> list[StoredMessage]:
        """Return pending messages (oldest first) and mark them delivered."""

    async def mark(
        self, address: str, msg_ids: Sequence[str], status: MessageStatus
    ) -> list[StoredMessage]:
        """Advance status (never backwards); return the rows that changed."""

    async def tag(
        self, address: str, msg_id: str, add: Sequence[str], remove: Sequence[str]
    ) -> StoredMessage | None: ...

    async def move(self, address: str, msg_id: str, inbox: str) -> StoredMessage | None: ...

    async def inboxes(self, address: str) -> dict[str, dict[str, int]]:
        """{inbox: {status: count}} for non-deleted messages."""

    async def thread(self, address: str, msg_id: str) -> list[StoredMessage]:
        """Every message of `address` in the conversation of `msg_id` (by `re`), oldest first."""

    async def changes(self, address: str, since: int, limit: int) -> Changes: ...

    async def expire(self, now_ms: int) -> int:
        """Soft-delete messages whose `expires` time (ms > 0) has passed; return the count."""

    async def stats(self) -> dict[str, int]:
        """Counts for /stats: messages, deliveries by status, hosted addresses."""

    # -- sessions and challenges ------------------------------------------------------------
    async def create_session(self, token_hash: str, address: str, expires_at: int) -> None: ...

    async def session(self, token_hash: str, now_ms: int) -> Session | None: ...

    async def revoke_session(self, token_hash: str) -> bool: ...

    async def use_nonce(self, nonce: str, expires_at: int, now_ms: int) -> bool:
        """Record a single-use nonce; False if it was used before."""

    # -- reputation -------------------------------------------------------------------------
    async def add_strike(self, strike: Strike) -> bool:
        """Record a strike; False if this proof was already counted."""

    async def strikes(self) -> list[Strike]: ...

    async def set_quarantine_override(self, server: str, lifted: bool, now_ms: int) -> None: ...

    async def quarantine_overrides(self) -> dict[str, bool]: ...
