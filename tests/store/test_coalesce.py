"""Group commit for round-trip stores (flux/store/_coalesce.py)."""

from __future__ import annotations

import asyncio

import pytest

from flux.store._coalesce import Coalescer


async def test_concurrent_calls_share_batches_in_order_and_get_their_own_results() -> None:
    batches: list[list[int]] = []
    gate = asyncio.Event()

    async def run(items: list[int]) -> list[int]:
        batches.append(items)
        await gate.wait()  # the first batch is "in flight" while the others arrive
        return [i * 10 for i in items]

    c: Coalescer[int, int] = Coalescer(run, max_batch=3, max_in_flight=1)
    calls = [asyncio.create_task(c.submit([n])) for n in range(7)]
    await asyncio.sleep(0)
    gate.set()
    assert [await call for call in calls] == [[n * 10] for n in range(7)]
    assert batches == [[0], [1, 2, 3], [4, 5, 6]]  # arrival order, at most 3 per batch


async def test_a_failed_batch_fails_each_of_its_callers_and_not_the_next() -> None:
    async def run(items: list[str]) -> list[str]:
        if "bad" in items:
            raise RuntimeError("boom")
        return items

    c: Coalescer[str, str] = Coalescer(run, max_in_flight=1)
    first = asyncio.create_task(c.submit(["bad"]))
    second = asyncio.create_task(c.submit(["fine"]))
    with pytest.raises(RuntimeError):
        await first
    assert await second == ["fine"]
