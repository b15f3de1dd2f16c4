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
