"""The submit pipeline: what happens to a message handed in through POST /send or WS `send`.

In order, each step refusing with its own error (the table in errors.py gives the status):

0. the client's network address has a budget of messages (fair.py; 429 `rate_limited`),
   counted before anything is parsed, for every transport (HTTP, WebSocket, /mail/send);
1. strict parse (loads_strict): FLUX's JSON data model, or 400 `malformed_json`; a
   `domains` entry that is an IP literal the outbound policy forbids (loopback, private,
   link-local...) is refused here, naming `domains.<addr>`;
2. `verify_envelope(now)`: shape, version, values, freshness ±5 min, key ↔ address,
   signature (400 naming the field and reason); then room for this server's own route
   entry and hop (400 `too_large` naming `route` or `integrity_chain`): a server never
   seals a message its peer would refuse (PROTOCOL.md §7.2), so it can never be blamed
   for one;
3. the integrity chain must verify (400 `chain_invalid`: a forgery is refused, never
   passed on); a message that passed through a quarantined server is refused (403);
4. recipients: `to` + `cc`, or for a BCC copy only its `bcc` (BRIEF §2.1: each BCC copy
   is a separately signed envelope naming one BCC recipient, and must reach only that
   recipient). A recipient the submission's `domains` places at another domain is remote:
   queued for that domain, and only for a sender this server hosts (403 `relay_denied`
   otherwise: no open relay; open mode allows it). In hosted mode only registered
   addresses are local; no local and no remote recipient at all is 404;
5. dedupe, by (recipient, sender, id): a message is named by its sender and id together
   (PROTOCOL.md §4.5), so only the sender's own mail is compared. A recipient that already
   holds this sender's message with this id and the same body is a duplicate (nothing
   changes, 200 `duplicate`); with another body it is a 409 conflict. Another sender's
   message with the same id is another message: it changes no answer (no oracle of who
   got what, no squatting an id ahead of its sender). A replay of a stored message passes
   no further step: it is neither spam-counted nor quota-counted. With one local
   recipient (the common case) no lookup is made here: the storing transaction decides
   duplicate or conflict (step 8), and the lookup is made only when step 6 refuses, so a
   replay is still answered `duplicate`, and a conflict 409, never as spam;
6. spam (451 with every reason; a refused message never reaches the quota). The cheapest
   refusal first: a sender already over the rate limit is refused before the content
   heuristics run, and the rate budget is only looked at here; a hit is counted once the
   message is accepted (stored or queued for someone), so a message refused for any
   reason, and a replay, costs the sender nothing (PROTOCOL.md §8.2). When the budget
   is counted in the store itself (PostgreSQL: shared by the processes of a cluster) and
   the message has no remote copy, the storing transaction decides it instead, after
   dedupe and before any write, and counts the hit (store/base.py, "Rate and contacts in
   the storing transaction"): two round trips fewer. The content heuristics then run
   first, and a message they refuse is answered as before (the rate reason alone when
   the sender is over the limit: that look is made only for a refusal). A sender the
   storing transaction refused for its rate takes the look before the plan again for the
   rest of the window (`_over_rate`), so its further mail costs one read, not a hop's
   signatures and a storing transaction;
7. pending quota per recipient, checked in the storing transaction (429 when every new
   recipient is full; the others still get the message); within it, a sender the
   recipient has never written to is a stranger, and strangers hold at most their share
   of it (store/base.py StrangerShare; 429 naming `from`); a message whose signed
   `expires` has already passed is refused before any of this (400 naming `expires`): it
   could only be stored invisible, outside every quota. Over federation that refusal is
   final, so the sender's server bounces it rather than retrying;
8. this server's route entry and sealed hop (`next` = "local"), then the store, awaiting
   the durable commit; remote copies go into the durable delivery queue (sealed later, to
   the server actually reached: federation/delivery.py) and are answered `queued`. A
   sender this server hosts keeps the message in its sent mail, one row with each
   recipient's delivery state (stored, queued, bounced: `sent_record`), written in the
   queueing transaction when there is a remote copy (the worker's settlements then update
   it in theirs), else in the storing one;
9. only then the push to the recipients' live sockets (the pushed copy is marked
   delivered first, so a client never sees mail the store could still lose);
10. a sender this server hosts now knows every recipient it wrote to (`add_contacts`):
   their mail to it is no stranger's. Kept by the storing transaction itself for mail
   with no remote copy (`Incoming.contacts`), and that transaction also NOTIFYs the
   push to the other processes (fanout.py): one round trip for the whole of step 8-10.

The store repeats the dedupe check atomically (two submissions of one id can race between
step 5 and step 8); its CONFLICT outcome is reported the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..federation.mesh import Mesh, relay_targets
from ..protocol.chain import (
    LOCAL_DELIVERY,
    ChainVerdict,
    KeyLookup,
    PublishedKey,
    ServerSigner,
    append_hop,
    check_room_for_hop,
    sealed_servers_in_chain,
    servers_in_chain,
    verify_chain,
)
from ..protocol.envelope import Envelope, body_hash, for_storage, verify_envelope
from ..protocol.errors import ChainError, FluxError, InvalidValue
from ..protocol.outgoing import make_bounce
from ..protocol.spam import RATE_LIMIT_REASON, check_spam
from ..protocol.tamper import Offense, bound_seal, find_offense, handed_over
from ..store.base import (
    REFUSED_REASONS,
    DeliveryState,
    Incoming,
    MessageRef,
    Outbound,
    SentMessage,
    Store,
    StoreOutcome,
    StrangerShare,
)
from . import wire
from .errors import (
    Conflict,
    Quarantined,
    QuotaExceeded,
    RelayDenied,
    SpamRefused,
    UnknownRecipient,
)
from .fair import ClientLimits
from .fanout import NEW, LocalFanout, MailEvent
from .limits import HitCounter, StoreHitCounter, counted_in_store
from .metrics import Metrics
from .reputation import Reputation

log = logging.getLogger("flux.server")
Clock = Callable[[], int]

#: the 409 for reusing one's own id with another body (only the sender's mail can cause it)
CONFLICT_TEXT = "you already sent a message with this id and another body"

#: per-recipient outcomes beyond the store's own
NOT_HOSTED = "not_hosted"
QUEUED = "queued"  #: in the delivery queue for another server
#: senders kept as recently over their rate (`Submitter._over_rate`), ~100 bytes each
OVER_RATE_KEPT = 10_000
#: a relayed batch of at most this many messages is checked in one worker thread, a
#: larger one in two (accept_batch): a second hand-off is not worth it for a few messages
CHECKED_ALONE = 8


@dataclass(frozen=True, slots=True)
class Refused:
    """A message a peer handed on that was refused: why, and the offense the peer's own
    seal proves (PROTOCOL.md §7.4), if any. The offense is looked for with the other pure
    checks, in the batch's worker thread: only a message whose signature or chain failed
    can carry one, and judging it costs signature checks the loop must not pay."""

    error: FluxError
    offense: Offense | None = None


@dataclass(frozen=True, slots=True)
class SubmitResult:
    id: str
    recipients: dict[str, str] = field(default_factory=dict)
    #: the sender is this server's own (or the server is open): decided once, in the plan
    sender_hosted: bool = field(default=False, compare=False)

    @property
    def duplicate(self) -> bool:
        """True when nothing new was stored or queued (a replay)."""
        return not {StoreOutcome.STORED, QUEUED} & set(self.recipients.values())

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "recipients": self.recipients, "duplicate": self.duplicate}


def _check_expires(env: Envelope, now: int) -> None:
    """Refuse a message whose signed `expires` time (ms > 0) is already past: nobody could
    ever read it, so storing it would only spend disk outside every quota (PROTOCOL.md
    §11.1). `expires: 0` (deleted on first read) is a time that never passes."""
    expires = env.data.get("expires")
    if isinstance(expires, int) and not isinstance(expires, bool) and 0 < expires <= now:
        raise InvalidValue("expires is already past: this message could never be read", field="expires")  # fmt: skip


def _check_bcc(env: Envelope) -> None:
    """A BCC copy names exactly one address (PROTOCOL.md §5.2, §13). The prototype's single
    envelope listing several `bcc` addresses could only be delivered by showing each of
    them the others (its signature covers the list), so it is refused naming `bcc`, never
    stored for some recipients while the rest silently get nothing."""
    if len(env.bcc) > 1:
        raise InvalidValue(
            "bcc names more than one address: send the message without bcc to its to/cc, "
            "and one separately signed copy per bcc address, each naming only that address "
            "(PROTOCOL.md §5.2)",
            field="bcc",
        )


def local_recipients(env: Envelope) -> tuple[str, ...]:
    """to + cc, or only the BCC recipients of a BCC copy (see step 4 above)."""
    if env.bcc:
        return env.bcc
    return tuple(dict.fromkeys((env.to, *env.cc)))


@dataclass(frozen=True, slots=True)
class _RatePlace:
    """A message's place among its sender's messages in flight (`Submitter._deliver`)."""

    sender: str
    seq: int


@dataclass(frozen=True, slots=True)
class _Sealed:
    """`env.data` with this server's route entry and hop for local delivery (what
    `_incoming` appends), and the time and verdict it was sealed with: `_incoming` takes
    it only for a plan with that same time and verdict."""

    now: int
    cv: ChainVerdict
    data: dict[str, Any]


@dataclass(slots=True)
class _Plan:
    """What the checks decided for one message, before anything is written."""

    env: Envelope
    now: int
    cv: ChainVerdict
    started: float
    outcomes: dict[str, str]  #: per recipient; filled in by the commit
    fresh: list[str]  #: local recipients to store for
    #: (domain | (mesh peer, mesh), recipients) to queue for
    outgoing: list[tuple[Any, Sequence[str]]]
    #: counts against the sender's rate budget once accepted (mail this server took)
    rated: bool = False
    #: the sender's rate is decided and counted by the storing transaction
    #: (`Incoming.rate`), not looked at before nor counted after it
    rate_in_store: bool = False
    #: the store has NOTIFYed the other processes of the recipients stored
    announced: bool = False
    #: its place among its sender's messages in flight (`Submitter._deliver`)
    rate_place: _RatePlace | None = None
    #: the sender is hosted here: its sent mail keeps this message (step 8)
    keep_sent: bool = False
    #: this server's hop for local delivery, sealed already in a checking thread
    #: (`accept_batch`); None: `_incoming` seals it on the loop
    sealed: _Sealed | None = None


@dataclass(frozen=True, slots=True)
class Routing:
    """Where a message may go besides this server's own mailboxes."""

    #: {domain: recipients} the submission placed at other domains (its `domains`)
    remote: Mapping[str, Sequence[str]] = field(default_factory=dict)
    #: False for mail another server handed on; True: this server took the submission
    origin: bool = True
    #: the mesh a relayed message came through (its unhosted recipients go on through it);
    #: mail handed on directly (not through a mesh) is delivered here or refused
    relayed_through: Mesh | None = None
    #: the peers the relaying server lists for that mesh (its transaction's `mesh_peers`)
    sender_lists: tuple[str, ...] | None = None


