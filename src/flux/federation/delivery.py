"""The delivery worker: hands queued mail to other servers (docs/FEDERATION.md, "Delivery queue").

The submit pipeline puts each copy for another server in the store's durable queue (one
row per destination and body) and kicks the worker. The worker claims one *destination* at
a time (a store lease: one lease per peer, across every process sharing the store), takes
its next messages round-robin across their senders (the store's fair queue:
store/_memory_queue.py, "A fair queue"), seals each message to the server it is about to
reach, and POSTs them as signed, idempotent transactions to `/federation/deliver` (or
`/mesh/relay` for mesh copies); a prototype peer gets each message through its own dialect
instead (`PeerClient.dialect`).

Rolling lease: a lease first carries up to `batch` messages (one transaction's worth,
MAX_BATCH, by default), split by sender into up to `lanes` parts (`sender_lanes`: no sender
in two, a flood keeps one lane to itself), which go at once, the smallest first. The
worker keeps the destination while it has mail: as soon as a part is answered its lane is
free, and the worker takes the destination's next sendable mail (`Store.lease_more`: round
robin across the senders with nothing in flight, leaving out what is) for the free lanes,
while the answered part is settled on its own (`Store.settle(release=False)`). Mail queued
meanwhile by a sender with nothing in flight there is taken at once by a free lane
(`kick`), so another sender's single message goes in a small transaction of its own that
the peer checks first, not after the flood's transaction in flight has come back. A
sender's next part waits for the answer to its part in flight, so each sender's mail
reaches the peer in queue order. The receiver checks one peer's large batches one at a
time, beside them one small batch (another sender's few), and queues a few more
(server/fair.py PeerTurns), so lanes overlap this server's sealing and the network with
the peer's checking rather than loading the peer twice. A part that must
wait (a failed request, a transient refusal, a recipient over quota) stops the roll (its
senders' later mail must not overtake it): the other parts in flight are answered and
settled, and the waiting ones are settled with the release, each sender told its own
part's reason, and the destination backs off one attempt more than when the lease began
(a partial settle leaves the backoff alone; a release with nothing waiting resets it). So
another sender's delivered message never waits or bounces with a flood's failed
transaction. A roll takes nothing more after
ROLL_MS, then releases the destination (a flood to one peer keeps one of the worker's
slots, not all of them).

What the answer decides, per message:

* `recipients`: each recipient the peer took (`stored`, `duplicate`, `queued`) is delivered;
  one it does not host (`not_hosted`) is bounced (retrying would not change that; in a mesh
  relay it is no failure). When every recipient is settled so, the message leaves the queue.
  A recipient over its quota (`over_quota`, `over_stranger_share`), an outcome this server
  does not know, or a recipient the answer leaves out keeps the message queued: it goes
  again whole, and the peer answers `duplicate` for those it already has (it dedupes by
  (recipient, sender, id), so resending is safe and none gets it twice). Their senders see
  them `queued`, with why in words; the ones served are `delivered` at once.
* `refused` with a transient code (the recipient's quota, the peer being unavailable): kept
  and retried with the destination's backoff.
* `refused` otherwise (spam, unknown recipient, quarantine, a verification failure): bounced.
* anything else (not an object, neither `recipients` nor a `refused` string): the peer may
  have stored it, so it is kept and retried like a transient refusal (PROTOCOL.md §10.7).

A bounce names only the recipients that have not got the message: a recipient served by an
earlier attempt (its sent-mail state is final) is left out, so a message delivered to one
recipient and later given up on for another tells the sender about that one alone.

A failed request (connection refused, timeout, TLS failure, a non-200 answer) leaves the
whole batch queued and waits `backoff_delay_ms(attempts)`: capped, jittered, exponential.
A message older than the retry window is bounced instead of sent. A destination that is
waiting is made due at once when its peer is heard from (it delivered to us).

Crash safety: rows leave the queue only after the peer's answer, so a crash between the
peer storing a batch and this server settling it makes the batch go again; the peer
dedupes by (id, recipient) and answers `duplicate`, so each recipient gets each message
exactly once. A worker that dies holding a lease loses it after `lease_ms`.

Leases and slow peers: a send can outlast the lease (a lease split into several
transactions, each allowed `timeout_s`), and a lapsed lease lets another process take the
destination, so two leases would be in flight for one peer and the stale worker's
settlement (a failure backoff, say) would overwrite what the new holder did. So a worker
renews its lease every third of `lease_ms` while it works (`Store.renew`), sends no
further transaction once the lease is lost, and only the holder settles: each lease gets
a holder name of its own (the worker's name and a sequence number), and the store
ignores, and the worker logs, a settlement from anyone else (`Store.settle` -> False).

Store outages: while the store raises StoreUnavailable (its database is down) the worker
logs one line per failure and tries again about a second later; a settlement waits for the
store to come back rather than being dropped, and a bounce that cannot be stored keeps its
message queued. The worker task itself never ends on a store error.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import random
import re
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from ..background import running, wait_at_most
from ..protocol.chain import ChainVerdict, ServerSigner, append_hop, check_can_append
from ..protocol.errors import FluxError
from ..store.base import (
    DeliveryState,
    DeliveryUpdates,
    Lease,
    Outbound,
    Queued,
    Store,
    StoreUnavailable,
)
from .netguard import AnswerTooLarge, NameNotFound, RedirectRefused, RefusedAddress
from .peers import PeerClient
from .signing import sign_request

log = logging.getLogger("flux.federation")
Clock = Callable[[], int]

DELEGATION_TTL_MS = 3_600_000  #: how long a /.well-known/flux answer is trusted
IDLE_CHECK_S = 10.0  #: the worker looks at the store at least this often
MAX_BATCH = 100  #: messages in one delivery transaction (docs/FEDERATION.md)
MAX_BATCH_BYTES = 8 * 1024 * 1024  #: one delivery transaction's body, at most
#: a rolling lease takes no more mail after this long (then it settles and releases the
#: destination, and the worker's next lease is the most overdue destination's): a flood to
#: one peer keeps one of the worker's `parallel` slots, never all of them for good
ROLL_MS = 10_000

#: refusals a later attempt may overcome, in words a person understands; every other
#: refusal is final (a bounce)
TRANSIENT_REFUSALS = {
    "quota_exceeded": "the recipient's mailbox is full",
    "unavailable": "the receiving server is temporarily unavailable",
    "internal_error": "the receiving server failed (internal error)",
}
#: per-recipient outcomes that mean the message did not and will not reach that recipient
UNDELIVERABLE = frozenset({"not_hosted"})
#: per-recipient outcomes that mean the peer took the message for that recipient
#: (`queued`: a mesh member passed it on, PROTOCOL.md §10.8)
SERVED = frozenset({"stored", "duplicate", "queued"})
#: per-recipient outcomes a later attempt may overcome, in words for the sender
WAITING_OUTCOMES = {
    "over_quota": "the recipient's mailbox is full",
    "over_stranger_share": (
        "the recipient has not written to you and its mail from strangers is full"
    ),
}
#: a result that is neither accepted nor refused: the peer may have stored it, so it waits
NOT_UNDERSTOOD = "the receiving server's answer about this message was not understood"
#: how long to wait before trying the store again while it is unreachable
STORE_RETRY_S = 1.0


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    #: messages taken at a time (the lease's first part, then each `lease_more`), sent in
    #: transactions of at most MAX_BATCH (the receiver's limit): one transaction's worth
    batch: int = MAX_BATCH
    #: transactions in flight at once for one peer, each for other senders (module doc,
    #: "Rolling lease"); the receiver checks one peer's large batches one at a time, a
    #: small one beside them, and queues a few more (server/fair.py PeerTurns)
    lanes: int = 2
    parallel: int = 8  #: destinations worked at once by one process
    lease_ms: int = 60_000  #: a dead worker's destinations are free again after this
    retry_base_ms: int = 5_000  #: the first retry waits about this long
    retry_cap_ms: int = 3_600_000  #: no wait is longer than this
    retry_window_ms: int = 5 * 86_400_000  #: then the sender gets a bounce
    timeout_s: float = 30.0  #: one transaction, connect to answer


def backoff_delay_ms(attempts: int, policy: QueuePolicy, rand: Callable[[], float]) -> int:
    """Wait before attempt `attempts + 1`: base·2^attempts, capped, with "equal jitter"
    (half fixed, half random) so peers that fail together do not retry in lockstep."""
    full = min(policy.retry_cap_ms, policy.retry_base_ms * 2 ** min(attempts, 32))
    return int(full / 2 + rand() * full / 2)


class BounceSink(Protocol):
    async def bounce(self, item: Outbound, recipients: Iterable[str], reason: str) -> None:
        """Tell the sender that `item` will not reach `recipients`, and why."""


@dataclass(frozen=True, slots=True)
class Settlement:
    """What one attempt at a destination came to."""

    done: list[int]  #: qids to remove (delivered or bounced)
    bounces: list[tuple[Queued, list[str], str]]
    retry: str | None  #: why the rest stays queued, if anything does (for the operator)
    #: the same in words for the sender (its sent mail's delivery state), if it differs;
    #: a rendering of `retry`, so not part of what makes two settlements equal
    words: str | None = dataclasses.field(default=None, compare=False)
    #: messages the peer answered for but that stay queued for some of their recipients
    #: (over quota, an outcome not understood, left out): qid -> who has it and why the
    #: others wait; like `words`, a detail of `retry` for the senders' delivery states
    kept: Mapping[int, Kept] = dataclasses.field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class Kept:
    """One message kept queued by a peer's answer (PROTOCOL.md §10.7, "Sender, reading the
    answer"): the recipients it served (delivered now; the next attempt gets `duplicate`
    for them) and, for each one still waiting, why in words."""

    served: frozenset[str]
    waiting: Mapping[str, str]


class DeliveryWorker:
    def __init__(
        self,
        *,
        store: Store,
        signer: ServerSigner,
        peers: PeerClient,
        clock: Clock,
        bounces: BounceSink,
        policy: QueuePolicy,
        holder: str | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.signer = signer
        self.peers = peers
        self.clock = clock
        self.bounces = bounces
        self.policy = policy
        self.holder = holder or f"{signer.name}/{uuid.uuid4().hex[:12]}"
        self.rand = rand
        self._lease_numbers = itertools.count(1)  #: each lease gets a holder name of its own
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(policy.parallel)
        self._inflight: set[asyncio.Task[None]] = set()
        #: destination -> (the server it resolved to, when)
        self._servers: dict[str, tuple[str, int]] = {}
        #: destination -> its rolling lease held by this worker (module doc, "Rolling lease")
        self._rolls: dict[str, _Roll] = {}
        self.on_settled: Callable[[Lease, Settlement], None] | None = None  # metrics hook
        #: told each settlement's sent-mail changes once committed (the senders' sockets)
        self.on_delivery: Callable[[DeliveryUpdates], None] | None = None
        #: which peers speak the prototype's dialect (compat/federation.py); a stand-in
        #: for the peer client (a test's) reaches FLUX peers only
        self._dialect = peers.dialect if isinstance(peers, PeerClient) else _flux_only

    # -- control ------------------------------------------------------------------------
    def kick(self, queued: Iterable[Outbound] | None = None) -> None:
        """Something was queued or became due: look at the queue now. `queued`: what was
        queued, when known; a rolling lease of its destination with a lane free takes it at
        once unless its sender has mail in flight there (that sender's next part is taken
        when its answer comes). None: every rolling lease looks."""
        self._wake.set()
        if queued is None:
            for roll in self._rolls.values():
                roll.more.set()
            return
        for item in queued:
            roll = self._rolls.get(item.destination)
            if roll is not None and item.sender not in roll.senders:
                roll.more.set()

    async def peer_heard(self, server: str) -> None:
        """`server` just reached us, so it is up: retry what waits for it at once."""
        woke = False
        for destination in {server, *(d for d, (s, _) in self._servers.items() if s == server)}:
            woke |= await self.store.wake(destination)
        if woke:
            self.kick()

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Any) -> AsyncIterator[None]:
        """For `app.cleanup_ctx` (after the peer client's): work the queue while serving."""
        try:
            async with running(self._run(), "flux-delivery"):
                yield
        finally:  # then the batches in flight: unsettled, they go again after the lease
            for inflight in list(self._inflight):
                inflight.cancel()
            await asyncio.gather(*self._inflight, return_exceptions=True)

    # -- the loop -----------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._start_due()
                due = await self.store.next_due()
            except StoreUnavailable as exc:  # the store is down: try again shortly
                log.warning("event=store_unavailable where=delivery_poll error=%s", exc)
                due = self.clock() + int(STORE_RETRY_S * 1000)
            except Exception:  # a bug: log it, try again shortly, keep serving
                log.exception("event=queue_poll_failed")
                due = self.clock() + 1_000
            # Sleep until the next due destination, but never longer than IDLE_CHECK_S:
            # other processes on the store (another server process, `flux admin queue
            # --retry-now`) change the queue without waking this worker.
            delay = IDLE_CHECK_S if due is None else (due - self.clock()) / 1000
            delay = min(max(0.0, delay), IDLE_CHECK_S)
            await wait_at_most(self._wake, delay)

    async def _start_due(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                holder = f"{self.holder}#{next(self._lease_numbers)}"
                lease = await self.store.lease(
                    holder, self.clock(), self.policy.lease_ms, self.policy.batch
                )
            except BaseException:
                self._slots.release()  # the slot was never used
                raise
            if lease is None:
                self._slots.release()
                return
            task = asyncio.create_task(self._work(lease), name=f"flux-deliver-{lease.destination}")
            self._inflight.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._slots.release()
        self._wake.set()  # a slot is free, and the destination may have more

    async def _work(self, lease: Lease) -> None:
        """Work a destination's rolling lease (module doc, "Rolling lease") until nothing
        sendable is left, the roll ends (ROLL_MS), a part fails or waits, or the lease is
        lost; then settle what waits and release the destination."""
        held = _Held()
        renewing = asyncio.create_task(self._renew(lease, held))
        roll = _Roll(lease, self.clock())
        self._rolls[lease.destination] = roll
        try:
            await self._roll(roll, held)
        finally:
            if self._rolls.get(lease.destination) is roll:
                del self._rolls[lease.destination]
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)
        if held.lost:
            # Another worker holds the destination now: what this one learnt is settled by
            # the new holder's own attempt (the peer dedupes), not written over its outcome.
            log.warning(
                "event=lease_lost destination=%s holder=%s", lease.destination, lease.holder
            )
            return
        # the parts that wait (a failure, a transient refusal, a recipient over quota)
        # are settled with the release: their retry is the destination's backoff
        try:
            nothing = [(dataclasses.replace(roll.lease, messages=[]), _NOTHING)]
            await self._settle(roll.waiting or nothing, release=True)
        except Exception:  # a bug: the lease lapses after lease_ms and its mail goes again
            log.exception("event=delivery_crashed destination=%s", lease.destination)

    async def _roll(self, roll: _Roll, held: _Held) -> None:
        """Send the lease's mail in parts, one per lane, and take more as lanes free up:
        `policy.batch` of the destination's sendable mail not in flight, round-robin
        across the senders with nothing in flight (a sender's next part waits for its
        answer: each sender's mail reaches the peer in order). Returns once every part has
        been answered and settled (or left waiting) and nothing more is taken."""
        lease = roll.lease
        parts: set[asyncio.Task[None]] = set()
        fresh: Sequence[Queued] = lease.messages
        try:
            while True:
                free = self.policy.lanes - roll.lanes
                if fresh and free > 0:
                    # the smallest part first: another sender's few reach the peer (and
                    # its small turn) before a flood's hundred are sealed
                    for places in sorted(sender_lanes(fresh, free), key=len):
                        part = [fresh[i] for i in places]
                        roll.take(part)
                        task = asyncio.create_task(self._part(roll, part, held))
                        parts.add(task)
                        task.add_done_callback(parts.discard)
                        task.add_done_callback(lambda _: roll.more.set())  # settled: look again
                if not parts:
                    return
                await roll.more.wait()
                roll.more.clear()  # (what sets it while the store is asked below is kept)
                fresh = []
                if (
                    roll.stopped or held.lost or self.policy.lanes <= roll.lanes
                    or self.clock() - roll.started >= ROLL_MS
                ):  # fmt: skip
                    continue  # take nothing more: wait for the parts in flight
                try:
                    more = await self.store.lease_more(
                        lease, self.clock(), self.policy.lease_ms, self.policy.batch,
                        exclude=sorted(roll.in_flight), skip_senders=sorted(roll.senders),
                    )  # fmt: skip
                except Exception as exc:  # the store is down (or a bug): end this roll
                    log.warning("event=lease_more_failed destination=%s error=%r",
                                lease.destination, exc)  # fmt: skip
                    roll.stopped = True
                    continue
                if more is None:  # lapsed and taken: send nothing more
                    held.lost = True
                    continue
                if not (roll.stopped or held.lost):  # (a part failed meanwhile)
                    fresh = more
        finally:  # a crash or a cancellation stops the parts in flight (they go again)
            for task in parts:
                task.cancel()
            await asyncio.gather(*parts, return_exceptions=True)

    async def _part(self, roll: _Roll, part: list[Queued], held: _Held) -> None:
        """One lane's part of a rolling lease: send it, then settle it (keeping the lease)
        while the lane takes the next, or keep it for the release when it must wait."""
        lease = dataclasses.replace(roll.lease, messages=part)
        verdict: Settlement | None = None
        try:
            verdict = await self._attempt(lease, held)
        finally:  # its lane is free; its senders too unless it waits (their order)
            roll.answered(part, waits=verdict is None or verdict.retry is not None)
        try:
            if verdict is not None:
                verdict = await self._bounce(lease, verdict)
            if verdict is None:
                held.lost = True
                return
            if verdict.retry is not None:  # the destination backs off: settled with the release
                roll.waiting.append((lease, verdict))
                return
            if not await self._settle([(lease, verdict)], release=False):
                held.lost = True
                return
        except Exception as exc:  # a bug: this part goes again with the next lease, which
            # waits the destination's backoff (the peer dedupes what it has)
            log.exception("event=delivery_crashed destination=%s", lease.destination)
            roll.answered_crash(lease, exc)
            return
        roll.settled(part)

    async def _attempt(self, lease: Lease, held: _Held) -> Settlement | None:
        """`_deliver`, with a failure of this server (its store, a bug) made a retry;
        None when the lease was lost."""
        try:
            return await self._deliver(lease, held)
        except LeaseLost:
            return None
        except StoreUnavailable as exc:
            log.warning("event=store_unavailable where=delivery destination=%s error=%s",
                        lease.destination, exc)  # fmt: skip
            return Settlement([], [], "the store was unavailable",
                              "this server could not reach its own database")  # fmt: skip
        except Exception as exc:  # never let one destination stop the worker
            log.exception("event=delivery_crashed destination=%s", lease.destination)
            return Settlement([], [], f"internal: {exc}", "this server failed (internal error)")

    async def _bounce(self, lease: Lease, verdict: Settlement) -> Settlement | None:
        """Send the bounces `verdict` names. Returns the verdict to settle: the same, or with
        a bounce that could not be stored kept queued (a retry: it bounces on a later
        attempt); None when the lease was lost (nothing bounced)."""
        if verdict.bounces and not await self._still_held(lease):
            # A bounce cannot be taken back: a worker whose lease lapsed unnoticed leaves the
            # bounces to the new holder, which decides them again, rather than sending the
            # sender a second notice for the same message.
            return None
        for queued, recipients, reason in verdict.bounces:
            try:
                if unsettled := await self._not_yet_settled(queued.item, recipients):
                    await self.bounces.bounce(queued.item, unsettled, reason)
            except StoreUnavailable as exc:  # keep it queued: it bounces on a later attempt
                log.warning("event=store_unavailable where=bounce id=%s error=%s",
                            queued.item.envelope.get("id"), exc)  # fmt: skip
                done = [qid for qid in verdict.done if qid != queued.qid]
                bounces = [b for b in verdict.bounces if b[0].qid != queued.qid]
                verdict = dataclasses.replace(
                    verdict, done=done, bounces=bounces, retry="the store was unavailable"
                )
            except Exception:
                log.exception("event=bounce_failed id=%s", queued.item.envelope.get("id"))
        return verdict

    async def _settle(self, parts: Sequence[tuple[Lease, Settlement]], *, release: bool) -> bool:
        """Settle the messages of `parts` (of one lease), each by its own verdict (its
        bounces sent), in one transaction, keeping the lease unless `release`; a retry in
        any of them (only with `release`) backs the destination off. False when the lease
        was lost (nothing settled)."""
        verdict = _merged([v for _, v in parts])
        lease = dataclasses.replace(parts[0][0], messages=[q for p, _ in parts for q in p.messages])
        retry_at = None
        if verdict.retry is not None:
            retry_at = self.clock() + backoff_delay_ms(lease.attempts, self.policy, self.rand)
        # the senders' delivery states, written in the settling transaction: a crash leaves
        # neither a delivered message "queued" nor a queued one "delivered"; each part's by
        # its own answer (a part kept by a 503 is not told another part's over-quota)
        delivery: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        for part, its in parts:
            for key, states in delivery_changes(part, its, retry_at, self.clock()).items():
                delivery.setdefault(key, {}).update(states)
        while True:  # the peer's answer is settled once the store is back, never dropped
            try:
                settled = await self.store.settle(
                    lease, verdict.done, retry_at=retry_at, error=peer_text(verdict.retry),
                    delivery=delivery, release=release,
                )  # fmt: skip
                break
            except StoreUnavailable as exc:
                log.warning("event=store_unavailable where=settle destination=%s error=%s",
                            lease.destination, exc)  # fmt: skip
                await asyncio.sleep(STORE_RETRY_S)  # a retry timer, not synchronisation
        if not settled:  # the lease lapsed between the last renewal and now
            log.warning(
                "event=stale_settle destination=%s holder=%s", lease.destination, lease.holder
            )
            return False
        if self.on_settled is not None and lease.messages:  # (a release settles no mail)
            self.on_settled(lease, verdict)
        if self.on_delivery is not None and delivery:
            self.on_delivery(delivery)
        return True

    async def _not_yet_settled(self, item: Outbound, recipients: Iterable[str]) -> list[str]:
        """`recipients` less those whose delivery state in the sender's sent mail is final
        already: delivered by an earlier attempt of a message kept for others, or bounced
        (a not-hosted recipient beside one over quota is bounced at once and would be
        answered `not_hosted` again). Mail without a sent record (relayed for a sender not
        hosted here) keeps them all. Raises StoreUnavailable."""
        env = item.envelope
        sent = await self.store.sent_message(str(env.get("from")), str(env.get("id")))
        final = (DeliveryState.DELIVERED.value, DeliveryState.BOUNCED.value)
        settled = set() if sent is None else {
            r for r, s in sent.delivery.items() if s.get("state") in final
        }  # fmt: skip
        return [r for r in recipients if r not in settled]

    async def _still_held(self, lease: Lease) -> bool:
        """Renew `lease` now; False when another worker holds the destination. A store that
        cannot answer is not proof of loss: settle decides then, as it always does."""
        try:
            return await self.store.renew(lease, self.clock(), self.policy.lease_ms)
        except StoreUnavailable:
            return True

    async def _renew(self, lease: Lease, held: _Held) -> None:
        """Keep `lease` alive while its batch is worked on; mark it lost if it lapsed."""
        every_s = self.policy.lease_ms / 3 / 1000
        while True:
            await asyncio.sleep(every_s)  # a renewal timer, not synchronisation
            try:
                if not await self.store.renew(lease, self.clock(), self.policy.lease_ms):
                    held.lost = True
                    return
            except StoreUnavailable as exc:  # the lease may lapse: settle will say so
                log.warning("event=store_unavailable where=renew destination=%s error=%s",
                            lease.destination, exc)  # fmt: skip

    async def _deliver(self, lease: Lease, held: _Held) -> Settlement:
        now = self.clock()
        expired: list[Queued] = []
        sending: list[Queued] = []
        for q in lease.messages:
            too_old = now - q.item.enqueued_at >= self.policy.retry_window_ms
            (expired if too_old else sending).append(q)
        bounced = []
        if expired:
            why = f"not delivered within {self.policy.retry_window_ms // 3_600_000} h"
            if lease.attempts:
                why += f" (last attempt: {await self._last_error(lease.destination)})"
            bounced = [(q, list(q.item.recipients), why) for q in expired]
        # Never seal what the peer would have to refuse (PROTOCOL.md §7.4): such a message
        # is bounced now, in words, instead of being sealed, sent and refused.
        unsealable = [(q, why) for q in sending if (why := _cannot_seal(q.item.envelope))]
        if unsealable:
            not_sent = {q.qid for q, _ in unsealable}
            sending = [q for q in sending if q.qid not in not_sent]
            bounced += [(q, list(q.item.recipients), f"not sent: {why}") for q, why in unsealable]
            expired += [q for q, _ in unsealable]
        expired_ids = [q.qid for q in expired]  # settled without sending: expired or unsealable
        if not sending:
            return Settlement(expired_ids, bounced, None)
        try:
            server = await self._server_for(lease.destination)
            results, failure = await self._post(server, sending, via=sending[0].item.via, held=held)
        except DeliveryFailed as exc:  # nothing was answered
            results, failure = [NOT_ANSWERED] * len(sending), exc
        answered = [(q, r) for q, r in zip(sending, results, strict=True) if r is not NOT_ANSWERED]
        unanswered = [q for q, r in zip(sending, results, strict=True) if r is NOT_ANSWERED]
        verdict = _judge([q for q, _ in answered], [r for _, r in answered],
                         mesh=bool(sending[0].item.via))  # fmt: skip
        if answered:
            log.info("event=delivered destination=%s sent=%d done=%d bounced=%d",
                     lease.destination, len(answered), len(verdict.done),
                     len(verdict.bounces))  # fmt: skip
        if failure is not None and unanswered:
            # Only what went unanswered failed: a lane that was answered is settled by its
            # answer (the peer has that mail; it must not wait, nor bounce, with the rest).
            if failure.permanent:  # waiting cannot help (the domain does not exist): bounce now
                log.info("event=delivery_failed destination=%s reason=%s",
                         lease.destination, failure)  # fmt: skip
                bounced += [(q, list(q.item.recipients), failure.words) for q in unanswered]
                expired_ids += [q.qid for q in unanswered]
            else:
                log.warning("event=delivery_deferred destination=%s attempts=%d reason=%s",
                            lease.destination, lease.attempts + 1, failure)  # fmt: skip
                verdict = dataclasses.replace(verdict, retry=str(failure), words=failure.words)
        return dataclasses.replace(
            verdict, done=expired_ids + verdict.done, bounces=bounced + verdict.bounces
        )

    async def _last_error(self, destination: str) -> str:
        for state in await self.store.queue_state():
            if state.destination == destination:
                return state.last_error or "unknown"
        return "unknown"

    async def _server_for(self, destination: str) -> str:
        """The server a destination domain delegates to (/.well-known/flux), cached for
        DELEGATION_TTL_MS so a domain that moves is followed without a restart."""
        cached = self._servers.get(destination)
        now = self.clock()
        if cached is None or now - cached[1] >= DELEGATION_TTL_MS:
            cached = (await self.peers.delegated_server(destination), now)
            self._servers[destination] = cached
        return cached[0]

    async def _post(
        self, server: str, batch: list[Queued], *, via: str, held: _Held
    ) -> tuple[list[Any], DeliveryFailed | None]:
        """Seal each message to `server` and hand them over: in signed transactions of at
        most MAX_BATCH messages and MAX_BATCH_BYTES, one after the other (`batch` is one
        lane's part: module doc, "Rolling lease"). Returns the results in `batch`'s order,
        NOT_ANSWERED where no answer was read, and the failure that left them unanswered
        (None when all were answered). Raises DeliveryFailed when nothing could be sent (a
        prototype peer's dialect), or LeaseLost."""
        now = self.clock()
        # The one seam to the prototype's dialect (compat/federation.py): its answers come
        # back as FLUX results, judged below like any peer's.
        legacy = await self._dialect(server, via)
        if legacy is not None:
            sealed = [self._seal(q, server, now) for q in batch]
            try:
                return await legacy.deliver(
                    sealed, [q.item.recipients for q in batch], now_ms=now,
                    timeout_s=self.policy.timeout_s, lost=lambda: held.lost,
                ), None  # fmt: skip
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                raise DeliveryFailed.of(exc, self.policy.timeout_s) from exc
        answers, failure = await self._lane(server, batch, via=via, now=now, held=held)
        return answers + [NOT_ANSWERED] * (len(batch) - len(answers)), failure

    async def _lane(
        self, server: str, items: list[Queued], *, via: str, now: int, held: _Held
    ) -> tuple[list[Any], DeliveryFailed | None]:
        """`items` in order, one transaction after the other (each sender's mail arrives in
        order), each sealed while the one before it is in flight. Returns the results of
        the transactions answered, in order, and the failure that stopped the lane, if one
        did (the items after those results were not answered). Raises LeaseLost."""
        results: list[Any] = []
        sending: asyncio.Task[list[Any]] | None = None
        try:
            for start in range(0, len(items), MAX_BATCH):
                chunk = items[start : start + MAX_BATCH]
                encoded = [_json(self._seal(q, server, now)) for q in chunk]
                for part in _by_size(encoded, MAX_BATCH_BYTES - 1024):
                    if sending is not None:
                        results += await sending
                    if held.lost:  # another worker has the destination now
                        raise LeaseLost
                    sending = asyncio.create_task(self._transaction(server, part, via=via, now=now))
            if sending is not None:
                results += await sending
        except DeliveryFailed as failure:
            return results, failure
        finally:
            if sending is not None and not sending.done():
                sending.cancel()
                await asyncio.gather(sending, return_exceptions=True)
        return results, None

    def _seal(self, queued: Queued, server: str, now: int) -> dict[str, Any]:
        """`queued`'s envelope with this server's hop, sealed to `server` at `now`."""
        return append_hop(
            queued.item.envelope, self.signer, next_hop=server, now_ms=now,
            cv=ChainVerdict(queued.item.cv),
        )  # fmt: skip

    async def _transaction(
        self, server: str, messages: list[bytes], *, via: str, now: int
    ) -> list[Any]:
        txn = uuid.uuid4().hex
        head_fields: dict[str, Any] = {"txn": txn, "from_server": self.signer.name}
        if via:  # which peers this server reaches itself: a hybrid receiver goes on past them
            head_fields["mesh_peers"] = list(self.peers.meshes[via].peers)
        head = _json(head_fields)[:-1]
        body = head + b',"messages":[' + b",".join(messages) + b"]}"
        path = "/mesh/relay" if via else "/federation/deliver"
        headers = sign_request(self.signer, "POST", server, path, body, now_s=now // 1000)
        headers.update(self.peers.mesh_headers(via, headers))
        try:
            status, answer = await self.peers.post(
                server, path, body, headers, timeout_s=self.policy.timeout_s
            )
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise DeliveryFailed.of(exc, self.policy.timeout_s) from exc
        if status != 200 or not isinstance(answer, dict) or answer.get("txn") != txn:
            code = answer.get("error") if isinstance(answer, dict) else None
            raise DeliveryFailed(f"HTTP {status} {code or ''}".strip(), http_words(status))
        results = answer.get("results")
        if not isinstance(results, list) or len(results) != len(messages):
            raise DeliveryFailed(
                "the answer does not list one result per message",
                "the receiving server's answer was not understood",
            )
        return results


async def _flux_only(server: str, via: str) -> None:
    """No peer speaks another dialect."""
    return None


def _cannot_seal(envelope: Mapping[str, Any]) -> str | None:
    """Why this server must not seal `envelope` on to a peer, in words, or None: the peer
    would refuse the message with this server's route entry and hop (`check_can_append`)."""
    try:
        check_can_append(envelope)
    except FluxError as exc:
        return exc.message
    return None


def sender_lanes(batch: Sequence[Queued], lanes: int) -> list[list[int]]:
    """Places in `batch` in at most `lanes` lanes, each in `batch`'s order, no sender in
    two lanes (its mail goes in one, in order); a sender goes to the lane with the fewest
    messages so far, the largest senders first, so a flood keeps one lane and the others
    share the rest."""
    by_sender: dict[str, list[int]] = {}
    for place, queued in enumerate(batch):
        by_sender.setdefault(queued.item.sender, []).append(place)
    filled: list[list[int]] = [[] for _ in range(max(1, lanes))]
    for places in sorted(by_sender.values(), key=len, reverse=True):
        min(filled, key=len).extend(places)
    return [sorted(places) for places in filled if places]


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _by_size(parts: list[bytes], limit: int) -> list[list[bytes]]:
    """Consecutive groups of `parts` whose joined size stays under `limit` (a part alone
    over it still goes, alone: the receiver then answers 413 and it is retried, then
    bounced, rather than blocking those behind it)."""
    groups: list[list[bytes]] = [[]]
    size = 0
    for part in parts:
        if groups[-1] and size + len(part) + 1 > limit:
            groups.append([])
            size = 0
        groups[-1].append(part)
        size += len(part) + 1
    return groups


#: a message of a part whose transaction was not answered (module doc, "Rolling lease")
NOT_ANSWERED: Any = object()


class DeliveryFailed(Exception):
    """The peer could not be reached or did not answer as the contract says.

    `str()`: the technical cause, for the operator (the queue's `last_error`, the log);
    `words`: the same for the sender, in a sentence (its sent mail's delivery state);
    `permanent`: waiting cannot help (the domain does not exist): bounce at once."""

    def __init__(self, detail: str, words: str | None = None, *, permanent: bool = False):
        super().__init__(detail)
        self.words = words or detail
        self.permanent = permanent

    @classmethod
    def of(cls, exc: BaseException, timeout_s: float) -> DeliveryFailed:
        words, permanent = failure_words(exc, timeout_s)
        return cls(f"{type(exc).__name__}: {exc}"[:300], words, permanent=permanent)


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc` and what it wraps (`__cause__`, `__context__`, aiohttp's `os_error`)."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < 10:
        e = todo.pop(0)
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        todo += [e.__cause__, e.__context__, getattr(e, "os_error", None)]
    return seen


def failure_words(exc: BaseException, timeout_s: float) -> tuple[str, bool]:
    """A failed request in a sentence a person understands, and whether it is permanent
    (only a name that does not exist is: PROTOCOL.md §10.3, "Fast failure")."""
    causes = _causes(exc)

    def has(*kinds: type[BaseException]) -> BaseException | None:
        return next((e for e in causes if isinstance(e, kinds)), None)

    if (missing := has(NameNotFound)) is not None:
        return f"the domain {missing.host} does not exist (no such domain)", True  # type: ignore[attr-defined]
    if has(RefusedAddress):
        return "the receiving server's address is private or reserved (not allowed)", False
    if has(aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError, ssl.SSLError):
        return "the receiving server's TLS certificate was not accepted (TLS failure)", False
    if has(aiohttp.ClientConnectorDNSError):
        return "the receiving server's name could not be looked up (DNS did not answer)", False
    if has(ConnectionRefusedError):
        return "the receiving server did not answer (connection refused)", False
    if has(TimeoutError, aiohttp.ServerTimeoutError):
        return f"the receiving server did not answer within {timeout_s:g} s (timeout)", False
    if has(aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, ConnectionResetError):
        return "the receiving server closed the connection before answering", False
    if has(RedirectRefused):
        return "the receiving server answered with a redirect (not followed)", False
    if has(AnswerTooLarge):
        return "the receiving server's answer was too large", False
    if has(aiohttp.ClientConnectorError):
        return "could not connect to the receiving server", False
    return f"the receiving server could not be reached ({type(exc).__name__})", False


def http_words(status: int) -> str:
    """A peer's non-200 answer to a delivery, in words."""
    if status == 503:
        return "the receiving server is temporarily unavailable (HTTP 503)"
    if status >= 500:
        return f"the receiving server failed (HTTP {status})"
    if status == 429:
        return "the receiving server asked this server to slow down (HTTP 429)"
    if status == 413:
        return "the receiving server found the delivery too large (HTTP 413)"
    return f"the receiving server did not accept the delivery (HTTP {status})"


def clock_time(ms: int) -> str:
    """HH:MM UTC of a unix ms time, for "next try at ..."."""
    return time.strftime("%H:%M UTC", time.gmtime(ms / 1000))


def delivery_changes(
    lease: Lease, verdict: Settlement, retry_at: int | None, now: int
) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    """What this attempt changes in the senders' sent mail, by (sender, id): each settled
    recipient delivered or bounced (with the reason), each one still queued with its
    attempts, next retry and the last error in words."""
    done = set(verdict.done)
    bounced = {q.qid: (set(rcpts), reason) for q, rcpts, reason in verdict.bounces}
    out: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for q in lease.messages:
        env = q.item.envelope
        states = out.setdefault((str(env.get("from")), str(env.get("id"))), {})
        if q.qid in done:
            lost, reason = bounced.get(q.qid, (set(), ""))
            for rcpt in q.item.recipients:
                states[rcpt] = (
                    {"state": DeliveryState.BOUNCED.value, "at": now, "reason": reason}
                    if rcpt in lost
                    else {"state": DeliveryState.DELIVERED.value, "at": now}
                )
        elif retry_at is not None:
            # kept for some recipients only: the served ones are delivered now, a not-hosted
            # one bounced now, each other one queued with why it waits
            kept = verdict.kept.get(q.qid)
            served, waiting = (kept.served, kept.waiting) if kept else (frozenset(), {})
            lost, reason = bounced.get(q.qid, (set(), ""))
            default = verdict.words or peer_text(verdict.retry) or "not delivered yet"
            for rcpt in q.item.recipients:
                if rcpt in served:
                    states[rcpt] = {"state": DeliveryState.DELIVERED.value, "at": now}
                    continue
                if rcpt in lost:
                    states[rcpt] = {"state": DeliveryState.BOUNCED.value, "at": now, "reason": reason}  # fmt: skip
                    continue
                words = waiting.get(rcpt, default)
                states[rcpt] = {
                    "state": DeliveryState.QUEUED.value, "at": now,
                    "attempts": lease.attempts + 1, "next_retry_at": retry_at,
                    "error": f"{words}; next try at {clock_time(retry_at)}",
                }  # fmt: skip
    return {key: states for key, states in out.items() if states}


class _Roll:
    """A rolling lease as its worker works it (module doc, "Rolling lease"): what is in
    flight, and what waits for the release."""

    def __init__(self, lease: Lease, started: int) -> None:
        self.lease = lease
        self.started = started  #: unix ms; it takes no more mail after ROLL_MS
        self.lanes = 0  #: parts sent and not yet answered
        #: qids taken and not yet settled (sent, being sent, waiting, or being settled)
        self.in_flight: set[int] = set()
        #: senders with a part not yet answered, or answered and waiting for the release
        #: (lanes never share a sender; a sender's next part waits for its answer, or for
        #: the next lease when that answer says wait)
        self.senders: set[str] = set()
        self.more = asyncio.Event()  #: a lane came free, or mail for a free lane came in
        self.waiting: list[tuple[Lease, Settlement]] = []  #: settled with the release
        self.stopped = False  #: a part waits (the destination backs off): take no more

    def take(self, part: Sequence[Queued]) -> None:
        self.lanes += 1
        self.in_flight.update(q.qid for q in part)
        self.senders.update(q.item.sender for q in part)

    def answered(self, part: Sequence[Queued], *, waits: bool) -> None:
        """`part`'s lane is free; its senders too, unless it `waits` (then the roll takes
        nothing more, and their later mail must not overtake what waits)."""
        self.lanes -= 1
        if waits:
            self.stopped = True
        else:
            self.senders.difference_update(q.item.sender for q in part)
        self.more.set()

    def settled(self, part: Sequence[Queued]) -> None:
        self.in_flight.difference_update(q.qid for q in part)

    def answered_crash(self, part: Lease, exc: Exception) -> None:
        """`part` could not be bounced or settled (a bug): it waits for the release, as a
        failed attempt (a retry with the backoff, not at once; the peer has it, in order,
        and answers `duplicate` next time)."""
        self.stopped = True
        internal = Settlement([], [], f"internal: {exc}", "this server failed (internal error)")
        self.waiting.append((part, internal))


#: a release with no part waiting: nothing to settle, the backoff reset
_NOTHING = Settlement([], [], None)


def _merged(verdicts: Sequence[Settlement]) -> Settlement:
    """The parts of a rolling lease that wait, as one settlement for its release: the
    first part's reason (its retry and words) stands for the destination's backoff and
    its last error (each part's senders are told their own: `_settle`)."""
    first = next((v for v in verdicts if v.retry is not None), None)
    return Settlement(
        [qid for v in verdicts for qid in v.done],
        [b for v in verdicts for b in v.bounces],
        None if first is None else first.retry,
        None if first is None else first.words,
        {qid: k for v in verdicts for qid, k in v.kept.items()},
    )


class LeaseLost(Exception):
    """The destination's lease lapsed and was taken while this worker was sending."""


@dataclass(slots=True)
class _Held:
    """Whether a worker still holds its lease: lost once a renewal, a settle or `lease_more`
    finds another holder."""

    lost: bool = False


#: what a peer's text may not carry into this server's store, logs or bounces: control
#: characters (NUL cannot even be stored by PostgreSQL) and lone surrogates
_PEER_TEXT_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def peer_text(value: Any, limit: int = 500) -> str | None:
    """A peer's words (an answer's `refused`/`error`, an error carrying its headers) made
    safe to store and show: anything not a string by its type name, forbidden characters
    replaced by U+FFFD, at most `limit` characters. None stays None."""
    if value is None:
        return None
    text = value if isinstance(value, str) else f"<{type(value).__name__}>"
    return _PEER_TEXT_FORBIDDEN.sub("\ufffd", text[:limit])


def _judge(batch: list[Queued], results: list[Any], *, mesh: bool) -> Settlement:
    """Sort one answer into done, bounced and retried (PROTOCOL.md §10.7, "Sender, reading
    the answer"; the module doc). A mesh peer that does not host a recipient is no
    failure: another member may (mesh.py), so that is not bounced."""
    done: list[int] = []
    bounces: list[tuple[Queued, list[str], str]] = []
    retry: str | None = None
    words: str | None = None
    kept: dict[int, Kept] = {}
    for queued, result in zip(batch, results, strict=True):
        result = result if isinstance(result, Mapping) else {}
        recipients = result.get("recipients")
        refused = result.get("refused")
        if isinstance(recipients, Mapping):
            served, lost, waiting = _outcomes(queued.item.recipients, recipients)
            if lost and not mesh:
                bounces.append((queued, lost, "the receiving server does not host this address"))
            if waiting:
                # a mesh member that does not host a recipient has settled it for this copy
                # (another member may host it), as when the whole copy is done
                kept[queued.qid] = Kept(served | frozenset(lost) if mesh else served, waiting)
                retry = retry or "answered: " + "; ".join(
                    f"{r[:12]}…: {why}" for r, why in list(waiting.items())[:3]
                )
            else:
                done.append(queued.qid)
        elif not isinstance(refused, str):  # neither accepted nor refused: it may be stored
            kept[queued.qid] = Kept(frozenset(), dict.fromkeys(queued.item.recipients, NOT_UNDERSTOOD))  # fmt: skip
            retry = retry or "answered: a result neither accepted nor refused"
        elif refused in TRANSIENT_REFUSALS:
            retry = f"refused: {refused}"
            words = TRANSIENT_REFUSALS[refused]
        else:
            done.append(queued.qid)
            reason = (
                f"refused by the receiving server: {peer_text(refused, 64)} "
                f"({peer_text(result.get('error', ''), 400)})"
            )
            if refused == "unknown_recipient":  # the commonest refusal, in plain words
                reason = "the receiving server does not host this address"
            bounces.append((queued, list(queued.item.recipients), reason))
    return Settlement(done, bounces, retry, words, kept)


def _outcomes(
    recipients: Iterable[str], answered: Mapping[str, Any]
) -> tuple[frozenset[str], list[str], dict[str, str]]:
    """An accepted result's outcomes for the recipients this copy is for: (served, not
    hosted, waiting -> why in words). Only an outcome this server knows settles a
    recipient; an unknown one, or a recipient left out, waits: the peer may not have it."""
    served: set[str] = set()
    lost: list[str] = []
    waiting: dict[str, str] = {}
    for rcpt in recipients:
        outcome = answered.get(rcpt)
        if not isinstance(outcome, str):  # left out, or not even a word (an object, 5...)
            outcome = None if rcpt not in answered else f"<{type(outcome).__name__}>"
        if outcome in SERVED:
            served.add(rcpt)
        elif outcome in UNDELIVERABLE:
            lost.append(rcpt)
        elif outcome is None:
            waiting[rcpt] = "the receiving server's answer did not mention this recipient"
        else:
            waiting[rcpt] = WAITING_OUTCOMES.get(outcome) or (
                f"the receiving server answered {peer_text(outcome, 40)!r} for this recipient "
                "(not understood)"
            )
    return frozenset(served), lost, waiting
