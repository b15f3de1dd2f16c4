"""The sender's rate budget (PROTOCOL.md §8.2, issue 10 §1): refused messages and replays do
not count against it, and a sender already over it is refused before the content checks.
In-process servers on every store (PostgreSQL when FLUX_TEST_POSTGRES_DSN is set), the
in-process counter and the counter shared in the store (a cluster)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from flux.server.app import PARTS
from flux.server.limits import StoreHitCounter

SPAM = "WINNER! claim your prize, free money, click here now"
BACKENDS = ["memory", "sqlite", "postgres"]


async def start(make_server: Any, backend: str, **overrides: Any) -> Any:
    if backend == "postgres":  # pragma: no cover - needs a server
        from flux.store.postgres import PostgresStore
        from postgres_env import postgres_dsn

        store = PostgresStore(postgres_dsn(), fresh_schema=True)
        await store.open()
        srv = await make_server(store=store, **overrides)
        srv.extra_close = store  # closed by the test
        return srv
    return await make_server(sqlite=backend == "sqlite", **overrides)


@pytest.fixture(params=BACKENDS)
async def rated(request, make_server: Any) -> Any:
    srv = await start(make_server, request.param, open_mode=True, spam_rate_per_minute=3)
    yield srv
    if request.param == "postgres":  # pragma: no cover
        # the server (and its delivery worker, busy with any queued copy) stops first:
        # dropping the test's schema under a running lease deadlocked
        await srv.client.close()
        await srv.extra_close.close()


async def test_refused_messages_do_not_count_against_the_rate_budget(
    rated: Any, alice: Any, bob: Any
) -> None:
    for _ in range(20):  # 20 refused as spam (today's case: the next good one was a 451)
        body = await rated.send(rated.message(alice, bob, SPAM), expect=451)
        assert "rate limit exceeded" not in body["reasons"]
    for n in range(3):
        await rated.send(rated.message(alice, bob, f"Ordinary message {n}"))
    body = await rated.send(rated.message(alice, bob, "One too many"), expect=451)
    assert body["reasons"] == ["rate limit exceeded"]


async def test_a_replay_does_not_count_against_the_rate_budget(
    rated: Any, alice: Any, bob: Any
) -> None:
    msg = rated.message(alice, bob, "Ordinary message")
    await rated.send(msg)
    for _ in range(5):
        assert (await rated.send(msg))["duplicate"] is True
    for n in range(2):  # 1 counted so far: two more fit in a budget of 3
        await rated.send(rated.message(alice, bob, f"Ordinary message {n}"))
    await rated.send(rated.message(alice, bob, "One too many"), expect=451)


async def test_over_the_limit_is_refused_before_the_content_checks(
    rated: Any, alice: Any, bob: Any
) -> None:
    """Only the rate reason: the content heuristics (the costly step) never ran."""
    for n in range(3):
        await rated.send(rated.message(alice, bob, f"Ordinary message {n}"))
    body = await rated.send(rated.message(alice, bob, SPAM), expect=451)
    assert body["reasons"] == ["rate limit exceeded"]


async def test_the_budget_is_per_sender(rated: Any, alice: Any, bob: Any, carol: Any) -> None:
    for n in range(3):
        await rated.send(rated.message(alice, bob, f"Ordinary message {n}"))
    await rated.send(rated.message(alice, bob, "One too many"), expect=451)
    await rated.send(rated.message(carol, bob, "Carol has her own budget"))


async def test_a_cluster_counts_only_accepted_mail_in_the_store(
    rated: Any, alice: Any, bob: Any
) -> None:
    """The counter shared in the store (the processes of a cluster) keeps the same rule."""
    submitter = rated.app[PARTS]["submitter"]
    submitter.rate = StoreHitCounter(rated.store, limit=3, window_ms=60_000)
    for _ in range(5):
        await rated.send(rated.message(alice, bob, SPAM), expect=451)
    for n in range(3):
        await rated.send(rated.message(alice, bob, f"Ordinary message {n}"))
    assert await rated.store.hits_in_window(f"send:{alice.address}", rated.clock(), 60_000) == 3
    body = await rated.send(rated.message(alice, bob, SPAM), expect=451)
    assert body["reasons"] == ["rate limit exceeded"]


async def test_a_sender_the_store_refused_for_its_rate_is_then_refused_before_storing(
    rated: Any, alice: Any, bob: Any, carol: Any
) -> None:
    """With the rate decided in the storing transaction (a cluster), the first message over
    the limit is refused there; the sender's next ones within the window are refused by a
    look before the plan (one read), not after the hop's signatures and a storing
    transaction. The same answer either way, and mail counts again once the window moves."""
    submitter = rated.app[PARTS]["submitter"]
    submitter.rate = StoreHitCounter(rated.store, limit=3, window_ms=60_000)
    calls = 0
    store_many = rated.store.store_many

    async def counting(batch: Any) -> Any:  # a spy on the real store's storing calls
        nonlocal calls
        calls += 1
        return await store_many(batch)

    rated.store.store_many = counting
    for n in range(3):
        await rated.send(rated.message(alice, bob, f"Ordinary message {n}"))
    body = await rated.send(rated.message(alice, bob, "Refused in the store"), expect=451)
    assert body["reasons"] == ["rate limit exceeded"]
    assert calls == 4
    for n in range(5):
        body = await rated.send(rated.message(alice, bob, f"Refused before {n}"), expect=451)
        assert body["reasons"] == ["rate limit exceeded"]
    assert calls == 4  # none of those five reached a storing transaction
    await rated.send(rated.message(carol, bob, "Carol is not held back"))
    assert calls == 5
    rated.clock.advance(60_001)
    await rated.send(rated.message(alice, bob, "The window has moved"))
    assert await rated.store.hits_in_window(f"send:{alice.address}", rated.clock(), 60_000) == 1


ELSEWHERE = "localhost:9"  # a closed port: the queued copies stay put (tests never leave 127.0.0.1)


@pytest.mark.parametrize("shared", [False, True], ids=["own counter", "counter in the store"])
@pytest.mark.parametrize("remote", [False, True], ids=["local", "with a remote copy"])
async def test_racing_submissions_of_one_sender_pass_the_limit_no_more_than_it_allows(
    rated: Any, alice: Any, bob: Any, carol: Any, remote: bool, shared: bool
) -> None:
    """Twelve submissions of one sender at once against a limit of 3: each counts the ones
    still in flight ahead of it, so exactly three are accepted and counted, whether the
    rate is looked at before storing (a copy for another server, or one process's own
    counter) or decided by the storing transaction. Found in review: with a remote copy,
    all twelve passed the look before any was counted."""
    await rated.register(alice)
    if shared:  # the processes of a cluster count in the store
        submitter = rated.app[PARTS]["submitter"]
        submitter.rate = StoreHitCounter(rated.store, limit=3, window_ms=60_000)

    def submission(n: int) -> Any:
        msg = rated.message(alice, bob, f"Ordinary message {n}", cc=[carol.address])
        return {"message": msg, "domains": {carol.address: ELSEWHERE}} if remote else msg

    answers = await asyncio.gather(*(rated.send(submission(n), expect=None) for n in range(12)))
    accepted = [a for a in answers if a.get("ok") is True]
    refused = [a for a in answers if a.get("ok") is not True]
    assert len(accepted) == 3, answers
    assert all(a["reasons"] == ["rate limit exceeded"] for a in refused), refused
    # the next one, alone, is refused too: three were counted
    body = await rated.send(rated.message(alice, bob, "One too many"), expect=451)
    assert body["reasons"] == ["rate limit exceeded"]
