"""The fan-out's wire form (server/fanout.py); tests/e2e/test_e2e_cluster.py runs it
between real processes on PostgreSQL."""

from __future__ import annotations

import pytest

from flux.server.fanout import CHANGED, IDS_PER_EVENT, NEW, MailEvent, _decode, _encode, _split
from flux.store import MessageRef

LONG = "fx1" + "f" * 40 + "@" + "d" * 250  #: a sender as long as an address gets


def test_an_event_round_trips_and_names_its_process() -> None:
    event = MailEvent("fx1" + "a" * 40, CHANGED, (MessageRef("0" * 32, LONG), MessageRef("1" * 32, "fx1" + "b" * 40)), 42, "p1/99")
    assert _decode(_encode(event, "p1")) == ("p1", event)


def test_a_large_event_is_split_under_the_notify_limit() -> None:
    ids = tuple(MessageRef(f"{n:032x}", LONG) for n in range(IDS_PER_EVENT * 2 + 1))
    parts = _split(MailEvent("fx1" + "a" * 40, NEW, ids))
    assert [len(p.ids) for p in parts] == [IDS_PER_EVENT, IDS_PER_EVENT, 1]
    assert tuple(i for p in parts for i in p.ids) == ids
    assert all(len(_encode(p, "p" * 16).encode()) < 8000 for p in parts)


@pytest.mark.parametrize(
    "payload",
    ["", "[]", "{}", '{"p":"x","a":"a","k":"boom","i":[],"s":0,"o":""}',
     '{"p":"x","a":"a","k":"new","i":[1],"s":0,"o":""}',
     '{"p":"x","a":"a","k":"new","i":["0"],"s":0,"o":""}'],
)  # fmt: skip
def test_a_payload_that_is_not_an_event_is_refused(payload: str) -> None:
    with pytest.raises((ValueError, KeyError, TypeError)):
        _decode(payload)


# -- two deployments in two schemas of one database (issue 10 §6) -----------------------------


async def test_two_schemas_of_one_database_neither_share_pushes_nor_locks() -> None:
    """Staging and production, same domain, two schemas of one PostgreSQL database: the
    push channel and the advisory locks are named by schema, so neither hears the other's
    events or waits on its locks; two processes of one deployment still hear each other."""
    import asyncio

    from flux.server.fanout import Dispatcher, PostgresFanout, new_process_id
    from flux.store import PostgresStore
    from flux.store.base import MessageRef
    from postgres_env import fresh_schema_url

    class Recording(Dispatcher):  # a real dispatcher base; only what it does is recorded
        def __init__(self) -> None:
            super().__init__(store=None, hub=None, process=new_process_id())  # type: ignore[arg-type]
            self.heard: asyncio.Queue[MailEvent] = asyncio.Queue()

        async def deliver(self, event: MailEvent) -> None:
            self.heard.put_nowait(event)

    async with fresh_schema_url("flux_prod") as prod, fresh_schema_url("flux_staging") as staging:
        stores = [PostgresStore(prod), PostgresStore(staging)]
        for store in stores:
            await store.open()
        try:
            assert stores[0].scope != stores[1].scope
            assert stores[0]._locks.key("mailbox", "fx1a") != stores[1]._locks.key("mailbox", "fx1a")
            fans = [PostgresFanout(Recording(), url, "flux.test") for url in (prod, prod, staging, staging)]
            contexts = [fan.lifespan(None) for fan in fans]
            for ctx in contexts:
                await ctx.__aenter__()
            try:
                for fan in fans:
                    await asyncio.wait_for(fan.connected.wait(), 10)
                assert fans[0].channel == fans[1].channel != fans[2].channel == fans[3].channel
                ref = (MessageRef("a" * 32, "fx1" + "5" * 40),)
                await fans[0].publish(MailEvent("fx1" + "a" * 40, CHANGED, ref, 7))
                own = await fans[0].dispatcher.heard.get()  # dispatched directly
                other = await asyncio.wait_for(fans[1].dispatcher.heard.get(), 10)
                assert own.state == other.state == 7
                # Staging's sentinel, sent after production's event: what staging hears
                # first is its own sentinel, never production's event.
                await fans[3].publish(MailEvent("fx1" + "a" * 40, CHANGED, ref, 99))
                first = await asyncio.wait_for(fans[2].dispatcher.heard.get(), 10)
                assert first.state == 99
            finally:
                for ctx in reversed(contexts):
                    await ctx.__aexit__(None, None, None)
        finally:
            for store in stores:
                await store.close()
