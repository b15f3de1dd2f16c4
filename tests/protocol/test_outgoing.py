"""Composing outgoing mail (flux.protocol.outgoing): BCC copies, encrypt-then-sign, the
prototype's `build_message`, deterministic variants."""

from __future__ import annotations

import json
import time

import pytest
from protocol_helpers import ALICE, BOB, CAROL, DAVE, ERIN, MALLORY, NOW, identity, seeded

import flux
from flux.encryption import decrypt_message
from flux.protocol import (
    BadSignature,
    InvalidValue,
    MissingField,
    NotARecipient,
    Outgoing,
    TooLarge,
    build_message,
    compose,
    decrypt_content,
    new_message_id,
    sign_envelope,
    verify_envelope,
)

FRANK = identity("frank")
BCC = [DAVE, ERIN, FRANK]
KEYS = {p.address: p.pub_b64() for p in (BOB, CAROL, DAVE, ERIN, FRANK)}


def compose_bcc(**kwargs) -> Outgoing:
    return compose(
        ALICE, BOB.address, "Quarterly numbers", subject="Q3", cc=[CAROL.address],
        bcc=[p.address for p in BCC], now_ms=NOW, **kwargs,
    )  # fmt: skip


@pytest.fixture(params=[False, True], ids=["plain", "encrypted"])
def out(request: pytest.FixtureRequest) -> Outgoing:
    return compose_bcc(encrypt_for=KEYS) if request.param else compose_bcc()


def test_primary_has_no_bcc_and_one_copy_per_bcc_recipient(out: Outgoing) -> None:
    assert "bcc" not in out.primary
    assert [addr for addr, _ in out.bcc_copies] == [p.address for p in BCC]
    for addr, copy in out.bcc_copies:
        assert copy["bcc"] == [addr]
        assert copy["to"] == BOB.address and copy["cc"] == [CAROL.address]
    assert out.all == [out.primary, *(c for _, c in out.bcc_copies)]
    assert len({m["id"] for m in out.all}) == 1  # one Message-ID for every copy


def test_every_copy_verifies(out: Outgoing) -> None:
    for msg in out.all:
        verify_envelope(msg, now_ms=NOW)


def test_no_copy_mentions_another_bcc_recipient(out: Outgoing) -> None:
    bcc = {p.address for p in BCC}
    primary_text = json.dumps(out.primary)
    assert not any(addr in primary_text for addr in bcc)
    for addr, copy in out.bcc_copies:
        text = json.dumps(copy)
        assert addr in text
        assert not any(other in text for other in bcc - {addr}), addr


def test_bcc_duplicates_and_visible_recipients_are_dropped() -> None:
    out = compose(
        ALICE, BOB.address, "x", cc=[CAROL.address, CAROL.address, BOB.address],
        bcc=[DAVE.address, BOB.address, CAROL.address, DAVE.address], now_ms=NOW,
    )  # fmt: skip
    assert out.primary["cc"] == [CAROL.address]
    assert [addr for addr, _ in out.bcc_copies] == [DAVE.address]


def test_encrypted_copies_hide_content_and_sign_the_ciphertext() -> None:
    out = compose_bcc(encrypt_for=KEYS)
    for msg in out.all:
        assert msg["content"] == "[encrypted]" and msg["encrypted"] is True
        assert "Quarterly" not in json.dumps(msg)
        verify_envelope(msg)
        other_ct = compose(ALICE, BOB.address, "other", now_ms=NOW, encrypt_for=KEYS).primary[
            "content_enc"
        ]
        with pytest.raises(BadSignature):
            verify_envelope({**msg, "content_enc": other_ct})
        with pytest.raises(BadSignature):
            verify_envelope(
                {
                    **msg,
                    "enc_recipients": {
                        **msg["enc_recipients"],
                        MALLORY.address: msg["enc_recipients"][BOB.address],
                    },
                }
            )


def test_every_recipient_decrypts_its_copy() -> None:
    out = compose_bcc(encrypt_for=KEYS)
    for reader in (ALICE, BOB, CAROL):  # the sender reads what it sent
        assert decrypt_content(out.primary, reader) == "Quarterly numbers"
    for addr, copy in out.bcc_copies:
        (reader,) = [p for p in BCC if p.address == addr]
        assert decrypt_content(copy, reader) == "Quarterly numbers"
        assert decrypt_message(copy, reader) == "Quarterly numbers"
        for visible in (ALICE, BOB, CAROL):
            assert decrypt_content(copy, visible) == "Quarterly numbers"


def test_bcc_recipients_are_not_in_the_visible_enc_recipients() -> None:
    out = compose_bcc(encrypt_for=KEYS)
    visible = {ALICE.address, BOB.address, CAROL.address}
    assert set(out.primary["enc_recipients"]) == visible
    for addr, copy in out.bcc_copies:
        assert set(copy["enc_recipients"]) == visible | {addr}
    for p in BCC:
        with pytest.raises(NotARecipient):
            decrypt_content(out.primary, p)
    assert decrypt_message(out.primary, MALLORY) is None


def test_missing_key_is_a_missing_field() -> None:
    for absent in (BOB, CAROL, DAVE):
        keys = {a: k for a, k in KEYS.items() if a != absent.address}
        with pytest.raises(MissingField) as info:
            compose_bcc(encrypt_for=keys)
        assert info.value.field == "encrypt_for"


