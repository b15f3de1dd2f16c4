"""Identity: an Ed25519 keypair, its fx1 address, and the key file (docs/PROTOCOL.md §2).

Address = "fx1" + the first 40 hex digits of SHA-256(raw 32-byte public key). Because the
address is a hash of the key, a key fetched for an address verifies itself.

The key file is the prototype's JSON `{"address", "private_key"}` (base64url of the 32-byte
seed). FLUX adds an optional passphrase: the seed is then sealed with AES-256-GCM under a
scrypt-derived key and stored as `private_key_enc` instead, so a stolen file alone is no key.
Serialising is pure; writing the file (mode 0600) is `flux.keyfile`'s job.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable

import nacl.bindings
import nacl.exceptions

from . import _aead
from .encoding import b64d, b64e
from .errors import BadSignature, InvalidValue, KeyFileError

ADDRESS_PREFIX = "fx1"
ADDRESS_RE = re.compile(r"^fx1[0-9a-f]{40}\Z")  # \Z: "$" would accept "fx1...\n"
RandBytes = Callable[[int], bytes]

_SCRYPT = {"n": 2**15, "r": 8, "p": 1}


def address_from_pub(pub: bytes) -> str:
    return ADDRESS_PREFIX + hashlib.sha256(pub).hexdigest()[:40]


def is_address(value: object) -> bool:
    return isinstance(value, str) and ADDRESS_RE.match(value) is not None


def verify_signature(pub: bytes, message: bytes, sig: bytes) -> None:
    """Return None if `sig` is `pub`'s Ed25519 signature over `message`; else raise BadSignature."""
    if len(pub) != 32 or len(sig) != 64:
        raise BadSignature("signature or key has the wrong length")
    try:
        nacl.bindings.crypto_sign_open(sig + message, pub)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError) as exc:
        raise BadSignature("signature does not verify") from exc


class Identity:
    """An Ed25519 keypair. Immutable; `sign` returns base64url like the prototype's."""

    __slots__ = ("_secret", "address", "public_key", "seed")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise InvalidValue("an Ed25519 seed is 32 bytes", field="private_key")
        public_key, secret = nacl.bindings.crypto_sign_seed_keypair(seed)
        object.__setattr__(self, "seed", seed)
        object.__setattr__(self, "_secret", secret)
        object.__setattr__(self, "public_key", public_key)
        object.__setattr__(self, "address", address_from_pub(public_key))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Identity is immutable")

    def __repr__(self) -> str:
        return f"Identity({self.address})"

    @classmethod
    def generate(cls, randbytes: RandBytes = os.urandom) -> Identity:
        return cls(randbytes(32))

    @classmethod
    def from_private_b64(cls, private_key: str) -> Identity:
        return cls(b64d(private_key, field="private_key", length=32))

    def pub_b64(self) -> str:
        return b64e(self.public_key)

    def private_b64(self) -> str:
        return b64e(self.seed)

    def sign_bytes(self, message: bytes) -> bytes:
        return nacl.bindings.crypto_sign(message, self._secret)[:64]

    def sign(self, message: str | bytes) -> str:
        """Base64url signature over `message` (a str is signed as its UTF-8 bytes)."""
        data = message.encode("utf-8") if isinstance(message, str) else message
        return b64e(self.sign_bytes(data))

    # -- key file ------------------------------------------------------------------------

    def to_keyfile(self, passphrase: str | None = None, randbytes: RandBytes = os.urandom) -> str:
        """The key file's JSON text; with a passphrase the seed is sealed, not stored plain."""
        if passphrase is None:
            return json.dumps({"address": self.address, "private_key": self.private_b64()})
        salt = randbytes(16)
        key = _aead.scrypt(passphrase.encode("utf-8"), salt, **_SCRYPT)
        sealed = _aead.seal(key, self.seed, randbytes(12), self.address.encode("ascii"))
        return json.dumps(
            {
                "address": self.address,
                "private_key_enc": b64e(sealed),
                "kdf": {"name": "scrypt", "salt": b64e(salt), **_SCRYPT},
            }
        )

    @classmethod
    def from_keyfile(cls, text: str | bytes, passphrase: str | None = None) -> Identity:
        """Load a key file; raise `KeyFileError` saying what is wrong with it."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise KeyFileError("key file is not JSON") from exc
        if not isinstance(data, dict):
            raise KeyFileError("key file is not a JSON object")
        if "private_key" in data:
            try:
                identity = cls.from_private_b64(data["private_key"])
            except InvalidValue as exc:  # every failure of a key file is bad_key_file (§2.3)
                raise KeyFileError("key file's private_key is not a 32-byte seed") from exc
        elif "private_key_enc" in data:
            identity = cls(_open_sealed_seed(data, passphrase))
        else:
            raise KeyFileError("key file has no private_key")
        if data.get("address", identity.address) != identity.address:
            raise KeyFileError("key file address does not match its key")
        return identity


def keyfile_is_protected(text: str | bytes) -> bool:
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return isinstance(data, dict) and "private_key_enc" in data


def _open_sealed_seed(data: dict, passphrase: str | None) -> bytes:
    if passphrase is None:
        raise KeyFileError("key file is protected by a passphrase")
    kdf = data.get("kdf")
    if not isinstance(kdf, dict) or kdf.get("name") != "scrypt":
        raise KeyFileError("key file names an unknown key derivation")
    try:
        salt = b64d(kdf["salt"], field="kdf.salt")
        key = _aead.scrypt(passphrase.encode("utf-8"), salt, n=kdf["n"], r=kdf["r"], p=kdf["p"])
        sealed = b64d(data["private_key_enc"], field="private_key_enc")
        address = str(data.get("address", "")).encode("ascii")
        return _aead.open_sealed(key, sealed, address)
    except (KeyError, TypeError, ValueError, InvalidValue) as exc:
        raise KeyFileError("key file is damaged") from exc
    except Exception as exc:
        raise KeyFileError("wrong passphrase (or a damaged key file)") from exc
