"""The storage interface every FLUX server runs on (docs/OPERATING.md, "Storage").

One `Store` protocol; implementations: `MemoryStore` (tests), `SQLiteStore` (the embedded
default) and, later, PostgreSQL. One contract test module (tests/store/) runs against each.

Rules every implementation keeps:

* Durability: a coroutine that writes returns only after its transaction is committed to
  disk (for SQLite: WAL with synchronous=FULL). Concurrent writers share commits (group
  commit), so durability does not cap throughput.
* A store whose database cannot be reached (or does not answer within its timeout) raises
  `StoreUnavailable` from the call, never another exception and never a partial write;
  it recovers by itself once the database is back.
* A message delivered to several local recipients is stored once (`messages`, keyed by
  its body hash) with one `Delivery` row per recipient, keyed by (recipient, sender, id).
  The id is chosen by the sender, so it names a message only together with its sender
  (PROTOCOL.md §4.5): two senders' messages with one id are two messages, stored apart.
* Dedupe: storing (recipient, sender, id) again with the same body is a no-op reported as
  DUPLICATE; with a different body it is refused as CONFLICT and never overwrites. Only
  the sender's own mail can make either happen, so neither outcome tells a sender
  anything about another sender's mail.
* Lookups by id (`get`, `mark`, `tag`, `move`, `thread`) take the sender as well. Without
  it, the one message of that id in the mailbox is meant; if several senders' messages
  share the id the call raises `AmbiguousMessage` (naming their senders) and changes
  nothing.
* Short ids (`match_prefix`): a prefix of at least `MIN_PREFIX` hex digits is resolved
  only inside one mailbox (never across recipients), as an index range scan
  `prefix <= msg_id < prefix_upper(prefix)` in byte order, never a full scan: SQLite
  through its unique index (recipient, msg_id, sender), whose BINARY collation is byte
  order; PostgreSQL through `deliveries_id_prefix` (recipient, msg_id COLLATE "C"), since
  the database's default collation need not be byte order (schema step 6).
* Every change to a recipient's mailbox gets a new value of one store-wide, strictly
  increasing sequence number (`seq`); `changes(address, since)` replays them in order.
  A client's "state token" is the highest seq it has seen.
* Listing is keyset-paginated (cursor = opaque string from the previous page), newest
  first, so a mailbox with a million messages lists as fast as an empty one. The order is
  (received_at, arrival order), both fixed at insert, so a page boundary never moves when a
  row changes status: no item is lost or repeated across pages. A cursor that does not
  decode raises `flux.protocol.errors.InvalidValue` (field "cursor").

Lifecycle and `expires` (PROTOCOL.md §11.1), the same in every implementation:

* A status only moves forward: pending → delivered → read → deleted; `deleted` is final.
  `mark` to an earlier or equal status changes nothing.
* Unread: the one way back is `mark_unread`, read → delivered (a person marks a read
  message unread), recorded as any update. Nothing else moves back: pending and delivered
  are unread already, `deleted` stays final, and a message that reading soft-deleted
  (`expires` 0) or whose `expires` time has passed is deleted, so it cannot come back.
* `expires` absent: kept. `expires == 0`: marking it read soft-deletes it instead.
  `expires > 0` (unix ms): from that time the row's *effective* status is `deleted`; it is
  hidden from `list` (unless deleted rows are asked for), `fetch_pending`, `pending_count`,
  `inboxes` and `thread`, reported as deleted by `get`, and made deleted for good (with a
  change record) by `expire(now_ms)` or by marking it read or anything later.
* "Now" for the hiding rule comes from the clock the store was built with
  (`clock: Callable[[], int]` returning unix ms; wall time by default), so tests can move it.
* Every new delivery and every status, tag or inbox change appends a `Change` with a new
  `seq`; the row's `StoredMessage.seq` is the seq of its last change.

Threads (`re`, PROTOCOL.md §4.5): a message R is filed under the message P of its
mailbox with P.id == R.re only if R's sender is a participant of P (P's sender, one of its
`to`/`cc`, or the mailbox owner): a stranger can neither collect replies under a message
whose id it squatted nor slip its "reply" into someone else's thread. When several such P
exist, one whose sender is a participant of R wins, then the oldest. A reply whose parent
is not (yet) in the mailbox waits under a placeholder of (its sender, `re`); when a
message with that id arrives, it adopts the placeholders of its own participants only.
(`_rules.py` holds these decisions, shared by every store.)

A conversation includes the owner's own sent mail. Each sent record (`SentMessage`) gets a
thread root by the same rule, its sender being the mailbox owner: it joins the root of the
message it answers, looked up among the sender's received mail AND its sent mail (oldest
first across both); a received reply to one of the owner's sent messages joins that sent
message's root, so a delivery's lookup reads the recipient's sent records too, and
placeholders are adopted in both. `thread` answers the union of the received and the sent
messages of one root, oldest first (a received message by `received_at`, a sent one by
`sent_at`; within one millisecond a message before its replies, then sent before received);
a message the owner sent to itself is there
once, as the received copy (while that copy is not deleted). The thread may be asked for by
the id of a sent message as well (sender: the owner).

One sent record per message, BCC copies included (`merge_sent`). A message with BCC is
submitted as several envelopes sharing one id (PROTOCOL.md §5.2): the primary (to + cc,
no `bcc`) and one copy per BCC address. Each submission brings a record for (sender, id);
the first one written creates the row, and every later copy of the same message is merged
into it, in the writing transaction (so racing copies and the delivery worker's
settlements never lose each other's entries):

* a copy's recipients join `delivery`; a recipient already there keeps its state (so a
  replay of any copy changes nothing, and a settlement is never undone);
* the kept envelope is the primary's once it has arrived (a BCC copy that came first
  stands in for it until then): the record never shows one BCC copy's `bcc` beside the
  primary, and only the sender ever reads the record, whose `delivery` keys do name every
  BCC recipient;
* a merge that changes the row is a `SENT` change of the sender's mailbox, as a settlement
  is (a new record is not: that is the hot path, and the submitter has its answer);
* an envelope that is not a copy of the kept one (the id reused for another message) or a
  second primary (a replay) changes nothing: the first record stands.

Rate and contacts in the storing transaction (issue 15, aim 3: each was a round trip of
its own on PostgreSQL, and a writer operation with its commit wait on SQLite). An
`Incoming` may carry its sender's `rate` (a `RateBucket`, counted as `count_hit` counts)
and `contacts` (as `add_contacts` keeps them). Per recipient, dedupe comes first (a replay
is answered DUPLICATE whatever the rate: it costs the sender nothing), then the rate,
then quota and stranger share: a full bucket makes every other recipient RATE_LIMITED
before anything of the message is written, so a refused message is refused whole and
atomically. Once a recipient is STORED, the message counts one hit and its contacts are
kept, in its transaction, before the batch's next message is decided (that message sees
them, as it would have after a separate commit). A message with nothing stored counts
nothing and keeps no contacts.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol


class StoreUnavailable(Exception):
    """The store cannot be reached right now (its database is down, unreachable, or did not
    answer in time). Nothing about the request is wrong and nothing was acknowledged: the
    same call may succeed later. The server answers it with 503 `unavailable`
    (flux/server/errors.py); other failures of a store are bugs and stay what they are."""


class StoreFull(StoreUnavailable):
    """The store has no room to write (a full disk, or its configured size cap): an outage
    like any other StoreUnavailable (503, nothing of the write acknowledged), said apart
    so the log and /health name the cause."""


class AmbiguousMessage(LookupError):
    """Several senders' messages in one mailbox share an id and the call named no sender.

    `candidates` maps each such id to the senders holding it there (sorted). Only the
    mailbox's owner can ask, so this reveals nothing beyond their own mailbox. The server
    answers 409 `ambiguous` (flux/server/errors.py)."""

    def __init__(self, candidates: Mapping[str, Sequence[str]]) -> None:
        self.candidates = {k: sorted(v) for k, v in candidates.items()}
        super().__init__("ambiguous message id: " + ", ".join(self.candidates))


class MessageRef(NamedTuple):
    """A message named within one mailbox: its id and, when known, its sender."""

    id: str
    sender: str | None = None


#: The fewest hex digits a short id (a prefix of a message id) may have, as git's
#: abbreviated hashes: 8 hex digits leave about one chance in 8,600 that two of 1,000
#: messages in a mailbox share one.
MIN_PREFIX = 8
#: Candidates a prefix lookup returns at most (`PrefixMatches.items`); `count` has them all.
MAX_CANDIDATES = 10


def prefix_upper(prefix: str) -> str:
    """The least string above every string that starts with `prefix` (non-empty ASCII), in
    byte order: the prefix with its last character incremented. `prefix <= s <
    prefix_upper(prefix)` holds exactly for the strings s that start with `prefix`."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