class Submitter:
    def __init__(
        self,
        *,
        store: Store,
        signer: ServerSigner,
        clock: Clock,
        rate: HitCounter,
        fanout: LocalFanout,
        metrics: Metrics,
        reputation: Reputation,
        open_mode: bool,
        pending_quota: int,
        enforce_quarantine: bool = True,
        meshes: Mapping[str, Mesh] | None = None,
        on_queued: Callable[[Sequence[Outbound]], None] = lambda _queued: None,
        refused_domain: Callable[[str], bool] | None = None,
        stranger_share: StrangerShare | None = None,
        limits: ClientLimits | None = None,
    ) -> None:
        self.store = store
        self.signer = signer
        self.clock = clock
        #: messages per sender per minute: in memory, or in the store shared by every
        #: process on it (limits.py)
        self.rate = rate
        self.fanout = fanout
        self.metrics = metrics
        self.reputation = reputation
        self.open_mode = open_mode
        self.pending_quota = pending_quota
        self.enforce_quarantine = enforce_quarantine
        self.meshes = dict(meshes or {})
        self.on_queued = on_queued  #: wakes the delivery worker with what was queued
        #: the outbound policy's verdict on an IP-literal domain (netguard.PeerPolicy): such
        #: a `domains` entry is refused at once rather than queued to bounce later
        self.refused_domain = refused_domain
        #: the part of each recipient's quota strangers may hold (None: no such share)
        self.stranger_share = stranger_share
        #: per client address and per peer server budgets (fair.py); None: not counted
        self.limits = limits
        #: senders the storing transaction refused for their rate, and until when (unix ms)
        #: their mail takes the look before the plan instead (`_over_rate`)
        self._over_rate_until: OrderedDict[str, int] = OrderedDict()
        #: per sender, the places (`_RatePlace.seq`, in order) of its messages this process
        #: took and has not yet counted or refused: at most the submissions in flight
        self._rate_in_flight: dict[str, dict[int, None]] = {}
        self._rate_places = 0

    @property
    def _rate_in_store(self) -> StoreHitCounter | None:
        """`rate` when it counts in `store` itself: a local message's rate is then decided
        and its hit counted in its storing transaction, two round trips fewer (limits.py)."""
        return counted_in_store(self.rate, self.store)

    async def submit(self, raw: bytes | str | Any, *, client: str | None = None) -> SubmitResult:
        """Run the pipeline on one submission: raw JSON or an already strictly-parsed value,
        a bare envelope or `{"message": envelope, "domains": {...}}` (wire.submission).

        Raises InvalidInput/VerificationError subclasses, Quarantined, RelayDenied,
        UnknownRecipient, Conflict, SpamRefused, QuotaExceeded.
        """
        started = time.perf_counter()
        if self.limits is not None and client is not None:
            # the client's network address (fair.py): the cheapest refusal, before parsing
            await self.limits.submission(client)
        value = wire.parse_json(raw) if isinstance(raw, bytes | str) else raw
        msg, domains = wire.submission(value, refused=self.refused_domain)
        if isinstance(msg, dict):
            msg = for_storage(msg)
        now = self.clock()
        env = verify_envelope(msg, now_ms=now)
        # Refused before anything else if this server's own hop would not fit: it never
        # seals what a peer would refuse (PROTOCOL.md §7.2). 400 `too_large` naming route
        # or integrity_chain.
        check_room_for_hop(env.data)
        remote = self._remote(env, domains)
        cv = self._check_chain(env)
        if remote:
            await self._check_relay(env)
        return await self._deliver(env, now, cv, started, Routing(remote=remote))

    async def accept_batch(
        self,
        messages: Sequence[Any],
        *,
        peer: str,
        keys: KeyLookup,
        mesh: Mesh | None = None,
        sender_lists: Sequence[str] | None = None,
    ) -> list[SubmitResult | Refused]:
        """Messages the server `peer` handed on in one transaction (POST /federation/deliver,
        or /mesh/relay with the `mesh` they came through: then what is not hosted here is
        passed on). One result per message, in order: its SubmitResult or its Refused (the
        error, and the offense the peer's seal proves, if any). The accepted ones are
        stored in one store transaction, in batch order.

        No freshness check: queued mail may be days old. The last record must be `peer`'s
        seal handing exactly this message to this server, and the whole chain must verify
        under the keys each server publishes (`keys` must hold them already).
        """
        listed = None if sender_lists is None else tuple(sender_lists)
        route = Routing(origin=False, relayed_through=mesh, sender_lists=listed)
        started = time.perf_counter()
        # The pure checks of the whole batch (up to 100 messages, each several Ed25519
        # verifications over canonical JSON) run in worker threads: PyNaCl releases the
        # GIL, so the loop keeps serving other clients meanwhile (issue 10 §1), and a
        # batch's halves are checked on two cores at once where two are free: the peer's
        # next transaction of a sender waits for this answer (PROTOCOL.md §10.3).
        # The key cache is the loop's (an LRU it reorders on every read): the threads get a
        # copy of what this batch's chains can need, made here.
        snapshot = _keys_for(messages, [peer, self.signer.name], keys)
        known = lambda server: snapshot.get(server, ())  # noqa: E731
        parts = await asyncio.gather(*(
            asyncio.to_thread(self._verify_all, part, peer, known)
            for part in _halves(messages, CHECKED_ALONE)
        ))  # fmt: skip
        verified = [env for part in parts for env in part]
        sealed = await self._seal_ahead(verified, mesh)
        results: list[SubmitResult | Refused | _Plan] = []
        for env, ahead in zip(verified, sealed, strict=True):
            if isinstance(env, Refused):
                results.append(env)
                continue
            # `now` is read once the checks are done: for a hop sealed ahead, just before
            # it was sealed (one read for the batch), else here, before the plan
            now = self.clock() if ahead is None else ahead.now
            try:
                plan = await self._plan(env, now, ChainVerdict.PASS, started, route)
            except FluxError as exc:
                results.append(Refused(exc))
                continue
            plan.sealed = ahead
            results.append(plan)
        plans = [r for r in results if isinstance(r, _Plan)]
        committed = iter(await self._commit(plans))
        out: list[SubmitResult | Refused] = []
        for r in results:
            if not isinstance(r, _Plan):
                out.append(r)
                continue
            done = next(committed)
            out.append(Refused(done) if isinstance(done, FluxError) else done)
        return out

    def _verify_all(
        self, messages: Sequence[Any], peer: str, keys: KeyLookup
    ) -> list[Envelope | Refused]:
        """`_verify_relayed` on each message (no I/O, no shared state written: it runs
        in a worker thread): its envelope, or the error that refused it with the offense
        the peer's seal proves, if any."""
        out: list[Envelope | Refused] = []
        for msg in messages:
            try:
                out.append(self._verify_relayed(msg, peer, keys))
            except FluxError as exc:
                offense = find_offense(msg, keys, receiver=self.signer.name)
                out.append(Refused(exc, offense if offense and offense.offender == peer else None))
        return out

    async def _seal_ahead(
        self, verified: Sequence[Envelope | Refused], mesh: Mesh | None
    ) -> list[_Sealed | None]:
        """For each checked message of a batch, this server's hop for storing it here,
        sealed in worker threads as `_incoming` would seal it on the loop (two Ed25519
        signatures and the hashes they cover: PyNaCl releases the GIL), or None: then
        `accept_batch` reads `now` and `_incoming` seals on the loop, as before.

        Only for mail handed on directly: with no mesh and no `domains` such a message has
        no remote copy, so whatever the plan keeps of it is stored here under exactly this
        hop (`next` local, `cv` pass). Mail through a mesh may only pass on, unsealed
        (the delivery worker seals it for the peer reached). A message the plan's first,
        pure checks refuse gets none. `now` is read once, here on the loop, once every
        check is done: where the loop read each message's before (the first of them
        exactly there), so a fixed clock sees the same times, and the batch's messages
        keep their order in `received_at`."""
        sealed: list[_Sealed | None] = [None] * len(verified)
        if mesh is not None:
            return sealed
        now = self.clock()
        wanted = [i for i, env in enumerate(verified) if _sealable(env, now)]
        if not wanted:
            return sealed
        parts = await asyncio.gather(*(
            asyncio.to_thread(self._seal_all, [verified[i] for i in part], now)
            for part in _halves(wanted, CHECKED_ALONE)
        ))  # fmt: skip
        for i, hop in zip(wanted, (hop for part in parts for hop in part), strict=True):
            sealed[i] = hop
        return sealed

    def _seal_all(self, envs: Sequence[Envelope], now: int) -> list[_Sealed]:
        """`append_hop` for local delivery on each envelope (no I/O, nothing shared
        written: it runs in a worker thread; the signer's key only signs)."""
        return [
            _Sealed(now, ChainVerdict.PASS, append_hop(
                env.data, self.signer, next_hop=LOCAL_DELIVERY, now_ms=now,
                cv=ChainVerdict.PASS, digests=env.digests,
            ))
            for env in envs
        ]  # fmt: skip

    def _verify_relayed(self, msg: Any, peer: str, keys: KeyLookup) -> Envelope:
        if isinstance(msg, dict):
            msg = for_storage(msg)
        env = verify_envelope(msg)
        check_room_for_hop(env.data)  # before the seal and chain checks (PROTOCOL.md §7.4)
        checked = verify_chain(env.data, keys, digests=env.digests)
        # The chain's check has verified the last seal already; bound_seal verifies it again,
        # so it runs only to say which error a failing delivery gets (the binding's first).
        last = handed_over(env.data, checked, self.signer.name)
        if last is None:
            last = bound_seal(env.data, keys, self.signer.name)
        if last is None or last["server"] != peer:
            raise ChainError(
                f"the last hop is not {peer}'s seal handing this message to this server",
                field="integrity_chain",
            )
        checked.raise_for_failure()
        return env

    async def _deliver(
        self, env: Envelope, now: int, cv: ChainVerdict, started: float, route: Routing
    ) -> SubmitResult:
        """One message through `_plan` and `_commit`; raises what refused it.

        A message this server takes holds a place in its sender's rate from before the rate
        is looked at until it is counted or refused (`_RatePlace`): racing submissions of
        one sender each count the ones still in flight ahead of them, so no more than the
        limit pass the look between another's look and its hit."""
        place = self._hold_rate_place(env.sender) if route.origin else None
        try:
            plan = await self._plan(env, now, cv, started, route, place=place)
            (result,) = await self._commit([plan])
        finally:
            if place is not None:
                self._free_rate_place(place)  # refused, a replay, or failed: never counted
        if isinstance(result, FluxError):
            raise result
        return result

    def _hold_rate_place(self, sender: str) -> _RatePlace:
        self._rate_places += 1
        place = _RatePlace(sender, self._rate_places)
        self._rate_in_flight.setdefault(sender, {})[place.seq] = None
        return place

    def _ahead_of(self, place: _RatePlace | None) -> int:
        """`place`'s sender's messages still in flight (not yet counted nor refused) that
        took their place before it."""
        if place is None:
            return 0
        return sum(seq < place.seq for seq in self._rate_in_flight.get(place.sender, ()))

    def _free_rate_place(self, place: _RatePlace) -> None:
        """Idempotent: `_done` frees it once counted, `_deliver` whatever happened."""
        held = self._rate_in_flight.get(place.sender)
        if held is None:
            return
        held.pop(place.seq, None)
        if not held:
            del self._rate_in_flight[place.sender]

    async def _plan(
        self,
        env: Envelope,
        now: int,
        cv: ChainVerdict,
        started: float,
        route: Routing,
        *,
        place: _RatePlace | None = None,
    ) -> _Plan:
        """The checks after authenticity: route, recipients, dedupe, spam. Nothing is
        written; `_commit` writes what the plan says. `place`: the message's place in its
        sender's rate (`_deliver`), whose look counts the messages in flight ahead of it."""
        _check_bcc(env)
        _check_expires(env, now)
        await self._check_route(env)
        elsewhere = {r for rcpts in route.remote.values() for r in rcpts}
        hosted = await self._hosted(env, elsewhere)
        relays = self._mesh_relays(env, [r for r, why in hosted.items() if why], route)
        if not elsewhere and not relays and all(hosted.values()) and not route.relayed_through:
            where = "bcc" if env.bcc else "to"
            raise UnknownRecipient("no recipient of this message is hosted here", field=where)
        if route.origin and relays:
            await self._check_relay(env)
        # Dedupe (step 5). For one local recipient the storing transaction decides it, as
        # it must anyway for racing submissions: its DUPLICATE or CONFLICT answers the
        # message just as a lookup here would, and the loop makes no read for it. With
        # several, the lookup comes first: a conflict for one of them refuses the message
        # for all (PROTOCOL.md §4.5), which the store's per-recipient outcomes cannot undo.
        looked_up = sum(why is None for why in hosted.values()) != 1
        if looked_up:
            outcomes, fresh = await self._dedupe(env, hosted)
        else:
            outcomes = {r: why for r, why in hosted.items() if why}
            fresh = [r for r, why in hosted.items() if not why]
        outgoing = [*route.remote.items(), *relays.items()]
        # Mail only for mailboxes here, whose rate counter lives in the store: the storing
        # transaction decides the rate (after dedupe, before anything is written) and
        # counts the hit, in the round trip that stores it (store/base.py notes).
        rate_in_store = (
            route.origin and not outgoing and self._rate_in_store is not None
            and not self._over_rate(env.sender, now)
        )  # fmt: skip
        if fresh or outgoing:
            # Mail a peer hands on was rate-limited by the sender's own server when it was
            # submitted; counting it again here would refuse a queue that flushes after an
            # outage as a burst it never was. The content heuristics apply to all mail.
            try:
                await self._check_spam(
                    env,
                    now,
                    rate_limited=route.origin,
                    rate_in_store=rate_in_store,
                    ahead=self._ahead_of(place),
                )
            except SpamRefused:
                if looked_up:
                    raise
                # A replay is answered from what is stored, never as spam (step 5): only
                # a refusal pays for the lookup the store would otherwise have made.
                outcomes, fresh = await self._dedupe(env, hosted)
                if fresh or outgoing:
                    raise
        keep = route.origin and (self.open_mode or await self.store.hosted(env.sender) is not None)
        return _Plan(
            env, now, cv, started, outcomes, fresh, outgoing, rated=route.origin,
            rate_in_store=rate_in_store, keep_sent=keep, rate_place=place,
        )  # fmt: skip

    async def _commit(self, plans: Sequence[_Plan]) -> list[SubmitResult | FluxError]:
        """Store every plan's local copies in one transaction and queue its remote ones
        (one more), then push; one result per plan, in order.

        Dedupe and the quota are decided again inside the storing transaction, so racing
        submissions can neither store an id twice nor overshoot a recipient's quota.
        """
        storing = [p for p in plans if p.fresh]
        stored = await self.store.store_many([self._incoming(p) for p in storing])
        refused: dict[int, FluxError] = {}
        for plan, outcome in zip(storing, stored, strict=True):
            error = self._refusal(outcome)
            if error is not None:
                refused[id(plan)] = error
                if StoreOutcome.RATE_LIMITED in outcome.values():
                    self._note_over_rate(plan.env.sender, plan.now)
            else:
                plan.outcomes.update({r: str(o) for r, o in outcome.items()})
        queueing = [p for p in plans if p.outgoing and id(p) not in refused]
        if queueing:
            await self._queue(queueing)
        results: list[SubmitResult | FluxError] = []
        for plan in plans:
            if id(plan) in refused:
                results.append(refused[id(plan)])
                continue
            for rcpt, outcome in plan.outcomes.items():
                if outcome == StoreOutcome.STORED:
                    await self.push_new(rcpt, plan.env.id, plan.env.sender, plan.announced)
            results.append(await self._done(plan))
        return results

    def _incoming(self, plan: _Plan) -> Incoming:
        env = plan.env
        sealed = plan.sealed
        if sealed is not None and sealed.now == plan.now and sealed.cv == plan.cv:
            stamped = sealed.data  # the same hop, sealed in a checking thread (accept_batch)
        else:
            stamped = append_hop(
                env.data, self.signer, next_hop=LOCAL_DELIVERY, now_ms=plan.now, cv=plan.cv,
                digests=env.digests,
            )  # fmt: skip
        tags = tuple(sorted({t.lower() for t in env.data.get("tags") or ()}))
        # The sent copy of mail with no remote recipient goes in the storing transaction
        # (the store bounces the recipients it refuses); with one, in the queueing one.
        sent = None
        if plan.keep_sent and not plan.outgoing:
            stored = {**plan.outcomes, **dict.fromkeys(plan.fresh, StoreOutcome.STORED)}
            sent = sent_record(env, stored, plan.now)
        # With no remote copy, the sender's contacts (step 10) and the NOTIFY of the push
        # (fanout.py) are written in the storing transaction too: no round trip of their own.
        contacts = local_recipients(env) if plan.keep_sent and not plan.outgoing else ()
        announce = self.fanout.announcement(plan.fresh, MessageRef(env.id, env.sender))
        plan.announced = announce is not None
        rate = None
        if plan.rate_in_store and self._rate_in_store is not None:
            rate = self._rate_in_store.bucket(f"send:{env.sender}")
        return Incoming(
            stamped, env.body_hash, tuple(plan.fresh), plan.now, tags=tags,
            pending_quota=self.pending_quota,
            # this server's own bounces are the sender's own server speaking: no stranger
            stranger_share=None if env.sender == self.signer.identity.address else self.stranger_share,
            sent=sent, rate=rate, contacts=contacts, announce=announce,
        )  # fmt: skip

    def _refusal(self, outcome: Mapping[str, StoreOutcome]) -> FluxError | None:
        if StoreOutcome.STORED in outcome.values():
            return None
        if StoreOutcome.CONFLICT in outcome.values():
            return Conflict(CONFLICT_TEXT, field="id")
        if StoreOutcome.RATE_LIMITED in outcome.values():  # the same 451 as _check_spam's
            return SpamRefused((RATE_LIMIT_REASON,))
        if StoreOutcome.OVER_QUOTA in outcome.values():
            return QuotaExceeded(f"the recipient has {self.pending_quota} pending messages", field="to")  # fmt: skip
        if StoreOutcome.OVER_STRANGER_SHARE in outcome.values():
            share = self.stranger_share
            return QuotaExceeded(
                "the recipient has not written to you, and the stranger share of its pending "
                f"mail is full ({share.total if share else 0} from all strangers, "
                f"{share.per_sender if share else 0} from any one); try again once it has read them",
                field="from",
            )
        return None

    async def _done(self, plan: _Plan) -> SubmitResult:
        result = SubmitResult(plan.env.id, plan.outcomes, sender_hosted=plan.keep_sent)
        if plan.rated and not result.duplicate:  # accepted: now it counts (step 6)
            if plan.rate_in_store and self._rate_in_store is not None:
                await self._rate_in_store.counted(plan.now)  # the store counted it
            else:
                await self.rate.hit(f"send:{plan.env.sender}", plan.now)
        if plan.rate_place is not None:  # counted now (or never): no longer ahead of others
            self._free_rate_place(plan.rate_place)
        # Step 10, for mail with a remote copy (a local one's were kept by the store). A
        # replay was recorded when it was first accepted: no second lookup and write.
        if plan.keep_sent and plan.outgoing and not result.duplicate:
            await self.store.add_contacts(plan.env.sender, local_recipients(plan.env), plan.now)
        self.metrics.submit_seconds.observe(time.perf_counter() - plan.started)
        self.metrics.submissions.labels(outcome="duplicate" if result.duplicate else "stored").inc()
        if log.isEnabledFor(logging.DEBUG):  # the count is made for the line, not for nothing
            log.debug(
                "event=submit id=%s from=%s stored=%d duplicate=%s",
                plan.env.id, plan.env.sender,
                sum(o == StoreOutcome.STORED for o in plan.outcomes.values()), result.duplicate,
            )  # fmt: skip
        return result

    def _mesh_relays(
        self, env: Envelope, unhosted: Sequence[str], route: Routing
    ) -> dict[tuple[str, str], list[str]]:
        """{(peer, mesh): recipients} for bare recipients not hosted here (mesh.py)."""
        if not unhosted or not (route.origin or route.relayed_through):
            return {}
        meshes = [route.relayed_through] if route.relayed_through else self.meshes.values()
        seen = servers_in_chain(env.data)
        relays: dict[tuple[str, str], list[str]] = {}
        for mesh in meshes:
            targets = relay_targets(
                mesh, self.signer.name, seen, first=route.origin, sender_lists=route.sender_lists
            )
            for peer in targets:
                relays.setdefault((peer, mesh.name), []).extend(unhosted)
        return relays

    # -- the steps ----------------------------------------------------------------------

    def _check_chain(self, env: Envelope) -> ChainVerdict:
        # A chain that does not hold is refused, not passed on with `cv: fail` (BRIEF §2.5:
        # each server refuses a forgery). Seals are checked against the keys in the records
        # until federation fetches the keys servers publish.
        check = verify_chain(env.data, None, digests=env.digests)
        check.raise_for_failure()
        chain = env.chain
        if chain and "seal" in chain[-1] and chain[-1].get("next") != self.signer.name:
            # sealed for another server: a replay, which the seal exists to stop
            where = f"integrity_chain[{len(chain) - 1}]"
            raise ChainError(f"the last hop sealed this message for {chain[-1].get('next')!r}, not this server", field=where)  # fmt: skip
        return check.verdict

    async def _check_route(self, env: Envelope) -> None:
        entries = [*(env.data.get("route") or ()), *env.chain]
        servers = {e.get("server") for e in entries if isinstance(e.get("server"), str)}
        if not servers:
            return
        bad = sorted(await self.reputation.quarantined_among(servers))
        if not bad:
            return
        if not self.enforce_quarantine:  # report-only: say what enforcing would refuse
            log.warning("event=quarantine_report_only id=%s via=%s", env.id, ",".join(bad))
            self.metrics.refused("quarantined_report_only")
            return
        raise Quarantined(f"the message passed through quarantined {bad[0]}", field="route")

    def _remote(self, env: Envelope, domains: Mapping[str, str]) -> dict[str, list[str]]:
        """{domain: its recipients} for the recipients placed at another domain."""
        wanted = set(local_recipients(env))
        remote: dict[str, list[str]] = {}
        for rcpt, domain in domains.items():
            if rcpt not in wanted:
                where = f"domains.{rcpt}"
                raise InvalidValue("domains names an address this copy is not for", field=where)
            if domain != self.signer.name:
                remote.setdefault(domain, []).append(rcpt)
        return remote

    async def _check_relay(self, env: Envelope) -> None:
        # Only mail from a sender this server hosts goes on to other servers: otherwise
        # anyone could make this server carry (and vouch with its seal for) their mail.
        if self.open_mode or await self.store.hosted(env.sender):
            return
        raise RelayDenied(
            "this server relays mail to other domains only for addresses it hosts",
            field="domains",
        )

    async def _hosted(self, env: Envelope, elsewhere: set[str]) -> dict[str, str | None]:
        """Local recipient -> None if it is served here, else why not."""
        wanted = [r for r in local_recipients(env) if r not in elsewhere]
        if self.open_mode:
            return dict.fromkeys(wanted)
        return {r: None if await self.store.hosted(r) else NOT_HOSTED for r in wanted}

    async def _dedupe(
        self, env: Envelope, hosted: Mapping[str, str | None]
    ) -> tuple[dict[str, str], list[str]]:
        outcomes: dict[str, str] = {r: why for r, why in hosted.items() if why}
        fresh: list[str] = []
        for rcpt in (r for r, why in hosted.items() if not why):
            existing = await self.store.get(rcpt, env.id, env.sender)  # this sender's only
            if existing is None:
                fresh.append(rcpt)
            elif body_hash(existing.envelope) == env.body_hash:
                outcomes[rcpt] = StoreOutcome.DUPLICATE
            else:
                raise Conflict(CONFLICT_TEXT, field="id")
        return outcomes, fresh

    def _over_rate(self, sender: str, now: int) -> bool:
        """Whether the storing transaction refused `sender` for its rate within the last
        window. Such a sender's mail looks at the rate before the plan, as it did before
        the rate moved into the store: a refusal then costs one read, not the content
        heuristics, the hop's two signatures and a storing transaction with its locks.
        Exact either way: the look only decides where the same rule is applied."""
        until = self._over_rate_until.get(sender)
        if until is None:
            return False
        if until <= now:
            del self._over_rate_until[sender]
            return False
        return True

    def _note_over_rate(self, sender: str, now: int) -> None:
        if self._rate_in_store is None:
            return
        self._over_rate_until[sender] = now + self._rate_in_store.window_ms
        self._over_rate_until.move_to_end(sender)
        if len(self._over_rate_until) > OVER_RATE_KEPT:  # bounded: the oldest noted goes
            self._over_rate_until.popitem(last=False)

    async def _check_spam(
        self,
        env: Envelope,
        now: int,
        *,
        rate_limited: bool,
        rate_in_store: bool = False,
        ahead: int = 0,
    ) -> None:
        # Over the limit: refused before the content heuristics, the costly part, run; the
        # hit is counted in _done, once the message is accepted. The sender's messages in
        # flight ahead of this one (`ahead`) count as if counted already.
        bucket = f"send:{env.sender}"
        if rate_limited and not rate_in_store and await self.rate.full(bucket, now, ahead):
            self._note_over_rate(env.sender, now)
            raise SpamRefused((RATE_LIMIT_REASON,))
        reasons = check_spam(env.data, None, now).reasons  # the content heuristics
        if reasons:
            # With the rate decided by the storing transaction, a look at the rate costs a
            # round trip, so it is made only for a refusal: the answer stays the one a
            # sender over the limit always got (the rate reason alone).
            if rate_in_store and await self.rate.full(bucket, now):
                raise SpamRefused((RATE_LIMIT_REASON,))
            raise SpamRefused(reasons)

    async def _queue(self, plans: Sequence[_Plan]) -> None:
        """Queue one copy per destination of every plan (one transaction): a domain, or a
        (mesh peer, mesh name) pair; answer `queued`, or `duplicate` if already queued."""
        items: list[tuple[_Plan, Sequence[str], Outbound]] = []
        for plan in plans:
            env = plan.env
            for where, rcpts in plan.outgoing:
                destination, via = where if isinstance(where, tuple) else (where, "")
                item = Outbound(
                    destination, env.data, env.body_hash, tuple(rcpts), str(plan.cv), plan.now,
                    via,
                )  # fmt: skip
                items.append((plan, rcpts, item))
        # The sent copies go in the queueing transaction (step 8): the worker cannot settle
        # a copy before its sent record exists, and a crash cannot keep one without the other.
        sent = [
            sent_record(p.env, {**p.outcomes, **{r: QUEUED for _, rs in p.outgoing for r in rs}}, p.now)
            for p in plans if p.keep_sent
        ]  # fmt: skip
        added = await self.store.enqueue([item for _, _, item in items], sent=sent)
        for (plan, rcpts, _), new in zip(items, added, strict=True):
            plan.outcomes.update(dict.fromkeys(rcpts, QUEUED if new else StoreOutcome.DUPLICATE))
        self.on_queued([item for _, _, item in items])

    async def bounce(self, item: Outbound, recipients: Iterable[str], reason: str) -> None:
        """Give the sender of `item` a bounce signed by this server (federation/delivery.py
        calls this when a message cannot be delivered). Stored like any mail, without the
        spam and quota checks: the sender's own server is telling it about its own mail."""
        original = item.envelope
        bounce = make_bounce(original, list(recipients), reason, self.signer.identity, self.clock())
        sender = original["from"]
        if not (self.open_mode or await self.store.hosted(sender)):
            log.warning("event=bounce_dropped id=%s reason=sender_not_hosted", original["id"])
            return
        env = verify_envelope(bounce)
        plan = _Plan(env, self.clock(), ChainVerdict.NONE, time.perf_counter(), {}, [sender], [])
        (result,) = await self._commit([plan])
        if isinstance(result, FluxError):  # the sender's mailbox is full: nothing to do
            log.warning("event=bounce_dropped id=%s reason=%s", original["id"], result.code)
            return
        self.metrics.refused("bounced")
        log.info("event=bounce id=%s re=%s to=%s", env.id, original["id"], sender)

    async def push_new(
        self, address: str, msg_id: str, sender: str, announced: bool = False
    ) -> None:
        """Tell `address`'s live sockets, in every process, of a message just stored
        (`announced`: the store has told the other processes, at its commit)."""
        event = MailEvent(address, NEW, (MessageRef(msg_id, sender),))
        if announced:
            await self.fanout.publish_here(event)
        else:
            await self.fanout.publish(event)


