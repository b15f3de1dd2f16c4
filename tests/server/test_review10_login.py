"""Review of issue 10 §2 (login starvation, and what a refused login costs).

Found and fixed (accounts/limiter.py): with usernames rotated from one address already
over its failure budget, every attempt still counted a hit in a new (username, address)
bucket, a write to the store, before the per-address limit refused it; 100 of those a
second (what the request budget lets one address make) took the legitimate /health to
0.51x idle in benchmarks/adversarial.py `login`. An address found over its budget is now
refused from memory for CLIENT_FULL_HOLD_MS, with no store round trip.
"""

from __future__ import annotations

from flux.accounts.limiter import CLIENT_FULL_HOLD_MS, LoginLimiter


class Counting:
    """A FailureCounter holding `limit` hits per bucket, counting the calls it gets."""

    window_ms = 60_000

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.hits: dict[str, int] = {}
        self.calls = 0

    async def hit(self, bucket: str, now_ms: int) -> bool:
        self.calls += 1
        if self.hits.get(bucket, 0) >= self.limit:
            return True
        self.hits[bucket] = self.hits.get(bucket, 0) + 1
        return False

    async def clear(self, bucket: str) -> None:
        self.hits.pop(bucket, None)


async def test_rotated_usernames_from_an_address_over_its_budget_cost_no_store_writes():
    pair, client, account = Counting(5), Counting(3), Counting(100)
    limiter = LoginLimiter(pair, per_client=client, per_account=account)
    answers = [await limiter.refusal((f"user{n}", "198.51.100.7"), 1_000) for n in range(4)]
    assert answers == [None, None, None, "client"]
    before = (pair.calls, client.calls, account.calls, len(pair.hits))
    for n in range(4, 1_000):  # the flood: a new username each time, within the hold
        assert await limiter.refusal((f"user{n}", "198.51.100.7"), 1_000 + n) == "client"
    assert (pair.calls, client.calls, account.calls, len(pair.hits)) == before
    # another address is not affected, and after the hold the store is asked again
    assert await limiter.refusal(("user0", "198.51.100.8"), 1_500) is None
    later = 1_000 + CLIENT_FULL_HOLD_MS + 1
    assert await limiter.refusal(("userX", "198.51.100.7"), later) == "client"
    assert client.calls == before[1] + 2  # 198.51.100.8's check, then the one after the hold
