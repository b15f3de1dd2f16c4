"""This server's own hop on mail a peer hands on (server/submission.py `accept_batch`) is
sealed in the batch's checking threads, not on the event loop, and is byte for byte the
hop the loop seals (`_incoming`): same record, same route entry, same `now`, read once the
batch's checks are done. Where the plan may not store the message here (mail through a
mesh), or will refuse it, nothing is sealed ahead and the loop seals as before.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from flux.federation.mesh import Mesh, MeshMode
from flux.protocol import (
    LOCAL_DELIVERY,
    ChainVerdict,
    Identity,
    PublishedKey,
    ServerSigner,
    append_hop,
    canonical_bytes,
    compose,
    for_storage,
)
from flux.server import submission
from flux.server.app import PARTS
from flux.server.submission import CHECKED_ALONE, Refused, SubmitResult, Submitter

from .conftest import make_identity

PEER = ServerSigner("peer.test", make_identity("peer-server"))
ALICE, BOB, CAROL = make_identity("alice"), make_identity("bob"), make_identity("carol")


def keys(server: str) -> list[PublishedKey]:
    return [PublishedKey(PEER.identity.public_key)] if server == PEER.name else []


def handed_on(sub: Submitter, now: int, count: int, **kwargs: Any) -> list[dict[str, Any]]:
    """`count` messages sealed by PEER for `sub`'s server (to BOB, cc CAROL every third)."""
    out = []
    for n in range(count):
        cc = [CAROL.address] if n % 3 == 0 else None
        msg = compose(ALICE, BOB.address, f"message number {n} about the plan", now_ms=now - 5000,
                      cc=cc, **kwargs).primary  # fmt: skip
        out.append(append_hop(msg, PEER, next_hop=sub.signer.name, now_ms=now - 1000))
    return out


async def submitter_of(make_server: Any) -> Submitter:
    srv = await make_server(open_mode=True)
    return srv.app[PARTS]["submitter"]


async def stored(sub: Submitter, msg: dict[str, Any], rcpt: Identity) -> bytes:
    row = await sub.store.get(rcpt.address, msg["id"], msg["from"])
    assert row is not None
    return canonical_bytes(row.envelope)


def seals_on_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """The path before this change: nothing sealed in the threads, `_incoming` seals."""

    async def nothing_ahead(self: Submitter, verified: list[Any], mesh: Any) -> list[None]:
        return [None] * len(verified)

    monkeypatch.setattr(Submitter, "_seal_ahead", nothing_ahead)


