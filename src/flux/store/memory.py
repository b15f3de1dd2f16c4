"""`MemoryStore`: the `Store` contract in plain dictionaries, for tests and `--backend memory`.

Nothing here awaits between reading and writing, so each coroutine is atomic on the event
loop: no locks are needed. Envelopes are kept as JSON text, exactly as SQLiteStore keeps
them, so a caller can neither mutate stored mail through a returned dict nor store
something that would not survive the real store's round trip.
"""

from __future__ import annotations

import json
from bisect import bisect_right, insort
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import _rules
from ._memory_invites import MemoryInvites
from ._memory_queue import MemoryQueue
from .base import (
    Change,
    ChangeKind,
    Changes,
    HostedAddress,
    Incoming,
    ListQuery,
    MessageRef,
    MessageStatus,
    Override,
    Page,
    PrefixMatches,
    Session,
    StoredMessage,
    StoreOutcome,
    Strike,
    StrikeTally,
    ThreadItem,
    sent_after,
)


@dataclass(slots=True)
class _Delivery:
    rowid: int
    recipient: str
    sender: str
    msg_id: str
    body_hash: str
    status: MessageStatus
    inbox: str
    tags: set[str]
    received_at: int
    seq: int
    delete_on_read: bool
    hide_at: int | None
    thread_root: str

    @property
    def order(self) -> tuple[int, int]:
        return (self.received_at, self.rowid)


@dataclass(slots=True)
class _Session:
    address: str
    expires_at: int
    revoked: bool = False


@dataclass(slots=True)
class _State:
    messages: dict[str, str] = field(default_factory=dict)  # body_hash -> envelope JSON
    #: (recipient, sender, id) -> row: a message is named by its sender and id together
    deliveries: dict[tuple[str, str, str], _Delivery] = field(default_factory=dict)
    #: (recipient, id) -> senders holding that id there (for lookups by bare id)
    senders: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    changes: list[tuple[int, str, str, ChangeKind, str]] = field(default_factory=list)
    hosted: dict[str, HostedAddress] = field(default_factory=dict)
    sessions: dict[str, _Session] = field(default_factory=dict)
    nonces: dict[str, int] = field(default_factory=dict)
    strikes: dict[str, Strike] = field(default_factory=dict)
    overrides: dict[str, Override] = field(default_factory=dict)
    #: (owner, peer): owner has written to peer (base.py StrangerShare)
    contacts: set[tuple[str, str]] = field(default_factory=set)
    seq: int = 0
    rowid: int = 0


