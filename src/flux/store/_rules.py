"""Rules shared by every store implementation, written once (see base.py for the contract).

Keeping the lifecycle decision and the cursor format here means MemoryStore and
SQLiteStore cannot drift apart on them; the contract tests check the rest.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from flux.protocol.errors import InvalidValue

from .base import MAX_PAGE, STATUS_ORDER, Incoming, MessageStatus

DEFAULT_INBOX = "inbox"
LIVE_STATUSES = (MessageStatus.PENDING, MessageStatus.DELIVERED, MessageStatus.READ)
#: cursor values are row ids and unix ms: a value past a signed 64-bit integer is no cursor
_CURSOR_MAX = 2**63 - 1


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def envelope_text(envelope: Mapping[str, Any]) -> str:
    """The envelope as a store keeps it: compact JSON, non-ASCII kept as is."""
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":"))


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
