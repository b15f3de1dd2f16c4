"""The fan-out's wire form (server/fanout.py); tests/e2e/test_e2e_cluster.py runs it
between real processes on PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import pytest

from flux.server import fanout as fanout_module
from flux.server.fanout import (
    CHANGED,
    DELIVERY,
    IDS_PER_EVENT,
    KINDS,
    NEW,
    Dispatcher,
    MailEvent,
    PostgresFanout,
    _address_of,
    _decode,
    _encode,
    _split,
    new_process_id,
)
from flux.server.metrics import Metrics
from flux.server.push import Hub
from flux.store import MessageRef

LONG = "fx1" + "f" * 40 + "@" + "d" * 250  #: a sender as long as an address gets
A = "fx1" + "a" * 40
B = "fx1" + "b" * 40


class Recording(Dispatcher):
    """A real dispatcher base; only what it is asked to deliver is recorded. `listens`:
    the addresses with a socket on this process (None: every address)."""

    def __init__(self, process: str | None = None, listens: Iterable[str] | None = None) -> None:
        super().__init__(store=None, hub=None, process=process or new_process_id())  # type: ignore[arg-type]
        self.listens = None if listens is None else set(listens)
        self.asked: list[str] = []  #: the addresses `listening` was asked about
        self.heard: asyncio.Queue[MailEvent] = asyncio.Queue()

    def listening(self, address: str) -> bool:
        self.asked.append(address)
        return self.listens is None or address in self.listens

    async def deliver(self, event: MailEvent) -> None:
        self.heard.put_nowait(event)


def _event(kind: str, address: str = A) -> MailEvent:
    ref = (MessageRef("0" * 32, address if kind == DELIVERY else B),)
    if kind == DELIVERY:
        return MailEvent(address, DELIVERY, ref, recipients=(B,))
    if kind == CHANGED:
        return MailEvent(address, CHANGED, ref, 42, "p2/7")
    return MailEvent(address, NEW, ref)


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
    from flux.store import PostgresStore
    from postgres_env import fresh_schema_url

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


# -- an event for an address with no socket here is dropped unread (issue 15, aim 3c) ---------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("address", [A, LONG, "fx1a", "", 'x"y', "\\", "é@ü", "a\nb", '","a":"'])
def test_the_address_read_without_decoding_is_the_decoded_one(kind: str, address: str) -> None:
    payload = _encode(_event(kind, address), "p" * 16)
    quick = _address_of(payload)
    assert quick is None or quick == _decode(payload)[1].address
    if "\\" not in payload.split(',"k":', 1)[0]:
        assert quick == address  # only an escaped id or address is left to the full decode


@pytest.mark.parametrize(
    "payload",
    ["", "{}", '{"a":"x","p":"y"}', '{"p":"x"}', '{"p":"x","a":"y', '{"p":"x\\","a":"y"}',
     '{"p":1,"a":"y"}', '{"p":"x","k":"new","a":"y"}'],
)  # fmt: skip
def test_a_payload_not_begun_as_encode_begins_it_is_left_to_the_full_decode(payload: str) -> None:
    assert _address_of(payload) is None


def _fanout(listens: Iterable[str] | None) -> PostgresFanout:
    return PostgresFanout(Recording("p1", listens), "postgresql://unused", "flux.test", scope="")


async def _heard_all(fan: PostgresFanout) -> list[MailEvent]:
    await asyncio.sleep(0)  # the dispatch is a task: let it run
    await asyncio.gather(*fan._tasks)
    heard = fan.dispatcher.heard  # type: ignore[attr-defined]
    return [heard.get_nowait() for _ in range(heard.qsize())]


@pytest.mark.parametrize("kind", KINDS)
async def test_another_process_event_for_no_socket_here_is_dropped_undecoded(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever its kind, an event does nothing on a process where its address has no
    socket (Dispatcher.deliver): it is not decoded, not delivered, and starts no task."""
    fan = _fanout(listens={B})
    decoded: list[str] = []
    monkeypatch.setattr(fanout_module, "_decode", lambda p: decoded.append(p) or _decode(p))
    fan._heard(None, 0, fan.channel, _encode(_event(kind), "p2"))
    assert not fan._tasks and decoded == []
    assert fan.dispatcher.asked == [A]  # type: ignore[attr-defined]
    assert await _heard_all(fan) == []


@pytest.mark.parametrize("kind", KINDS)
async def test_another_process_event_for_a_socket_here_is_delivered(kind: str) -> None:
    fan = _fanout(listens={A})
    fan._heard(None, 0, fan.channel, _encode(_event(kind), "p2"))
    assert len(fan._tasks) == 1
    assert await _heard_all(fan) == [_event(kind)]


@pytest.mark.parametrize("listens", [set(), {"é@ü"}])
async def test_an_escaped_address_is_decoded_in_full_and_still_asked(listens: set[str]) -> None:
    """An address the quick read leaves to the full decode (it holds an escape) is still
    delivered only where it has a socket."""
    fan = _fanout(listens=listens)
    event = _event(CHANGED, "é@ü")
    fan._heard(None, 0, fan.channel, _encode(event, "p2"))
    assert await _heard_all(fan) == ([event] if listens else [])
    assert not fan._tasks


async def test_a_bad_payload_for_a_socket_here_is_still_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fan = _fanout(listens={A})
    bad = '{"p":"p2","a":"' + A + '","k":"boom","i":[],"s":0,"o":""}'
    with caplog.at_level(logging.WARNING, logger="flux.server"):
        fan._heard(None, 0, fan.channel, bad)
    assert "event=fanout_bad_payload" in caplog.text
    assert not fan._tasks


class _Sink:
    """A socket that keeps what is written on it."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_str(self, data: str) -> None:
        self.sent.append(data)

    async def ping(self, message: bytes = b"") -> None:
        pass

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        return True


async def test_the_dispatcher_listens_where_the_hub_has_a_socket() -> None:
    """The real dispatcher asks its hub; with no socket, `deliver` touches nothing (its
    store is None here: any read would fail), with one a `changed` frame is queued."""
    hub = Hub(Metrics(), 8)
    dispatcher = Dispatcher(store=None, hub=hub, process="p1")  # type: ignore[arg-type]
    assert not dispatcher.listening(A)
    for kind in KINDS:
        await dispatcher.deliver(_event(kind))
    conn = hub.connect(_Sink(), A)
    assert dispatcher.listening(A) and not dispatcher.listening(B)
    conn.start()
    await dispatcher.deliver(_event(CHANGED))
    await asyncio.sleep(0)
    assert [f for f in conn.ws.sent if '"changed"' in f]  # type: ignore[attr-defined]
    hub.disconnect(conn)
    await conn.finish()
    assert not dispatcher.listening(A)
