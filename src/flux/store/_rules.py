"""Rules shared by every store implementation, written once (see base.py for the contract).

Keeping the lifecycle decision, the cursor format and the stranger share here means the
stores cannot drift apart on them; the contract tests check the rest.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from flux.protocol.errors import InvalidValue

from .base import (
    MAX_PAGE,
    STATUS_ORDER,
    AmbiguousMessage,
    Incoming,
    MessageRef,
    MessageStatus,
    SentMessage,
    StoredMessage,
    ThreadItem,
)

DEFAULT_INBOX = "inbox"
LIVE_STATUSES = (MessageStatus.PENDING, MessageStatus.DELIVERED, MessageStatus.READ)
#: cursor values are row ids and unix ms: a value past a signed 64-bit integer is no cursor
_CURSOR_MAX = 2**63 - 1


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


#: A value as the stores keep it: compact JSON, non-ASCII kept as is. One encoder, made
#: once: `json.dumps` with keywords builds one per call (~3.5 of ~12 us for a small
#: envelope, on SQLite's writer).
compact_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def envelope_text(envelope: Mapping[str, Any]) -> str:
    """The envelope as a store keeps it (`compact_json`)."""
    return compact_json(envelope)


def clamp_limit(limit: int) -> int:
    return max(1, min(int(limit), MAX_PAGE))


def expiry_of(envelope: Mapping[str, Any]) -> tuple[bool, int | None]:
    """(delete_on_read, hide_at) from the envelope's `expires` (PROTOCOL.md §11.1).

    absent → (False, None); 0 → (True, None); ms > 0 → (False, ms). Anything else (a
    negative number, a non-integer) is treated as absent: the store keeps mail rather
    than guess; the server's validation is where such input is refused.
    """
    exp = envelope.get("expires")
    if isinstance(exp, bool) or not isinstance(exp, int) or exp < 0:
        return False, None
    if exp == 0:
        return True, None
    return False, exp


def is_hidden(hide_at: int | None, now_ms: int) -> bool:
    return hide_at is not None and hide_at <= now_ms


def effective_status(status: MessageStatus, hide_at: int | None, now_ms: int) -> MessageStatus:
    """What readers see: a row past its expiry time is deleted, swept or not."""
    return MessageStatus.DELETED if is_hidden(hide_at, now_ms) else status


#: a status transition: (current, requested, *, delete_on_read, hidden) -> new or None
Step = Callable[..., MessageStatus | None]


def next_status(
    current: MessageStatus,
    requested: MessageStatus,
    *,
    delete_on_read: bool,
    hidden: bool,
) -> MessageStatus | None:
    """The status a `mark(requested)` leaves, or None when nothing changes.

    Never backwards, `deleted` final; reading a message that expires on read (or whose
    time has passed) deletes it instead.
    """
    if current == MessageStatus.DELETED:
        return None
    if STATUS_ORDER[requested] >= STATUS_ORDER[MessageStatus.READ] and (delete_on_read or hidden):
        requested = MessageStatus.DELETED
    elif hidden:
        return None  # effectively deleted already; an earlier status cannot apply
    if STATUS_ORDER[requested] <= STATUS_ORDER[current]:
        return None
    return requested


def unread_status(
    current: MessageStatus, requested: MessageStatus, *, delete_on_read: bool, hidden: bool
) -> MessageStatus | None:
    """The status `mark_unread` leaves, or None when nothing changes (base.py, "Unread").

    Only `read` goes back, to `delivered`. `requested` is ignored (the signature is
    next_status's, so the stores run one loop for both). A row past its `expires` time is
    deleted for readers whatever it stores, and `deleted` is final, so neither comes back;
    a message with `expires` 0 was deleted by its reading and so is never `read`.
    """
    del requested, delete_on_read
    if hidden or current != MessageStatus.READ:
        return None
    return MessageStatus.DELIVERED


def over_stranger_share(
    inc: Incoming, recipient: str, known: bool, from_strangers: int, from_sender: int
) -> bool:
    """Whether the stranger share (base.py StrangerShare) refuses this message for
    `recipient`: `known` says whether the recipient has written to the sender;
    `from_strangers` and `from_sender` count the recipient's visible pending mail from
    every stranger and from this sender, read in the storing transaction. The recipient
    itself is never a stranger: a note to oneself is known mail."""
    share = inc.stranger_share
    if share is None or known or recipient == inc.envelope["from"]:
        return False
    return from_strangers >= share.total or from_sender >= share.per_sender


def recipients_of(inc: Incoming) -> list[str]:
    """The distinct recipients, in order. A bare string is refused rather than stored as
    one delivery per character."""
    if isinstance(inc.recipients, str):
        raise TypeError("Incoming.recipients must be a sequence of addresses, not a str")
    return list(dict.fromkeys(inc.recipients))


def normalise_tags(tags: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted({t for t in tags}))


def encode_cursor(received_at: int, rowid: int) -> str:
    return base64.urlsafe_b64encode(f"{received_at}:{rowid}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[int, int]:
    """The (received_at, rowid) of the last item of the previous page.

    Raises InvalidValue (field "cursor") for anything this module did not make.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor.encode("ascii")).decode("ascii")
        a, b = raw.split(":")
        if not (a.isdigit() and b.isdigit()) or max(int(a), int(b)) > _CURSOR_MAX:
            raise ValueError(raw)
        return int(a), int(b)
    except (ValueError, UnicodeError, binascii.Error, AttributeError):
        raise InvalidValue("not a cursor this server issued", field="cursor") from None


