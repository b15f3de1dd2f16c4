"""BCC and end-to-end encryption through a real server: every recipient verifies what it
gets, only BCC recipients learn of themselves, and each decrypts."""

from __future__ import annotations

import pytest

from flux.client import FluxClientError
from flux.protocol.errors import NotARecipient


async def _receive(client, message_id):
    msg = next(m for m in await client.fetch() if m["id"] == message_id)
    client.verify(msg)
    return msg


async def test_bcc_copies_verify_and_stay_hidden(make_client):
    alice, bob, carol, dave = [await make_client() for _ in range(4)]
    sent = await alice.send(bob.address, "team note", cc=[carol.address], bcc=dave.address)
    assert set(sent.recipients) == {bob.address, carol.address, dave.address}
    assert len(sent.envelopes) == 2

    to_bob = await _receive(bob, sent.id)
    to_carol = await _receive(carol, sent.id)
    to_dave = await _receive(dave, sent.id)
    for msg in (to_bob, to_carol):
        assert "bcc" not in msg and dave.address not in str(msg)
    assert to_dave["bcc"] == [dave.address]
    assert to_dave["cc"] == [carol.address]


async def test_encrypted_mail_with_bcc_decrypts_for_every_recipient(make_client):
    alice, bob, carol, dave = [await make_client() for _ in range(4)]
    keys = {c.address: c.identity.pub_b64() for c in (bob, carol, dave)}
    secret = "launch codes: 0000"
    sent = await alice.send(
        bob.address, secret, cc=[carol.address], bcc=[dave.address], encrypt=True, keys=keys
    )
    assert sent.encrypted
    for client in (bob, carol, dave):
        msg = await _receive(client, sent.id)
        assert msg["encrypted"] is True and msg["content"] == "[encrypted]"
        assert secret not in str(msg)
        assert client.decrypt(msg) == secret
    bobs = await bob.get(sent.id)
    assert dave.address not in bobs["enc_recipients"]  # nor is dave in bob's key list
    only_for_bob = dict(bobs, enc_recipients={bob.address: bobs["enc_recipients"][bob.address]})
    with pytest.raises(NotARecipient):
        carol.decrypt(only_for_bob)


async def test_the_sender_can_read_what_it_encrypted(make_client):
    alice, bob = await make_client(), await make_client()
    sent = await alice.send(bob.address, "note to self too", encrypt=True,
                            keys={bob.address: bob.identity.pub_b64()})  # fmt: skip
    assert alice.decrypt(sent.envelopes[0]) == "note to self too"


async def test_encryption_finds_a_registered_key_at_the_server(make_client):
    alice, bob = await make_client(), await make_client()
    sent = await alice.send(bob.address, "no key passed", encrypt=True)
    msg = await _receive(bob, sent.id)
    assert bob.decrypt(msg) == "no key passed"


async def test_encrypting_for_an_unknown_key_is_refused(make_client):
    alice = await make_client()
    stranger = await make_client(register=False)
    with pytest.raises(FluxClientError) as caught:
        await alice.send(stranger.address, "who are you", encrypt=True)
    assert caught.value.code == "unknown_key"


async def test_a_reply_to_encrypted_mail_is_encrypted_with_the_learned_key(make_client):
    alice, bob = await make_client(), await make_client()
    sent = await alice.send(bob.address, "psst", encrypt=True,
                            keys={bob.address: bob.identity.pub_b64()})  # fmt: skip
    msg = await _receive(bob, sent.id)  # verifying teaches bob alice's key
    reply = await bob.reply(msg, "psst back")
    assert reply.encrypted
    got = await _receive(alice, reply.id)
    assert alice.decrypt(got) == "psst back"
