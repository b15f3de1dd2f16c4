"""The client names a message by its sender and id (PROTOCOL.md §4.5): against a real
server, a mailbox holding two senders' messages under one id answers every call that names
only the id with AmbiguousId (409 `ambiguous`, listing the senders), and `sender=` chooses."""

from __future__ import annotations

import time

import pytest

from flux.client import AmbiguousId, FluxClient, FluxClientError
from flux.protocol import compose

X = "cd" * 16  #: the id both senders use


async def send_as(client: FluxClient, to: str, content: str, **kw) -> None:
    """`client` sends `content` to `to` under the fixed id X (FluxClient.send picks ids)."""
    out = compose(client.identity, to, content, now_ms=int(time.time() * 1000), message_id=X,
                  **kw)  # fmt: skip
    answer = await client._request("POST", "/send", json=out.primary, auth=False)
    assert answer["recipients"] == {to: "stored"}


@pytest.fixture
async def three(make_client):
    alice, bob, mallory = await make_client(), await make_client(), await make_client()
    await send_as(mallory, bob.address, "planted first")  # squats X in bob's mailbox
    await send_as(alice, bob.address, "the real one")
    return alice, bob, mallory


async def test_every_call_naming_only_the_id_raises_ambiguous_id(three) -> None:
    alice, bob, mallory = three
    senders = sorted([alice.address, mallory.address])
    calls = {
        "get": bob.get(X),
        "thread": bob.thread(X),
        "read": bob.read(X),
        "delete": bob.delete([X]),
        "tag": bob.tag(X, add=["x"]),
        "move": bob.move(X, "later"),
    }
    for call, pending in calls.items():
        with pytest.raises(AmbiguousId) as caught:
            await pending
        err = caught.value
        assert isinstance(err, FluxClientError), call  # callers catching the base still do
        assert (err.status, err.code, err.field) == (409, "ambiguous", "from"), call
        assert err.candidates == {X: senders}, call
    # nothing was changed by the refused calls
    for who in (alice, mallory):
        m = await bob.get(X, sender=who.address)
        assert (m["_status"], m["_tags"], m["_inbox"]) == ("pending", [], "inbox")


async def test_sender_chooses_the_message(three) -> None:
    alice, bob, mallory = three
    assert (await bob.get(X, sender=alice.address))["content"] == "the real one"
    assert (await bob.get(X, sender=mallory.address))["content"] == "planted first"
    assert [m["content"] for m in await bob.thread(X, sender=mallory.address)] == ["planted first"]
    assert await bob.tag(X, add=["x"], sender=alice.address) == ["x"]
    assert await bob.move(X, "later", sender=alice.address) == "later"
    assert await bob.read(X, sender=alice.address) == [X]
    assert await bob.delete([{"id": X, "from": mallory.address}]) == [X]
    real = await bob.get(X, sender=alice.address)
    fake = await bob.get(X, sender=mallory.address)
    assert (real["_status"], real["_tags"], real["_inbox"]) == ("read", ["x"], "later")
    assert (fake["_status"], fake["_tags"], fake["_inbox"]) == ("deleted", [], "inbox")


async def test_an_unambiguous_id_needs_no_sender(make_client) -> None:
    alice, bob = await make_client(), await make_client()
    sent = await alice.send(bob.address, "just one")
    assert (await bob.get(sent.id))["content"] == "just one"
    assert await bob.read(sent.id) == [sent.id]
    with pytest.raises(FluxClientError) as caught:  # a sender that never sent it: not found
        await bob.get(sent.id, sender=bob.address)
    assert caught.value.status == 404 and not isinstance(caught.value, AmbiguousId)
