"""The submit pipeline: what happens to a message handed in through POST /send or WS `send`.

In order, each step refusing with its own error (the table in errors.py gives the status):

1. strict parse (loads_strict): FLUX's JSON data model, or 400 `malformed_json`;
2. `verify_envelope(now)`: shape, version, values, freshness ±5 min, key ↔ address,
   signature (400 naming the field and reason);
3. the integrity chain must verify (400 `chain_invalid`: a forgery is refused, never
   passed on); a message that passed through a quarantined server is refused (403);
4. recipients: `to` + `cc`, or for a BCC copy only its `bcc` (BRIEF §2.1: each BCC copy
   is a separately signed envelope naming one BCC recipient, and must reach only that
   recipient). In hosted mode only registered addresses are local; none at all is 404;
5. dedupe: a recipient that already holds this id with the same body is a duplicate
   (nothing changes, 200 `duplicate`); with another body it is a 409 conflict. A replay
   of a stored message therefore passes no further step: it is neither spam-counted nor
   quota-counted;
6. spam (451 with every reason; a refused message never reaches the quota);
7. pending quota per recipient, checked in the storing transaction (429 when every new
   recipient is full; the others still get the message);
8. this server's route entry and sealed hop (`next` = "local"), then the store, awaiting
   the durable commit;
9. only then the push to the recipients' live sockets (the pushed copy is marked
   delivered first, so a client never sees mail the store could still lose).

The store repeats the dedupe check atomically (two submissions of one id can race between
step 5 and step 8); its CONFLICT outcome is reported the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..protocol.chain import (
    LOCAL_DELIVERY,
    ChainVerdict,
    KeyLookup,
    ServerSigner,
    append_hop,
    verify_chain,
)
from ..protocol.envelope import Envelope, body_hash, for_storage, verify_envelope
from ..protocol.errors import ChainError
from ..protocol.spam import RateLimiter, check_spam
from ..protocol.tamper import bound_seal
from ..store.base import Incoming, MessageStatus, Store, StoreOutcome
from . import wire
from .errors import Conflict, Quarantined, QuotaExceeded, SpamRefused, UnknownRecipient
from .metrics import Metrics
from .push import Hub
from .reputation import Reputation

log = logging.getLogger("flux.server")
Clock = Callable[[], int]

#: per-recipient outcome beyond the store's own
NOT_HOSTED = "not_hosted"


@dataclass(frozen=True, slots=True)
class SubmitResult:
    id: str
    recipients: dict[str, str] = field(default_factory=dict)

    @property
    def duplicate(self) -> bool:
        """True when nothing new was stored (a replay)."""
        return StoreOutcome.STORED not in self.recipients.values()

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "recipients": self.recipients, "duplicate": self.duplicate}


def local_recipients(env: Envelope) -> tuple[str, ...]:
    """to + cc, or only the BCC recipients of a BCC copy (see step 4 above)."""
    if env.bcc:
        return env.bcc
    return tuple(dict.fromkeys((env.to, *env.cc)))


class Submitter:
    def __init__(
        self,
        *,
        store: Store,
        signer: ServerSigner,
        clock: Clock,
        limiter: RateLimiter,
        hub: Hub,
        metrics: Metrics,
        reputation: Reputation,
        open_mode: bool,
        pending_quota: int,
        enforce_quarantine: bool = True,
    ) -> None:
        self.store = store
        self.signer = signer
        self.clock = clock
        self.limiter = limiter
        self.hub = hub
        self.metrics = metrics
        self.reputation = reputation
        self.open_mode = open_mode
        self.pending_quota = pending_quota
        self.enforce_quarantine = enforce_quarantine

    async def submit(self, raw: bytes | str | Any) -> SubmitResult:
        """Run the pipeline on one message (raw JSON, or an already strictly-parsed value).

        Raises InvalidInput/VerificationError subclasses, Quarantined, UnknownRecipient,
        Conflict, SpamRefused, QuotaExceeded.
        """
        started = time.perf_counter()
        msg = wire.parse_json(raw) if isinstance(raw, bytes | str) else raw
        if isinstance(msg, dict):
            msg = for_storage(msg)
        now = self.clock()
        env = verify_envelope(msg, now_ms=now)
        return await self._deliver(env, now, self._check_chain(env), started)

    async def accept_relayed(self, msg: Any, *, peer: str, keys: KeyLookup) -> SubmitResult:
        """A message the server `peer` handed on (POST /federation/deliver).

        No freshness check: queued mail may be days old. The last record must be `peer`'s
        seal handing exactly this message to this server, and the whole chain must verify
        under the keys each server publishes (`keys` must hold them already). Raises the
        verification errors of `submit`; the caller looks for a provable offense.
        """
        started = time.perf_counter()
        if isinstance(msg, dict):
            msg = for_storage(msg)
        env = verify_envelope(msg)
        last = bound_seal(env.data, keys, self.signer.name)
        if last is None or last["server"] != peer:
            raise ChainError(
                f"the last hop is not {peer}'s seal handing this message to this server",
                field="integrity_chain",
            )
        verify_chain(env.data, keys).raise_for_failure()
        return await self._deliver(env, self.clock(), ChainVerdict.PASS, started)

    async def _deliver(
        self, env: Envelope, now: int, cv: ChainVerdict, started: float
    ) -> SubmitResult:
        """The steps after authenticity: route, recipients, dedupe, spam, store, push."""
        await self._check_route(env)
        outcomes, fresh = await self._dedupe(env, await self._hosted(env))
        if fresh:
            self._check_spam(env, now)
            await self._store(env, fresh, now, cv, outcomes)
        result = SubmitResult(env.id, outcomes)
        self.metrics.submit_seconds.observe(time.perf_counter() - started)
        self.metrics.submissions.labels(outcome="duplicate" if result.duplicate else "stored").inc()
        log.debug(
            "event=submit id=%s from=%s stored=%d duplicate=%s",
            env.id, env.sender, sum(o == StoreOutcome.STORED for o in outcomes.values()),
            result.duplicate,
        )  # fmt: skip
        return result

    # -- the steps ----------------------------------------------------------------------

    def _check_chain(self, env: Envelope) -> ChainVerdict:
        # A chain that does not hold is refused, not passed on with `cv: fail` (BRIEF §2.5:
        # each server refuses a forgery). Seals are checked against the keys in the records
        # until federation fetches the keys servers publish.
        check = verify_chain(env.data, None)
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
        bad = sorted(servers & await self.reputation.quarantined())
        if not bad:
            return
        if not self.enforce_quarantine:  # report-only: say what enforcing would refuse
            log.warning("event=quarantine_report_only id=%s via=%s", env.id, ",".join(bad))
            self.metrics.refused("quarantined_report_only")
            return
        raise Quarantined(f"the message passed through quarantined {bad[0]}", field="route")

    async def _hosted(self, env: Envelope) -> dict[str, str | None]:
        """recipient -> None if it is served here, else why not."""
        wanted = local_recipients(env)
        if self.open_mode:
            return dict.fromkeys(wanted)
        out = {r: None if await self.store.hosted(r) else NOT_HOSTED for r in wanted}
        if all(out.values()):
            where = "bcc" if env.bcc else "to"
            raise UnknownRecipient("no recipient of this message is hosted here", field=where)
        return out

    async def _dedupe(
        self, env: Envelope, hosted: Mapping[str, str | None]
    ) -> tuple[dict[str, str], list[str]]:
        outcomes: dict[str, str] = {r: why for r, why in hosted.items() if why}
        fresh: list[str] = []
        for rcpt in (r for r, why in hosted.items() if not why):
            existing = await self.store.get(rcpt, env.id)
            if existing is None:
                fresh.append(rcpt)
            elif body_hash(existing.envelope) == env.body_hash:
                outcomes[rcpt] = StoreOutcome.DUPLICATE
            else:
                raise Conflict("this id is already stored with another body", field="id")
        return outcomes, fresh

    def _check_spam(self, env: Envelope, now: int) -> None:
        verdict = check_spam(env.data, self.limiter, now)
        if verdict.is_spam:
            raise SpamRefused(verdict.reasons)

    async def _store(
        self,
        env: Envelope,
        recipients: Sequence[str],
        now: int,
        cv: ChainVerdict,
        outcomes: dict[str, str],
    ) -> None:
        stamped = append_hop(env.data, self.signer, next_hop=LOCAL_DELIVERY, now_ms=now, cv=cv)
        tags = tuple(sorted({t.lower() for t in env.data.get("tags") or ()}))
        incoming = Incoming(
            stamped, env.body_hash, tuple(recipients), now, tags=tags,
            pending_quota=self.pending_quota,
        )  # fmt: skip
        # Dedupe and the quota are decided again inside the storing transaction, so racing
        # submissions can neither store an id twice nor overshoot a recipient's quota.
        stored = await self.store.store_message(incoming)
        if StoreOutcome.STORED not in stored.values():
            if StoreOutcome.CONFLICT in stored.values():
                raise Conflict("this id is already stored with another body", field="id")
            if StoreOutcome.OVER_QUOTA in stored.values():
                raise QuotaExceeded(
                    f"the recipient has {self.pending_quota} pending messages", field="to"
                )
        outcomes.update({r: str(o) for r, o in stored.items()})
        for rcpt, outcome in stored.items():
            if outcome == StoreOutcome.STORED:
                await self.push_new(rcpt, env.id)

    async def push_new(self, address: str, msg_id: str) -> None:
        """Mark a stored message delivered and push it to `address`'s live sockets."""
        if not self.hub.listening(address):
            return
        rows = await self.store.mark(address, [msg_id], MessageStatus.DELIVERED)
        if rows:  # empty when a socket's `authed` fetch took it first
            row = rows[0]
            self.hub.push(
                address, {"action": "message", "message": row.to_wire(), "state": row.seq}
            )
