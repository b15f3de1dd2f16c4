"""The only module that touches raw AEAD, KDF and key-agreement primitives.

Everything above it (`e2e`, `identity`) uses these few recipes. Failures of `open_sealed`
are one opaque `DecryptionError`: the caller learns that decryption failed, never which step.
"""

from __future__ import annotations

import hashlib

import nacl.bindings
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .errors import DecryptionError

NONCE_LEN = 12


def seal(key: bytes, plaintext: bytes, nonce: bytes, aad: bytes | None = None) -> bytes:
    """nonce(12) ‖ AES-256-GCM(key, plaintext) ‖ tag(16): the prototype's blob layout."""
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, blob: bytes, aad: bytes | None = None) -> bytes:
    if len(blob) < NONCE_LEN + 16:
        raise DecryptionError("decryption failed")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_LEN], blob[NONCE_LEN:], aad)
    except (InvalidTag, ValueError) as exc:
        raise DecryptionError("decryption failed") from exc


def scrypt(secret: bytes, salt: bytes, *, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(secret)


def x25519_private_from_seed(seed: bytes) -> bytes:
    """The recipient's X25519 scalar: the clamped first half of SHA-512(Ed25519 seed)."""
    scalar = bytearray(hashlib.sha512(seed).digest()[:32])
    scalar[0] &= 248
    scalar[31] &= 127
    scalar[31] |= 64
    return bytes(scalar)


def x25519_public_from_ed25519(ed_pub: bytes) -> bytes:
    """Edwards → Montgomery (u = (1+y)/(1-y)); refuses keys of small order."""
    try:
        return nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(ed_pub)
    except Exception as exc:
        raise DecryptionError("not a usable Ed25519 public key") from exc


def x25519_public(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def x25519_shared(private: bytes, peer_public: bytes) -> bytes:
    try:
        return X25519PrivateKey.from_private_bytes(private).exchange(
            X25519PublicKey.from_public_bytes(peer_public)
        )
    except ValueError as exc:  # all-zero shared secret: a small-order peer key
        raise DecryptionError("decryption failed") from exc


def wrap_key(shared: bytes) -> bytes:
    return hashlib.sha256(shared).digest()
