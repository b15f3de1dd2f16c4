"""`LoginLimiter`: failed logins per (username, peer) in a sliding window.

In memory, owned by one `Accounts` and passed in (never global): a guessing attacker is
slowed at the process it talks to. It keys on the username *and* the peer so that an
attacker elsewhere cannot lock a user out of their own account by failing on purpose. The
clock is passed to each call, so tests drive it.
"""

from __future__ import annotations

from collections import deque

__all__ = ["LoginLimiter"]

Key = tuple[str, str]


class LoginLimiter:
    def __init__(
        self, *, max_failures: int = 5, window_ms: int = 15 * 60_000, max_keys: int = 100_000
    ) -> None:
        self.max_failures = max_failures
        self.window_ms = window_ms
        self.max_keys = max_keys  # beyond this, expired entries are pruned before adding
        self._failures: dict[Key, deque[int]] = {}

    def _recent(self, key: Key, now_ms: int) -> deque[int] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now_ms - self.window_ms:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def blocked(self, key: Key, now_ms: int) -> bool:
        """True once `max_failures` failures fall inside the window ending now."""
        times = self._recent(key, now_ms)
        return times is not None and len(times) >= self.max_failures

    def retry_after_ms(self, key: Key, now_ms: int) -> int:
        """How long until the oldest counted failure leaves the window (0 if not blocked)."""
        if not self.blocked(key, now_ms):
            return 0
        return self._failures[key][0] + self.window_ms - now_ms

    def failed(self, key: Key, now_ms: int) -> None:
        if key not in self._failures and len(self._failures) >= self.max_keys:
            self.prune(now_ms)
        self._recent(key, now_ms)
        self._failures.setdefault(key, deque()).append(now_ms)

    def succeeded(self, key: Key) -> None:
        self._failures.pop(key, None)

    def prune(self, now_ms: int) -> None:
        for key in list(self._failures):
            self._recent(key, now_ms)
