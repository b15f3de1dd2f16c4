"""`LoginLimiter`: failed logins per (username, peer) in a sliding window.

It keys on the username *and* the peer so that an attacker elsewhere cannot lock a user
out of their own account by failing on purpose. It counts with a counter passed in (never
global), which decides where the count lives: in this process
(flux.server.limits.MemoryHitCounter), or in the store, shared by every process that
serves the domain from one PostgreSQL database (StoreHitCounter), so that an attacker who
spreads guesses over the processes gets no more of them. The counter holds the limit and
the window (`MAX_FAILURES` in `WINDOW_MS` for logins); the clock is passed to each call.

An attempt is counted as a failure *before* its password is checked, and the count is
cleared once it succeeds. So guesses sent in parallel cannot all pass while their hashes
are still being checked, and a check is never started for a (username, peer) that has
already failed `MAX_FAILURES` times in the window: it is refused at once (429).

A limit per (username, peer) alone is no limit on an attacker who rotates either: new
usernames from one address cost the server an argon2id check each (login starvation),
and new addresses against one username guess its password unbounded. So two more
counters, with limits of their own (generous: many users share one address behind NAT,
and a username under attack from everywhere should still be refused only well past
what a person mistyping causes): attempts from one peer, whatever the username
(`per_client`), and attempts on one username, whatever the peer (`per_account`). These
count every attempt and are not cleared by a success, since an attacker with an account
of its own could otherwise reset its address's budget between guesses. The cost: a
username attacked from many addresses may be refused for its window to its owner too;
the per-account limit is high so that this needs a botnet, and the refusal names it.
"""

from __future__ import annotations

import json
from typing import Protocol

__all__ = ["MAX_FAILURES", "WINDOW_MS", "FailureCounter", "LoginLimiter"]

Key = tuple[str, str]
MAX_FAILURES = 5
WINDOW_MS = 15 * 60_000
#: a client address found over its failure budget is refused from memory this long, with
#: no store round trip (and no new pair bucket written for each username it rotates)
CLIENT_FULL_HOLD_MS = 1_000
#: client addresses remembered as over their budget, at most (then forgotten, all at once)
CLIENT_FULL_MAX = 10_000


class FailureCounter(Protocol):
    """What LoginLimiter counts with: the shape of flux.server.limits.HitCounter (this
    package imports nothing from flux.server)."""

    window_ms: int

    async def hit(self, bucket: str, now_ms: int) -> bool:
        """Count one hit; True (nothing counted) when the bucket is already full."""
        ...

    async def clear(self, bucket: str) -> None: ...


class LoginLimiter:
    def __init__(
        self,
        counter: FailureCounter,
        *,
        per_client: FailureCounter | None = None,
        per_account: FailureCounter | None = None,
    ) -> None:
        self.counter = counter
        self.per_client = per_client
        self.per_account = per_account
        #: client buckets found full, and until when that is believed without asking
        self._client_full: dict[str, int] = {}

    @staticmethod
    def bucket(key: Key) -> str:
        """The counter's bucket for (username, peer): unambiguous whatever either holds,
        and apart from other users of a shared counter (they do not start with "login:")."""
        return "login:" + json.dumps(list(key), separators=(",", ":"))

    async def attempt(self, key: Key, now_ms: int) -> bool:
        """Count an attempt as a failed login (until `succeeded`); True, and nothing counted,
        when the window already holds the maximum of failures: refuse it unchecked."""
        return await self.refusal(key, now_ms) is not None

    async def refusal(self, key: Key, now_ms: int) -> str | None:
        """As `attempt`, saying which limit refuses: "pair", "client" or "account" (None:
        the attempt may go on). The pair's counter is checked first, so a person retrying
        their own username is refused by their own budget."""
        name, peer = key
        client = self.bucket(("*", peer))
        if self._client_full.get(client, -1) > now_ms:
            # Rotating usernames from an address already over its budget: each attempt
            # would count a hit in a new pair bucket (a store write) before being refused
            # as "client"; 100 a second of those halved /health (benchmarks/adversarial.py)
            return "client"
        if await self.counter.hit(self.bucket(key), now_ms):
            return "pair"
        if self.per_client is not None and await self.per_client.hit(client, now_ms):
            if len(self._client_full) >= CLIENT_FULL_MAX:
                self._client_full.clear()
            self._client_full[client] = now_ms + CLIENT_FULL_HOLD_MS
            return "client"
        if self.per_account is not None and await self.per_account.hit(
            self.bucket((name, "*")), now_ms
        ):
            return "account"
        return None

    async def succeeded(self, key: Key) -> None:
        """Forget the failures of `key`: its password was right."""
        await self.counter.clear(self.bucket(key))

    @property
    def retry_after_s(self) -> int:
        """An upper bound on the wait for a refused key: the counter keeps no per-key
        time the limiter could ask for, so this is the whole window."""
        return -(-self.counter.window_ms // 1000)