@dataclass(frozen=True, slots=True)
class PrefixMatches:
    """What `Store.match_prefix` found: `count` messages (distinct (sender, id)) in the
    mailbox whose id starts with the prefix; `items` the first `limit` of them by (id,
    sender)."""

    count: int
    items: Sequence[StoredMessage]


class MessageStatus(enum.StrEnum):
    """The lifecycle of one message for one recipient (PROTOCOL.md §11.1).

    pending → delivered (fetched or pushed) → read → deleted (soft; the row is kept).
    A status never moves backwards, `deleted` is final; the one exception is the owner
    marking a read message unread (read → delivered, `Store.mark_unread`).
    """

    PENDING = "pending"
    DELIVERED = "delivered"
    READ = "read"
    DELETED = "deleted"


STATUS_ORDER = {s: i for i, s in enumerate(MessageStatus)}


class StoreOutcome(enum.StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"  #: same (recipient, sender, id) and same body: nothing changed
    CONFLICT = "conflict"  #: same (recipient, sender, id), different body: refused
    OVER_QUOTA = "over_quota"  #: the recipient already has `pending_quota` pending messages
    #: the sender is a stranger to the recipient and the strangers' share is full
    OVER_STRANGER_SHARE = "over_stranger_share"
    #: the message's rate bucket (`Incoming.rate`) was full: nothing of it was stored
    RATE_LIMITED = "rate_limited"


class ChangeKind(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"  #: status, tags or inbox changed
    #: the delivery state of a message the address sent changed (its sent mail)
    SENT = "sent"


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

    @property
    def sender(self) -> str:
        return self.envelope["from"]

    @property
    def ref(self) -> MessageRef:
        return MessageRef(self.id, self.sender)

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
    sender: str  #: with `msg_id`, names the row that changed


@dataclass(frozen=True, slots=True)
class Changes:
    changes: Sequence[Change]
    state: int  #: the new state token (highest seq included, or `since` if none)
    has_more: bool


#: `ListQuery.limit` and `fetch_pending(limit)` are clamped to 1..MAX_PAGE.
MAX_PAGE = 500


@dataclass(frozen=True, slots=True)
class ListQuery:
    """Filters for `Store.list`. `status=DELETED` lists deleted rows only;
    `include_deleted=True` (without a status) lists every row. `sender`: only mail from
    this exact address (the envelope's `from`; no prefix), an index range scan on every
    SQL backend ((recipient, sender, received_at, id): schema step 9)."""

    inbox: str | None = None
    status: MessageStatus | None = None
    tag: str | None = None
    sender: str | None = None
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
class StrikeTally:
    """One offender's strikes on record: all of them, and those no lift has forgiven (a
    strike counts unless its server's latest override is a lift made at or after it)."""

    offender: str
    recorded: int
    counting: int


@dataclass(frozen=True, slots=True)
class Override:
    """An operator's decision about one server's quarantine (`flux admin lift|quarantine`)."""

    lifted: bool  #: True: lifted (strikes before `set_at` forgiven); False: imposed
    set_at: int  #: unix ms


@dataclass(frozen=True, slots=True)
class Outbound:
    """A message to hand to another server: one row of the delivery queue.

    `destination` is where it goes: a domain the sender named for the recipients (resolved
    to a server when it is sent) or a mesh peer's name. The envelope is kept as this server
    verified it, without this server's hop: the hop is sealed at each attempt, to the
    server actually reached.
    """

    destination: str
    envelope: Mapping[str, Any]
    body_hash: str
    recipients: Sequence[str]  #: the recipients this copy is for there (for bounces)
    cv: str  #: the chain verdict this server reached on receipt
    enqueued_at: int
    via: str = ""  #: "" for direct delivery, else the mesh the copy is relayed through

    @property
    def sender(self) -> str:
        """Whose turn this copy takes in the fair queue: the envelope's `from` ("" if it has
        none); the SQL stores keep it in `outbound.sender` (schema step 12)."""
        sender = self.envelope.get("from")
        return sender if isinstance(sender, str) else ""


class DeliveryState(enum.StrEnum):
    """Where one sent message stands for one recipient (PROTOCOL.md §10.3, "Delivery state").

    stored (in a mailbox of this server) | queued (waiting for another server: attempts,
    next retry, last error) → delivered (the receiving server took it) | bounced (final,
    with the reason). Only `queued` ever changes again."""

    STORED = "stored"
    QUEUED = "queued"
    DELIVERED = "delivered"
    BOUNCED = "bounced"


@dataclass(frozen=True, slots=True)
class SentMessage:
    """A message a hosted sender sent, as its `sent` mailbox keeps it: one row per
    message (its BCC copies merged in: `merge_sent`), with the delivery state of every
    recipient, BCC recipients included.

    `delivery` maps each recipient to `{"state": DeliveryState, "at": unix ms}` plus, when
    queued, `attempts`, `next_retry_at` (unix ms) and `error` (words), and when bounced
    `reason` (words)."""

    sender: str
    envelope: Mapping[str, Any]
    sent_at: int  #: unix ms when this server took the submission
    delivery: Mapping[str, Mapping[str, Any]]
    updated_at: int  #: unix ms of the last delivery state change

    @property
    def id(self) -> str:
        return self.envelope["id"]

    def to_wire(self) -> dict[str, Any]:
        """The envelope plus the unsigned fields `_sent_at` and `_delivery`."""
        return {**self.envelope, "_sent_at": self.sent_at,
                "_delivery": {r: dict(s) for r, s in self.delivery.items()}}  # fmt: skip


#: one message of a conversation (`Store.thread`): received (the owner's mailbox) or sent
ThreadItem = StoredMessage | SentMessage

#: {(sender, msg_id): {recipient: its new state}}: what one settlement changes
DeliveryUpdates = Mapping[tuple[str, str], Mapping[str, Mapping[str, Any]]]


@dataclass(frozen=True, slots=True)
class Queued:
    """One queued message; `qid` orders the queue (submission order)."""

    qid: int
    item: Outbound


@dataclass(frozen=True, slots=True)
class Lease:
    """A destination claimed by one worker, with its oldest queued messages."""

    destination: str
    holder: str
    messages: Sequence[Queued]
    attempts: int  #: failed attempts since the destination last accepted a batch


@dataclass(frozen=True, slots=True)
class DestinationState:
    destination: str
    queued: int
    oldest_at: int | None
    attempts: int
    next_attempt_at: int
    last_error: str | None
    leased_until: int  #: 0 when no worker holds it
    held: bool = False  #: the operator holds it: never leased until released
    held_messages: int = 0  #: of `queued`, how many the operator holds one by one


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """One queued copy as the operator sees it (`flux admin queue list --messages`)."""

    qid: int
    item: Outbound
    held: bool  #: held on its own (its destination may be held as well: DestinationState)


@dataclass(frozen=True, slots=True)
class Invite:
    """An invite made by `flux admin invite create`: `max_uses` registrations (key or
    account) until `expires_at` (unix ms; None: never), unless revoked."""

    id: str  #: public: what `invite list` shows and `invite revoke` takes (not the code)
    max_uses: int
    uses_left: int
    expires_at: int | None
    note: str
    created_at: int
    revoked_at: int | None = None
    used_by: tuple[tuple[str, int], ...] = ()  #: (who, unix ms) per use, oldest first


class InviteUse(enum.StrEnum):
    """What `use_invite` found."""

    USED = "used"
    UNKNOWN = "unknown"
    SPENT = "spent"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class StrangerShare:
    """The part of a recipient's pending quota that senders it has never written to may
    hold (the "requests" share of mail servers with reputation): `total` pending messages
    from all strangers together, `per_sender` from any one of them. A sender is known to a
    recipient once the recipient has written to it through this server (`add_contacts`),
    and a recipient is never a stranger to itself. Throwaway keys cost nothing to make, so
    without this a few of them fill the whole quota and real correspondents get 429."""

    total: int
    per_sender: int


@dataclass(frozen=True, slots=True)
class Announcement:
    """What `Incoming.announce` sends: on `channel`, `payloads[recipient]` for each recipient
    stored. PostgreSQL delivers a NOTIFY only at its transaction's commit, so a listener
    never hears of mail the store could still lose (server/fanout.py)."""

    channel: str
    payloads: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class RateBucket:
    """A rate limit a message counts against in its storing transaction (`Incoming.rate`):
    at most `limit` hits in `bucket` within the last `window_ms`, by the rules and in the
    table of `Store.count_hit`, so the counters of flux.server.limits.StoreHitCounter and
    the storing transaction count the same hits."""

    bucket: str
    window_ms: int
    limit: int


@dataclass(frozen=True, slots=True)
class Incoming:
    """One message to store for the given local recipients (one transaction)."""

    envelope: Mapping[str, Any]
    body_hash: str
    recipients: Sequence[str]
    received_at: int
    #: per-recipient tags to start with (the envelope's own tags, lower-cased)
    tags: tuple[str, ...] = field(default=())
    #: the inbox (folder) new deliveries start in
    inbox: str = "inbox"
    #: refuse (OVER_QUOTA) a recipient already holding this many pending messages; checked
    #: in the storing transaction, so concurrent submissions cannot overshoot it
    pending_quota: int | None = None
    #: refuse (OVER_STRANGER_SHARE) a sender the recipient has never written to when the
    #: strangers' share of its pending mail is full; decided in the same transaction
    stranger_share: StrangerShare | None = None
    #: the sender's sent-mail record, kept in the same transaction when a recipient was
    #: stored (`sent_after` marks the refused ones bounced): one row, no second commit
    sent: SentMessage | None = None
    #: the sender's rate, decided in the same transaction (module notes, "Rate and
    #: contacts in the storing transaction"): full, and every recipient not a duplicate or
    #: conflict is RATE_LIMITED, nothing stored; else one hit is counted if any is STORED
    rate: RateBucket | None = None
    #: the addresses the sender (`envelope["from"]`) has now written to, kept as
    #: `add_contacts` keeps them, in the same transaction, when any recipient is STORED
    contacts: Sequence[str] = ()
    #: the PostgreSQL channel and the NOTIFY payload of each recipient, sent in the
    #: storing transaction for each one STORED (server/fanout.py); a store no other process
    #: shares ignores it
    announce: Announcement | None = None


class Store(Protocol):
    """What a FLUX server needs from storage. All methods are coroutines unless noted."""

    async def open(self) -> None:
        """Connect and apply pending migrations (idempotent)."""

    async def close(self) -> None:
        """Finish in-flight commits, then release resources."""

    async def ping(self) -> None:
        """Return once the store answers a trivial query (for /health); raise
        StoreUnavailable if it cannot be reached."""

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

    async def get(
        self, address: str, msg_id: str, sender: str | None = None
    ) -> StoredMessage | None:
        """The row whatever its status (deleted and expired rows too: status DELETED).
        Raises AmbiguousMessage when `sender` is None and several senders used `msg_id`."""

    async def match_prefix(
        self, address: str, prefix: str, sender: str | None = None,
        limit: int = MAX_CANDIDATES,
    ) -> PrefixMatches:  # fmt: skip
        """The messages of `address` (any status, as `get`) whose id starts with `prefix`
        (lower-case hex, at most 32 digits: the caller checks it), from `sender` only if
        given. Only this one mailbox is searched. An index range scan on every backend
        (module notes, "Short ids"); `limit` is clamped to 1..MAX_PAGE."""

    async def list(self, address: str, query: ListQuery) -> Page: ...

    async def fetch_pending(self, address: str, limit: int) -> list[StoredMessage]:
        """Return pending messages (oldest first) and mark them delivered."""

    async def mark(
        self, address: str, msg_ids: Sequence[str | MessageRef], status: MessageStatus
    ) -> list[StoredMessage]:
        """Advance status (never backwards); return the rows that changed, in `msg_ids`
        order. Marking READ a message with `expires` 0 (or past) soft-deletes it. A bare
        id (or a ref without sender) is the mailbox's one message of that id; raises
        AmbiguousMessage, changing nothing, if any of them names several."""

    async def mark_unread(
        self, address: str, msg_ids: Sequence[str | MessageRef]
    ) -> list[StoredMessage]:
        """Mark read messages unread (read → delivered, module notes "Unread"); return the
        rows that changed, in `msg_ids` order, each with a new change record. Rows that are
        not read (pending, delivered: unread already; deleted or expired: final) are left
        as they are and not returned. Ids and AmbiguousMessage as `mark`."""

    async def tag(
        self, address: str, msg_id: str, add: Sequence[str], remove: Sequence[str],
        sender: str | None = None,
    ) -> StoredMessage | None:  # fmt: skip
        """Add then remove tags (a tag in both ends up removed); None if no such row.
        Tags come back sorted. A change is recorded only if the set changed.
        Raises AmbiguousMessage as `get`."""

    async def move(
        self, address: str, msg_id: str, inbox: str, sender: str | None = None
    ) -> StoredMessage | None:
        """None if no such row; a change is recorded only if the inbox changed.
        Raises AmbiguousMessage as `get`."""

    async def inboxes(self, address: str) -> dict[str, dict[str, int]]:
        """{inbox: {"pending": n, "delivered": n, "read": n}} over non-deleted messages;
        an inbox whose messages are all deleted is left out."""

    async def thread(
        self, address: str, msg_id: str, sender: str | None = None
    ) -> list[ThreadItem]:
        """Every message of `address` in the conversation of (`sender`, `msg_id`) (by `re`
        and the participant rule above), received and sent (module notes, "A conversation
        includes the owner's own sent mail"), oldest first; [] if no such message.
        (`sender`, `msg_id`) may name a received message or one `address` sent (`sender`
        then `address` or None). Raises AmbiguousMessage as `get` (a bare id held both
        from another sender and in the owner's sent mail is ambiguous)."""

    async def changes(self, address: str, since: int, limit: int) -> Changes:
        """Changes with seq > `since`, in seq order, at most `limit` (not collapsed: a row
        changed twice appears twice; read its current state with `get`)."""

    async def state(self, address: str) -> int:
        """The highest seq of any change of `address` (0 if none): its current state token."""

    async def expire(self, now_ms: int) -> int:
        """Soft-delete messages whose `expires` time (ms > 0) has passed; return the count."""

    async def purge_expired(self, before_ms: int) -> int:
        """Remove for good the deliveries whose `expires` time (ms > 0) is at or before
        `before_ms` (their tags too, and each body no delivery holds any more); return how
        many deliveries. Expired mail is nobody's to read: kept, it is storage that no
        quota counts. Their change records stay (`get` then answers None)."""

    # -- contacts (who each address has written to: base.py StrangerShare) -------------------
    async def add_contacts(self, owner: str, peers: Sequence[str], now_ms: int) -> None:
        """Record that `owner` has written to each of `peers` (idempotent)."""

    async def is_contact(self, owner: str, peer: str) -> bool:
        """True when `owner` has written to `peer` (or they are the same address)."""

    async def stats(self) -> dict[str, int]:
        """Counts for /stats: "messages" (stored once), "deliveries", "pending",
        "delivered", "read", "deleted" (stored status), "hosted_addresses", "sessions"
        (unrevoked, unexpired)."""

    # -- sessions and challenges ------------------------------------------------------------
    async def create_session(self, token_hash: str, address: str, expires_at: int) -> None: ...

    async def session(self, token_hash: str, now_ms: int) -> Session | None:
        """The session if it exists, is not revoked and `now_ms < expires_at`."""

    async def revoke_session(self, token_hash: str) -> bool:
        """True if a live (unrevoked) session was revoked by this call."""

    async def use_nonce(self, nonce: str, expires_at: int, now_ms: int) -> bool:
        """Record a single-use nonce; False if it was used before."""

    # -- invites (`flux admin invite`; accounts/admission.py) ---------------------------------
    async def create_invite(self, invite: Invite, code_hash: str) -> None:
        """Keep a new invite, found later by `code_hash` (SHA-256 hex of the code: the code
        itself is never stored)."""

    async def invites(self) -> list[Invite]:
        """Every invite, newest first, with who used each."""

    async def revoke_invite(self, invite_id: str, now_ms: int) -> bool:
        """Revoke an unrevoked invite; False when there is none of that id."""

    async def use_invite(self, code_hash: str, used_by: str, now_ms: int) -> InviteUse:
        """Spend one use of the invite whose code hashes to `code_hash`, recording
        `used_by`, atomically: however many registrations race for its last use, one gets
        USED and the others SPENT. Nothing changes unless the answer is USED."""

    # -- the delivery queue (docs/FEDERATION.md, "Delivery queue") ---------------------------
    async def enqueue(
        self, items: Sequence[Outbound], *, sent: Sequence[SentMessage] = ()
    ) -> list[bool]:
        """Queue durably, in one transaction; a copy already queued for its destination
        (same body hash) is skipped. Returns, per item, whether it was added. `sent`: the
        sent-mail records of these submissions, written in the same transaction (a record
        already kept for (sender, id) gets another copy's recipients by `merge_sent`, and
        is otherwise left as it is: a replay changes no state)."""

    async def record_sent(self, sent: Sequence[SentMessage]) -> None:
        """Keep sent-mail records (mail with no remote recipient), as `enqueue`'s `sent`
        (a BCC copy of a message already kept is merged into its record: `merge_sent`)."""

    async def sent(
        self, sender: str, limit: int, before: tuple[int, str] | None = None
    ) -> list[SentMessage]:
        """`sender`'s sent mail, newest first by (sent_at, id), at most `limit`; `before`:
        only what comes after (sent_at, id) in that order (the next page: pass the last
        item's (sent_at, id), so messages sent in the same millisecond are not skipped)."""

    async def sent_message(self, sender: str, msg_id: str) -> SentMessage | None:
        """One sent message by its full id, or None."""

    async def sent_prefix(self, sender: str, prefix: str, limit: int) -> list[SentMessage]:
        """At most `limit` of `sender`'s sent messages whose id starts with `prefix`, by id
        (a range scan of the (sender, id) key, as `match_prefix`)."""

    async def lease(self, holder: str, now_ms: int, lease_ms: int, limit: int) -> Lease | None:
        """Claim one destination that has queued mail, is due (`next_attempt_at <= now`)
        and is not held by a live lease (the caller's own included: one lease per
        destination, even within one worker); return at most `limit` of its unheld messages
        round-robin across their senders, each sender's in queue order (the fair queue:
        _memory_queue.py, "A fair queue"; PROTOCOL.md §10.3). One destination is held by one
        worker at a time; a lease that is not settled by `now + lease_ms` (a dead worker)
        lapses."""

    async def settle(
        self,
        lease: Lease,
        done: Sequence[int],
        *,
        retry_at: int | None = None,
        error: str | None = None,
        delivery: DeliveryUpdates | None = None,
        release: bool = True,
    ) -> bool:
        """Remove the `done` qids and release the lease; `delivery`: the sent-mail states
        this attempt changed, written in the same transaction (a (sender, id) without a
        sent record, mail another server handed on, is skipped). `retry_at` None: the peer answered,
        reset its backoff; else count a failed attempt and wait until `retry_at`.

        Only the lease's holder settles: when the destination is no longer held by
        `lease.holder` (the lease lapsed and another worker took it, or it was settled
        already) nothing changes and the answer is False. A holder names one lease (the
        worker takes a fresh name per lease), so a lapsed lease is never mistaken for a
        later one of the same worker.

        `release=False` settles one part of a rolling lease (`lease_more`): the `done` qids
        are removed and `delivery` written as above, in one transaction, but the lease is
        kept (holder and `leased_until` unchanged) and the backoff (attempts,
        `next_attempt_at`, `last_error`) is left as it is; the answer is True, or False,
        changing nothing, when it is held no more. A retry ends the lease, so `retry_at` and
        `error` must then be None (ValueError otherwise, raised before anything is read or
        written). The holder releases at the end with a settle whose `release` is True."""

    async def lease_more(
        self,
        lease: Lease,
        now_ms: int,
        lease_ms: int,
        limit: int,
        *,
        exclude: Collection[int] = (),
        skip_senders: Collection[str] = (),
    ) -> list[Queued] | None:
        """Take more of a held destination's mail (a rolling lease: the holder takes more as
        its lanes free up, settles each part with `settle(release=False)` and releases at
        the end). None, changing nothing, when the destination is no longer held by
        `lease.holder` (the lease lapsed and another worker took it, or a settle released
        it). Otherwise the lease is renewed to `now_ms + lease_ms` (as `renew`) and the
        answer is at most `limit` of the destination's copies not held one by one, in
        `lease`'s fair order (round-robin across senders, each sender's in queue order),
        leaving out the qids in `exclude` (copies already in flight under this lease),
        and copies whose sender (`Outbound.sender`) is in `skip_senders` (a sender with a
        transaction in flight: its mail stays in order). The turns are counted after these
        exclusions: a sender whose first copies are all in `exclude` still yields its next
        ones. A destination the operator holds (`hold`) answers [] (the lease is renewed
        and kept: the holder sends nothing more and settles). Each call costs as `lease`'s
        query (each sender's first `limit` copies are read, and those in `exclude`), never
        a scan of a sender's whole queue."""

    async def renew(self, lease: Lease, now_ms: int, lease_ms: int) -> bool:
        """Extend a lease still held by `lease.holder` to `now_ms + lease_ms` (a long send);
        False, changing nothing, when it is held no more."""

    async def queued(
        self, destination: str | None = None, id_prefix: str | None = None, limit: int = 1000
    ) -> list[QueuedMessage]:
        """Queued copies in queue order (qid), held ones included: of one destination, of
        the messages whose envelope id starts with `id_prefix`, or all; at most `limit`."""
        ...

    async def hold(self, destination: str, held: bool) -> bool:
        """Hold (or release) a destination: `lease` never claims a held one and `next_due`
        ignores it. False when it has no queued mail."""
        ...

    async def hold_messages(self, qids: Sequence[int], held: bool) -> int:
        """Hold (or release) single queued copies: `lease` never hands out a held one and
        claims a destination only for mail not held, so the rest of it still goes.
        Returns how many exist."""
        ...

    async def remove_queued(
        self, removals: Sequence[tuple[int, DeliveryUpdates]], now_ms: int
    ) -> list[int]:
        """Take queued copies out by operator decision, each with the sent-mail states its
        removal writes (as `settle`'s `delivery`), in one transaction. A copy whose
        destination is under a live lease (a worker is sending it now: it may arrive) is
        left alone, as is one already gone. Returns the qids removed."""
        ...

    async def wake(self, destination: str) -> bool:
        """Make a destination due now (its peer was heard from); True if it had mail."""

    async def queue_state(self) -> list[DestinationState]:
        """Every destination with queued mail, by destination."""

    async def next_due(self) -> int | None:
        """The earliest `next_attempt_at` (or lease lapse) of any destination with mail."""

    # -- reputation -------------------------------------------------------------------------
    async def add_strike(self, strike: Strike, *, cap: int | None = None) -> bool:
        """Record a strike; False if this proof was already counted, or if its offender
        already has `cap` strikes no lift has forgiven (checked and written atomically, so
        concurrent writers never store more than `cap`)."""

    async def strikes(self) -> list[Strike]:
        """Every strike, in the order recorded (reads them all: not for a hot path)."""

    async def strike_tallies(
        self, offenders: Sequence[str] | None = None, *, limit: int
    ) -> list[StrikeTally]:
        """Counted per offender, of `offenders` (None: every one), at most `limit` rows:
        most counting strikes first, then most recorded, then by name."""

    async def set_quarantine_override(self, server: str, lifted: bool, now_ms: int) -> None: ...

    async def quarantine_overrides(self) -> dict[str, Override]:
        """The operator's latest decision per server, with when it was made."""

    # -- rate counters, shared by every process on one database ------------------------------
    async def count_hit(self, bucket: str, now_ms: int, window_ms: int, limit: int) -> bool:
        """Count one hit in `bucket`; True when the bucket already had `limit` hits within
        the last `window_ms` (the hit is then not counted). flux.protocol.spam.RateLimiter's
        `hit`: a hit at t counts while t > now_ms - window_ms. Atomic: concurrent calls, from
        other processes too, never let more than `limit` hits into one window."""

    async def hits_in_window(self, bucket: str, now_ms: int, window_ms: int) -> int:
        """How many hits `bucket` has within the last `window_ms`, counting none: a cheap
        refusal before costly work, with the hit counted (count_hit) only if it is taken."""

    async def prune_hits(self, now_ms: int, window_ms: int) -> int:
        """Forget the hits of every bucket at or before now_ms - window_ms; return how many.
        Pass the longest window any caller counts with (a shorter one would forget hits
        that another counter still counts)."""

    async def clear_hits(self, bucket: str) -> int:
        """Forget every hit of `bucket` (a login that succeeded); return how many."""


#: a store outcome that refuses one recipient, as the sender's sent mail says it
REFUSED_REASONS = {
    StoreOutcome.OVER_QUOTA: "the recipient's mailbox is full",
    StoreOutcome.OVER_STRANGER_SHARE: (
        "the recipient has not written to you and its mail from strangers is full"
    ),
    StoreOutcome.CONFLICT: "the recipient already holds another message of yours with this id",
}


def sent_after(record: SentMessage, outcomes: Mapping[str, StoreOutcome]) -> SentMessage | None:
    """`record` as the storing transaction decided it: None when no recipient was stored
    (the submission is refused as a whole), else each refused recipient bounced with its
    reason (REFUSED_REASONS)."""
    if StoreOutcome.STORED not in outcomes.values():
        return None
    delivery = {r: dict(s) for r, s in record.delivery.items()}
    for rcpt, outcome in outcomes.items():
        if (reason := REFUSED_REASONS.get(outcome)) is not None:
            delivery[rcpt] = {"state": DeliveryState.BOUNCED.value, "at": record.sent_at,
                              "reason": reason}  # fmt: skip
    return SentMessage(record.sender, record.envelope, record.sent_at, delivery, record.updated_at)


def merge_delivery(
    current: Mapping[str, Mapping[str, Any]], changes: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """`current` with each changed recipient's state replaced whole; only recipients the
    message was sent to are changed, and a final state (delivered, bounced) stays final:
    a late retry notice never undoes a delivery."""
    out = {r: dict(s) for r, s in current.items()}
    for rcpt, state in changes.items():
        old = out.get(rcpt)
        if old is None or old.get("state") in (DeliveryState.DELIVERED, DeliveryState.BOUNCED):
            continue
        out[rcpt] = dict(state)
    return out


#: what a BCC copy may change of the primary (PROTOCOL.md §5.2, §5.3): it adds `bcc`, wraps
#: the content key once more in `enc_recipients` and is signed again; the route and chain
#: are written by servers, not by the sender
COPY_FIELDS = frozenset({"bcc", "enc_recipients", "sig", "route", "integrity_chain"})


def same_message(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether envelopes `a` and `b` are copies of one message (the primary and its BCC
    copies): equal but for COPY_FIELDS and the unsigned `_` fields a server adds."""

    def core(env: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in env.items() if k not in COPY_FIELDS and not k.startswith("_")}

    return core(a) == core(b)


def merge_sent(kept: SentMessage, new: SentMessage) -> SentMessage | None:
    """The record of (sender, id) once `new`, the record of another submission of that id,
    arrives on `kept` (module notes, "One sent record per message"); None when nothing
    changes: a replay, a second primary, or an envelope that is no copy of the kept one.

    `new`'s recipients missing from `kept.delivery` are added with their states (a kept
    one is never overwritten); the envelope becomes `new`'s when `new` is the primary (no
    `bcc`) and `kept` was a BCC copy. `sent_at` stays the first copy's (the sent list's
    order does not move); `updated_at` is the later of the two when a recipient was added."""
    primary_arrives = bool(kept.envelope.get("bcc")) and not new.envelope.get("bcc")
    if not (new.envelope.get("bcc") or primary_arrives):
        return None  # the primary again: a replay (or the id reused), the first record stands
    if not same_message(kept.envelope, new.envelope):
        return None  # another message under a used id: the first record stands, as above
    added = {r: dict(s) for r, s in new.delivery.items() if r not in kept.delivery}
    if not added and not primary_arrives:
        return None
    delivery = {**{r: dict(s) for r, s in kept.delivery.items()}, **added}
    envelope = new.envelope if primary_arrives else kept.envelope
    updated = max(kept.updated_at, new.updated_at) if added else kept.updated_at
    return SentMessage(kept.sender, envelope, kept.sent_at, delivery, updated)


def check_settle(release: bool, retry_at: int | None, error: str | None) -> None:
    """Refuse a settle that keeps its lease (`release=False`, one part of a rolling lease)
    but reports a failed attempt: a retry ends the lease (Store.settle)."""
    if not release and (retry_at is not None or error is not None):
        raise ValueError("settle(release=False) takes no retry_at or error: a retry ends the lease")
