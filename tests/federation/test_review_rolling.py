"""A reviewer's attacks on the rolling lease (federation/delivery.py, "Rolling lease").

Each test is a real worker (its lifespan, a real PeerClient over HTTP) against a real
scripted peer (test_delivery_rules.ScriptedPeer: checks every request's signature and
answers what the test says), on a MemoryStore or a real SQLiteStore; time is a FakeClock.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from clocks import FakeClock
from federation.test_delivery_rules import (  # noqa: F401  (the autouse fixture, too)
    ALICE,
    BOB,
    POLICY,
    SIGNER,
    WITHIN_S,
    Bounces,
    ScriptedPeer,
    Store,
    Txn,
    message_from,
    no_task_dies_unseen,
    stored,
    until,
    wall_ms,
)
from flux.federation.delivery import DeliveryWorker, QueuePolicy, backoff_delay_ms
from flux.federation.peers import PeerClient
from flux.store import SQLiteStore
from flux.store.base import Outbound


@dataclasses.dataclass
class Rig:
    clock: FakeClock
    store: Any
    peer: ScriptedPeer
    worker: DeliveryWorker
    bounces: Bounces
    delivery: list[dict[Any, Any]]  #: what on_delivery was told, in order

    async def queue(self, *envs: dict[str, Any], enqueued_at: int | None = None) -> None:
        at = self.clock() if enqueued_at is None else enqueued_at
        items = [Outbound(self.peer.name, e, f"h-{e['id']}", (e["to"],), "pass", at, "")
                 for e in envs]  # fmt: skip
        await self.store.enqueue(items)
        self.worker.kick(items)

    async def state(self) -> Any:
        return next(
            (s for s in await self.store.queue_state() if s.destination == self.peer.name), None
        )


@contextlib.asynccontextmanager
async def rig(
    policy: QueuePolicy, make_store: Any = Store, peer: ScriptedPeer | None = None
) -> AsyncIterator[Rig]:
    clock = FakeClock(wall_ms())
    store = make_store(clock=clock)
    if isinstance(store, SQLiteStore):
        await store.open()
    peer = peer or ScriptedPeer(clock)
    peer.clock = clock
    try:
        async with peer.running():
            peers = PeerClient(clock=clock, insecure_peers=[peer.name], ca_file=None)
            bounces = Bounces()
            worker = DeliveryWorker(store=store, signer=SIGNER, peers=peers, clock=clock,
                                    bounces=bounces, policy=policy, holder="a",
                                    rand=lambda: 0.5)  # fmt: skip
            told: list[dict[Any, Any]] = []
            worker.on_delivery = told.append
            async with peers.lifespan(None), worker.lifespan(None):
                yield Rig(clock, store, peer, worker, bounces, told)
    finally:
        if isinstance(store, SQLiteStore):
            await store.close()


def sent_ids(peer: ScriptedPeer) -> list[str]:
    return [m["id"] for t in peer.txns for m in t.doc["messages"]]


# -- 1. a sender's later mail overtakes its own unanswered mail ------------------------------
async def test_a_senders_later_mail_never_overtakes_its_unanswered_mail(tmp_path: Path) -> None:
    """PROTOCOL.md §10.3: one sender's messages reach the peer in queue order. A part whose
    request failed, and which also bounces a message (here one past the retry window),
    frees its sender in `_Roll.answered` before `_part` sets `stopped`: `_bounce` awaits
    the store (renew, sent_message), the roll wakes meanwhile, and `lease_more` (the
    sender no longer in `skip_senders`) hands it the sender's NEXT message, which is sent
    while the failed one waits for its retry."""
    policy = dataclasses.replace(POLICY, batch=2)
    async with rig(policy, lambda clock: SQLiteStore(tmp_path / "q.db", clock=clock)) as r:
        accepted: list[str] = []  #: the ids the peer took (answered 200), in order

        def answer(txn: Txn) -> tuple[int, Any]:
            if not r.peer.answered:  # the first request fails (the peer is still flaky)
                return 503, {"ok": False, "error": "unavailable"}
            accepted.extend(m["id"] for m in txn.doc["messages"])
            return stored(txn)

        r.peer.answer = answer
        old, first, second = (message_from(ALICE, f"m{n}") for n in range(3))
        # ALICE's mail after an outage: the oldest copy is past the retry window (it
        # bounces), the next ones are not; one lease of 2 takes `old` and `first`
        window_ago = r.clock() - policy.retry_window_ms
        await r.store.enqueue([
            Outbound(r.peer.name, e, f"h-{e['id']}", (e["to"],), "pass", at, "")
            for e, at in ((old, window_ago), (first, r.clock()), (second, r.clock()))
        ])  # fmt: skip
        r.worker.kick()
        await until(lambda: bool(r.bounces.told))
        await until(lambda: _attempts_at_least(r, 1))
        await asyncio.sleep(0.3)  # time for a wrong transaction to arrive
        r.clock.advance(policy.retry_cap_ms)  # the backoff passes: the failed one goes again
        r.worker.kick()
        await until(lambda: _empty(r))
    assert [b[0] for b in r.bounces.told] == [old["id"]]
    txns = [[m["content"] for m in t.doc["messages"]] for t in r.peer.txns]
    # ALICE's `first` failed; her `second` must not reach the peer before `first` has
    assert accepted == [first["id"], second["id"]], txns


async def _attempts_at_least(r: Rig, n: int) -> bool:
    s = await r.state()
    return s is not None and s.attempts >= n


async def _empty(r: Rig) -> bool:
    return await r.state() is None


# -- 2. the release gives one part's words (and recipients) to another sender ----------------
class GatedPeer(ScriptedPeer):
    """Holds a transaction carrying BOB's mail until ALICE's has been answered."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.alice_answered = asyncio.Event()

    async def _deliver(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()  # (aiohttp keeps it: the peer's read gets it again)
        senders = {m["from"] for m in json.loads(body)["messages"]}
        if BOB.address in senders:
            await asyncio.wait_for(self.alice_answered.wait(), WITHIN_S)
        try:
            return await super()._deliver(request)
        finally:
            if ALICE.address in senders:
                self.alice_answered.set()


async def test_a_waiting_part_is_told_its_own_reason_not_another_senders() -> None:
    """Two parts must wait: ALICE's (her recipient over quota: kept, words None, its retry
    text names her recipient) and BOB's (the peer answered 503). `_merged` keeps only the
    first part's retry and words, and `delivery_changes` gives every waiting message
    without a `kept` entry `verdict.words or peer_text(verdict.retry)`: BOB's sent mail
    then says ALICE's recipient's mailbox is full, naming the first 12 characters of her
    recipient's address, instead of "temporarily unavailable"."""
    clock = FakeClock(wall_ms())
    peer = GatedPeer(clock)

    def answer(txn: Txn) -> tuple[int, Any]:
        msgs = txn.doc["messages"]
        if msgs[0]["from"] == BOB.address:
            return 503, {"ok": False, "error": "unavailable"}
        results = [{"id": m["id"], "recipients": {m["to"]: "over_quota"}} for m in msgs]
        return 200, {"ok": True, "txn": txn.doc["txn"], "results": results}

    peer.answer = answer
    async with rig(POLICY, peer=peer) as r:
        alice, bob = message_from(ALICE, "a"), message_from(BOB, "b")
        await r.queue(alice, bob)
        await until(lambda: _attempts_at_least(r, 1))
        await until(lambda: any((BOB.address, bob["id"]) in d for d in r.delivery))
    (told,) = [d for d in r.delivery if (BOB.address, bob["id"]) in d]
    bob_state = told[(BOB.address, bob["id"])][bob["to"]]
    assert bob_state["state"] == "queued"
    assert alice["to"][:12] not in bob_state["error"], bob_state  # another sender's recipient
    assert "temporarily unavailable" in bob_state["error"], bob_state  # BOB's own reason


# -- 3. a crash in a part, then a clean release: the same part goes again at once -------------
class PartSettleCrashes(Store):
    """A store whose settle of a part (release=False) fails with a bug (not an outage),
    as a database refusing that part's data would; the release itself succeeds."""

    async def settle(self, lease: Any, done: Any, **kwargs: Any) -> bool:
        if kwargs.get("release") is False:
            raise RuntimeError("a bug in settling a part")
        return await super().settle(lease, done, **kwargs)


async def test_a_part_that_crashes_is_not_resent_at_once_without_backoff() -> None:
    """`_part` catches the crash and sets `stopped`, but puts nothing in `waiting`: the
    release then settles no retry, which resets the backoff (next_attempt_at = 0) and
    frees the destination, the worker leases it again at once and the same part is sent
    again, and again: a hot loop against the peer for as long as the bug lasts (the old
    `_work` turned a crash into a retry with the destination's backoff)."""
    async with rig(POLICY, PartSettleCrashes) as r:
        msg = message_from(ALICE, "x")
        await r.queue(msg)
        await r.peer.wait_txns(1)
        await asyncio.sleep(1.0)  # the clock does not move: no backoff can pass
    assert len(r.peer.txns) <= 2, f"{len(r.peer.txns)} transactions in 1 s"


# -- 4. the backoff of a destination that always fails one sender's part ---------------------
async def test_a_part_that_always_fails_backs_off_exponentially() -> None:
    """A part that fails every attempt (say a message the peer answers 500 to) while
    another sender's mail keeps getting through: each roll's answered part resets the
    destination's attempts (settle(release=False), `_Roll.settled`), so the failing part
    is retried at the base backoff forever (5 s by default, for the 5-day retry window)
    instead of backing off to retry_cap_ms as PROTOCOL.md §10.3 says."""
    policy = dataclasses.replace(POLICY, batch=10)
    async with rig(policy) as r:

        def answer(txn: Txn) -> tuple[int, Any]:
            if txn.doc["messages"][0]["from"] == ALICE.address:
                return 500, {"ok": False, "error": "internal_error"}
            return stored(txn)

        r.peer.answer = answer
        poison = message_from(ALICE, "poison")
        attempts = []
        state: Any = None
        for n in range(4):
            fine = message_from(BOB, f"fine {n}")
            await r.queue(fine, *([poison] if n == 0 else []))
            if n:  # the backoff has passed: the next roll takes both senders' mail
                r.clock.advance(state.next_attempt_at - r.clock())
                r.worker.kick()
            await until(lambda n=n: _released_after(r, n + 1))
            state = await r.state()
            attempts.append(state.attempts)
    assert attempts == [1, 2, 3, 4], attempts


async def _released_after(r: Rig, bob_settled: int) -> bool:
    """BOB's `bob_settled`-th message settled and the release that backs ALICE's off done."""
    done = [d for d in r.delivery for (sender, _) in d if sender == BOB.address]
    state = await r.state()
    return len(done) >= bob_settled and state is not None and state.next_attempt_at > r.clock()


def test_backoff_base() -> None:  # the numbers the argument above uses
    assert backoff_delay_ms(0, QueuePolicy(), lambda: 1.0) == 5_000
    assert backoff_delay_ms(20, QueuePolicy(), lambda: 1.0) == 3_600_000


# -- 5. the fan-out's look at a payload's head never names a wrong address (sound) ------------
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from flux.server.fanout import MailEvent, _address_of, _decode, _encode  # noqa: E402

_tricky = st.text(alphabet=st.sampled_from('ab"\\/,:{}\u00e9\u2028\x00\n'), max_size=12)


@given(process=_tricky | st.just("p1"), address=_tricky | st.just("fx1" + "a" * 40))
def test_the_address_read_from_a_payloads_head_is_the_decoded_one(
    process: str, address: str
) -> None:
    payload = _encode(MailEvent(address, "new", ()), process)
    read = _address_of(payload)
    assert read is None or read == _decode(payload)[1].address


@given(head=st.text(alphabet=st.sampled_from('{}"pa:,\\x'), max_size=30))
def test_a_forged_head_never_crashes_the_look(head: str) -> None:
    _address_of(head)  # a str or None, never an exception
