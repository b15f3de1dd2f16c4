"""What a process does with a NOTIFY it hears (server/fanout.py PostgresFanout._heard): its
own events were dispatched when published, so they are dropped before being decoded;
another process's are dispatched here. No database: the listener's callback is called as
asyncpg calls it."""

from __future__ import annotations

import asyncio

from flux.server.fanout import (
    NEW,
    Dispatcher,
    MailEvent,
    PostgresFanout,
    _encode,
    _sender_prefix,
)
from flux.store import MessageRef

EVENT = MailEvent("fx1" + "a" * 40, NEW, (MessageRef("0" * 32, "fx1" + "b" * 40),))


class Recording(Dispatcher):
    """A real dispatcher base; only what it is asked to deliver is recorded."""

    def __init__(self, process: str) -> None:
        super().__init__(store=None, hub=None, process=process)  # type: ignore[arg-type]
        self.heard: list[MailEvent] = []

    def listening(self, address: str) -> bool:
        return True  # a socket for every address: what is dispatched is the process's choice

    async def deliver(self, event: MailEvent) -> None:
        self.heard.append(event)


def test_a_payload_names_its_process_first() -> None:
    assert _encode(EVENT, "p1").startswith(_sender_prefix("p1"))
    # a process whose id begins with another's is not taken for it
    assert not _encode(EVENT, "p10").startswith(_sender_prefix("p1"))


async def test_only_another_process_events_are_dispatched() -> None:
    fanout = PostgresFanout(Recording("p1"), "postgresql://unused", "flux.test", scope="")
    fanout._heard(None, 0, fanout.channel, _encode(EVENT, "p1"))
    fanout._heard(None, 0, fanout.channel, _encode(EVENT, "p10"))
    await asyncio.sleep(0)  # the dispatch is a task: let it run
    await asyncio.gather(*fanout._tasks)
    assert fanout.dispatcher.heard == [EVENT]
