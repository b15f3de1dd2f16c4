"""/mail/*: a password account sends (signed by its custodial key, through the same
submit pipeline as /send) and reads its own mailbox, and only its own."""

from __future__ import annotations

from typing import Any

import pytest
from accounts_helpers import make_identity

from flux.protocol import decrypt_content, verify_envelope


async def test_send_to_another_account_verifies_as_the_sender(srv: Any) -> None:
    ada, bob = await srv.account("ada"), await srv.account("bob")
    sent = await srv.send(ada, to=bob.address, content="Hello Bob, from Ada",
                          subject="Hi", tags=["greeting"])  # fmt: skip
    assert sent["recipients"] == {bob.address: "stored"} and sent["duplicate"] is False
    [msg] = await srv.inbox(bob)
    assert msg["id"] == sent["id"] and msg["from"] == ada.address and msg["subject"] == "Hi"
    env = verify_envelope(msg, now_ms=srv.clock.now)
    assert env.sender == ada.address
    assert msg["integrity_chain"][-1]["server"] == srv.config.domain
    assert "greeting" in msg["_tags"]


async def test_recipients_by_name(srv: Any) -> None:
    ada, bob = await srv.account("ada"), await srv.account("bob")
    carol = await srv.account("carol")
    sent = await srv.send(ada, to="bob", cc=[f"Carol@{srv.config.domain.upper()}"],
                          content="names work")  # fmt: skip
    assert set(sent["recipients"]) == {bob.address, carol.address}
    assert (await srv.inbox(carol))[0]["cc"] == [carol.address]
    unknown = await srv.send(ada, expect=404, to="nobody-here", content="hello?")
    assert (unknown["code"], unknown["field"]) == ("unknown_recipient", "to")
    elsewhere = await srv.send(ada, expect=400, to="bob@other.example", content="hello?")
    assert (elsewhere["code"], elsewhere["field"]) == ("invalid_value", "to")