# -- message identity and threads (base.py, "Threads"; PROTOCOL.md §4.5) ---------------------
def refs(msg_ids: Iterable[str | MessageRef]) -> list[MessageRef]:
    """Distinct refs, in order; a bare id is a ref without sender."""
    return list(
        dict.fromkeys(MessageRef(m) if isinstance(m, str) else MessageRef(*m) for m in msg_ids)
    )


def pick(ref: MessageRef, senders: Iterable[str]) -> str | None:
    """The sender `ref` names among the `senders` holding its id in one mailbox: its own
    sender if that holds it, else the only one; None if none. Raises AmbiguousMessage."""
    found = sorted(set(senders))
    if ref.sender is not None:
        return ref.sender if ref.sender in found else None
    if len(found) > 1:
        raise AmbiguousMessage({ref.id: found})
    return found[0] if found else None


def resolve_all(
    wanted: Sequence[MessageRef], held: Mapping[str, Iterable[str]]
) -> list[tuple[str, str]]:
    """(sender, id) of each ref found (`held`: id -> senders holding it in the mailbox), in
    order. Raises one AmbiguousMessage naming every ambiguous id, before anything changes."""
    out: list[tuple[str, str]] = []
    ambiguous: dict[str, list[str]] = {}
    for ref in wanted:
        try:
            sender = pick(ref, held.get(ref.id, ()))
        except AmbiguousMessage as exc:
            ambiguous.update(exc.candidates)
            continue
        if sender is not None:
            out.append((sender, ref.id))
    if ambiguous:
        raise AmbiguousMessage(ambiguous)
    return list(dict.fromkeys(out))


def root_key(sender: str, msg_id: str) -> str:
    """The thread root naming the message (sender, id), which starts a thread."""
    return f"{msg_id} {sender}"


def waiting_key(sender: str, re_id: str) -> str:
    """The placeholder root of `sender`'s replies to an id not (yet) in the mailbox. Apart
    from root keys, so a message arriving later can adopt waiting replies only, never
    another message's settled thread."""
    return f"re {re_id} {sender}"


def named(envelope: Mapping[str, Any]) -> set[str]:
    """The addresses a message names: its sender, `to`, `cc` and `bcc` (a received Bcc
    copy names only its owner there; a sent record, `as_sent`, every Bcc recipient)."""
    out = set()
    for name in ("from", "to"):
        if isinstance(envelope.get(name), str):
            out.add(envelope[name])
    for name in ("cc", "bcc"):
        value = envelope.get(name)
        if isinstance(value, list):
            out.update(a for a in value if isinstance(a, str))
    return out


def participants(envelope: Mapping[str, Any], owner: str) -> set[str]:
    """Who may file a reply under this message: the addresses it names, the mailbox owner."""
    return named(envelope) | {owner}


