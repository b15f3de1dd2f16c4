"""End-to-end encryption (flux.protocol.e2e) against an independent re-implementation.

`proto_encrypt` / `proto_decrypt` below re-derive the prototype's scheme from its description
using `cryptography` primitives and integer arithmetic only (no FLUX code, no libsodium):
Ed25519 public key → X25519 by u = (1 + y) / (1 - y) mod p, wrap key = SHA-256(shared),
AES-256-GCM with a 12-byte nonce in front. If FLUX's blobs open here, the prototype could
read them; if these blobs open in FLUX, FLUX reads the prototype's.
"""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from protocol_helpers import ALICE, BOB, CAROL, DAVE, NOW, SEED, seeded

from flux.encryption import decrypt_message
from flux.protocol import (
    BadSignature,
    DecryptionError,
    Identity,
    InvalidValue,
    NotARecipient,
    compose,
    decrypt_content,
    encrypt_content,
    verify_envelope,
)
from flux.protocol.e2e import wrap_cek

P = 2**255 - 19


def ed25519_pub_to_x25519(pub: bytes) -> bytes:
    y = int.from_bytes(pub, "little") & ((1 << 255) - 1)
    u = (1 + y) * pow((1 - y) % P, -1, P) % P
    return u.to_bytes(32, "little")


def x25519_private(seed: bytes) -> X25519PrivateKey:
    scalar = bytearray(hashlib.sha512(seed).digest()[:32])
    scalar[0] &= 248
    scalar[31] &= 127
    scalar[31] |= 64
    return X25519PrivateKey.from_private_bytes(bytes(scalar))


def proto_encrypt(content: str, recipients: dict[str, bytes]) -> tuple[str, dict[str, str]]:
    cek = os.urandom(32)
    nonce = os.urandom(12)
    content_enc = nonce + AESGCM(cek).encrypt(nonce, content.encode(), None)
    blobs = {}
    for address, ed_pub in recipients.items():
        eph = X25519PrivateKey.generate()
        peer = X25519PublicKey.from_public_bytes(ed25519_pub_to_x25519(ed_pub))
        wrap = hashlib.sha256(eph.exchange(peer)).digest()
        wrap_nonce = os.urandom(12)
        blob = (
            eph.public_key().public_bytes_raw()
            + wrap_nonce
            + AESGCM(wrap).encrypt(wrap_nonce, cek, None)
        )
        blobs[address] = base64.urlsafe_b64encode(blob).decode()
    return base64.urlsafe_b64encode(content_enc).decode(), blobs


def proto_decrypt(msg: dict, seed: bytes, address: str) -> str:
    blob = base64.urlsafe_b64decode(msg["enc_recipients"][address])
    eph, nonce, wrapped = blob[:32], blob[32:44], blob[44:]
    shared = x25519_private(seed).exchange(X25519PublicKey.from_public_bytes(eph))
    cek = AESGCM(hashlib.sha256(shared).digest()).decrypt(nonce, wrapped, None)
    sealed = base64.urlsafe_b64decode(msg["content_enc"])
    return AESGCM(cek).decrypt(sealed[:12], sealed[12:], None).decode()


IDENTS = [ALICE, BOB, CAROL, DAVE]


@pytest.mark.parametrize("ident", IDENTS, ids=lambda i: i.address[:10])
def test_birational_map_matches_the_derived_private_key(ident: Identity) -> None:
    derived = x25519_private(ident.seed).public_key().public_bytes_raw()
    assert ed25519_pub_to_x25519(ident.public_key) == derived


def test_reimplementation_reads_the_seed_vectors() -> None:
    # Guards the re-implementation itself before it is used as a judge.
    labels = {v["address"]: v["private_key"] for v in SEED["identities"]}
    for vector in SEED["encrypted"]:
        for reader in vector["readers"]:
            seed = base64.urlsafe_b64decode(labels[reader])
            assert proto_decrypt(vector["envelope"], seed, reader) == vector["plaintext"]