#: what a submit outcome means for the sender's sent mail: (state, reason if bounced)
_SENT_STATES: dict[str, tuple[DeliveryState, str | None]] = {
    StoreOutcome.STORED: (DeliveryState.STORED, None),
    StoreOutcome.DUPLICATE: (DeliveryState.STORED, None),
    QUEUED: (DeliveryState.QUEUED, None),
    NOT_HOSTED: (DeliveryState.BOUNCED, "this server does not host this address"),
    # a refusal by the store: the same words the storing transaction writes (sent_after)
    **{outcome: (DeliveryState.BOUNCED, words) for outcome, words in REFUSED_REASONS.items()},
}


def sent_record(env: Envelope, outcomes: Mapping[str, str], now: int) -> SentMessage:
    """The sender's sent copy of `env`, each recipient's state from its submit outcome
    (PROTOCOL.md §10.3, "Delivery state"): stored here, queued for another server (no
    attempt yet: next retry now), or bounced at once with the reason. A BCC copy's record
    names its one BCC recipient; the store merges it into the message's record, whichever
    copy came first (store/base.py, "One sent record per message")."""
    delivery: dict[str, dict[str, Any]] = {}
    for rcpt, outcome in outcomes.items():
        state, reason = _SENT_STATES.get(outcome, (DeliveryState.BOUNCED, str(outcome)))
        entry: dict[str, Any] = {"state": state.value, "at": now}
        if state is DeliveryState.QUEUED:
            entry.update(attempts=0, next_retry_at=now, error=None)
        if reason is not None:
            entry["reason"] = reason
        delivery[rcpt] = entry
    return SentMessage(env.sender, env.data, now, delivery, now)


