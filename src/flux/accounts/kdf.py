"""`KdfQueue`: argon2id work shared fairly between clients, with a bounded wait.

argon2id costs ~0.1 s of CPU and 64 MiB, so only `slots` run at once. With one FIFO
semaphore, whoever sends the most logins owns the queue: rotating usernames (each one
under its own per-username limit) starved a real login to 34 s. Here:

* each client (its network address, accounts/limiter.py) has its own line of waiters,
  and a freed slot goes to the next client in turn (round robin), not to the oldest
  waiter: a login waits for at most one job of each other client waiting, whatever they
  sent;
* one client may hold at most `per_client` jobs (running or waiting): more is refused at
  once (429 `rate_limited`);
* at most `max_waiting` jobs wait in all, and none longer than `max_wait_s`: then 503
  `unavailable` with Retry-After, rather than a wait nobody would sit through.

`history` keeps the last few events (("queued" | "started", client)) in order, so a test
can check how many jobs went ahead of a client without timing anything.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, TypeVar

from .errors import KdfBusy, TooManyAttempts

__all__ = ["KdfQueue"]

T = TypeVar("T")


class KdfQueue:
    def __init__(
        self, *, slots: int = 2, max_waiting: int = 64, per_client: int = 2, max_wait_s: float = 10.0
    ) -> None:
        self.slots = slots
        self.max_waiting = max_waiting
        self.per_client = per_client
        self.max_wait_s = max_wait_s
        self._free = slots
        #: client -> its waiters, in the order the clients take turns
        self._lines: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()
        self._held: dict[str, int] = {}  #: client -> jobs running or waiting
        self.history: deque[tuple[str, str]] = deque(maxlen=1024)

    @property
    def waiting(self) -> int:
        return sum(len(line) for line in self._lines.values())

    async def run(self, client: str, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` in a worker thread when `client`'s turn comes.

        Raises TooManyAttempts (the client already holds `per_client` jobs) and KdfBusy
        (the queue is full, or no slot came within `max_wait_s`)."""
        if self._held.get(client, 0) >= self.per_client:
            raise TooManyAttempts(
                "too many logins from your network address at once; wait for them",
                field="username", retry_after_s=1,
            )  # fmt: skip
        if self._free == 0 and self.waiting >= self.max_waiting:
            raise KdfBusy(self._busy(), retry_after_s=self._retry_s())
        self._held[client] = self._held.get(client, 0) + 1
        try:
            await self._acquire(client)
            try:
                self.history.append(("started", client))
                return await asyncio.to_thread(fn, *args)
            finally:
                self._release()
        finally:
            self._held[client] -= 1
            if not self._held[client]:
                del self._held[client]

    def _busy(self) -> str:
        return f"the server is busy with logins; try again in {self._retry_s()} s"

    def _retry_s(self) -> int:
        return max(1, int(self.max_wait_s))

    async def _acquire(self, client: str) -> None:
        self.history.append(("queued", client))
        if self._free > 0 and not self._lines:
            self._free -= 1
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._lines.setdefault(client, deque()).append(granted)
        try:
            async with asyncio.timeout(self.max_wait_s):
                await asyncio.shield(granted)
        except TimeoutError:
            if granted.done():  # the slot came with the deadline: take it
                return
            self._forget(client, granted)
            raise KdfBusy(self._busy(), retry_after_s=self._retry_s()) from None
        except asyncio.CancelledError:
            if granted.done():
                self._release()  # handed a slot nobody will use: pass it on
            else:
                self._forget(client, granted)
            raise

    def _forget(self, client: str, granted: asyncio.Future[None]) -> None:
        line = self._lines.get(client)
        if line is not None and granted in line:
            line.remove(granted)
            if not line:
                del self._lines[client]

    def _release(self) -> None:
        """Hand the freed slot to the first waiter of the next client in turn."""
        while self._lines:
            client, line = self._lines.popitem(last=False)
            granted = line.popleft()
            if line:
                self._lines[client] = line  # back of the rotation
            if not granted.done():
                granted.set_result(None)
                return
        self._free += 1