@pytest.mark.parametrize("who", [BOB, CAROL, DAVE, FRANK, ALICE], ids=lambda p: p.address[:8])
def test_key_that_is_not_the_addresss_is_refused(who) -> None:
    keys = {**KEYS, who.address: MALLORY.pub_b64()}
    with pytest.raises(InvalidValue) as info:
        compose_bcc(encrypt_for=keys)
    assert info.value.field == "encrypt_for"


def test_keys_as_bytes_or_base64_and_bad_base64() -> None:
    raw = {p.address: p.public_key for p in (BOB, CAROL, DAVE, ERIN, FRANK)}
    out = compose_bcc(encrypt_for=raw)
    assert decrypt_content(out.bcc_copies[0][1], DAVE) == "Quarterly numbers"
    with pytest.raises(InvalidValue):
        compose_bcc(encrypt_for={**KEYS, BOB.address: "not base64"})


def test_encrypted_plaintext_obeys_the_content_limit() -> None:
    with pytest.raises(TooLarge):
        compose(ALICE, BOB.address, "x" * 65_537, now_ms=NOW, encrypt_for=KEYS)
    compose(ALICE, BOB.address, "x" * 65_536, now_ms=NOW, encrypt_for=KEYS)


def test_optional_fields() -> None:
    msg = compose(
        ALICE, BOB.address, "x", subject="S", reply_to="ab" * 16, tags=["Work", "work", "b"],
        expires=0, now_ms=NOW,
    ).primary  # fmt: skip
    assert (msg["subject"], msg["re"], msg["tags"], msg["expires"]) == (
        "S",
        "ab" * 16,
        ["b", "work"],
        0,
    )
    bare = compose(ALICE, BOB.address, "x", subject="", tags=[], now_ms=NOW).primary
    assert not {"subject", "re", "cc", "bcc", "tags", "expires"} & set(bare)
    assert bare["route"] == [] and bare["integrity_chain"] == []


def test_sign_envelope_does_not_mutate_and_checks_from() -> None:
    fields = {
        "v": "1.0",
        "id": "ab" * 16,
        "from": ALICE.address,
        "to": BOB.address,
        "t": NOW,
        "content": "x",
    }
    before = dict(fields)
    msg = sign_envelope(fields, ALICE)
    assert fields == before and "sig" in msg
    with pytest.raises(InvalidValue) as info:
        sign_envelope(fields, BOB)
    assert info.value.field == "from"


# -- the prototype's build_message --------------------------------------------------------


def test_build_message_as_the_prototype_readme_calls_it() -> None:
    alice, bob = flux.FluxIdentity.generate(), flux.FluxIdentity.generate()
    before = int(time.time() * 1000)
    msg = flux.build_message(alice, bob.address, "Secret content")
    after = int(time.time() * 1000)
    verify_envelope(msg, now_ms=after)
    assert before <= msg["t"] <= after
    assert (msg["from"], msg["to"], msg["content"]) == (
        alice.address,
        bob.address,
        "Secret content",
    )
    enc = build_message(alice, bob.address, "Hello Bob", encrypt_for={bob.address: bob.pub_b64()})
    verify_envelope(enc)
    assert decrypt_message(enc, bob) == "Hello Bob"


def test_build_message_positional_arguments() -> None:
    # The prototype's order: identity, to, content, subject, reply_to, cc, bcc, tags, expires
    msg = build_message(
        ALICE, BOB.address, "c", "subj", "cd" * 16, [CAROL.address], None, ["T"], 5, now_ms=NOW
    )
    verify_envelope(msg)
    assert msg["subject"] == "subj" and msg["re"] == "cd" * 16
    assert msg["cc"] == [CAROL.address] and msg["tags"] == ["t"] and msg["expires"] == 5
    assert msg["t"] == NOW


def test_build_message_refuses_bcc() -> None:
    with pytest.raises(InvalidValue) as info:
        build_message(ALICE, BOB.address, "c", None, None, None, [DAVE.address])
    assert info.value.field == "bcc"


# -- determinism --------------------------------------------------------------------------


@pytest.mark.parametrize("encrypt", [False, True], ids=["plain", "encrypted"])
def test_compose_is_reproducible_with_fixed_clock_and_randomness(encrypt: bool) -> None:
    def run(seed: int) -> str:
        kwargs = {"encrypt_for": KEYS} if encrypt else {}
        out = compose_bcc(randbytes=seeded(seed), **kwargs)
        return json.dumps(out.all, sort_keys=True)

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_new_message_id() -> None:
    ids = {new_message_id() for _ in range(50)}
    assert len(ids) == 50
    for mid in ids:
        assert len(mid) == 32 and mid == mid.lower() and int(mid, 16) >= 0
        assert mid[12] == "4"  # uuid4, as the prototype made them
    assert new_message_id(seeded(1)) == new_message_id(seeded(1))


def test_explicit_message_id() -> None:
    out = compose(ALICE, BOB.address, "x", now_ms=NOW, message_id="ef" * 16, bcc=[DAVE.address])
    assert {m["id"] for m in out.all} == {"ef" * 16}
