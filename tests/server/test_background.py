"""The background-loop helpers (flux/background.py)."""

from __future__ import annotations

import asyncio

from flux.background import running, wait_at_most


async def test_wait_at_most_returns_on_the_event_or_the_time() -> None:
    event = asyncio.Event()
    assert await wait_at_most(event, 0) is False
    event.set()
    assert await wait_at_most(event, 10) is True


async def test_a_loop_sleeping_in_wait_at_most_always_stops() -> None:
    """The shutdown hang this replaces: a loop whose sleep is set and cancelled in the
    same turn must still stop (asyncio.wait_for on 3.11 could lose the cancellation)."""
    wake = asyncio.Event()
    rounds = 0

    async def loop() -> None:
        nonlocal rounds
        while True:
            wake.clear()
            rounds += 1
            await wait_at_most(wake, 10)

    for _ in range(200):
        async with running(loop(), "test-loop") as task:
            await asyncio.sleep(0)  # let it reach its wait
            wake.set()  # the wake-up and the cancellation race, as on shutdown
        assert task.done() and task.cancelled()
    assert rounds >= 200