def _sealable(env: Envelope | Refused, now: int) -> bool:
    """Whether `_plan`'s first, pure checks let `env` through at `now` (its hop is sealed
    ahead only then: nothing is signed for a message they refuse)."""
    if isinstance(env, Refused):
        return False
    try:
        _check_bcc(env)
        _check_expires(env, now)
    except FluxError:
        return False
    return True


def _halves(items: Sequence[Any], alone: int) -> list[Sequence[Any]]:
    """`items` in two halves, in order (the first the larger), or whole when it holds no
    more than `alone`."""
    if len(items) <= alone:
        return [items]
    middle = (len(items) + 1) // 2
    return [items[:middle], items[middle:]]


def _keys_for(
    messages: Sequence[Any], also: Sequence[str], keys: KeyLookup
) -> dict[str, tuple[PublishedKey, ...]]:
    """What `keys` holds now for every server whose seal the messages' chains hold, and
    `also` (a prototype record's label needs no key: PROTOCOL.md §10.7 step 6, §13.11)."""
    names = set(also)
    for msg in messages:
        # a message or chain of the wrong shape names no one (sealed_servers_in_chain
        # never raises for one); it is refused in the thread
        if isinstance(msg, dict):
            names.update(sealed_servers_in_chain(msg))
    return {name: tuple(keys(name)) for name in names}
