"""A flood of tamper proofs costs bounded storage and bounded checks (issue 10 §1).

Proofs against a server that wants to be struck are cheap to make; what is stored per
offender, and what the quarantine check on every federated message reads, must not grow
with them (server/reputation.py). Against every store, then end to end over
/federation/deliver with distinct, valid proofs.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from federation.fed_helpers import deliver, local_servers, name, signer
from flux.protocol import Identity, append_hop, compose
from flux.server.app import PARTS
from flux.server.reputation import STANDING_LIMIT, Reputation
from flux.store import MemoryStore, SQLiteStore, Store
from flux.store.base import Strike
from postgres_env import postgres_dsn

X, Y = "x.example", "y.example"
THRESHOLD = 3
FLOOD = 1500


def strike(n: int, t: int, offender: str = X) -> Strike:
    return Strike(offender, f"proof-{offender}-{n}", "forged_body", "b.example", f"{n:032x}", t)


class CountingStore:
    """A real store that counts the reputation reads made through it, and the rows they
    return (a wrapper, not a mock: every call reaches the store)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.calls: list[str] = []
        self.rows = 0

    def __getattr__(self, attr: str) -> Any:
        real = getattr(self.store, attr)
        if attr not in ("strikes", "strike_tallies", "quarantine_overrides"):
            return real

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(attr)
            result = await real(*args, **kwargs)
            self.rows += len(result)
            return result

        return counted


def _postgres(tmp_path: Path) -> Store:  # pragma: no cover - needs a server
    from flux.store.postgres import PostgresStore

    return PostgresStore(postgres_dsn(), fresh_schema=True)


STORES = {
    "memory": lambda tmp_path: MemoryStore(),
    "sqlite": lambda tmp_path: SQLiteStore(tmp_path / "flux.db"),
    "postgres": _postgres,
}


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request, tmp_path: Path) -> AsyncIterator[Store]:
    s = STORES[request.param](tmp_path)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


class Ticks:
    """A monotonic clock the test moves (the verdicts' freshness)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_flood_of_proofs_stores_at_most_the_cap(store: Store) -> None:
    rep = Reputation(store, THRESHOLD)
    stored = [await rep.record(strike(n, 1000 + n)) for n in range(FLOOD)]
    assert stored == [True] * rep.cap + [False] * (FLOOD - rep.cap)
    assert len(await store.strikes()) == rep.cap
    standing = await rep.standing()
    assert standing.quarantined == [X]
    assert standing.strikes == {X: rep.cap}  # "at least" this many


async def test_the_cap_keeps_quarantine_lift_and_imposed_semantics(store: Store) -> None:
    rep = Reputation(store, THRESHOLD, fresh_for_s=0)
    for n in range(THRESHOLD - 1):
        await rep.record(strike(n, 100 + n))
    assert await rep.quarantined_among([X]) == set()
    await rep.record(strike(THRESHOLD - 1, 110))
    assert await rep.quarantined_among([X]) == {X}  # at the threshold
    for n in range(50):
        await rep.record(strike(100 + n, 120 + n))
    await rep.set_override(X, True, 500)  # lifted: everything so far forgiven
    assert await rep.quarantined_among([X]) == set()
    for n in range(THRESHOLD - 1):
        assert await rep.record(strike(200 + n, 600 + n))  # a new allowance after a lift
    assert await rep.quarantined_among([X]) == set()
    await rep.record(strike(300, 700))
    assert await rep.quarantined_among([X]) == {X}  # quarantined again
    for n in range(50):
        await rep.record(strike(400 + n, 800 + n))
    assert len(await store.strikes()) == 2 * rep.cap  # one allowance per lift
    await rep.set_override(Y, False, 900)  # imposed, with no strike at all
    assert await rep.quarantined_among([X, Y, "z.example"]) == {X, Y}


async def test_the_check_per_message_reads_counts_not_strikes(store: Store) -> None:
    counting = CountingStore(store)
    ticks = Ticks()
    rep = Reputation(counting, THRESHOLD, monotonic=ticks)  # type: ignore[arg-type]
    for n in range(FLOOD // 10):  # many offenders, one of them flooded
        await store.add_strike(strike(n, 1000 + n, offender=f"s{n % 150}.example"))
    for n in range(FLOOD):
        await rep.record(strike(n, 5000 + n))
    counting.calls.clear()
    route = [X, "a.example", "b.example"]
    assert await rep.quarantined_among(route) == {X}
    assert counting.calls == ["strike_tallies", "quarantine_overrides"]
    assert counting.rows <= len(route)  # one count per named server, no strike read
    for _ in range(100):  # a batch through the same servers: answered from memory
        assert await rep.quarantined_among(route) == {X}
    assert len(counting.calls) == 2
    ticks.now += 1.0  # stale after FRESH_FOR_S: read again, once
    assert await rep.quarantined_among(route) == {X}
    assert len(counting.calls) == 4
    await rep.set_override(X, True, 10**9)  # this process's own override: seen at once
    assert await rep.quarantined_among(route) == set()
    assert "strikes" not in counting.calls


async def test_the_standing_is_bounded_and_lists_the_quarantined_first(store: Store) -> None:
    rep = Reputation(store, THRESHOLD)
    for n in range(STANDING_LIMIT + 20):  # one strike each: none quarantined
        await store.add_strike(strike(0, 10, offender=f"s{n:03}.example"))
    for n in range(THRESHOLD):
        await rep.record(strike(n, 100 + n, offender="zz.example"))
    standing = await rep.standing()
    assert len(standing.strikes) == STANDING_LIMIT
    assert standing.quarantined == ["zz.example"] and "zz.example" in standing.strikes


# -- end to end: distinct valid proofs over /federation/deliver ------------------------------

ALICE, BOB = Identity.generate(), Identity.generate()


def forgery(x: Any, b: Any, n: int, at: int) -> dict[str, Any]:
    """X rewrites alice's content and seals it on to B: a forged_body proof, distinct per n."""
    msg = compose(ALICE, BOB.address, "lunch?", subject="plans", now_ms=at).primary
    return append_hop({**msg, "content": f"pay mallory {n}"}, signer(x), next_hop=name(b),
                      now_ms=at)  # fmt: skip


async def test_a_flood_of_valid_proofs_over_federation_stores_the_cap(tmp_path: Path) -> None:
    async with local_servers(tmp_path, "xb") as s:
        x, b = s["x"], s["b"]
        rep: Reputation = b.app[PARTS]["submitter"].reputation
        start = int(time.time() * 1000)
        counter = itertools.count()
        struck = 0
        for _ in range(FLOOD // 100):
            batch = [forgery(x, b, n, start + n) for n in itertools.islice(counter, 100)]
            status, answer = await deliver(signer(x), b, batch)
            assert status == 200, answer
            struck += sum(r["struck"] for r in answer["results"])
        assert struck == FLOOD  # every one a valid proof against X...
        assert len(await b.app[PARTS]["store"].strikes()) == rep.cap  # ...the cap stored
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{b.url}/integrity/reputation") as r,
        ):
            body = await r.json()
        assert body["quarantined"] == [name(x)] and body["strikes"] == {name(x): rep.cap}
