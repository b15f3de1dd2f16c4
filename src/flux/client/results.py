"""What the client's calls return: small frozen values instead of raw answer dicts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..protocol import ChainCheck, Envelope

__all__ = ["Changes", "Page", "Peek", "SendResult", "Verified"]

Message = dict[str, Any]


@dataclass(frozen=True, slots=True)
class SendResult:
    """The outcome of one `send`: every copy was accepted (else `send` raised).

    `recipients` maps each recipient to the server's answer for it ("stored", or
    "duplicate" when the same message had been handed in before); `envelopes` are the
    signed copies as sent: one for to + cc, one per BCC recipient, all with one `id`.
    """

    id: str
    recipients: Mapping[str, str]
    envelopes: tuple[Message, ...]
    encrypted: bool = False

    @property
    def ok(self) -> bool:
        return True

    @property
    def duplicate(self) -> bool:
        """True when the server already had every copy (a replay changes nothing)."""
        return all(outcome == "duplicate" for outcome in self.recipients.values())


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a mailbox listing, newest first; pass `next_cursor` for the next."""

    messages: list[Message]
    next_cursor: str | None = None


@dataclass(frozen=True, slots=True)
class Peek:
    pending: int
    messages: list[Message]


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
