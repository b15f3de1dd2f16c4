"""The delivery worker's rules (federation/delivery.py), one test per rule, each proven
against a real peer: `ScriptedPeer` is an aiohttp server on 127.0.0.1 written for these
tests, which checks every request's signature as a FLUX receiver does and answers what the
test scripts. The worker runs as in a server (its lifespan, a real PeerClient over HTTP,
a MemoryStore queue); time is a FakeClock the test moves, so backoffs, lease lapses and the
retry window are exact values, never waits. Written to kill the mutants mutation testing
found (issue 10, "Proof"; tests/mutation/delivery.md lists what remains and why).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from cli.cli_helpers import free_port
from clocks import FakeClock
from flux.compat.federation import mesh_token_header
from flux.federation.delivery import (
    DELEGATION_TTL_MS,
    MAX_BATCH_BYTES,
    ROLL_MS,
    DeliveryWorker,
    QueuePolicy,
    Settlement,
    _by_size,
    _json,
    backoff_delay_ms,
    peer_text,
)
from flux.federation.mesh import HEADER, Mesh, MeshKind, MeshMode, check_mesh_header
from flux.federation.peers import PeerClient
from flux.federation.signing import verify_request
from flux.protocol import Identity, PublishedKey, ServerSigner, compose
from flux.protocol.chain import ChainVerdict, append_hop, check_can_append
from flux.protocol.errors import FluxError
from flux.store import MemoryStore, StoreUnavailable
from flux.store.base import DestinationState, Lease, Outbound

SIGNER = ServerSigner("flux.test", Identity(bytes(range(32))))
ALICE = Identity(bytes(range(1, 33)))
WITHIN_S = 15.0  #: the bound on every wait for an event (a failure, never a measurement)
POLICY = QueuePolicy(retry_base_ms=1_000, retry_cap_ms=3_600_000, lease_ms=60_000, timeout_s=10)
OUTAGE = "PostgreSQL at db.example is unreachable: connection refused"


def wall_ms() -> int:
    return int(time.time() * 1000)


# -- a real peer, scripted ------------------------------------------------------------------
@dataclass
class Txn:
    """One delivery transaction as the peer received it."""

    path: str
    headers: dict[str, str]
    raw: bytes
    doc: Any
    signature_error: str | None  #: why the signature did not verify, or None


def stored(txn: Txn) -> tuple[int, Any]:
    """The answer of a peer that stores every message for its `to`."""
    results = [{"id": m["id"], "recipients": {m["to"]: "stored"}} for m in txn.doc["messages"]]
    return 200, {"ok": True, "txn": txn.doc["txn"], "results": results}


class ScriptedPeer:
    """A peer server on 127.0.0.1: checks each delivery's signature (sender `SIGNER`, at
    the test clock's second, for this peer's name), records it, holds it while `gate` is
    clear, then answers `answer(txn)`: (status, JSON value or raw bytes)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.port = free_port()
        self.answer: Callable[[Txn], tuple[int, Any]] = stored
        self.delegate: str | None = None  #: the server /.well-known/flux names
        #: speak the prototype's dialect: its /federation/info, a bare envelope per /send
        self.prototype = False
        self.well_known_reads = 0
        self.txns: list[Txn] = []
        self.answered = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.changed = asyncio.Condition()

    @property
    def name(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _signature_error(self, request: web.Request, raw: bytes) -> str | None:
        def keys(server: str) -> list[PublishedKey]:
            return [PublishedKey(SIGNER.identity.public_key)] if server == SIGNER.name else []

        try:
            verify_request("POST", request.path, request.headers, raw, keys=keys,
                           now_s=self.clock() // 1000, authority=self.name, max_skew_s=0)  # fmt: skip
        except FluxError as exc:
            return exc.message
        return None

    async def _deliver(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        unsigned = self.prototype  # the prototype's requests are not signed
        why = None if unsigned else self._signature_error(request, raw)
        txn = Txn(request.path, dict(request.headers), raw, doc, why)
        async with self.changed:
            self.txns.append(txn)
            self.changed.notify_all()
        await self.gate.wait()
        status, body = self.answer(txn)
        async with self.changed:
            self.answered += 1
            self.changed.notify_all()
        if isinstance(body, bytes):
            return web.Response(status=status, body=body, content_type="application/json")
        return web.json_response(body, status=status)

    async def _well_known(self, request: web.Request) -> web.Response:
        self.well_known_reads += 1
        if self.delegate is None:
            return web.json_response({"ok": False, "error": "not_found"}, status=404)
        return web.json_response({"ok": True, "server": self.delegate})

    async def _info(self, request: web.Request) -> web.Response:
        if not self.prototype:  # FLUX's would publish keys: never asked in these tests
            return web.json_response({"ok": False, "error": "not_found"}, status=404)
        return web.json_response({"ok": True, "domain": self.name, "version": "2.1.1",
                                  "protocol": "1.0", "federation": True})  # fmt: skip

    async def wait_txns(self, count: int) -> list[Txn]:
        async with asyncio.timeout(WITHIN_S), self.changed:
            await self.changed.wait_for(lambda: len(self.txns) >= count)
        return self.txns

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ScriptedPeer]:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/federation/deliver", self._deliver)
        app.router.add_post("/mesh/relay", self._deliver)
        app.router.add_get("/.well-known/flux", self._well_known)
        app.router.add_post("/send", self._deliver)
        app.router.add_get("/federation/info", self._info)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        try:
            yield self
        finally:
            self.gate.set()
            await runner.cleanup()


# -- the worker's surroundings --------------------------------------------------------------
class Store(MemoryStore):
    """A MemoryStore whose named calls raise what `failing` says (as a store whose database
    is down does), and which records what each lease renewal answered."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.failing: dict[str, BaseException] = {}
        self.renewals: list[bool] = []

    def __getattribute__(self, name: str) -> Any:
        failing = object.__getattribute__(self, "failing")
        if name in failing:
            exc = failing[name]

            async def fail(*args: Any, **kwargs: Any) -> Any:
                raise exc

            return fail
        return super().__getattribute__(name)

    async def renew(self, lease: Lease, now_ms: int, lease_ms: int) -> bool:
        renewed = await super().renew(lease, now_ms, lease_ms)
        self.renewals.append(renewed)
        return renewed


@dataclass
class Bounces:
    """The bounce sink's side of the worker: what it was asked to bounce; `failing` maps a
    message id to the exception telling the sender about it raises."""

    told: list[tuple[str, list[str], str]] = field(default_factory=list)
    failing: dict[str, BaseException] = field(default_factory=dict)

    async def bounce(self, item: Outbound, recipients: Any, reason: str) -> None:
        msg_id = item.envelope["id"]
        if msg_id in self.failing:
            raise self.failing.pop(msg_id)
        self.told.append((msg_id, list(recipients), reason))


@dataclass
class Rig:
    clock: FakeClock
    store: Store
    peer: ScriptedPeer
    worker: DeliveryWorker
    bounces: Bounces
    others: list[ScriptedPeer]  #: more scripted peers (domains that delegate, say)
    settled: list[tuple[Lease, Settlement]] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def on_settled(self, lease: Lease, verdict: Settlement) -> None:
        assert isinstance(lease, Lease) and isinstance(verdict, Settlement)
        self.settled.append((lease, verdict))

        async def notify() -> None:
            async with self.changed:
                self.changed.notify_all()

        asyncio.get_running_loop().create_task(notify())

    async def settlements(self, count: int) -> list[tuple[Lease, Settlement]]:
        """Until `count` attempts have been settled (a lease holder's settlement)."""
        async with asyncio.timeout(WITHIN_S), self.changed:
            await self.changed.wait_for(lambda: len(self.settled) >= count)
        return self.settled

    async def queue(
        self, *envelopes: dict[str, Any], destination: str | None = None, enqueued_at: int | None = None,
        via: str = "", cv: str = "pass", recipients: tuple[str, ...] | None = None,
    ) -> None:  # fmt: skip
        at = self.clock() if enqueued_at is None else enqueued_at
        await self.store.enqueue([
            Outbound(destination or self.peer.name, env, f"h-{env['id']}",
                     recipients or (env["to"],), cv, at, via)
            for env in envelopes
        ])  # fmt: skip
        self.worker.kick()

    async def state(self, destination: str | None = None) -> DestinationState | None:
        wanted = destination or self.peer.name
        return next((s for s in await self.store.queue_state() if s.destination == wanted), None)

    def backoff(self, attempts: int) -> int:
        return backoff_delay_ms(attempts, self.worker.policy, self.worker.rand)


def message(content: str = "hello", at: int | None = None) -> dict[str, Any]:
    to = Identity.generate().address
    return compose(ALICE, to, content, now_ms=at or wall_ms()).primary


@contextlib.asynccontextmanager
async def rig(
    policy: QueuePolicy = POLICY, *, meshes: Callable[[str], dict[str, Mesh]] | None = None,
    others: int = 0, closed: tuple[str, ...] = (), holder: str | None = "a", hook: bool = True,
) -> AsyncIterator[Rig]:  # fmt: skip
    """A worker (signing as SIGNER) with its store, a scripted peer (and `others` more),
    a recording sink; `closed` names more peers it may reach (where nothing listens);
    `meshes(peer name)` the meshes it is in."""
    clock = FakeClock(wall_ms())
    store = Store(clock=clock)
    async with contextlib.AsyncExitStack() as stack:
        peer, *more = [
            await stack.enter_async_context(ScriptedPeer(clock).running())
            for _ in range(1 + others)
        ]
        names = [peer.name, *(p.name for p in more), *closed]
        peers = PeerClient(clock=clock, insecure_peers=names, ca_file=None,
                           meshes=meshes(peer.name) if meshes else None)  # fmt: skip
        bounces = Bounces()
        worker = DeliveryWorker(store=store, signer=SIGNER, peers=peers, clock=clock,
                                bounces=bounces, policy=policy, holder=holder, rand=lambda: 0.5)  # fmt: skip
        the_rig = Rig(clock, store, peer, worker, bounces, more)
        if hook:
            worker.on_settled = the_rig.on_settled
        async with peers.lifespan(None), worker.lifespan(None):
            yield the_rig


async def until(condition: Callable[[], Any]) -> None:
    """Poll `condition` (sync or async) until it holds, bounded by WITHIN_S."""
    async with asyncio.timeout(WITHIN_S):
        while True:
            value = condition()
            if not isinstance(value, bool):
                value = await value
            if value:
                return
            await asyncio.sleep(0.02)  # polling a condition, bounded by the timeout


def logged(caplog: pytest.LogCaptureFixture, start: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith(start)]


@pytest.fixture(autouse=True)
async def no_task_dies_unseen() -> AsyncIterator[None]:
    """Every test: no worker task ends with an exception nobody retrieved."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield
    gc.collect()
    await asyncio.sleep(0)
    loop.set_exception_handler(None)
    assert not errors, errors


# -- pure rules -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("attempts", "rand", "base", "cap", "delay"),
    [
        (0, 0.0, 1_000, 60_000, 500),  # half fixed...
        (0, 1.0, 1_000, 60_000, 1_000),  # ...half random
        (0, 0.5, 1_000, 60_000, 750),
        (1, 0.0, 1_000, 60_000, 1_000),  # doubles with each attempt
        (3, 0.5, 1_000, 60_000, 6_000),
        (10, 0.0, 1_000, 60_000, 30_000),  # capped
        (10, 1.0, 1_000, 60_000, 60_000),
        (10_000, 0.0, 1, 2**40, 2**31),  # the exponent stops at 32: no huge integers
    ],
)
def test_backoff_is_exponential_capped_with_equal_jitter(
    attempts: int, rand: float, base: int, cap: int, delay: int
) -> None:
    policy = QueuePolicy(retry_base_ms=base, retry_cap_ms=cap)
    assert backoff_delay_ms(attempts, policy, lambda: rand) == delay


@pytest.mark.parametrize(
    ("value", "limit", "text"),
    [
        (None, 500, None),  # None stays None
        (5, 500, "<int>"),  # not a string: its type's name, never its repr
        ({"x": "\x00"}, 500, "<dict>"),
        ("ok\x00\x1f\x7f\x9f\ud800 fine", 500, "ok\ufffd\ufffd\ufffd\ufffd\ufffd fine"),
        ("abc", 2, "ab"),
        ("\n" * 3, 500, "\ufffd" * 3),
    ],
)
def test_peer_text_is_sanitised_and_capped(value: Any, limit: int, text: str | None) -> None:
    assert peer_text(value, limit) == text


def test_peer_text_keeps_500_characters_by_default() -> None:
    assert peer_text("é" * 600) == "é" * 500


@pytest.mark.parametrize(
    ("sizes", "groups"),
    [
        ([4, 4], [[4, 4]]),  # 4+1 + 4+1 = 10: exactly the limit still fits
        ([4, 5], [[4], [5]]),  # 11: over
        ([4, 5, 3], [[4], [5, 3]]),  # a new group starts from nothing
        ([3, 3, 3], [[3, 3], [3]]),  # sizes add up
        ([4, 4, 1], [[4, 4], [1]]),
        ([12], [[12]]),  # alone over the limit: still goes, alone
        ([2, 12, 2], [[2], [12], [2]]),
    ],
)
def test_batches_split_by_size_in_order(sizes: list[int], groups: list[list[int]]) -> None:
    parts = [bytes([65 + i]) * n for i, n in enumerate(sizes)]
    split = _by_size(parts, 10)
    assert [[len(p) for p in g] for g in split] == groups
    assert [p for g in split for p in g] == parts  # order kept, nothing lost


# -- delivery through a real peer -----------------------------------------------------------
async def test_a_delivery_is_one_signed_compact_transaction_sealed_to_the_peer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "flux.federation")
    async with rig() as r:
        # a message that arrived through another server: this hop carries our verdict
        first = ServerSigner("origin.test", Identity(bytes(range(2, 34))))
        relayed = append_hop(message("né ✉"), first, next_hop=SIGNER.name, now_ms=r.clock())
        plain = message("hello")
        await r.queue(relayed, cv="fail")
        await r.queue(plain)
        lease, verdict = (await r.settlements(1))[0]
    (txn,) = r.peer.txns
    assert txn.path == "/federation/deliver" and txn.signature_error is None
    assert HEADER not in txn.headers
    assert txn.raw.startswith(b'{"txn":"') and "né ✉".encode() in txn.raw  # compact UTF-8
    assert set(txn.doc) == {"txn", "from_server", "messages"}
    assert len(txn.doc["txn"]) == 32 and int(txn.doc["txn"], 16) >= 0
    assert txn.doc["from_server"] == SIGNER.name
    assert [m["id"] for m in txn.doc["messages"]] == [relayed["id"], plain["id"]]
    for sent, hops in zip(txn.doc["messages"], (2, 1), strict=True):
        hop = sent["integrity_chain"][-1]
        assert len(sent["integrity_chain"]) == hops
        assert (hop["server"], hop["next"], hop["t"]) == (SIGNER.name, r.peer.name, r.clock())
        assert sent["route"][-1] == {"server": SIGNER.name, "t": r.clock()}
    assert txn.doc["messages"][0]["integrity_chain"][-1]["cv"] == "fail"  # the queued verdict
    assert (lease.destination, lease.holder) == (r.peer.name, "a#1")
    assert verdict == Settlement([1, 2], [], None)
    assert await r.store.queue_state() == [] and r.bounces.told == []
    assert [r.getMessage() for r in logged(caplog, "event=delivered")] == [
        f"event=delivered destination={r.peer.name} sent=2 done=2 bounced=0"
    ]


async def test_the_peers_answer_decides_per_message_what_is_final() -> None:
    """`recipients`: delivered (a recipient not hosted there bounces); a transient refusal
    stays queued with the destination's backoff, as does an answer that is not a result at
    all or refuses with no code (the peer may have stored it: PROTOCOL.md §10.7); any other
    refusal bounces with the peer's words, sanitised and capped."""
    async with rig() as r:
        two = (Identity.generate().address, Identity.generate().address)
        ok, half, spam, junk, odd, *transient = (message(f"m{i}") for i in range(8))
        answers: dict[str, Any] = {
            ok["id"]: {"recipients": {ok["to"]: "stored"}},
            half["id"]: {"recipients": {two[0]: "stored", two[1]: "not_hosted"}},
            spam["id"]: {"refused": "spam\x00" + "s" * 100, "error": "no\x1b[31m" + "e" * 600},
            junk["id"]: "not a result",
            odd["id"]: {"refused": 5},
        }
        for msg, code in zip(transient, ("quota_exceeded", "unavailable", "internal_error"), strict=True):  # fmt: skip
            answers[msg["id"]] = {"refused": code}
        r.peer.answer = lambda txn: (200, {"txn": txn.doc["txn"], "results": [
            answers[m["id"]] for m in txn.doc["messages"]]})  # fmt: skip
        await r.queue(ok)
        await r.queue(half, recipients=two)
        await r.queue(spam, junk, odd, *transient)
        [(_, verdict)] = await r.settlements(1)
        state = await r.state()
    assert verdict.retry == "refused: internal_error"
    assert sorted(verdict.done) == [1, 2, 3]
    spam_reason = (
        "refused by the receiving server: spam\ufffd" + "s" * 59 + " (no\ufffd[31m" + "e" * 393 + ")"
    )  # fmt: skip
    assert r.bounces.told == [
        (half["id"], [two[1]], "the receiving server does not host this address"),
        (spam["id"], [spam["to"]], spam_reason),
    ]
    assert state is not None and state.queued == 5  # the transient three and the two unsure
    assert (state.attempts, state.last_error) == (1, "refused: internal_error")
    assert state.next_attempt_at == r.clock() + r.backoff(0)


FAILURES = {
    "unavailable": (lambda txn: (503, {"ok": False, "error": "unavailable"}), "HTTP 503 unavailable"),
    # only a 200 counts, whatever the body says
    "500 with results": (lambda txn: (500, stored(txn)[1]), "HTTP 500"),
    "another txn": (lambda txn: (200, {**stored(txn)[1], "txn": "0" * 32}), "HTTP 200"),
    "not JSON": (lambda txn: (200, b"<html>"), "HTTP 200"),
    "a list": (lambda txn: (200, [stored(txn)[1]]), "HTTP 200"),
    "a result short": (
        lambda txn: (200, {**stored(txn)[1], "results": stored(txn)[1]["results"][:-1]}),
        "the answer does not list one result per message",
    ),
    "no results": (
        lambda txn: (200, {"txn": txn.doc["txn"]}),
        "the answer does not list one result per message",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", FAILURES)
async def test_a_failed_transaction_keeps_the_batch_and_backs_off(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "flux.federation")
    answer, why = FAILURES[case]
    async with rig() as r:
        r.peer.answer = answer
        await r.queue(message("one"), message("two"))
        await r.settlements(1)
        first = await r.state()
        assert first is not None and (first.queued, first.attempts, first.last_error) == (2, 1, why)
        assert first.next_attempt_at == r.clock() + r.backoff(0) and r.bounces.told == []
        # the worker's own timer retries once the backoff has passed (no kick)
        r.clock.advance(r.backoff(0))
        await r.settlements(2)
        second = await r.state()
    assert second is not None and (second.queued, second.attempts) == (2, 2)
    assert second.next_attempt_at == r.clock() + r.backoff(1)
    assert [x.getMessage() for x in logged(caplog, "event=delivery_deferred")] == [
        f"event=delivery_deferred destination={r.peer.name} attempts={n} reason={why}"
        for n in (1, 2)
    ]


async def test_an_unreachable_or_silent_peer_is_a_transient_failure() -> None:
    closed = f"127.0.0.1:{free_port()}"  # nothing listens there
    async with rig(dataclasses.replace(POLICY, timeout_s=0.5), closed=(closed,)) as r:
        await r.queue(message("to nowhere"), destination=closed)
        r.peer.gate.clear()  # the peer takes the batch and never answers in time
        await r.queue(message("to a silent peer"))
        await r.settlements(2)
        refused, silent = await r.state(closed), await r.state()
    assert refused is not None and refused.attempts == 1 and refused.last_error is not None
    assert refused.last_error.startswith("ClientConnectorError: ")
    assert silent is not None and (silent.attempts, silent.last_error) == (1, "TimeoutError: ")


async def test_a_success_resets_the_backoff_of_what_is_left() -> None:
    async with rig(dataclasses.replace(POLICY, batch=2)) as r:
        r.peer.answer = FAILURES["unavailable"][0]
        await r.queue(message("1"), message("2"), message("3"))
        await r.settlements(1)
        # the third is held by the operator: the roll ends with what is sendable, answered
        (third,) = [q for q in await r.store.queued() if q.item.envelope["content"] == "3"]
        assert await r.store.hold_messages([third.qid], True) == 1
        r.peer.answer = stored
        r.clock.advance(r.backoff(0))
        r.worker.kick()
        _, verdict = (await r.settlements(2))[1]
        assert verdict == Settlement([1, 2], [], None)
        await until(lambda: _released(r))
        left = await r.state()
        # what the lease did not take is due now, its backoff forgotten
        assert left is not None and left.queued == 1
        assert (left.attempts, left.next_attempt_at, left.last_error) == (0, 0, None)
        assert [len(t.doc["messages"]) for t in r.peer.txns] == [2, 2]


async def _released(r: Rig) -> bool:
    state = await r.state()
    return state is not None and state.leased_until == 0


async def test_mesh_copies_go_to_the_relay_with_the_mesh_and_are_not_bounced_there() -> None:
    third = f"127.0.0.1:{free_port()}"  # a member listed, never reached here

    def meshes(peer: str) -> dict[str, Mesh]:
        return {"m1": Mesh("m1", "t" * 32, MeshMode.HYBRID, (SIGNER.name, peer, third))}

    async with rig(meshes=meshes) as r:
        msg = message("through the mesh")
        r.peer.answer = lambda txn: (200, {"txn": txn.doc["txn"], "results": [
            {"recipients": {msg["to"]: "not_hosted"}}]})  # fmt: skip
        await r.queue(msg, via="m1")
        [(_, verdict)] = await r.settlements(1)
    (txn,) = r.peer.txns
    assert txn.path == "/mesh/relay" and txn.signature_error is None
    assert txn.doc["mesh_peers"] == [SIGNER.name, r.peer.name, third]
    mesh = meshes(r.peer.name)
    assert check_mesh_header(txn.headers, mesh, SIGNER.name) == mesh["m1"]
    assert verdict == Settlement([1], [], None) and r.bounces.told == []  # another member may


async def test_expired_and_unsealable_mail_is_bounced_without_being_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A copy older than the retry window bounces, naming the last failure; one this server
    could not seal without the peer refusing it bounces at once, in words; the rest goes."""
    caplog.set_level(logging.INFO, "flux.federation")
    async with rig() as r:
        window = POLICY.retry_window_ms
        r.peer.answer = FAILURES["unavailable"][0]
        old, good = message("old"), message("good")
        stuffed = {**message("stuffed"), "subject": "s" * 5_000}
        with pytest.raises(FluxError) as refusal:
            check_can_append(stuffed)
        await r.queue(old, enqueued_at=r.clock() - window + 1_000)
        await r.queue(stuffed, good)
        _, first = (await r.settlements(1))[0]
        assert (first.done, first.retry) == ([2], "HTTP 503 unavailable")
        assert r.bounces.told == [
            (stuffed["id"], [stuffed["to"]], f"not sent: {refusal.value.message}")
        ]
        # exactly the window later: `old` is too old; a new unsealable one joins the lease
        r.peer.answer = stored
        r.bounces.told.clear()
        r.clock.advance(1_000)
        stuffed2 = {**message("stuffed again"), "subject": "t" * 5_000}
        await r.queue(stuffed2)
        _, second = (await r.settlements(2))[1]
        assert await r.store.queue_state() == []
    assert sorted(second.done) == [1, 3, 4] and second.retry is None
    assert r.bounces.told == [
        (old["id"], [old["to"]], "not delivered within 120 h (last attempt: HTTP 503 unavailable)"),
        (stuffed2["id"], [stuffed2["to"]], f"not sent: {refusal.value.message}"),
    ]  # fmt: skip
    assert [[m["id"] for m in t.doc["messages"]] for t in r.peer.txns] == [
        [old["id"], good["id"]], [good["id"]]
    ]  # fmt: skip
    assert logged(caplog, "event=delivered")[-1].getMessage() == (
        f"event=delivered destination={r.peer.name} sent=1 done=1 bounced=0"
    )


async def test_a_lease_with_nothing_sendable_sends_nothing_and_clears_the_backoff() -> None:
    async with rig() as r:
        r.peer.answer = FAILURES["unavailable"][0]
        await r.queue(message("fails first"))
        await r.settlements(1)
        r.clock.advance(POLICY.retry_window_ms)
        await r.queue({**message("unsealable"), "subject": "u" * 5_000})
        _, verdict = (await r.settlements(2))[1]
    assert verdict.done == [1, 2] and verdict.retry is None and len(verdict.bounces) == 2
    assert len(r.peer.txns) == 1 and await r.store.queue_state() == []


async def test_a_send_over_the_size_limit_goes_in_transactions_in_order() -> None:
    # 65,536 quotes: each escaped in JSON, so ~128 KiB a message, 64 of them per 8 MiB
    msgs = [message('"' * 65_536) for _ in range(70)]
    async with rig() as r:
        await r.queue(*msgs)
        [(_, verdict)] = await r.settlements(1)
    assert len(r.peer.txns) == 2 and all(t.signature_error is None for t in r.peer.txns)
    assert all(len(t.raw) <= MAX_BATCH_BYTES for t in r.peer.txns)
    assert [m["id"] for t in r.peer.txns for m in t.doc["messages"]] == [m["id"] for m in msgs]
    assert verdict == Settlement(list(range(1, 71)), [], None)


async def test_a_long_send_renews_its_lease(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "flux.federation")
    async with rig(dataclasses.replace(POLICY, lease_ms=300)) as r:  # renewed every 100 ms
        r.peer.gate.clear()
        await r.queue(message("slow"))
        await r.peer.wait_txns(1)
        tasks = [t.get_name() for t in asyncio.all_tasks()]
        assert tasks.count(f"flux-deliver-{r.peer.name}") == 1
        r.clock.advance(200)
        await until(lambda: _leased_until(r, r.clock() + 300))
        assert await r.store.lease("b#1", r.clock() + 250, 300, 100) is None  # still held
        r.peer.gate.set()
        [(_, verdict)] = await r.settlements(1)
    assert verdict == Settlement([1], [], None) and await r.store.queue_state() == []
    assert not logged(caplog, "event=lease_lost") and not logged(caplog, "event=stale_settle")


async def _leased_until(r: Rig, value: int) -> bool:
    state = await r.state()
    return state is not None and state.leased_until == value


async def test_a_lost_lease_stops_the_send_and_leaves_the_new_holder_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "flux.federation")
    msgs = [message('"' * 65_536) for _ in range(70)]  # two transactions
    async with rig(dataclasses.replace(POLICY, lease_ms=300)) as r:
        r.peer.gate.clear()
        await r.queue(*msgs)
        await r.peer.wait_txns(1)
        r.clock.advance(301)  # lapsed; another process takes the destination at once
        taken = await r.store.lease("b#1", r.clock(), 60_000, 100)
        assert taken is not None
        await until(lambda: False in r.store.renewals)
        r.peer.gate.set()
        await until(lambda: bool(logged(caplog, "event=lease_lost")))
        state = await r.state()
    assert len(r.peer.txns) == 1  # the second transaction was never sent
    assert [x.getMessage() for x in logged(caplog, "event=lease_lost")] == [
        f"event=lease_lost destination={r.peer.name} holder=a#1"
    ]
    assert r.settled == [] and r.bounces.told == []
    assert state is not None and (state.queued, state.attempts) == (70, 0)
    assert state.leased_until == r.clock() + 60_000  # still the new holder's


async def test_only_the_lease_holder_settles(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "flux.federation")
    async with rig() as r:  # a 60 s lease: no renewal comes before the answer
        r.peer.answer = FAILURES["unavailable"][0]
        r.peer.gate.clear()
        await r.queue(message("late"))
        await r.peer.wait_txns(1)
        r.clock.advance(POLICY.lease_ms + 1)
        assert await r.store.lease("b#1", r.clock(), POLICY.lease_ms, 100) is not None
        r.peer.gate.set()
        await until(lambda: bool(logged(caplog, "event=stale_settle")))
        state = await r.state()
    assert [x.getMessage() for x in logged(caplog, "event=stale_settle")] == [
        f"event=stale_settle destination={r.peer.name} holder=a#1"
    ]
    # the stale worker's failure wrote no backoff over the new holder's lease
    assert state is not None and (state.attempts, state.next_attempt_at, state.last_error) == (0, 0, None)  # fmt: skip
    assert state.leased_until == r.clock() + POLICY.lease_ms and r.settled == []


async def test_a_worker_that_lost_its_lease_sends_no_bounce(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bounce cannot be taken back: a refusal learnt after the lease lapsed is left to the
    new holder (which asks again), so the sender never gets two notices for one message."""
    caplog.set_level(logging.WARNING, "flux.federation")
    async with rig() as r:  # a 60 s lease: no renewal comes before the answer
        r.peer.answer = lambda txn: (200, {"txn": txn.doc["txn"], "results": [
            {"refused": "spam"} for _ in txn.doc["messages"]]})  # fmt: skip
        r.peer.gate.clear()
        await r.queue(message("refused late"))
        await r.peer.wait_txns(1)
        r.clock.advance(POLICY.lease_ms + 1)
        assert await r.store.lease("b#1", r.clock(), POLICY.lease_ms, 100) is not None
        r.peer.gate.set()
        await until(lambda: bool(logged(caplog, "event=lease_lost")))
        state = await r.state()
    assert r.bounces.told == [] and r.settled == []
    assert state is not None and state.leased_until == r.clock() + POLICY.lease_ms  # b#1's


async def test_each_lease_has_a_holder_name_of_its_own(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "flux.federation")
    async with rig(holder=None) as r:
        r.peer.gate.clear()
        await r.queue(message("first"))
        await r.peer.wait_txns(1)
        r.clock.advance(POLICY.lease_ms + 1)  # lapsed: the same worker takes it again
        r.worker.kick()
        await r.peer.wait_txns(2)
        r.peer.gate.set()
        await until(lambda: bool(logged(caplog, "event=stale_settle")))
        await r.settlements(1)
    (stale,) = logged(caplog, "event=stale_settle")
    assert stale.getMessage().startswith(f"event=stale_settle destination={r.peer.name} holder=")
    first_holder = stale.getMessage().rsplit("holder=", 1)[1]
    assert first_holder == f"{r.worker.holder}#1" and r.worker.holder.startswith(f"{SIGNER.name}/")
    # each poll draws the next number: the new lease's is later, never the stale one's
    [(lease, _)] = r.settled
    prefix, number = lease.holder.rsplit("#", 1)
    assert prefix == r.worker.holder and int(number) > 1


async def test_a_store_outage_mid_attempt_is_a_retry_not_a_loss(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "flux.federation")
    async with rig() as r:
        r.peer.answer = FAILURES["unavailable"][0]
        msg = message("kept")
        await r.queue(msg)
        await r.settlements(1)
        # expired now, and naming the last failure needs the store, which is down
        r.clock.advance(POLICY.retry_window_ms)
        r.store.failing["queue_state"] = StoreUnavailable(OUTAGE)
        r.worker.kick()
        _, verdict = (await r.settlements(2))[1]
        del r.store.failing["queue_state"]
        state = await r.state()
    assert verdict == Settlement([], [], "the store was unavailable") and r.bounces.told == []
    assert state is not None and state.queued == 1
    assert (state.attempts, state.last_error) == (2, "the store was unavailable")
    assert [x.getMessage() for x in logged(caplog, "event=store_unavailable where=delivery ")] == [
        f"event=store_unavailable where=delivery destination={r.peer.name} error={OUTAGE}"
    ]


async def test_a_crash_in_one_attempt_is_logged_and_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "flux.federation")
    async with rig() as r:
        await r.queue(message("bad verdict"), cv="bogus")
        [(_, verdict)] = await r.settlements(1)
        state = await r.state()
    why = "internal: 'bogus' is not a valid ChainVerdict"
    assert verdict == Settlement([], [], why)
    assert state is not None and (state.attempts, state.last_error) == (1, why)
    (crash,) = logged(caplog, "event=delivery_crashed")
    assert crash.getMessage() == f"event=delivery_crashed destination={r.peer.name}"
    assert crash.exc_info is not None


async def test_a_bounce_that_cannot_be_stored_keeps_its_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "flux.federation")
    async with rig() as r:
        spam, fine, broken = message("spam"), message("fine"), message("sink bug")
        refused = {spam["id"], broken["id"]}
        r.peer.answer = lambda txn: (200, {"txn": txn.doc["txn"], "results": [
            {"refused": "spam"} if m["id"] in refused else {"recipients": {m["to"]: "stored"}}
            for m in txn.doc["messages"]]})  # fmt: skip
        r.bounces.failing[spam["id"]] = StoreUnavailable(OUTAGE)
        r.bounces.failing[broken["id"]] = RuntimeError("a bug in the sink")
        await r.queue(spam, fine, broken)
        _, verdict = (await r.settlements(1))[0]
        state = await r.state()
        assert verdict.done == [2, 3] and verdict.retry == "the store was unavailable"
        assert state is not None and state.queued == 1
        assert (state.attempts, state.last_error) == (1, "the store was unavailable")
        r.clock.advance(r.backoff(0))
        r.worker.kick()
        await r.settlements(2)
    assert r.bounces.told == [
        (spam["id"], [spam["to"]], "refused by the receiving server: spam ()")
    ]
    assert await r.store.queue_state() == []
    assert [x.getMessage() for x in logged(caplog, "event=store_unavailable where=bounce")] == [
        f"event=store_unavailable where=bounce id={spam['id']} error={OUTAGE}"
    ]
    (bug,) = logged(caplog, "event=bounce_failed")
    assert bug.getMessage() == f"event=bounce_failed id={broken['id']}" and bug.exc_info


async def test_store_outages_are_logged_and_outlived(caplog: pytest.LogCaptureFixture) -> None:
    """The poll, the renewal and the settlement each log the store's error and carry on."""
    caplog.set_level(logging.WARNING, "flux.federation")
    async with rig(dataclasses.replace(POLICY, lease_ms=300)) as r:
        r.store.failing["next_due"] = StoreUnavailable(OUTAGE)
        r.worker.kick()
        await until(lambda: bool(logged(caplog, "event=store_unavailable where=delivery_poll")))
        r.store.failing["next_due"] = RuntimeError("a bug in the store")
        r.worker.kick()
        await until(lambda: bool(logged(caplog, "event=queue_poll_failed")))
        del r.store.failing["next_due"]
        r.peer.gate.clear()
        r.store.failing["renew"] = StoreUnavailable(OUTAGE)
        await r.queue(message("through it all"))
        await until(lambda: bool(logged(caplog, "event=store_unavailable where=renew")))
        del r.store.failing["renew"]
        r.store.failing["settle"] = StoreUnavailable(OUTAGE)
        r.peer.gate.set()
        await until(lambda: bool(logged(caplog, "event=store_unavailable where=settle")))
        del r.store.failing["settle"]
        await r.settlements(1)
        assert await r.store.queue_state() == []
    dest = r.peer.name
    assert logged(caplog, "event=store_unavailable where=delivery_poll")[0].getMessage() == (
        f"event=store_unavailable where=delivery_poll error={OUTAGE}"
    )
    (bug, *_) = logged(caplog, "event=queue_poll_failed")
    assert bug.getMessage() == "event=queue_poll_failed" and bug.exc_info
    assert logged(caplog, "event=store_unavailable where=renew")[0].getMessage() == (
        f"event=store_unavailable where=renew destination={dest} error={OUTAGE}"
    )
    assert logged(caplog, "event=store_unavailable where=settle")[0].getMessage() == (
        f"event=store_unavailable where=settle destination={dest} error={OUTAGE}"
    )


async def test_hearing_from_a_server_wakes_the_domains_it_serves() -> None:
    async with rig(dataclasses.replace(POLICY, retry_base_ms=3_600_000), others=1) as r:
        (domain,) = r.others
        domain.delegate = r.peer.name  # the domain's mail is served by the scripted peer
        r.peer.answer = FAILURES["unavailable"][0]
        await r.queue(message("for the domain"), destination=domain.name)
        await r.settlements(1)
        waiting = await r.state(domain.name)
        assert waiting is not None and waiting.next_attempt_at > r.clock()
        r.peer.answer = stored
        for _ in range(100):  # let the worker finish its round and go to sleep
            await asyncio.sleep(0)
        await r.worker.peer_heard("elsewhere.test")  # someone else: nothing wakes
        assert await r.state(domain.name) == waiting
        await r.worker.peer_heard(r.peer.name)
        # looked at now, not at the worker's next idle check: within a few turns of the
        # event loop (no clock involved) the woken destination is leased
        for _ in range(100):
            if await _taken(r, domain.name):
                break
            await asyncio.sleep(0)
        assert await _taken(r, domain.name)
        await r.settlements(2)
        assert await r.store.queue_state() == []
    assert len(r.peer.txns) == 2 and domain.txns == []


async def _taken(r: Rig, destination: str) -> bool:
    state = await r.state(destination)
    return state is None or state.leased_until > 0


async def test_a_delegation_is_trusted_for_an_hour() -> None:
    async with rig(others=1) as r:
        (domain,) = r.others
        domain.delegate = r.peer.name
        reads = []
        for n, step in enumerate((0, DELEGATION_TTL_MS - 1, 1), start=1):
            r.clock.advance(step)
            await r.queue(message(f"m{n}"), destination=domain.name)
            await r.settlements(n)
            reads.append(domain.well_known_reads)
    assert reads == [1, 1, 2]  # read, cached, read again once an hour old
    assert len(r.peer.txns) == 3 and domain.txns == []


async def test_one_slot_works_destinations_one_after_the_other() -> None:
    other = f"127.0.0.1:{free_port()}"
    # no on_settled hook: the worker as it runs without metrics
    async with rig(dataclasses.replace(POLICY, parallel=1), closed=(other,), hook=False) as r:
        await r.queue(message("to a closed port"), destination=other)
        await r.queue(message("to the peer"))
        await until(lambda: _attempted_both(r, other))
        # and a finished batch's task is let go (a server runs for months)
        await until(lambda: not _live_tasks("flux-deliver-"))
    assert len(r.peer.txns) == 1


def _live_tasks(prefix: str) -> list[asyncio.Task[Any]]:
    gc.collect()
    return [t for t in gc.get_objects() if isinstance(t, asyncio.Task) and t.get_name().startswith(prefix)]  # fmt: skip


async def _attempted_both(r: Rig, other: str) -> bool:
    state = await r.state(other)
    return state is not None and state.attempts == 1 and await r.state() is None


async def test_leaving_the_lifespan_cancels_batches_in_flight_unsettled() -> None:
    clock = FakeClock(wall_ms())
    store = Store(clock=clock)
    async with ScriptedPeer(clock).running() as peer:
        peers = PeerClient(clock=clock, insecure_peers=[peer.name], ca_file=None)
        worker = DeliveryWorker(store=store, signer=SIGNER, peers=peers, clock=clock,
                                bounces=Bounces(), policy=POLICY, holder="a")  # fmt: skip
        async with peers.lifespan(None):
            async with worker.lifespan(None):
                peer.gate.clear()
                msg = message("in flight at shutdown")
                await store.enqueue([Outbound(peer.name, msg, "h", (msg["to"],), "pass", clock())])
                worker.kick()
                await peer.wait_txns(1)
            assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("flux-deliver-")]
            peer.gate.set()
        (state,) = await store.queue_state()
    assert (state.queued, state.attempts, state.last_error) == (1, 0, None)
    assert state.leased_until == clock() + POLICY.lease_ms  # it goes again once this lapses


@pytest.mark.parametrize(
    ("failure", "event"),
    [(StoreUnavailable(OUTAGE), "event=store_unavailable"), (RuntimeError("bug"), "event=queue_poll_failed")],
)  # fmt: skip
async def test_a_failed_poll_is_retried_after_a_pause_not_at_once(
    failure: Exception, event: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "flux.federation")
    async with rig() as r:
        r.store.failing["next_due"] = failure
        r.worker.kick()
        await until(lambda: bool(logged(caplog, event)))
        for _ in range(200):  # many turns of the event loop, no clock involved
            await asyncio.sleep(0)
        assert len(logged(caplog, event)) == 1  # not a busy loop against a dead store


async def _garbage_peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers anything with a 600-byte status line that is not HTTP."""
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTQ/1.1 " + b"X" * 600 + b"\r\ncontent-length: 2\r\n\r\n{}")
        await writer.drain()
    writer.close()


async def test_a_peers_garbage_is_cut_to_300_characters_before_it_is_stored() -> None:
    server = await asyncio.start_server(_garbage_peer, "127.0.0.1", 0)
    garbage = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server, rig(closed=(garbage,)) as r:
        await r.queue(message("to a peer that speaks garbage"), destination=garbage)
        await r.settlements(1)
        state = await r.state(garbage)
    assert state is not None and state.last_error is not None
    assert state.last_error.startswith("ClientResponseError: 400")
    assert len(state.last_error) == 300 and "X" * 100 in state.last_error
    assert not any(ord(c) < 32 for c in state.last_error)  # its newlines made harmless


def _sealed_size(envelope: dict[str, Any], to: str, now: int) -> int:
    """The bytes the worker puts on the wire for `envelope` sealed to `to` at `now`."""
    return len(_json(append_hop(envelope, SIGNER, next_hop=to, now_ms=now, cv=ChainVerdict.PASS)))


def _messages_of_total_size(total: int, to: str, now: int) -> list[dict[str, Any]]:
    """Messages whose sealed sizes, each counted with its separating comma, add up to
    exactly `total` bytes (content of quotes, two bytes each in JSON, and letters)."""
    base = _sealed_size(message("a", at=now), to, now) - 1  # with empty content
    count = -(-total // (base + 1 + 2 * 65_536))
    sizes = [(total - count * (base + 1)) // count] * count
    sizes[-1] += total - count * (base + 1) - sum(sizes)
    msgs = []
    for content_bytes in sizes:
        quotes = max(0, content_bytes - 65_536)
        msg = message('"' * quotes + "a" * (content_bytes - 2 * quotes), at=now)
        assert _sealed_size(msg, to, now) == base + content_bytes
        msgs.append(msg)
    return msgs


@pytest.mark.parametrize(("over", "transactions"), [(0, 1), (1, 2)])
async def test_a_transaction_fills_up_to_its_size_limit_exactly(
    over: int, transactions: int
) -> None:
    """Room for MAX_BATCH_BYTES less 1 KiB of messages (the head and brackets take the
    rest): exactly that much goes in one transaction, one byte more takes two."""
    async with rig() as r:
        msgs = _messages_of_total_size(MAX_BATCH_BYTES - 1024 + over, r.peer.name, r.clock())
        await r.queue(*msgs)
        await r.settlements(1)
    assert len(r.peer.txns) == transactions
    assert all(len(t.raw) <= MAX_BATCH_BYTES for t in r.peer.txns)
    assert [m["id"] for t in r.peer.txns for m in t.doc["messages"]] == [m["id"] for m in msgs]


# -- the one seam to the prototype's dialect (compat/federation.py) -------------------------
def proto_ok(txn: Txn) -> tuple[int, Any]:
    return 200, {"ok": True, "id": txn.doc["id"], "delivery": "stored"}


async def test_a_prototype_peer_gets_each_message_sealed_by_itself() -> None:
    async with rig() as r:
        r.peer.prototype, r.peer.answer = True, proto_ok
        msgs = [message("one"), message("two")]
        await r.queue(*msgs)
        [(_, verdict)] = await r.settlements(1)
    assert [t.path for t in r.peer.txns] == ["/send", "/send"]  # no FLUX transaction
    assert [t.doc["id"] for t in r.peer.txns] == [m["id"] for m in msgs]
    for txn in r.peer.txns:  # sealed to the peer all the same
        hop = txn.doc["integrity_chain"][-1]
        assert (hop["server"], hop["next"], hop["t"]) == (SIGNER.name, r.peer.name, r.clock())
    assert verdict == Settlement([1, 2], [], None)


async def test_a_silent_prototype_peer_times_out_like_any() -> None:
    async with rig(dataclasses.replace(POLICY, timeout_s=0.5)) as r:
        r.peer.prototype, r.peer.answer = True, proto_ok
        r.peer.gate.clear()
        await r.queue(message("to a silent prototype"))
        [(_, verdict)] = await r.settlements(1)
        state = await r.state()
    assert verdict == Settlement([], [], "TimeoutError: ")
    assert state is not None and (state.attempts, state.last_error) == (1, "TimeoutError: ")


async def test_a_lost_lease_stops_a_prototype_send_too(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "flux.federation")
    async with rig(dataclasses.replace(POLICY, lease_ms=300)) as r:
        r.peer.prototype, r.peer.answer = True, proto_ok
        r.peer.gate.clear()
        await r.queue(message("first"), message("second"))
        await r.peer.wait_txns(1)
        r.clock.advance(301)
        assert await r.store.lease("b#1", r.clock(), 60_000, 100) is not None
        await until(lambda: False in r.store.renewals)
        r.peer.gate.set()
        await until(lambda: bool(logged(caplog, "event=lease_lost")))
    assert len(r.peer.txns) == 1 and r.settled == []  # the second was not sent


async def test_a_prototype_peers_garbage_is_cut_to_300_characters() -> None:
    server = await asyncio.start_server(_garbage_peer, "127.0.0.1", 0)
    garbage = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"

    def meshes(peer: str) -> dict[str, Mesh]:
        kind = MeshKind.PROTOTYPE  # its members are prototype servers: no probe
        return {"p": Mesh("p", "t" * 32, MeshMode.BROADCAST, (SIGNER.name, garbage), kind)}

    async with server, rig(meshes=meshes, closed=(garbage,)) as r:
        await r.queue(message("relayed to garbage"), destination=garbage, via="p")
        await r.settlements(1)
        state = await r.state(garbage)
    assert state is not None and state.last_error is not None
    assert state.last_error.startswith("ClientResponseError: 400")
    assert len(state.last_error) == 300


async def test_a_prototype_mesh_member_gets_the_relay_with_the_mesh_token() -> None:
    def meshes(peer: str) -> dict[str, Mesh]:
        kind = MeshKind.PROTOTYPE
        return {"p": Mesh("p", "t" * 32, MeshMode.BROADCAST, (SIGNER.name, peer), kind)}

    async with rig(meshes=meshes) as r:
        r.peer.prototype, r.peer.answer = True, proto_ok
        msg = message("relayed to a prototype member")
        await r.queue(msg, via="p")
        [(_, verdict)] = await r.settlements(1)
    (txn,) = r.peer.txns
    assert txn.path == "/mesh/relay" and txn.doc["id"] == msg["id"]  # a bare envelope
    token = mesh_token_header("t" * 32)
    assert {k: txn.headers.get(k) for k in token} == token
    assert verdict == Settlement([1], [], None)


# -- the rolling lease (module doc, "Rolling lease") ---------------------------------------
BOB = Identity(bytes(range(2, 34)))


def message_from(sender: Identity, content: str) -> dict[str, Any]:
    return compose(sender, Identity.generate().address, content, now_ms=wall_ms()).primary


def ids(txn: Txn) -> list[str]:
    return [m["id"] for m in txn.doc["messages"]]


async def test_a_free_lane_takes_another_senders_mail_while_a_flood_is_in_flight() -> None:
    async with rig() as r:
        r.peer.gate.clear()  # the peer holds every transaction until the test lets go
        flood = [message_from(ALICE, f"flood {n}") for n in range(30)]
        await r.queue(*flood)
        (first,) = await r.peer.wait_txns(1)
        assert ids(first) == [m["id"] for m in flood]
        # queued after the lease was taken, by a sender with nothing in flight: the free
        # lane sends it now, beside the flood's transaction, not after its answer
        single = message_from(BOB, "not behind the flood")
        await r.store.enqueue([Outbound(r.peer.name, single, "h-single", (single["to"],),
                                        "pass", r.clock())])  # fmt: skip
        r.worker.kick([Outbound(r.peer.name, single, "h-single", (single["to"],), "pass", 0)])
        second = (await r.peer.wait_txns(2))[1]
        assert ids(second) == [single["id"]] and r.peer.answered == 0
        r.peer.gate.set()
        await until(lambda: _queue_empty(r))
        assert sorted(len(lease.messages) for lease, _ in r.settled) == [1, 30]
        assert len({lease.holder for lease, _ in r.settled}) == 1  # one lease, rolled


async def _queue_empty(r: Rig) -> bool:
    return await r.state() is None


async def test_a_flood_senders_own_mail_waits_for_its_answer_and_goes_in_order() -> None:
    async with rig(dataclasses.replace(POLICY, batch=10)) as r:
        r.peer.gate.clear()
        flood = [message_from(ALICE, f"flood {n}") for n in range(25)]
        await r.queue(*flood)
        await r.peer.wait_txns(1)
        more = message_from(ALICE, "queued while the flood is in flight")
        await r.queue(more)  # kicks every rolling lease: the free lane must not take it
        await asyncio.sleep(0.2)  # time for a wrong second transaction to arrive (none may)
        assert len(r.peer.txns) == 1
        r.peer.gate.set()
        await until(lambda: _queue_empty(r))
        sent = [i for txn in r.peer.txns for i in ids(txn)]
        assert sent == [m["id"] for m in [*flood, more]]  # queue order, each once
        assert [len(t.doc["messages"]) for t in r.peer.txns] == [10, 10, 6]
        assert len({lease.holder for lease, _ in r.settled}) == 1


async def test_a_kick_for_a_sender_in_flight_asks_the_store_nothing() -> None:
    async with rig() as r:
        r.peer.gate.clear()
        await r.queue(message_from(ALICE, "in flight"))
        (txn,) = await r.peer.wait_txns(1)
        asked = 0
        lease_more = r.store.lease_more

        async def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal asked
            asked += 1
            return await lease_more(*args, **kwargs)

        r.store.lease_more = counted  # type: ignore[method-assign]
        flood_item = Outbound(r.peer.name, txn.doc["messages"][0], "h", ("x",), "pass", 0)
        for _ in range(50):  # the submit path kicks once per queued message of the flood
            r.worker.kick([flood_item])
        await asyncio.sleep(0.1)
        assert asked == 0
        r.peer.gate.set()
        await until(lambda: _queue_empty(r))


async def test_a_roll_takes_nothing_more_after_roll_ms_and_releases_the_destination() -> None:
    async with rig(dataclasses.replace(POLICY, batch=10)) as r:
        r.peer.gate.clear()
        await r.queue(*[message_from(ALICE, f"flood {n}") for n in range(15)])
        await r.peer.wait_txns(1)
        r.clock.advance(ROLL_MS)
        r.peer.gate.set()
        await until(lambda: _queue_empty(r))
        holders = [lease.holder for lease, _ in r.settled]
        assert [len(lease.messages) for lease, _ in r.settled] == [10, 5]
        assert holders[0] != holders[1]  # the rest went in a lease of its own


async def test_a_part_that_must_wait_stops_the_roll_and_backs_off_the_destination() -> None:
    async with rig(dataclasses.replace(POLICY, batch=10)) as r:

        def flood_unavailable(txn: Txn) -> tuple[int, Any]:
            if txn.doc["messages"][0]["from"] == ALICE.address:
                return 503, {"ok": False, "error": "unavailable"}
            return stored(txn)

        r.peer.answer = flood_unavailable
        r.peer.gate.clear()
        await r.queue(*[message_from(ALICE, f"flood {n}") for n in range(15)])
        await r.peer.wait_txns(1)
        single = message_from(BOB, "delivered beside the failure")
        await r.queue(single)
        await r.peer.wait_txns(2)
        r.peer.gate.set()
        await until(lambda: _backed_off(r))
        left = await r.state()
        assert left is not None and left.queued == 15 and left.attempts == 1
        assert left.next_attempt_at == r.clock() + r.backoff(0)
        assert len(r.peer.txns) == 2  # nothing more taken after the failure
        verdicts = {len(lease.messages): verdict for lease, verdict in r.settled}
        assert verdicts[1].done and verdicts[1].retry is None  # BOB's: delivered, settled
        assert verdicts[10].retry is not None and not verdicts[10].done


async def _backed_off(r: Rig) -> bool:
    state = await r.state()
    return state is not None and state.attempts == 1


async def test_a_store_outage_while_rolling_ends_the_roll_and_loses_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with rig(dataclasses.replace(POLICY, batch=10)) as r:
        r.peer.gate.clear()
        flood = [message_from(ALICE, f"flood {n}") for n in range(15)]
        await r.queue(*flood)
        await r.peer.wait_txns(1)
        r.store.failing["lease_more"] = StoreUnavailable(OUTAGE)
        r.peer.gate.set()  # answered: the lane asks for more, and the store is down
        await until(lambda: bool(logged(caplog, "event=lease_more_failed")))
        del r.store.failing["lease_more"]
        await until(lambda: _queue_empty(r))  # the rest goes in the next lease
        assert [i for txn in r.peer.txns for i in ids(txn)] == [m["id"] for m in flood]
        holders = [lease.holder for lease, _ in r.settled]
        assert len(holders) == 2 and holders[0] != holders[1]


async def test_a_crash_while_settling_a_part_is_logged_and_the_mail_goes_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with rig() as r:
        r.store.failing["settle"] = RuntimeError("a bug in settling")
        sent = message_from(ALICE, "settled after the crash")
        await r.queue(sent)
        await until(lambda: len(logged(caplog, "event=delivery_crashed")) >= 2)  # part, release
        del r.store.failing["settle"]
        r.clock.advance(POLICY.lease_ms)  # the unreleased lease lapses
        r.worker.kick()
        await until(lambda: _queue_empty(r))
        assert [ids(t) for t in r.peer.txns] == [[sent["id"]], [sent["id"]]]  # the peer dedupes