def recording(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The threads `submission.append_hop` runs in, one entry per call."""
    threads: list[int] = []
    real = submission.append_hop

    def append(*args: Any, **kwargs: Any) -> dict[str, Any]:
        threads.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(submission, "append_hop", append)
    return threads


async def test_stored_envelope_is_the_one_the_loop_seals(make_server, clock, monkeypatch) -> None:
    """Same batch, same clock, two servers with the same key: the one sealing in the
    threads stores exactly what the one sealing on the loop stores, which is exactly
    `append_hop(msg, signer, next=local, now=clock, cv=pass)`, for every recipient."""
    ahead, on_loop = await submitter_of(make_server), await submitter_of(make_server)
    batch = handed_on(ahead, clock.now, 2 * CHECKED_ALONE + 3)  # two threads
    first = await ahead.accept_batch(batch, peer=PEER.name, keys=keys)
    with monkeypatch.context() as patch:
        seals_on_the_loop(patch)
        second = await on_loop.accept_batch(batch, peer=PEER.name, keys=keys)
    assert first == second
    assert all(isinstance(r, SubmitResult) and not r.duplicate for r in first)
    for n, msg in enumerate(batch):
        expected = append_hop(
            for_storage(msg), ahead.signer, next_hop=LOCAL_DELIVERY, now_ms=clock.now,
            cv=ChainVerdict.PASS,
        )  # fmt: skip
        for rcpt in (BOB, CAROL) if n % 3 == 0 else (BOB,):
            assert await stored(ahead, msg, rcpt) == await stored(on_loop, msg, rcpt)
            assert await stored(ahead, msg, rcpt) == canonical_bytes(expected)


async def test_the_hop_is_sealed_in_the_threads(make_server, clock, monkeypatch) -> None:
    """No `append_hop` on the loop for mail handed on directly: one per message, each in
    a worker thread (two of them for a batch over CHECKED_ALONE)."""
    sub = await submitter_of(make_server)
    batch = handed_on(sub, clock.now, 2 * CHECKED_ALONE)
    threads = recording(monkeypatch)
    results = await sub.accept_batch(batch, peer=PEER.name, keys=keys)
    assert all(isinstance(r, SubmitResult) and not r.duplicate for r in results)
    assert len(threads) == len(batch)
    assert threading.get_ident() not in threads


async def test_refused_messages_are_not_sealed_ahead(make_server, clock, monkeypatch) -> None:
    """A message the plan's pure checks refuse (expired) gets no hop in the thread, and
    the same answer; a replay gets the hop (the store decides it) and is answered
    `duplicate` as before, storing nothing new."""
    sub = await submitter_of(make_server)
    good = handed_on(sub, clock.now, 1)[0]
    expired = handed_on(sub, clock.now, 1, expires=clock.now - 1)[0]
    threads = recording(monkeypatch)
    results = await sub.accept_batch([good, expired], peer=PEER.name, keys=keys)
    assert isinstance(results[0], SubmitResult) and not results[0].duplicate
    assert isinstance(results[1], Refused) and results[1].error.code == "invalid_value"
    assert results[1].error.field == "expires"
    assert len(threads) == 1
    before = await stored(sub, good, BOB)
    clock.advance(1000)  # a replay later: stored as it was first
    again = await sub.accept_batch([good], peer=PEER.name, keys=keys)
    assert isinstance(again[0], SubmitResult) and again[0].duplicate
    assert await stored(sub, good, BOB) == before


async def test_mesh_mail_is_sealed_on_the_loop(make_server, clock, monkeypatch) -> None:
    """Mail through a mesh may only pass on: nothing is sealed ahead for it, and what is
    stored here is sealed on the loop, as before."""
    sub = await submitter_of(make_server)
    mesh = Mesh("m", "token", MeshMode.BROADCAST, (PEER.name, sub.signer.name))
    batch = handed_on(sub, clock.now, CHECKED_ALONE + 1)
    threads = recording(monkeypatch)
    results = await sub.accept_batch(batch, peer=PEER.name, keys=keys, mesh=mesh)
    assert all(isinstance(r, SubmitResult) and not r.duplicate for r in results)
    assert threads == [threading.get_ident()] * len(batch)
    expected = append_hop(
        for_storage(batch[1]), sub.signer, next_hop=LOCAL_DELIVERY, now_ms=clock.now,
        cv=ChainVerdict.PASS,
    )  # fmt: skip
    assert await stored(sub, batch[1], BOB) == canonical_bytes(expected)


async def test_a_hop_sealed_at_another_time_is_sealed_again(make_server, clock) -> None:
    """`_incoming` takes a hop sealed ahead only for a plan with its time and verdict:
    otherwise it seals the plan's own, as it always did."""
    sub = await submitter_of(make_server)
    verified = sub._verify_all(handed_on(sub, clock.now, 1), PEER.name, keys)
    (ahead,) = await sub._seal_ahead(verified, None)
    assert ahead is not None and ahead.now == clock.now
    plan = submission._Plan(verified[0], clock.now + 7, ChainVerdict.PASS, 0.0, {}, [BOB.address], [])  # fmt: skip
    plan.sealed = ahead
    hop = sub._incoming(plan).envelope["integrity_chain"][-1]
    assert (hop["t"], hop["next"], hop["cv"]) == (clock.now + 7, LOCAL_DELIVERY, "pass")
    plan.now = clock.now
    assert sub._incoming(plan).envelope is ahead.data


async def test_nothing_is_sealed_ahead_through_a_mesh(make_server, clock, monkeypatch) -> None:
    """With a mesh, the clock is not read for the batch and nothing is sealed: `now` is
    read on the loop for each message, before its plan, as before."""
    sub = await submitter_of(make_server)
    mesh = Mesh("m", "token", MeshMode.BROADCAST, (PEER.name, sub.signer.name))
    verified = sub._verify_all(handed_on(sub, clock.now, 2), PEER.name, keys)
    reads: list[int] = []
    monkeypatch.setattr(sub, "clock", lambda: reads.append(1) or clock.now)
    assert await sub._seal_ahead(verified, mesh) == [None, None]
    assert reads == []
