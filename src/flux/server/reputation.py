"""Server reputation: strikes (distinct proofs) per server, and who is quarantined.

A server is quarantined when it has at least `threshold` strikes (distinct proofs). An
operator can impose a quarantine whatever the strikes, or lift one: a lift forgives the
strikes recorded until then (they stay on record and in the counts shown), so a server that
keeps tampering after a lift earns `threshold` new proofs and is quarantined again.
Strikes and overrides live in the store, so every process that shares the database agrees.
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
        overrides = await self.store.quarantine_overrides()
        proofs: dict[str, set[str]] = {}
        counting: dict[str, set[str]] = {}  # the proofs no lift has forgiven
        for strike in await self.store.strikes():
            proofs.setdefault(strike.offender, set()).add(strike.proof_id)
            override = overrides.get(strike.offender)
            if override is None or not override.lifted or strike.t > override.set_at:
                counting.setdefault(strike.offender, set()).add(strike.proof_id)
        counts = {server: len(ids) for server, ids in sorted(proofs.items())}
        quarantined = {s for s, ids in counting.items() if len(ids) >= self.threshold}
        quarantined |= {s for s, o in overrides.items() if not o.lifted}
        return Standing(counts, sorted(quarantined))

    async def quarantined(self) -> set[str]:
        return set((await self.standing()).quarantined)
