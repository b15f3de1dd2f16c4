"""Server reputation: strikes (distinct proofs) per server, and who is quarantined.

A server is quarantined when it has at least `threshold` strikes (distinct proofs). An
operator can impose a quarantine whatever the strikes, or lift one: a lift forgives the
strikes recorded until then (they stay on record and in the counts shown), so a server that
keeps tampering after a lift earns `threshold` new proofs and is quarantined again.
Strikes and overrides live in the store, so every process that shares the database agrees.

What a flood of proofs costs (issue 10 §1). Proofs are cheap to make for a server that
wants to be struck (1,500 distinct ones in under 3 s), so neither what is stored nor what a
check reads may grow with them:

- A server with `threshold` strikes no lift has forgiven is quarantined; further proofs
  change nothing but the number shown. The store keeps at most `cap` = threshold +
  KEPT_BEYOND_THRESHOLD of them (a little more evidence for the operator), counted and
  written in one atomic step; past that a proof is not recorded, not reported on, and the
  number shown means "at least". A lift starts a new allowance of `cap`, so a server's rows
  grow only with its operator's lifts.
- The check on every federated message (`quarantined_among`) asks the store for counts of
  just the servers its route names (at most ~64, each at most `cap` rows per lift), never for
  the strikes themselves. Its answers are kept FRESH_FOR_S seconds per process and dropped at
  once when this process records a strike or an override; another process's strike or
  `flux admin lift|quarantine` is therefore seen within FRESH_FOR_S.
- The public standing (`/integrity/reputation`, `flux admin reputation`) lists at most
  STANDING_LIMIT offenders, quarantined ones first, and is kept FRESH_FOR_S as well, so a
  flood of requests for it costs one count query a second.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..store.base import Override, Store, Strike, StrikeTally

#: strikes kept beyond the threshold, per lift: evidence, not needed for the decision
KEPT_BEYOND_THRESHOLD = 2
#: offenders listed in a standing
STANDING_LIMIT = 100
#: how long a verdict or a standing read from the store is used before reading it again
FRESH_FOR_S = 1.0
#: verdicts remembered per process; past it they are all forgotten (then re-read)
MAX_REMEMBERED = 4096


@dataclass(frozen=True, slots=True)
class Standing:
    strikes: dict[str, int]  #: strikes recorded per offender (at most `cap` per lift)
    quarantined: list[str]


class Reputation:
    def __init__(
        self,
        store: Store,
        threshold: int,
        *,
        fresh_for_s: float = FRESH_FOR_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.threshold = threshold
        #: unforgiven strikes stored per offender at most (see the module doc)
        self.cap = threshold + KEPT_BEYOND_THRESHOLD
        self.fresh_for_s = fresh_for_s
        self.monotonic = monotonic
        self._verdicts: dict[str, tuple[float, bool]] = {}  # server: (read at, quarantined)
        self._standing: tuple[float, Standing] | None = None

    async def record(self, strike: Strike) -> bool:
        """Record a proven offense, once per proof and at most `cap` unforgiven per
        offender; True when it was stored (then reported on by the caller)."""
        stored = await self.store.add_strike(strike, cap=self.cap)
        if stored:
            self.forget()
        return stored

    async def set_override(self, server: str, lifted: bool, now_ms: int) -> None:
        """The operator's decision: lift (`lifted`) or impose a quarantine."""
        await self.store.set_quarantine_override(server, lifted, now_ms)
        self.forget()

    def forget(self) -> None:
        """Drop what this process remembers, so the next check reads the store."""
        self._verdicts.clear()
        self._standing = None

    async def quarantined_among(self, servers: Iterable[str]) -> set[str]:
        """Which of `servers` are quarantined: a count per server not already known,
        in one store query (plus the overrides), whatever the number of strikes."""
        now = self.monotonic()
        wanted = set(servers)
        known = {
            s: v for s in wanted if (v := self._verdicts.get(s)) and now - v[0] < self.fresh_for_s
        }
        missing = sorted(wanted - known.keys())
        if missing:
            tallies = await self.store.strike_tallies(missing, limit=len(missing))
            overrides = await self.store.quarantine_overrides()
            counting = {t.offender: t.counting for t in tallies}
            if len(self._verdicts) + len(missing) > MAX_REMEMBERED:
                self._verdicts.clear()
            for server in missing:
                o = overrides.get(server)
                imposed = o is not None and not o.lifted
                verdict = imposed or counting.get(server, 0) >= self.threshold
                known[server] = self._verdicts[server] = (now, verdict)
        return {s for s, (_, verdict) in known.items() if verdict}

    async def standing(self) -> Standing:
        """At most STANDING_LIMIT offenders (quarantined ones first) and every imposed
        quarantine; read from the store at most once per `fresh_for_s`."""
        now = self.monotonic()
        if self._standing is not None and now - self._standing[0] < self.fresh_for_s:
            return self._standing[1]
        tallies = await self.store.strike_tallies(limit=STANDING_LIMIT)
        standing = self._standing_of(tallies, await self.store.quarantine_overrides())
        self._standing = (now, standing)
        return standing

    def _standing_of(self, tallies: list[StrikeTally], overrides: dict[str, Override]) -> Standing:
        counts = {t.offender: t.recorded for t in sorted(tallies, key=lambda t: t.offender)}
        quarantined = {t.offender for t in tallies if t.counting >= self.threshold}
        quarantined |= {s for s, o in overrides.items() if not o.lifted}
        return Standing(counts, sorted(quarantined))

    async def quarantined(self) -> set[str]:
        """The quarantined servers of the standing (bounded like it)."""
        return set((await self.standing()).quarantined)
