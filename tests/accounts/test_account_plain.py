"""A password account reads its end-to-end encrypted mail: GET /mail/message/{id}/plain
and /mail/sent/{id}/plain decrypt with the account's key, which this server holds, for the
session's owner only. Mail from a key user (encrypted in its own client) and from another
account; plain mail comes back as it is; a message not encrypted for the account is
refused by name; no other session, and no session at all, reads anything."""

from __future__ import annotations

from typing import Any

from flux.protocol import Identity, compose


async def pub(srv: Any, account: Any) -> str:
    return (await srv.call("GET", "/account/me", headers=account.headers))["pub"]


async def test_an_account_reads_mail_encrypted_for_it(srv: Any) -> None:
    alice, bob = await srv.account("alice"), await srv.account("bob")
    sent = await srv.send(alice, to=bob.address, content="for bob only", encrypt=True)
    stored = await srv.call("GET", f"/mail/message/{sent['id']}", headers=bob.headers)
    assert stored["message"]["encrypted"] is True
    assert "for bob only" not in str(stored["message"])  # the server stores ciphertext
    plain = await srv.call("GET", f"/mail/message/{sent['id'][:8]}/plain", headers=bob.headers)
    assert {k: v for k, v in plain.items() if k != "_status"} == {
        "ok": True, "id": sent["id"], "from": alice.address, "encrypted": True,
        "content": "for bob only"}  # fmt: skip
    # the sender reads its own sent copy (compose wraps the key for the sender too)
    mine = await srv.call("GET", f"/mail/sent/{sent['id']}/plain", headers=alice.headers)
    assert mine["content"] == "for bob only" and mine["encrypted"] is True


async def test_plain_mail_comes_back_as_it_is(srv: Any) -> None:
    alice, bob = await srv.account("alice"), await srv.account("bob")
    sent = await srv.send(alice, to=bob.address, content="hello")
    plain = await srv.call("GET", f"/mail/message/{sent['id']}/plain", headers=bob.headers)
    assert plain["encrypted"] is False and plain["content"] == "hello"


async def test_mail_from_a_key_user_encrypted_in_its_client(srv: Any) -> None:
    bob = await srv.account("bob")
    key_user = Identity.generate()
    env = compose(key_user, bob.address, "from a key", now_ms=srv.clock.now,
                  encrypt_for={bob.address: await pub(srv, bob)}).primary  # fmt: skip
    await srv.call("POST", "/send", json_body=env)
    plain = await srv.call("GET", f"/mail/message/{env['id']}/plain", headers=bob.headers)
    assert plain["content"] == "from a key" and plain["from"] == key_user.address


async def test_refusals(srv: Any) -> None:
    """(A message not encrypted for its recipient never reaches a mailbox: §4.3 refuses
    it at submission, so `not_a_recipient` answers only a corrupt store.)"""
    alice, bob, carol = [await srv.account(n) for n in ("alice", "bob", "carol")]
    sent = await srv.send(alice, to=bob.address, content="secret", encrypt=True)
    mid = sent["id"]
    await srv.call("GET", f"/mail/message/{mid}/plain", expect=401)
    # another account cannot name bob's mailbox, and its own holds no such message
    other = await srv.call("GET", f"/mail/message/{mid}/plain", headers=carol.headers,
                           params={"address": bob.address}, expect=403)  # fmt: skip
    assert other["field"] == "address"
    await srv.call("GET", f"/mail/message/{mid}/plain", headers=carol.headers, expect=404)
    extra = await srv.call("GET", f"/mail/message/{mid}/plain", headers=bob.headers,
                           params={"limit": "1"}, expect=400)  # fmt: skip
    assert extra["field"] == "limit"