class MemoryStore(MemoryQueue, MemoryInvites):
    """The in-memory `Store`. `clock` returns unix ms (for the `expires` hiding rule)."""

    def __init__(self, *, clock: Callable[[], int] = _rules.wall_clock_ms) -> None:
        super().__init__()
        self._clock = clock
        self._s = _State()
        self._hits = HitLog()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None  # memory is always there

    # -- hosted addresses -------------------------------------------------------------------
    async def register_address(self, address: str, pub: str, now_ms: int) -> bool:
        if address in self._s.hosted:
            return False
        self._s.hosted[address] = HostedAddress(address, pub, now_ms)
        return True

    async def hosted(self, address: str) -> HostedAddress | None:
        return self._s.hosted.get(address)

    # -- mail: writing ----------------------------------------------------------------------
    async def store_message(self, incoming: Incoming) -> dict[str, StoreOutcome]:
        # with its sent record, as store_many (and PostgresStore) keep it
        return (await self.store_many([incoming]))[0]

    async def store_many(self, batch: Sequence[Incoming]) -> list[dict[str, StoreOutcome]]:
        outcomes = [self._store(inc) for inc in batch]
        for inc, outcome in zip(batch, outcomes, strict=True):
            if inc.sent is not None and (record := sent_after(inc.sent, outcome)) is not None:
                await self.record_sent([record])
        return outcomes

    def _store(self, inc: Incoming) -> dict[str, StoreOutcome]:
        text = _rules.envelope_text(inc.envelope)
        msg_id, sender = inc.envelope["id"], inc.envelope["from"]
        delete_on_read, hide_at = _rules.expiry_of(inc.envelope)
        out: dict[str, StoreOutcome] = {}
        rate = inc.rate
        # looked at once, before anything of the message is written (base.py notes)
        limited = rate is not None and (
            self._hits.in_window(rate.bucket, inc.received_at, rate.window_ms) >= rate.limit
        )
        for rcpt in _rules.recipients_of(inc):
            old = self._s.deliveries.get((rcpt, sender, msg_id))
            if old is not None:
                same = old.body_hash == inc.body_hash
                out[rcpt] = StoreOutcome.DUPLICATE if same else StoreOutcome.CONFLICT
                continue
            if limited:
                out[rcpt] = StoreOutcome.RATE_LIMITED
                continue
            if (
                inc.pending_quota is not None
                and self._pending(rcpt, inc.received_at) >= inc.pending_quota
            ):
                out[rcpt] = StoreOutcome.OVER_QUOTA
                continue
            if inc.stranger_share is not None and self._over_share(inc, rcpt, sender):
                out[rcpt] = StoreOutcome.OVER_STRANGER_SHARE
                continue
            self._s.messages.setdefault(inc.body_hash, text)
            root = self._new_root(rcpt, inc.envelope)
            self._s.rowid += 1
            d = _Delivery(
                rowid=self._s.rowid, recipient=rcpt, sender=sender, msg_id=msg_id, body_hash=inc.body_hash,
                status=MessageStatus.PENDING, inbox=inc.inbox, tags=set(inc.tags),
                received_at=inc.received_at, seq=0, delete_on_read=delete_on_read,
                hide_at=hide_at, thread_root=root,
            )  # fmt: skip
            self._s.deliveries[(rcpt, sender, msg_id)] = d
            self._s.senders.setdefault((rcpt, msg_id), []).append(sender)
            self._change(d, ChangeKind.CREATED)
            out[rcpt] = StoreOutcome.STORED
        if StoreOutcome.STORED in out.values():
            if rate is not None:
                self._hits.count(rate.bucket, inc.received_at, rate.window_ms, rate.limit)
            self._s.contacts.update((sender, p) for p in inc.contacts)
        return out

    def _over_share(self, inc: Incoming, rcpt: str, sender: str) -> bool:
        now = inc.received_at
        known = (rcpt, sender) in self._s.contacts
        pending = [
            d.sender for d in self._mailbox(rcpt)
            if _rules.effective_status(d.status, d.hide_at, now) == MessageStatus.PENDING
            and (d.recipient, d.sender) not in self._s.contacts and d.sender != rcpt
        ]  # fmt: skip
        return _rules.over_stranger_share(inc, rcpt, known, len(pending), pending.count(sender))

    async def add_contacts(self, owner: str, peers: Sequence[str], now_ms: int) -> None:
        self._s.contacts.update((owner, p) for p in peers)

    async def is_contact(self, owner: str, peer: str) -> bool:
        return owner == peer or (owner, peer) in self._s.contacts

    async def purge_expired(self, before_ms: int) -> int:
        gone = [
            k
            for k, d in self._s.deliveries.items()
            if d.hide_at is not None and d.hide_at <= before_ms
        ]
        for key in gone:
            d = self._s.deliveries.pop(key)
            holders = self._s.senders[(d.recipient, d.msg_id)]
            holders.remove(d.sender)
            if not holders:
                del self._s.senders[(d.recipient, d.msg_id)]
        held = {d.body_hash for d in self._s.deliveries.values()}
        for body in [b for b in self._s.messages if b not in held]:
            del self._s.messages[body]
        return len(gone)

    def _new_root(self, owner: str, env: Mapping[str, Any]) -> str:
        """The root of a message new to `owner`'s mail, received or sent (base.py,
        "Threads"); the replies waiting for it that its participants sent move under it,
        in both."""
        re_id = env.get("re")
        parent = None
        if isinstance(re_id, str) and re_id:
            found = sorted(
                (self._s.deliveries[(owner, s, re_id)] for s in self._s.senders.get((owner, re_id), ())),
                key=lambda d: d.order,
            )  # fmt: skip
            received = [
                (d.received_at, json.loads(self._s.messages[d.body_hash]), d.thread_root)
                for d in found
            ]
            mine = self._sent.get((owner, re_id))
            sent = [] if mine is None else [
                (mine.sent_at, _rules.as_sent(mine.envelope, mine.delivery),
                 self._sent_roots[(owner, re_id)])
            ]  # fmt: skip
            parent = _rules.parent_root(env, owner, _rules.oldest_first(received, sent))
        root = _rules.thread_start(env, parent)
        waiting = set(_rules.adoptable(env, owner))
        for d in self._s.deliveries.values():
            if d.recipient == owner and d.thread_root in waiting:
                d.thread_root = root
        for key, old in self._sent_roots.items():
            if key[0] == owner and old in waiting:
                self._sent_roots[key] = root
        return root

    def _find(self, address: str, msg_id: str, sender: str | None) -> _Delivery | None:
        """The row (address, sender, msg_id); raises AmbiguousMessage (base.py)."""
        who = _rules.pick(MessageRef(msg_id, sender), self._s.senders.get((address, msg_id), ()))
        return None if who is None else self._s.deliveries[(address, who, msg_id)]

    def _sent_changed(self, sender: str, msg_id: str) -> None:
        self._s.seq += 1
        self._s.changes.append((self._s.seq, sender, msg_id, ChangeKind.SENT, sender))

    def _change(self, d: _Delivery, kind: ChangeKind) -> None:
        self._s.seq += 1
        d.seq = self._s.seq
        self._s.changes.append((d.seq, d.recipient, d.msg_id, kind, d.sender))

    async def fetch_pending(self, address: str, limit: int) -> list[StoredMessage]:
        now = self._clock()
        rows = sorted(
            (d for d in self._mailbox(address)
             if d.status == MessageStatus.PENDING and not _rules.is_hidden(d.hide_at, now)),
            key=lambda d: d.order,
        )[: _rules.clamp_limit(limit)]  # fmt: skip
        for d in rows:
            d.status = MessageStatus.DELIVERED
            self._change(d, ChangeKind.UPDATED)
        return [self._view(d, now) for d in rows]

    async def mark(
        self, address: str, msg_ids: Sequence[str | MessageRef], status: MessageStatus
    ) -> list[StoredMessage]:
        return self._mark(address, msg_ids, status, _rules.next_status)

    async def mark_unread(
        self, address: str, msg_ids: Sequence[str | MessageRef]
    ) -> list[StoredMessage]:
        return self._mark(address, msg_ids, MessageStatus.DELIVERED, _rules.unread_status)

    def _mark(
        self, address: str, msg_ids: Sequence[str | MessageRef], status: MessageStatus,
        step: _rules.Step,
    ) -> list[StoredMessage]:  # fmt: skip
        now = self._clock()
        wanted = _rules.refs(msg_ids)
        held = {r.id: self._s.senders.get((address, r.id), ()) for r in wanted}
        changed = []
        for sender, msg_id in _rules.resolve_all(wanted, held):
            d = self._s.deliveries[(address, sender, msg_id)]
            new = step(
                d.status, MessageStatus(status), delete_on_read=d.delete_on_read,
                hidden=_rules.is_hidden(d.hide_at, now),
            )  # fmt: skip
            if new is None:
                continue
            d.status = new
            self._change(d, ChangeKind.UPDATED)
            changed.append(self._view(d, now))
        return changed

    async def tag(
        self, address: str, msg_id: str, add: Sequence[str], remove: Sequence[str],
        sender: str | None = None,
    ) -> StoredMessage | None:  # fmt: skip
        d = self._find(address, msg_id, sender)
        if d is None:
            return None
        new = (d.tags | set(add)) - set(remove)
        if new != d.tags:
            d.tags = new
            self._change(d, ChangeKind.UPDATED)
        return self._view(d, self._clock())

    async def move(
        self, address: str, msg_id: str, inbox: str, sender: str | None = None
    ) -> StoredMessage | None:
        d = self._find(address, msg_id, sender)
        if d is None:
            return None
        if d.inbox != inbox:
            d.inbox = inbox
            self._change(d, ChangeKind.UPDATED)
        return self._view(d, self._clock())

    async def expire(self, now_ms: int) -> int:
        swept = [
            d for d in self._s.deliveries.values()
            if d.status != MessageStatus.DELETED and _rules.is_hidden(d.hide_at, now_ms)
        ]  # fmt: skip
        for d in sorted(swept, key=lambda d: d.order):
            d.status = MessageStatus.DELETED
            self._change(d, ChangeKind.UPDATED)
        return len(swept)

    # -- mail: reading ----------------------------------------------------------------------
    def _mailbox(self, address: str) -> list[_Delivery]:
        return [d for d in self._s.deliveries.values() if d.recipient == address]

    def _view(self, d: _Delivery, now: int) -> StoredMessage:
        return StoredMessage(
            envelope=json.loads(self._s.messages[d.body_hash]), recipient=d.recipient,
            status=_rules.effective_status(d.status, d.hide_at, now), inbox=d.inbox,
            tags=_rules.normalise_tags(d.tags), received_at=d.received_at, seq=d.seq,
        )  # fmt: skip

    async def pending_count(self, address: str) -> int:
        return self._pending(address, self._clock())

    def _pending(self, address: str, now: int) -> int:
        return sum(
            1 for d in self._mailbox(address)
            if _rules.effective_status(d.status, d.hide_at, now) == MessageStatus.PENDING
        )  # fmt: skip

    async def get(
        self, address: str, msg_id: str, sender: str | None = None
    ) -> StoredMessage | None:
        d = self._find(address, msg_id, sender)
        return None if d is None else self._view(d, self._clock())

    async def match_prefix(
        self, address: str, prefix: str, sender: str | None = None, limit: int = 10
    ) -> PrefixMatches:
        # The fake scans the mailbox's (recipient, id) keys, as its `list` does; the SQL
        # stores answer from an index range (base.py, "Short ids").
        keys = sorted(
            (msg_id, s)
            for (rcpt, msg_id), holders in self._s.senders.items()
            if rcpt == address and msg_id.startswith(prefix)
            for s in holders
            if sender is None or s == sender
        )
        now = self._clock()
        items = [self._view(self._s.deliveries[(address, s, m)], now) for m, s in keys]
        return PrefixMatches(len(keys), items[: _rules.clamp_limit(limit)])

    async def list(self, address: str, query: ListQuery) -> Page:
        now = self._clock()
        after = _rules.decode_cursor(query.cursor) if query.cursor else None
        limit = _rules.clamp_limit(query.limit)
        rows = sorted(self._mailbox(address), key=lambda d: d.order, reverse=True)
        items: list[StoredMessage] = []
        last: _Delivery | None = None
        for d in rows:
            if after is not None and d.order >= after:
                continue
            status = _rules.effective_status(d.status, d.hide_at, now)
            if query.status is not None:
                if status != query.status:
                    continue
            elif status == MessageStatus.DELETED and not query.include_deleted:
                continue
            if query.inbox is not None and d.inbox != query.inbox:
                continue
            if query.tag is not None and query.tag not in d.tags:
                continue
            if query.sender is not None and d.sender != query.sender:
                continue
            if len(items) == limit:
                return Page(items, _rules.encode_cursor(*last.order))  # type: ignore[union-attr]
            items.append(self._view(d, now))
            last = d
        return Page(items, None)

    async def inboxes(self, address: str) -> dict[str, dict[str, int]]:
        now = self._clock()
        out: dict[str, dict[str, int]] = {}
        for d in self._mailbox(address):
            status = _rules.effective_status(d.status, d.hide_at, now)
            if status == MessageStatus.DELETED:
                continue
            counts = out.setdefault(d.inbox, {str(s): 0 for s in _rules.LIVE_STATUSES})
            counts[str(status)] += 1
        return out

    async def thread(
        self, address: str, msg_id: str, sender: str | None = None
    ) -> list[ThreadItem]:
        held = list(self._s.senders.get((address, msg_id), ()))
        mine = (address, msg_id) in self._sent
        who = _rules.pick(MessageRef(msg_id, sender), [*held, *([address] if mine else [])])
        if who is None:
            return []
        if who in held:
            root = self._s.deliveries[(address, who, msg_id)].thread_root
        else:
            root = self._sent_roots[(address, msg_id)]
        now = self._clock()
        rows = [
            d for d in self._mailbox(address)
            if d.thread_root == root
            and _rules.effective_status(d.status, d.hide_at, now) != MessageStatus.DELETED
        ]  # fmt: skip
        sent = sorted(
            (m for key, m in self._sent.items()
             if key[0] == address and self._sent_roots[key] == root),
            key=lambda m: (m.sent_at, m.id),
        )  # fmt: skip
        return _rules.conversation(
            [self._view(d, now) for d in sorted(rows, key=lambda d: d.order)], sent
        )

    async def changes(self, address: str, since: int, limit: int) -> Changes:
        limit = max(1, int(limit))
        found = [c for c in self._s.changes if c[1] == address and c[0] > since]
        page = [Change(seq, msg_id, kind, who) for seq, _, msg_id, kind, who in found[:limit]]
        state = page[-1].seq if page else since
        return Changes(page, state, len(found) > limit)

    async def state(self, address: str) -> int:
        return max((c[0] for c in self._s.changes if c[1] == address), default=0)

    async def stats(self) -> dict[str, int]:
        now = self._clock()
        out = {"messages": len(self._s.messages), "deliveries": len(self._s.deliveries)}
        out |= {str(s): 0 for s in MessageStatus}
        for d in self._s.deliveries.values():
            out[str(d.status)] += 1
        out["hosted_addresses"] = len(self._s.hosted)
        out["sessions"] = sum(
            1 for s in self._s.sessions.values() if not s.revoked and now < s.expires_at
        )
        return out

    # -- sessions and challenges ------------------------------------------------------------
    async def create_session(self, token_hash: str, address: str, expires_at: int) -> None:
        self._s.sessions[token_hash] = _Session(address, expires_at)

    async def session(self, token_hash: str, now_ms: int) -> Session | None:
        s = self._s.sessions.get(token_hash)
        if s is None or s.revoked or now_ms >= s.expires_at:
            return None
        return Session(s.address, s.expires_at)

    async def revoke_session(self, token_hash: str) -> bool:
        s = self._s.sessions.get(token_hash)
        if s is None or s.revoked:
            return False
        s.revoked = True
        return True

    async def use_nonce(self, nonce: str, expires_at: int, now_ms: int) -> bool:
        # Forget nonces past their own expiry: whoever checks the challenge refuses those.
        for old in [n for n, exp in self._s.nonces.items() if exp < now_ms]:
            del self._s.nonces[old]
        if nonce in self._s.nonces:
            return False
        self._s.nonces[nonce] = expires_at
        return True

    # -- reputation -------------------------------------------------------------------------
    async def add_strike(self, strike: Strike, *, cap: int | None = None) -> bool:
        if strike.proof_id in self._s.strikes:
            return False
        if cap is not None:
            (tally,) = self._tallies([strike.offender]) or [StrikeTally(strike.offender, 0, 0)]
            if tally.counting >= cap:
                return False
        self._s.strikes[strike.proof_id] = strike
        return True

    async def strikes(self) -> list[Strike]:
        return list(self._s.strikes.values())

    async def strike_tallies(
        self, offenders: Sequence[str] | None = None, *, limit: int
    ) -> list[StrikeTally]:
        return self._tallies(offenders)[:limit]

    def _tallies(self, offenders: Sequence[str] | None) -> list[StrikeTally]:
        wanted = None if offenders is None else set(offenders)
        recorded: dict[str, int] = {}
        counting: dict[str, int] = {}
        for s in self._s.strikes.values():
            if wanted is not None and s.offender not in wanted:
                continue
            recorded[s.offender] = recorded.get(s.offender, 0) + 1
            o = self._s.overrides.get(s.offender)
            forgiven = o is not None and o.lifted and s.t <= o.set_at
            counting[s.offender] = counting.get(s.offender, 0) + (not forgiven)
        tallies = [StrikeTally(x, n, counting[x]) for x, n in recorded.items()]
        return sorted(tallies, key=lambda t: (-t.counting, -t.recorded, t.offender))

    async def set_quarantine_override(self, server: str, lifted: bool, now_ms: int) -> None:
        self._s.overrides[server] = Override(lifted, now_ms)

    async def quarantine_overrides(self) -> dict[str, Override]:
        return dict(self._s.overrides)

    # -- rate counters ----------------------------------------------------------------------
    async def count_hit(self, bucket: str, now_ms: int, window_ms: int, limit: int) -> bool:
        return self._hits.count(bucket, now_ms, window_ms, limit)

    async def hits_in_window(self, bucket: str, now_ms: int, window_ms: int) -> int:
        return self._hits.in_window(bucket, now_ms, window_ms)

    async def prune_hits(self, now_ms: int, window_ms: int) -> int:
        return self._hits.prune(now_ms, window_ms)

    async def clear_hits(self, bucket: str) -> int:
        return self._hits.clear(bucket)


