"""The prototype's own output (tests/data/seed-v1.json) against FLUX: wire compatibility.

Every vector in the file is used; a test at the end makes sure no section goes unread.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from protocol_helpers import SEED

from flux.encryption import decrypt_message
from flux.protocol import (
    AddressMismatch,
    BadSignature,
    ChainVerdict,
    HopStatus,
    Identity,
    NotARecipient,
    PublishedKey,
    b64d,
    canonical_bytes,
    decrypt_content,
    integrity_hash,
    legacy_token,
    legacy_token_matches,
    loads_strict,
    signing_payload,
    verify_chain,
    verify_envelope,
    verify_signature,
)
from flux.protocol.envelope import UNHASHED_FIELDS

IDENTITIES = {v["label"]: v for v in SEED["identities"]}
MESSAGES = {v["name"]: v for v in SEED["messages"]}
VALID = [v for v in SEED["messages"] if v["valid"]]
INVALID = [v for v in SEED["messages"] if not v["valid"]]
#: The error each invalid vector must be refused with (the vector's `why`, as a class).
EXPECTED_ERROR = {
    "tampered-content": BadSignature,
    "pub-not-matching-from": AddressMismatch,
}


def seed_identity(label: str) -> Identity:
    return Identity.from_private_b64(IDENTITIES[label]["private_key"])


def by_address(address: str) -> Identity:
    (label,) = [k for k, v in IDENTITIES.items() if v["address"] == address]
    return seed_identity(label)


def test_every_section_is_exercised() -> None:
    assert SEED["protocol"] == "1.0"
    assert set(SEED) == {
        "set", "protocol", "identities", "messages", "hop_records", "legacy_tokens", "encrypted",
    }  # fmt: skip
    assert set(EXPECTED_ERROR) == {v["name"] for v in INVALID}
    assert VALID and SEED["hop_records"] and SEED["legacy_tokens"] and SEED["encrypted"]


# -- identities ---------------------------------------------------------------------------


@pytest.mark.parametrize("vector", SEED["identities"], ids=lambda v: v["label"])
def test_address_and_pub_from_private_key(vector: dict) -> None:
    ident = Identity.from_private_b64(vector["private_key"])
    assert ident.address == vector["address"]
    assert ident.pub_b64() == vector["pub"]
    assert ident.private_b64() == vector["private_key"]


# -- messages -----------------------------------------------------------------------------


@pytest.mark.parametrize("vector", VALID, ids=lambda v: v["name"])
def test_signing_payload_is_byte_identical(vector: dict) -> None:
    assert signing_payload(vector["envelope"]) == vector["signing_payload"].encode("utf-8")


@pytest.mark.parametrize("vector", VALID, ids=lambda v: v["name"])
def test_valid_messages_verify(vector: dict) -> None:
    envelope = verify_envelope(vector["envelope"])
    assert envelope.id == vector["envelope"]["id"]
    # ... and the same holds after a trip through the wire parser.
    verify_envelope(loads_strict(json.dumps(vector["envelope"])))
    verify_envelope(loads_strict(json.dumps(vector["envelope"], ensure_ascii=False).encode()))


@pytest.mark.parametrize("vector", INVALID, ids=lambda v: v["name"])
def test_invalid_messages_fail_with_the_right_reason(vector: dict) -> None:
    with pytest.raises(EXPECTED_ERROR[vector["name"]]):
        verify_envelope(vector["envelope"])


def test_tampered_vector_differs_from_a_valid_one_only_in_content() -> None:
    # Guards the test above: BadSignature must come from the content change, not from
    # something else wrong with the vector.
    tampered = MESSAGES["tampered-content"]["envelope"]
    sender = by_address(tampered["from"])
    assert sender.pub_b64() == tampered["pub"]
    with pytest.raises(BadSignature):
        verify_signature(
            sender.public_key, signing_payload(tampered), b64d(tampered["sig"], length=64)
        )


# -- hop records --------------------------------------------------------------------------


def hop_message(vector: dict) -> dict:
    (msg,) = [m["envelope"] for m in VALID if m["envelope"]["id"] == vector["message_id"]]
    return msg


@pytest.mark.parametrize("vector", SEED["hop_records"], ids=lambda v: v["name"])
def test_hop_record_hash_and_payload(vector: dict) -> None:
    msg = hop_message(vector)
    payload = canonical_bytes({k: v for k, v in msg.items() if k not in UNHASHED_FIELDS})
    assert payload == vector["integrity_payload"].encode("utf-8")
    assert hashlib.sha256(payload).hexdigest() == vector["integrity_hash"]
    assert integrity_hash(msg) == vector["integrity_hash"] == vector["record"]["hash"]


@pytest.mark.parametrize("vector", SEED["hop_records"], ids=lambda v: v["name"])
def test_hop_record_signature_verifies(vector: dict) -> None:
    record = vector["record"]
    signed_text = f"{record['server']}:{record['t']}:{record['hash']}".encode()
    pub = b64d(record["pub"], length=32)
    verify_signature(pub, signed_text, b64d(record["sig"], length=64))
    with pytest.raises(BadSignature):
        verify_signature(pub, signed_text + b"x", b64d(record["sig"], length=64))
    assert record["pub"] == IDENTITIES["server-a"]["pub"]


@pytest.mark.parametrize("vector", SEED["hop_records"], ids=lambda v: v["name"])
def test_prototype_hop_is_unsealed_and_passes(vector: dict) -> None:
    msg = {**hop_message(vector), "integrity_chain": [vector["record"]]}
    server_a = PublishedKey(b64d(vector["record"]["pub"]))
    for keys in (None, lambda name: [server_a]):
        check = verify_chain(msg, keys)
        assert [h.status for h in check.hops] == [HopStatus.UNSEALED]
        assert check.verdict is ChainVerdict.PASS
        assert not check.sealed
    changed = {**msg, "content": "Hello Mallory"}
    assert verify_chain(changed, None).verdict is ChainVerdict.FAIL


# -- legacy tokens ------------------------------------------------------------------------


@pytest.mark.parametrize("vector", SEED["legacy_tokens"], ids=lambda v: v["address"][:12])
def test_legacy_token(vector: dict) -> None:
    address, secret, token = vector["address"], vector["secret"], vector["token"]
    assert legacy_token(address, secret) == token
    assert legacy_token_matches(address, secret, token)


@pytest.mark.parametrize("vector", SEED["legacy_tokens"], ids=lambda v: v["address"][:12])
def test_legacy_token_mismatches(vector: dict) -> None:
    address, secret, token = vector["address"], vector["secret"], vector["token"]
    others = [v for v in SEED["legacy_tokens"] if v is not vector]
    wrong = [
        "",
        token[:-1],
        token.upper(),
        token[:-1] + ("0" if token[-1] != "0" else "1"),
        legacy_token(address, secret + "x"),
        *(o["token"] for o in others),
        "ü" * 64,
    ]
    for candidate in wrong:
        assert not legacy_token_matches(address, secret, candidate), candidate
    assert not legacy_token_matches(address, secret + "x", token)


# -- encrypted blobs ----------------------------------------------------------------------

ENCRYPTED = SEED["encrypted"]


def reader_cases() -> list[tuple[dict, str]]:
    return [(v, reader) for v in ENCRYPTED for reader in v["readers"]]


@pytest.mark.parametrize(("vector", "reader"), reader_cases(), ids=lambda x: str(x)[:14])
def test_prototype_blobs_decrypt_for_each_reader(vector: dict, reader: str) -> None:
    ident = by_address(reader)
    assert decrypt_message(vector["envelope"], ident) == vector["plaintext"]
    assert decrypt_content(vector["envelope"], ident) == vector["plaintext"]


@pytest.mark.parametrize("vector", ENCRYPTED, ids=lambda v: v["name"])
def test_non_reader_cannot_decrypt(vector: dict) -> None:
    outsiders = [label for label, v in IDENTITIES.items() if v["address"] not in vector["readers"]]
    assert outsiders
    for label in outsiders:
        ident = seed_identity(label)
        with pytest.raises(NotARecipient):
            decrypt_content(vector["envelope"], ident)
        assert decrypt_message(vector["envelope"], ident) is None


@pytest.mark.parametrize("vector", ENCRYPTED, ids=lambda v: v["name"])
def test_prototype_signed_before_encrypting(vector: dict) -> None:
    """Brief §2.2: the prototype's signature covers the plaintext envelope, not the one sent."""
    sent = vector["envelope"]
    with pytest.raises(BadSignature):
        verify_envelope(sent)
    plaintext_envelope = {
        **{
            k: v for k, v in sent.items() if k not in ("encrypted", "content_enc", "enc_recipients")
        },
        "content": vector["plaintext"],
    }
    verify_envelope(plaintext_envelope)
