"""Server reputation: strikes (distinct proofs) per server, and who is quarantined.

A server is quarantined when it has at least `threshold` strikes, unless an operator lifted
the quarantine (`override = True`); an operator can also impose one (`override = False`).
Strikes live in the store, so every process that shares the database agrees.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..store.base import Store


@dataclass(frozen=True, slots=True)
class Standing:
    strikes: dict[str, int]
    quarantined: list[str]


class Reputation:
    def __init__(self, store: Store, threshold: int) -> None:
        self.store = store
        self.threshold = threshold

    async def standing(self) -> Standing:
        proofs: dict[str, set[str]] = {}
        for strike in await self.store.strikes():
            proofs.setdefault(strike.offender, set()).add(strike.proof_id)
        counts = {server: len(ids) for server, ids in sorted(proofs.items())}
        overrides = await self.store.quarantine_overrides()
        quarantined = {s for s, n in counts.items() if n >= self.threshold}
        quarantined -= {s for s, lifted in overrides.items() if lifted}
        quarantined |= {s for s, lifted in overrides.items() if not lifted}
        return Standing(counts, sorted(quarantined))

    async def quarantined(self) -> set[str]:
        return set((await self.standing()).quarantined)