class HitLog:
    """Sliding-window hit counters in memory: per bucket, the sorted times of its counted
    hits. MemoryStore's `count_hit`, and flux.server.limits.MemoryHitCounter. Plain method
    calls with no await inside, so each is atomic on the event loop."""

    def __init__(self) -> None:
        self._times: dict[str, list[int]] = {}

    def __len__(self) -> int:
        return len(self._times)

    def __contains__(self, bucket: object) -> bool:
        return bucket in self._times

    def count(self, bucket: str, now_ms: int, window_ms: int, limit: int) -> bool:
        """Store.count_hit: True (and nothing counted) when `limit` hits are in the window."""
        times = self._times.setdefault(bucket, [])
        del times[: bisect_right(times, now_ms - window_ms)]  # hits that left the window
        if len(times) >= limit:
            if not times:
                del self._times[bucket]
            return True
        insort(times, now_ms)
        return False

    def in_window(self, bucket: str, now_ms: int, window_ms: int) -> int:
        """How many of `bucket`'s hits are within the window (nothing counted)."""
        times = self._times.get(bucket, ())
        return len(times) - bisect_right(times, now_ms - window_ms)

    def prune(self, now_ms: int, window_ms: int) -> int:
        removed = 0
        for bucket, times in list(self._times.items()):
            gone = bisect_right(times, now_ms - window_ms)
            removed += gone
            del times[:gone]
            if not times:
                del self._times[bucket]
        return removed

    def clear(self, bucket: str) -> int:
        return len(self._times.pop(bucket, ()))