def as_sent(envelope: Mapping[str, Any], delivery: Mapping[str, Any]) -> Mapping[str, Any]:
    """A sent record's envelope as its sender knows the message: every recipient it went
    to (the record's `delivery` keys, its Bcc copies' included) named, the others under
    `bcc`, so a reply from a Bcc recipient joins the sender's conversation."""
    extra = sorted(a for a in delivery if a not in named(envelope))
    return {**envelope, "bcc": extra} if extra else envelope


def parent_root(
    reply: Mapping[str, Any], owner: str, candidates: Sequence[tuple[Mapping[str, Any], str]]
) -> str | None:
    """The thread root a reply joins: among `candidates` ((envelope, thread_root) of the
    owner's messages with id == reply["re"], oldest first), those the reply's sender is a
    participant of; preferring one whose sender the reply is addressed to. None: none."""
    sender = reply.get("from")
    allowed = [(env, root) for env, root in candidates if sender in participants(env, owner)]
    if not allowed:
        return None
    addressed = named(reply)  # the owner too when the reply names it: its sent mail competes
    preferred = [root for env, root in allowed if env.get("from") in addressed]
    return preferred[0] if preferred else allowed[0][1]


def thread_start(reply: Mapping[str, Any], parent: str | None) -> str:
    """The root of a newly stored message, given its parent's root (or None)."""
    if parent is not None:
        return parent
    re_id = reply.get("re")
    if isinstance(re_id, str) and re_id:
        return waiting_key(reply["from"], re_id)
    return root_key(reply["from"], reply["id"])


def adoptable(envelope: Mapping[str, Any], owner: str) -> list[str]:
    """The placeholder roots a newly stored message takes over: those of its participants'
    replies to its id."""
    return sorted(waiting_key(who, envelope["id"]) for who in participants(envelope, owner))


# -- the owner's sent mail in its conversations (base.py, "A conversation includes...") -------
#: a candidate parent as the stores read it: (stored at, unix ms; envelope; thread root)
Timed = tuple[int, Mapping[str, Any], str]


def oldest_first(
    received: Iterable[Timed], sent: Iterable[Timed]
) -> list[tuple[Mapping[str, Any], str]]:
    """The candidates `parent_root` takes, from the owner's received mail (already in
    arrival order) and its sent mail: by time, received first at one millisecond (a
    stable sort keeps each list's own order). A sent row whose root is "" is one a
    migration has not computed yet (schema step 11's backfill): not a parent yet."""
    tagged = [(at, 0, env, root) for at, env, root in received]
    tagged += [(at, 1, env, root) for at, env, root in sent if root]
    tagged.sort(key=lambda c: (c[0], c[1]))
    return [(env, root) for _, _, env, root in tagged]


def conversation(
    received: Sequence[StoredMessage], sent: Sequence[SentMessage]
) -> list[ThreadItem]:
    """One thread's received and sent messages (each list oldest first), merged oldest
    first. Within one millisecond a message comes before its replies (by depth in the
    thread), then a sent one before a received one. A message the owner sent to itself is
    in both lists: the received copy stands for it."""
    held = {m.ref for m in received}
    mine = [s for s in sent if MessageRef(s.id, s.sender) not in held]
    items: list[tuple[int, int, ThreadItem]] = [(m.sent_at, 0, m) for m in mine]
    items += [(m.received_at, 1, m) for m in received]
    depth = _depths([m for _, _, m in items])
    items.sort(key=lambda i: (i[0], depth[id(i[2])], i[1]))
    return [m for _, _, m in items]


def _depths(items: Sequence[ThreadItem]) -> dict[int, int]:
    """id(item) -> how many of its `re` ancestors are among `items` (a cycle, which
    signed ids make practically impossible, stops the count)."""
    by_id = {m.envelope["id"]: m for m in items}
    out: dict[int, int] = {}
    for m in items:
        n, seen, parent = 0, {m.envelope["id"]}, m.envelope.get("re")
        while isinstance(parent, str) and parent in by_id and parent not in seen:
            seen.add(parent)
            n, parent = n + 1, by_id[parent].envelope.get("re")
        out[id(m)] = n
    return out