async def test_send_to_a_key_registered_address(srv: Any) -> None:
    ada = await srv.account("ada")
    keyholder = make_identity("keyholder")
    token = await srv.key_login(keyholder)
    sent = await srv.send(ada, to=keyholder.address, content="to your own key")
    assert sent["recipients"] == {keyholder.address: "stored"}
    got = await srv.call("GET", f"/inbox/{keyholder.address}",
                         headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    [msg] = got["messages"]
    assert verify_envelope(msg, now_ms=srv.clock.now).sender == ada.address


async def test_a_key_holder_mails_an_account(srv: Any) -> None:
    from flux.protocol import compose

    bob = await srv.account("bob")
    sender = make_identity("outsider")
    msg = compose(sender, bob.address, "plain /send to an account", now_ms=srv.clock.now).primary
    assert (await srv.call("POST", "/send", json_body=msg))["recipients"] == {bob.address: "stored"}
    assert (await srv.inbox(bob))[0]["id"] == msg["id"]


async def test_unhosted_recipient_is_refused_like_send(srv: Any) -> None:
    ada = await srv.account("ada")
    stranger = make_identity("stranger").address
    answer = await srv.send(ada, expect=404, to=stranger, content="anyone there?")
    assert answer["code"] == "unknown_recipient"


async def test_bcc_copies_each_verify_and_stay_hidden(srv: Any) -> None:
    ada, bob, carol = [await srv.account(n) for n in ("ada", "bob", "carol")]
    sent = await srv.send(ada, to=bob.address, bcc=["carol"], content="with a blind copy")
    assert sent["recipients"] == {bob.address: "stored", carol.address: "stored"}
    [to_bob] = await srv.inbox(bob)
    [to_carol] = await srv.inbox(carol)
    assert "bcc" not in to_bob and to_carol["bcc"] == [carol.address]
    for msg in (to_bob, to_carol):
        verify_envelope(msg, now_ms=srv.clock.now)


async def test_encrypted_send_decrypts_for_the_recipient(srv: Any) -> None:
    ada = await srv.account("ada")
    keyholder = make_identity("reader")
    token = await srv.key_login(keyholder)
    await srv.send(ada, to=keyholder.address, content="for your eyes", encrypt=True)
    got = await srv.call("GET", f"/inbox/{keyholder.address}",
                         headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    [msg] = got["messages"]
    assert msg["encrypted"] is True and msg["content"] == "[encrypted]"
    verify_envelope(msg, now_ms=srv.clock.now)
    assert decrypt_content(msg, keyholder) == "for your eyes"
    unknown_key = await srv.send(ada, expect=400, to=make_identity("nokey").address,
                                 content="x", encrypt=True)  # fmt: skip
    assert unknown_key["field"] == "encrypt"


async def test_replies_thread(srv: Any) -> None:
    ada, bob = await srv.account("ada"), await srv.account("bob")
    first = await srv.send(ada, to="bob", content="first of a thread")
    reply = await srv.send(bob, to="ada", content="a reply to it", re=first["id"])
    [msg] = await srv.inbox(ada)
    assert msg["id"] == reply["id"] and msg["re"] == first["id"]


async def test_mailbox_operations(srv: Any) -> None:
    ada, bob = await srv.account("ada"), await srv.account("bob")
    ids = [(await srv.send(ada, to="bob", content=f"message number {n}"))["id"] for n in range(3)]
    h = bob.headers

    peek = await srv.call("GET", "/mail/peek", headers=h)
    assert peek["pending"] == 3 and {m["id"] for m in peek["messages"]} == set(ids)
    counts = await srv.call("GET", "/mail/inboxes", headers=h)
    assert counts["inboxes"]["inbox"]["pending"] == 3

    read = await srv.call("POST", "/mail/read", headers=h, json_body={"ids": ids[:2]})
    assert set(read["updated"]) == set(ids[:2])
    assert {m["id"] for m in await srv.inbox(bob, status="read")} == set(ids[:2])

    tags = await srv.call("POST", "/mail/tag", headers=h,
                          json_body={"id": ids[0], "add": ["work", "important"]})  # fmt: skip
    assert set(tags["tags"]) == {"work", "important"}
    assert [m["id"] for m in await srv.inbox(bob, tag="work")] == [ids[0]]

    moved = await srv.call("POST", "/mail/move", headers=h, json_body={"id": ids[1], "inbox": "archive"})  # fmt: skip
    assert moved["inbox"] == "archive"
    assert [m["id"] for m in await srv.inbox(bob, inbox="archive")] == [ids[1]]

    deleted = await srv.call("POST", "/mail/delete", headers=h, json_body={"id": ids[2]})
    assert deleted["updated"] == [ids[2]]
    assert ids[2] not in {m["id"] for m in await srv.inbox(bob)}
    assert [m["id"] for m in await srv.inbox(bob, status="deleted")] == [ids[2]]

    page = await srv.call("GET", "/mail/inbox", headers=h, params={"limit": 1})
    assert len(page["messages"]) == 1 and page["next_cursor"]
    missing = await srv.call("POST", "/mail/tag", headers=h, expect=404,
                             json_body={"id": "0" * 32, "add": ["x"]})  # fmt: skip
    assert missing["code"] == "not_found"


async def test_the_same_mailbox_as_key_routes(srv: Any) -> None:
    """/mail/* and /inbox/{address} are one mailbox: a change through one shows in the other."""
    ada, bob = await srv.account("ada"), await srv.account("bob")
    sent = await srv.send(ada, to="bob", content="one mailbox")
    await srv.call("POST", "/mail/read", headers=bob.headers, json_body={"id": sent["id"]})
    row = await srv.store.get(bob.address, sent["id"])
    assert row is not None and row.status == "read"


@pytest.fixture
async def bobs_mail(srv: Any) -> tuple[Any, Any, str]:
    ada, bob = await srv.account("ada"), await srv.account("bob")
    sent = await srv.send(bob, to="bob", content="Bob's private note")
    return ada, bob, sent["id"]


async def test_one_session_cannot_reach_another_mailbox(srv: Any, bobs_mail: tuple) -> None:
    ada, bob, mid = bobs_mail
    h = ada.headers
    assert await srv.inbox(ada) == []
    assert (await srv.call("GET", "/mail/peek", headers=h))["pending"] == 0
    for method, path, body, params in [
        ("GET", "/mail/inbox", None, {"address": bob.address}),
        ("GET", "/mail/inboxes", None, {"address": bob.address}),
        ("GET", "/mail/peek", None, {"address": bob.address}),
        ("POST", "/mail/read", {"address": bob.address, "ids": [mid]}, None),
        ("POST", "/mail/delete", {"address": bob.address, "ids": [mid]}, None),
        ("POST", "/mail/tag", {"address": bob.address, "id": mid, "add": ["x"]}, None),
        ("POST", "/mail/move", {"address": bob.address, "id": mid, "inbox": "x"}, None),
        ("POST", "/mail/send", {"address": bob.address, "to": "ada", "content": "as bob"}, None),
    ]:
        answer = await srv.call(method, path, json_body=body, params=params, headers=h, expect=403)
        assert answer["code"] == "forbidden", (method, path)
    # bob's ids, through ada's own mailbox, find nothing
    assert (await srv.call("POST", "/mail/read", headers=h, json_body={"ids": [mid]}))["updated"] == []  # fmt: skip
    await srv.call("POST", "/mail/tag", headers=h, json_body={"id": mid, "add": ["x"]}, expect=404)
    await srv.call("POST", "/mail/move", headers=h, json_body={"id": mid, "inbox": "x"}, expect=404)
    row = await srv.store.get(bob.address, mid)
    assert row.status == "pending" and row.tags == () and row.inbox == "inbox"


async def test_sending_is_still_spam_checked(srv: Any) -> None:
    ada, _ = await srv.account("ada"), await srv.account("bob")
    answer = await srv.send(ada, expect=451, to="bob", content="a" * 400)
    assert answer["code"] == "spam" and answer["reasons"]


async def test_a_recipient_at_another_domain_is_queued_for_it(srv: Any) -> None:
    ada = await srv.account("ada")
    far = make_identity("far-away").address
    sent = await srv.send(ada, to=f"{far}@peer.invalid", content="across the federation")
    assert sent["recipients"] == {far: "queued"} and sent["duplicate"] is False
    bad = await srv.send(ada, expect=400, to=f"{far}@Not_A_Domain", content="nowhere")
    assert (bad["code"], bad["field"]) == ("invalid_value", "to")


async def test_two_senders_sharing_an_id_are_ambiguous_until_from_chooses(srv: Any) -> None:
    """PROTOCOL.md §4.5 through /mail/*: a stranger who used an id first squats nothing; the
    account's calls naming only the id answer 409 `ambiguous` listing both senders, change
    nothing, and `from` (on the body or on an `ids` item) names the one meant."""
    from flux.protocol import compose

    bob = await srv.account("bob")
    h = bob.headers
    x = "9e" * 16
    real, squatter = make_identity("real-sender"), make_identity("squatter")
    for sender, content in ((squatter, "planted first"), (real, "the real one")):
        msg = compose(sender, bob.address, content, now_ms=srv.clock.now, message_id=x).primary
        answer = await srv.call("POST", "/send", json_body=msg)
        assert answer["recipients"] == {bob.address: "stored"}
    want = [{"id": x, "senders": sorted([real.address, squatter.address])}]
    for path, body in (("/mail/read", {"ids": [x]}), ("/mail/read", {"id": x}),
                       ("/mail/delete", {"ids": [x]}), ("/mail/tag", {"id": x, "add": ["t"]}),
                       ("/mail/move", {"id": x, "inbox": "later"})):  # fmt: skip
        refused = await srv.call("POST", path, headers=h, json_body=body, expect=409)
        assert (refused["code"], refused["field"], refused["ambiguous"]) == ("ambiguous", "from", want)  # fmt: skip

    inbox = {m["from"]: m for m in (await srv.call("GET", "/mail/inbox", headers=h))["messages"]}
    # nothing was changed by the refusals
    assert len(inbox) == 2
    assert {(m["_status"], tuple(m["_tags"]), m["_inbox"]) for m in inbox.values()} == {
        ("pending", (), "inbox")
    }

    tagged = await srv.call("POST", "/mail/tag", headers=h,
                            json_body={"id": x, "from": real.address, "add": ["t"]})  # fmt: skip
    assert tagged["tags"] == ["t"]
    moved = await srv.call("POST", "/mail/move", headers=h,
                           json_body={"id": x, "from": real.address, "inbox": "later"})  # fmt: skip
    assert moved["inbox"] == "later"
    read = await srv.call("POST", "/mail/read", headers=h,
                          json_body={"ids": [{"id": x, "from": real.address}]})  # fmt: skip
    assert read["refs"] == [{"id": x, "from": real.address}]
    deleted = await srv.call("POST", "/mail/delete", headers=h,
                             json_body={"ids": [x], "from": squatter.address})  # fmt: skip
    assert deleted["refs"] == [{"id": x, "from": squatter.address}]
    both = {}
    for inbox_name in ("inbox", "later"):
        page = await srv.call("GET", "/mail/inbox", headers=h, params={"inbox": inbox_name})
        both.update({m["from"]: m for m in page["messages"]})
    got = both[real.address]
    assert (got["content"], got["_status"], got["_tags"], got["_inbox"]) == (
        "the real one", "read", ["t"], "later")  # fmt: skip
    assert squatter.address not in both  # deleted: listed no more, but only it
    gone = await srv.call("GET", "/mail/inbox", headers=h, params={"status": "deleted"})
    assert [(m["from"], m["content"]) for m in gone["messages"]] == [(squatter.address, "planted first")]  # fmt: skip