def test_prototype_can_read_flux_output() -> None:
    keys = {BOB.address: BOB.pub_b64(), CAROL.address: CAROL.public_key}
    out = compose(
        ALICE, BOB.address, "Über secret ✈", cc=[CAROL.address], bcc=[DAVE.address],
        encrypt_for={**keys, DAVE.address: DAVE.pub_b64()}, now_ms=NOW,
    )  # fmt: skip
    for reader in (ALICE, BOB, CAROL):
        assert proto_decrypt(out.primary, reader.seed, reader.address) == "Über secret ✈"
    ((_, dave_copy),) = out.bcc_copies
    assert proto_decrypt(dave_copy, DAVE.seed, DAVE.address) == "Über secret ✈"


def test_flux_reads_prototype_style_output() -> None:
    content_enc, blobs = proto_encrypt("from the prototype", {BOB.address: BOB.public_key})
    msg = {"content": "[encrypted]", "encrypted": True, "content_enc": content_enc,
           "enc_recipients": blobs}  # fmt: skip
    assert decrypt_content(msg, BOB) == "from the prototype"
    assert decrypt_message(msg, BOB) == "from the prototype"
    with pytest.raises(NotARecipient):
        decrypt_content(msg, CAROL)


def test_encrypt_content_round_trip_and_key_check() -> None:
    content_enc, blobs, cek = encrypt_content("hi", {BOB.address: BOB.public_key}, seeded(3))
    assert len(cek) == 32 and set(blobs) == {BOB.address}
    msg = {"encrypted": True, "content_enc": content_enc, "enc_recipients": blobs}
    assert decrypt_content(msg, BOB) == "hi"
    with pytest.raises(InvalidValue):
        encrypt_content("hi", {BOB.address: CAROL.public_key})


def test_plain_message_decrypts_to_its_content() -> None:
    assert decrypt_content({"content": "plain"}, BOB) == "plain"


def flip(b64: str, index: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(b64))
    raw[index] ^= 1
    return base64.urlsafe_b64encode(bytes(raw)).decode()


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda m: {**m, "content_enc": flip(m["content_enc"], -1)}, id="ciphertext"),
        pytest.param(lambda m: {**m, "content_enc": flip(m["content_enc"], 0)}, id="nonce"),
        pytest.param(lambda m: {**m, "content_enc": "AAAA"}, id="short-ciphertext"),
        pytest.param(lambda m: {**m, "content_enc": "not base64!"}, id="bad-b64"),
        pytest.param(
            lambda m: {
                **m,
                "enc_recipients": {BOB.address: flip(m["enc_recipients"][BOB.address], 40)},
            },
            id="blob",
        ),
        pytest.param(
            lambda m: {**m, "enc_recipients": {BOB.address: m["enc_recipients"][CAROL.address]}},
            id="someone-elses-blob",
        ),
        pytest.param(lambda m: {**m, "enc_recipients": {BOB.address: "AAAA"}}, id="short-blob"),
    ],
)
def test_damage_is_one_opaque_decryption_error(damage) -> None:
    msg = compose(
        ALICE, BOB.address, "x", cc=[CAROL.address], now_ms=NOW,
        encrypt_for={BOB.address: BOB.public_key, CAROL.address: CAROL.public_key},
    ).primary  # fmt: skip
    with pytest.raises(DecryptionError) as info:
        decrypt_content(damage(msg), BOB)
    assert type(info.value) is DecryptionError  # not NotARecipient: BOB is listed
    assert info.value.message == "decryption failed"
    assert decrypt_message(damage(msg), BOB) is None


def test_small_order_key_is_refused_for_wrapping() -> None:
    identity_point = (1).to_bytes(32, "little")  # y = 1: the Edwards identity, order 1
    with pytest.raises(InvalidValue):
        wrap_cek(os.urandom(32), identity_point)


def test_encrypted_compose_verifies_and_signature_covers_ciphertext() -> None:
    msg = compose(
        ALICE, BOB.address, "x", now_ms=NOW, encrypt_for={BOB.address: BOB.public_key}
    ).primary
    verify_envelope(msg)
    content_enc, _, _ = encrypt_content("y", {BOB.address: BOB.public_key})
    with pytest.raises(BadSignature):
        verify_envelope({**msg, "content_enc": content_enc})
