"""Identities, addresses and key files (flux.protocol.identity, flux.identity)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from protocol_helpers import ALICE, BOB, SEED, seeded

from flux.identity import FluxIdentity
from flux.protocol import (
    BadSignature,
    Identity,
    InvalidValue,
    KeyFileError,
    address_from_pub,
    b64e,
    is_address,
    verify_signature,
)
from flux.protocol.identity import keyfile_is_protected


def test_address_is_prefix_plus_hashed_key() -> None:
    assert ALICE.address == "fx1" + hashlib.sha256(ALICE.public_key).hexdigest()[:40]
    assert address_from_pub(ALICE.public_key) == ALICE.address
    assert Identity.generate(seeded(1)).address == Identity.generate(seeded(1)).address
    assert Identity.generate().address != Identity.generate().address


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (ALICE.address, True),
        ("fx1" + "0" * 40, True),
        ("fx1" + "0" * 39, False),
        ("fx1" + "0" * 41, False),
        ("fx1" + "A" * 40, False),
        ("fx2" + "0" * 40, False),
        (ALICE.address + "\n", False),
        (" " + ALICE.address, False),
        (None, False),
        (b"fx1" + b"0" * 40, False),
    ],
)
def test_is_address(value: object, ok: bool) -> None:
    assert is_address(value) is ok


def test_identity_is_immutable_and_validated() -> None:
    with pytest.raises(AttributeError):
        ALICE.address = BOB.address  # type: ignore[misc]
    with pytest.raises(InvalidValue):
        Identity(b"\x00" * 31)
    with pytest.raises(InvalidValue):
        Identity.from_private_b64("not a key")
    assert repr(ALICE) == f"Identity({ALICE.address})"


def test_sign_and_verify_signature() -> None:
    sig = ALICE.sign("héllo")
    raw = ALICE.sign_bytes("héllo".encode())
    assert sig == b64e(raw)
    assert verify_signature(ALICE.public_key, "héllo".encode(), raw) is None
    for pub, message, signature in [
        (BOB.public_key, "héllo".encode(), raw),
        (ALICE.public_key, b"hello", raw),
        (ALICE.public_key, "héllo".encode(), raw[:-1] + bytes([raw[-1] ^ 1])),
        (ALICE.public_key[:31], "héllo".encode(), raw),
        (ALICE.public_key, "héllo".encode(), raw[:63]),
    ]:
        with pytest.raises(BadSignature):
            verify_signature(pub, message, signature)


# -- key files ----------------------------------------------------------------------------


def test_plain_keyfile_round_trip_in_the_prototype_format() -> None:
    text = ALICE.to_keyfile()
    assert json.loads(text) == {"address": ALICE.address, "private_key": ALICE.private_b64()}
    loaded = Identity.from_keyfile(text)
    assert (loaded.seed, loaded.address) == (ALICE.seed, ALICE.address)
    assert not keyfile_is_protected(text)


def test_prototype_keyfile_loads() -> None:
    vector = SEED["identities"][0]
    text = json.dumps({"address": vector["address"], "private_key": vector["private_key"]})
    assert Identity.from_keyfile(text).address == vector["address"]
    assert Identity.from_keyfile(text.encode()).address == vector["address"]


@pytest.fixture(scope="module")
def protected() -> str:
    return ALICE.to_keyfile("correct horse", randbytes=seeded(5))


def test_protected_keyfile_round_trip(protected: str) -> None:
    data = json.loads(protected)
    assert "private_key" not in data and data["address"] == ALICE.address
    assert ALICE.private_b64() not in protected
    assert ALICE.private_b64().rstrip("=") not in protected
    assert keyfile_is_protected(protected)
    assert Identity.from_keyfile(protected, "correct horse").seed == ALICE.seed


@pytest.mark.parametrize("passphrase", ["wrong", "", "correct horse ", None])
def test_wrong_or_missing_passphrase(protected: str, passphrase: str | None) -> None:
    with pytest.raises(KeyFileError):
        Identity.from_keyfile(protected, passphrase)


def test_protected_keyfile_is_bound_to_its_address(protected: str) -> None:
    data = json.loads(protected)
    data["address"] = BOB.address
    with pytest.raises(KeyFileError):
        Identity.from_keyfile(json.dumps(data), "correct horse")


@pytest.mark.parametrize(
    "text",
    [
        json.dumps({"address": BOB.address, "private_key": ALICE.private_b64()}),
        "not json",
        "[]",
        json.dumps({"address": ALICE.address}),
        json.dumps(
            {"address": ALICE.address, "private_key_enc": "AAAA", "kdf": {"name": "argon2"}}
        ),
        json.dumps(
            {"address": ALICE.address, "private_key_enc": "AAAA", "kdf": {"name": "scrypt"}}
        ),
    ],
    ids=["address-mismatch", "not-json", "not-object", "no-key", "unknown-kdf", "damaged"],
)
def test_bad_keyfiles(text: str) -> None:
    with pytest.raises(KeyFileError):
        Identity.from_keyfile(text, "pw")


# -- FluxIdentity files -------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_save_writes_mode_0600(tmp_path: Path) -> None:
    ident = FluxIdentity.generate()
    path = ident.save(tmp_path / "alice.key")
    assert mode(path) == 0o600
    assert FluxIdentity.load(path).address == ident.address
    assert isinstance(FluxIdentity.load(path), FluxIdentity)
    assert not FluxIdentity.file_is_protected(path)


def test_save_tightens_an_existing_0644_file(tmp_path: Path) -> None:
    path = tmp_path / "alice.key"
    path.write_text("x" * 10_000)
    os.chmod(path, 0o644)
    assert mode(path) == 0o644
    ident = FluxIdentity.generate()
    ident.save(path, passphrase="pw")
    assert mode(path) == 0o600
    assert FluxIdentity.file_is_protected(path)
    assert FluxIdentity.load(path, "pw").address == ident.address  # old bytes truncated away
