"""Background loops: a task tied to a block (the shape of every long-running loop of a
server: the delivery worker, the push fan-out, the expiry sweeper, each run for the
lifetime of an app through `app.cleanup_ctx`), and the cancellable wait they sleep in."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any


@contextlib.asynccontextmanager
async def running(loop: Coroutine[Any, Any, None], name: str) -> AsyncIterator[asyncio.Task[None]]:
    """Run `loop` as a task while the block runs; on leaving, cancel it and wait for it."""
    task = asyncio.create_task(loop, name=name)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_at_most(event: asyncio.Event, seconds: float | None) -> bool:
    """Wait until `event` is set or `seconds` have passed (None: no limit); True if set.

    Not `asyncio.wait_for(event.wait(), ...)`: on Python 3.11 a cancellation that races
    with the inner wait can be lost there, and a loop that waits so never stops (seen as a
    server hanging on SIGTERM). `asyncio.timeout` has no such race.
    """
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
        return True
    except TimeoutError:
        return False
