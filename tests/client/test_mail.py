"""The client against a real server: register, authenticate, send, fetch, the mailbox."""

from __future__ import annotations

import pytest

from flux import FluxIdentity
from flux.client import FluxClient, FluxClientError
from flux.protocol.errors import FluxError


async def test_register_then_authenticate_gives_a_session(make_client):
    alice = await make_client()
    assert alice.token is None  # authentication is lazy
    token = await alice.authenticate()
    assert token and alice.token == token
    assert alice.domain
    status = await alice.status()
    assert status["ok"] is True and status["pending"] == 0


async def test_first_mailbox_call_authenticates_by_itself(make_client):
    alice = await make_client()
    page = await alice.inbox()
    assert page.messages == []
    assert alice.token is not None


async def test_an_expired_token_is_replaced_transparently(make_client):
    alice = await make_client()
    await alice.authenticate()
    await alice.logout()  # the server revokes it
    assert (await alice.inbox()).messages == []


async def test_send_and_fetch(make_client):
    alice, bob = await make_client(), await make_client()
    sent = await alice.send(bob.address, "Hello Bob", subject="Hi", tags=["Work"])
    assert sent.recipients == {bob.address: "stored"}
    assert not sent.duplicate

    peek = await bob.peek()
    assert peek.pending == 1 and peek.messages[0]["id"] == sent.id

    fetched = await bob.fetch()
    assert [m["id"] for m in fetched] == [sent.id]
    msg = fetched[0]
    verified = bob.verify(msg)
    assert verified.sender == alice.address
    assert verified.hops >= 1  # the server attested it
    assert bob.decrypt(msg) == "Hello Bob"
    assert msg["tags"] == ["work"]
    assert await bob.fetch() == []  # fetched messages are delivered, not pending
    assert (await bob.peek()).pending == 0


async def test_a_replayed_message_is_a_duplicate(make_client):
    alice, bob = await make_client(), await make_client()
    sent = await alice.send(bob.address, "once")
    again = await alice._request("POST", "/send", json=sent.envelopes[0], auth=False)
    assert again["duplicate"] is True
    assert len(await bob.fetch()) == 1


async def test_mail_for_an_unregistered_address_is_refused_with_the_servers_code(make_client):
    alice = await make_client()
    stranger = FluxIdentity.generate()
    with pytest.raises(FluxClientError) as caught:
        await alice.send(stranger.address, "anyone there?")
    error = caught.value
    assert isinstance(error, FluxError)
    assert error.status == 404
    assert error.code == "unknown_recipient"
    assert error.message


async def test_a_bad_argument_is_refused_before_anything_is_sent(make_client):
    alice = await make_client()
    with pytest.raises(FluxError) as caught:
        await alice.send("not-an-address", "hi")
    assert caught.value.field == "to"


async def test_an_unreachable_server_is_a_client_error():
    client = FluxClient(FluxIdentity.generate(), "http://127.0.0.1:9")
    try:
        with pytest.raises(FluxClientError) as caught:
            await client.inbox()
        assert caught.value.code == "unreachable" and caught.value.status is None
    finally:
        await client.close()


async def test_read_tag_move_delete(make_client):
    alice, bob = await make_client(), await make_client()
    sent = await alice.send(bob.address, "lifecycle")
    await bob.fetch()

    assert await bob.read(sent.id) == [sent.id]
    assert (await bob.get(sent.id))["_status"] == "read"

    tags = await bob.tag(sent.id, add=["important", "project-x"])
    assert set(tags) == {"important", "project-x"}
    assert await bob.tag(sent.id, remove=["project-x"]) == ["important"]
    assert [m["id"] for m in (await bob.inbox(tag="important")).messages] == [sent.id]

    assert await bob.move(sent.id, "archive") == "archive"
    assert [m["id"] for m in (await bob.inbox("archive")).messages] == [sent.id]
    assert (await bob.inbox("inbox")).messages == []
    assert (await bob.inboxes())["archive"]

    assert await bob.delete([sent.id]) == [sent.id]
    assert (await bob.inbox("archive")).messages == []
    deleted = (await bob.inbox("archive", status="deleted")).messages
    assert [m["id"] for m in deleted] == [sent.id]  # soft: kept


async def test_another_key_cannot_read_a_mailbox(make_client):
    alice, bob = await make_client(), await make_client()
    sent = await alice.send(bob.address, "private")
    with pytest.raises(FluxClientError) as caught:
        await alice._request("GET", f"/message/{bob.address}/{sent.id}")
    assert caught.value.status == 403


async def test_inbox_pages_newest_first(make_client):
    alice, bob = await make_client(), await make_client()
    ids = [(await alice.send(bob.address, f"message {i}")).id for i in range(3)]
    first = await bob.inbox(limit=2)
    assert [m["id"] for m in first.messages] == ids[::-1][:2]
    assert first.next_cursor
    rest = await bob.inbox(limit=2, cursor=first.next_cursor)
    assert [m["id"] for m in rest.messages] == ids[:1]


async def test_thread_follows_re(make_client):
    alice, bob = await make_client(), await make_client()
    first = await alice.send(bob.address, "first", subject="Plan")
    second = await alice.send(bob.address, "and another thing", reply_to=first.id)
    thread = await bob.thread(second.id)
    assert [m["id"] for m in thread] == [first.id, second.id]


async def test_changes_since_a_state(make_client):
    alice, bob = await make_client(), await make_client()
    start = await bob.changes(0)
    sent = await alice.send(bob.address, "news")
    after_send = await bob.changes(start.state)
    assert [m["id"] for m in after_send.created] == [sent.id]
    assert after_send.state > start.state

    await bob.read(sent.id)
    after_read = await bob.changes(after_send.state)
    assert after_read.created == []
    assert [m["id"] for m in after_read.updated] == [sent.id]
    assert after_read.updated[0]["_status"] == "read"
    assert (await bob.changes(after_read.state)).created == []


async def test_reply_goes_to_the_sender_and_links_the_original(make_client):
    alice, bob = await make_client(), await make_client()
    sent = await alice.send(bob.address, "question?", subject="Q")
    msg = (await bob.fetch())[0]
    reply = await bob.reply(msg, "answer!")
    got = (await alice.fetch())[0]
    assert got["id"] == reply.id and got["re"] == sent.id and got["subject"] == "Re: Q"
    alice.verify(got)
