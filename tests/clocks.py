"""A clock the tests move by hand (shared by the server and account tests)."""

from __future__ import annotations

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z


class FakeClock:
    """unix ms that only moves when a test moves it."""

    def __init__(self, now: int = NOW) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms
