"""What the client's calls return: small frozen values instead of raw answer dicts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..protocol import ChainCheck, Envelope
from .answers import bad_answer

__all__ = ["Changes", "Page", "Peek", "SendResult", "Status", "Verified"]

Message = dict[str, Any]


class SendResult(dict[str, Any]):
    """The outcome of one `send`: every copy was accepted (else `send` raised).

    `recipients` maps each recipient to the server's answer for it ("stored", or
    "duplicate" when the same message had been handed in before; a prototype server says
    "queued" or "realtime"); `envelopes` are the signed copies as sent: one for to + cc,
    one per BCC recipient, all with one `id`.

    The mapping itself is the server's answer to the first copy, e.g. a prototype server's
    `{"ok": true, "delivery": "queued", "mesh": {}}`: the prototype's `FluxClient.send`
    returned that dict, so code written for it (`result["delivery"]`, `json.dumps(result)`)
    keeps working. Treat it as read-only.
    """

    __slots__ = ("encrypted", "envelopes", "id", "recipients")

    def __init__(
        self,
        id: str,
        recipients: Mapping[str, str],
        envelopes: tuple[Message, ...],
        encrypted: bool = False,
        answer: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(answer or {"ok": True, "id": id, "recipients": dict(recipients)})
        self.id = id
        self.recipients: Mapping[str, str] = dict(recipients)
        self.envelopes = envelopes
        self.encrypted = encrypted

    @property
    def ok(self) -> bool:
        return True

    @property
    def duplicate(self) -> bool:
        """True when the server already had every copy (a replay changes nothing)."""
        return all(outcome == "duplicate" for outcome in self.recipients.values())

    def __repr__(self) -> str:
        return f"SendResult(id={self.id!r}, recipients={self.recipients!r})"


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a mailbox listing, newest first; pass `next_cursor` for the next."""

    messages: list[Message]
    next_cursor: str | None = None


class Peek(int):
    """How many messages are pending (the int itself, as the prototype's `peek()` returned
    a count), and, from a FLUX server, the first of them (`messages`; empty from the
    prototype, which sends only the count)."""

    messages: list[Message]

    def __new__(cls, pending: int, messages: list[Message] | None = None) -> Peek:
        peek = super().__new__(cls, pending)
        peek.messages = list(messages or ())
        return peek

    @property
    def pending(self) -> int:
        return int(self)

    def __repr__(self) -> str:
        return f"Peek(pending={int(self)}, messages=[{len(self.messages)} message(s)])"


class Status(dict[str, Any]):
    """The /status answer. FLUX's fields (`hosted`, and for your own address the mailbox
    counters) are read as a dict; its truth value is `online`, as the prototype's
    `status(address)` returned that bool. Raises FluxClientError (`bad_answer`, field
    `online`) when the server did not say whether the address is online."""

    __slots__ = ()

    @property
    def online(self) -> bool:
        value = self.get("online")
        if not isinstance(value, bool):
            raise bad_answer("GET /status", "online", "missing or not true/false", dict(self))
        return value

    def __bool__(self) -> bool:
        return self.online


@dataclass(frozen=True, slots=True)
class Changes:
    """Everything that changed after `since`; `state` is the value to pass next time."""

    state: int
    has_more: bool
    created: list[Message]
    updated: list[Message]


@dataclass(frozen=True, slots=True)
class Verified:
    """A message whose sender signature and integrity chain both verified."""

    envelope: Envelope
    chain: ChainCheck

    @property
    def sender(self) -> str:
        return self.envelope.sender

    @property
    def hops(self) -> int:
        return len(self.chain.hops)
