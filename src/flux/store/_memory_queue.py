"""The delivery queue of MemoryStore (the rules are in base.py, "the delivery queue").

A fair queue. A lease takes a destination's mail round-robin across its senders, as mail
queues do for bulk senders: each sendable copy gets a turn, 1 for its sender's oldest copy
for that destination, 2 for the next and so on, and a lease takes the copies in (turn,
qid) order. So one sender with 10,000 copies queued for a peer and another with one take
the first two places of the next lease, not places 1 and 10,001: a flood delays others'
mail by one lease, not by itself. Each sender's copies still go in queue order (docs/FEDERATION.md,
"Delivery queue": a sender's mail arrives in submission order). The sender is the envelope's `from`
(`Outbound.sender`); the SQL stores keep it in a column of `outbound` (schema step 12) and
number the turns with ROW_NUMBER(), the same rule as `fair_order` here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .base import (
    DeliveryUpdates,
    DestinationState,
    Lease,
    Outbound,
    Queued,
    QueuedMessage,
    SentMessage,
    check_settle,
    merge_delivery,
    merge_sent,
)


@dataclass(slots=True)
class _Destination:
    messages: dict[int, Outbound] = field(default_factory=dict)  # qid -> item, in order
    attempts: int = 0
    next_attempt_at: int = 0
    last_error: str | None = None
    holder: str | None = None
    leased_until: int = 0
    held: bool = False  #: the operator holds the whole destination
    held_qids: set[int] = field(default_factory=set)  #: messages the operator holds

    def sendable(self) -> list[tuple[int, Outbound]]:
        """Its messages not held one by one, in queue order."""
        return [(q, m) for q, m in self.messages.items() if q not in self.held_qids]


def fair_order(copies: Sequence[tuple[int, Outbound]]) -> list[tuple[int, Outbound]]:
    """`copies` (qid, item), in queue order, reordered round-robin across senders: by (turn
    within its sender, qid) (module docstring)."""
    turns: dict[str, int] = {}
    numbered = []
    for qid, item in copies:
        sender = item.sender
        turns[sender] = turns.get(sender, 0) + 1
        numbered.append((turns[sender], qid, item))
    return [(qid, item) for _, qid, item in sorted(numbered, key=lambda t: (t[0], t[1]))]


class MemoryQueue:
    def __init__(self) -> None:
        self._destinations: dict[str, _Destination] = {}
        self._qid = 0
        #: (sender, id) -> the sent-mail record (one per submission)
        self._sent: dict[tuple[str, str], SentMessage] = {}
        #: (sender, id) -> the sent record's thread root (base.py, "A conversation...")
        self._sent_roots: dict[tuple[str, str], str] = {}

    async def record_sent(self, sent: Sequence[SentMessage]) -> None:
        # no await between the look-up and the write: racing copies cannot lose an entry
        for record in sent:
            key = (record.sender, record.id)
            kept = self._sent.get(key)
            if kept is None:
                self._sent_roots[key] = self._new_root(record.sender, record.envelope)
                self._sent[key] = record
            elif (merged := merge_sent(kept, record)) is not None:  # a BCC copy (base.py)
                self._sent[key] = merged  # the root stays: the copies share their `re`
                self._sent_changed(*key)

    def _new_root(self, owner: str, envelope: Mapping[str, Any]) -> str:
        """The thread root of a message new to `owner`'s mail (MemoryStore computes it)."""
        raise NotImplementedError

    async def sent(
        self, sender: str, limit: int, before: tuple[int, str] | None = None
    ) -> list[SentMessage]:
        mine = [
            m for (s, _), m in self._sent.items()
            if s == sender and (before is None or (m.sent_at, m.id) < before)
        ]  # fmt: skip
        return sorted(mine, key=lambda m: (m.sent_at, m.id), reverse=True)[:limit]

    async def sent_message(self, sender: str, msg_id: str) -> SentMessage | None:
        return self._sent.get((sender, msg_id))

    async def sent_prefix(self, sender: str, prefix: str, limit: int) -> list[SentMessage]:
        found = [m for (s, i), m in self._sent.items() if s == sender and i.startswith(prefix)]
        return sorted(found, key=lambda m: m.id)[:limit]

    def _update_sent(self, delivery: DeliveryUpdates) -> None:
        for key, changes in delivery.items():
            record = self._sent.get(key)
            if record is None:
                continue
            at = max((int(c.get("at", 0)) for c in changes.values()), default=0)
            self._sent[key] = dataclasses.replace(
                record, delivery=merge_delivery(record.delivery, changes),
                updated_at=max(record.updated_at, at),
            )  # fmt: skip
            self._sent_changed(*key)

    def _sent_changed(self, sender: str, msg_id: str) -> None:
        """Record the change in the sender's change log (MemoryStore keeps it)."""

    async def enqueue(
        self, items: Sequence[Outbound], *, sent: Sequence[SentMessage] = ()
    ) -> list[bool]:
        await self.record_sent(sent)
        added = []
        for item in items:
            dest = self._destinations.setdefault(item.destination, _Destination())
            new = not any(q.body_hash == item.body_hash for q in dest.messages.values())
            if new:
                self._qid += 1
                dest.messages[self._qid] = item
            added.append(new)
        return added

    async def lease(self, holder: str, now_ms: int, lease_ms: int, limit: int) -> Lease | None:
        for name, dest in sorted(self._destinations.items(), key=lambda kv: kv[1].next_attempt_at):
            sendable = dest.sendable()
            if dest.held or not sendable or dest.next_attempt_at > now_ms:
                continue
            if dest.holder is not None and dest.leased_until > now_ms:
                continue
            dest.holder, dest.leased_until = holder, now_ms + lease_ms
            taken = fair_order(sendable)[:limit]
            return Lease(name, holder, [Queued(q, item) for q, item in taken], dest.attempts)
        return None

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
        check_settle(release, retry_at, error)
        dest = self._destinations.get(lease.destination)
        if dest is None or dest.holder != lease.holder:
            return False  # stale: the lease lapsed and went to another worker
        self._update_sent(delivery or {})
        for qid in done:
            dest.messages.pop(qid, None)
            dest.held_qids.discard(qid)
        if not release:  # one part of a rolling lease: the lease and the backoff stay
            return True
        if retry_at is None:
            dest.attempts, dest.next_attempt_at, dest.last_error = 0, 0, None
        else:
            dest.attempts, dest.next_attempt_at, dest.last_error = (
                dest.attempts + 1,
                retry_at,
                error,
            )
        dest.holder, dest.leased_until = None, 0
        return True

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
        dest = self._destinations.get(lease.destination)
        if dest is None or dest.holder != lease.holder:
            return None
        dest.leased_until = now_ms + lease_ms
        if dest.held:  # the operator holds the destination: nothing more goes
            return []
        left_out, skipped = set(exclude), set(skip_senders)
        sendable = [
            (qid, item) for qid, item in dest.sendable()
            if qid not in left_out and item.sender not in skipped
        ]  # fmt: skip
        return [Queued(q, item) for q, item in fair_order(sendable)[:limit]]

    async def renew(self, lease: Lease, now_ms: int, lease_ms: int) -> bool:
        dest = self._destinations.get(lease.destination)
        if dest is None or dest.holder != lease.holder:
            return False
        dest.leased_until = now_ms + lease_ms
        return True

    async def wake(self, destination: str) -> bool:
        dest = self._destinations.get(destination)
        if dest is None or not dest.messages:
            return False
        dest.next_attempt_at = 0
        return True

    async def queue_state(self) -> list[DestinationState]:
        return [
            DestinationState(
                name,
                len(d.messages),
                min(m.enqueued_at for m in d.messages.values()),
                d.attempts,
                d.next_attempt_at,
                d.last_error,
                d.leased_until,
                d.held,
                len(d.held_qids),
            )
            for name, d in sorted(self._destinations.items())
            if d.messages
        ]

    async def next_due(self) -> int | None:
        due = [
            max(d.next_attempt_at, d.leased_until)
            for d in self._destinations.values()
            if not d.held and d.sendable()
        ]
        return min(due, default=None)

    # -- operator control (flux admin queue) ---------------------------------------------
    async def queued(
        self, destination: str | None = None, id_prefix: str | None = None, limit: int = 1000
    ) -> list[QueuedMessage]:
        found = [
            QueuedMessage(qid, item, qid in d.held_qids)
            for name, d in self._destinations.items()
            if destination is None or name == destination
            for qid, item in d.messages.items()
            if id_prefix is None or str(item.envelope.get("id", "")).startswith(id_prefix)
        ]
        return sorted(found, key=lambda m: m.qid)[:limit]

    async def hold(self, destination: str, held: bool) -> bool:
        dest = self._destinations.get(destination)
        if dest is None or not dest.messages:
            return False
        dest.held = held
        return True

    async def hold_messages(self, qids: Sequence[int], held: bool) -> int:
        found = 0
        for dest in self._destinations.values():
            for qid in set(qids) & dest.messages.keys():
                found += 1
                (dest.held_qids.add if held else dest.held_qids.discard)(qid)
        return found

    async def remove_queued(
        self, removals: Sequence[tuple[int, DeliveryUpdates]], now_ms: int
    ) -> list[int]:
        removed = []
        for qid, delivery in removals:
            dest = next((d for d in self._destinations.values() if qid in d.messages), None)
            if dest is None or (dest.holder is not None and dest.leased_until > now_ms):
                continue  # gone already, or being sent right now
            dest.messages.pop(qid)
            dest.held_qids.discard(qid)
            self._update_sent(delivery)
            removed.append(qid)
        return removed
