"""Reputation (server/reputation.py): strikes, quarantine, and operator overrides."""

from __future__ import annotations

from flux.server.reputation import Reputation
from flux.store import MemoryStore
from flux.store.base import Strike

X = "x.example"


def strike(n: int, t: int) -> Strike:
    return Strike(X, f"proof-{n}", "forged_body", "b.example", f"{n:032x}", t)


async def test_a_lift_forgives_past_strikes_but_not_new_ones() -> None:
    store = MemoryStore()
    rep = Reputation(store, threshold=3)
    for n in range(3):
        await rep.record(strike(n, 100 + n))
    assert X in await rep.quarantined()
    assert await rep.quarantined_among([X, "y.example"]) == {X}
    await rep.set_override(X, True, 200)  # the operator lifts it
    assert X not in await rep.quarantined()
    for n in range(3, 5):
        await rep.record(strike(n, 300 + n))
    assert X not in await rep.quarantined()  # two new proofs: not yet
    await rep.record(strike(5, 400))
    standing = await rep.standing()
    assert X in standing.quarantined  # a third proof after the lift: quarantined again
    assert standing.strikes[X] == 6  # every proof stays on record


async def test_an_imposed_quarantine_holds_whatever_the_strikes() -> None:
    store = MemoryStore()
    rep = Reputation(store, threshold=3)
    await rep.set_override(X, False, 100)
    assert X in await rep.quarantined()
