"""End-to-end encryption (docs/PROTOCOL.md §6), the prototype's scheme, kept exactly.

    CEK          = 32 random bytes
    content_enc  = b64(nonce12 ‖ AES-256-GCM(CEK, UTF-8 content))
    per recipient: X = Ed25519 pub → X25519 (birational map)
                   e = ephemeral X25519 key;  wrap = SHA-256(X25519(e, X))
                   blob = b64(e_pub32 ‖ nonce12 ‖ AES-256-GCM(wrap, CEK))
    recipient's X25519 private key = clamped first half of SHA-512(Ed25519 seed)

What FLUX changes is the *order*: it encrypts first and signs the ciphertext, so the
sender's signature covers what recipients actually receive (the prototype signed the
plaintext and then replaced it, so no encrypted message of its verified). Decrypting
does not care about the order, so the prototype's blobs still decrypt.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from . import _aead
from .encoding import b64d, b64e
from .errors import DecryptionError, InvalidValue, NotARecipient
from .identity import Identity, address_from_pub

RandBytes = Callable[[int], bytes]


def wrap_cek(cek: bytes, recipient_pub: bytes, randbytes: RandBytes = os.urandom) -> str:
    """One recipient's blob: the CEK wrapped for their Ed25519 key."""
    eph_private = randbytes(32)
    eph_public = _aead.x25519_public(eph_private)
    try:
        peer = _aead.x25519_public_from_ed25519(recipient_pub)
        shared = _aead.x25519_shared(eph_private, peer)
    except DecryptionError as exc:
        raise InvalidValue(
            "recipient key cannot be used for encryption", field="encrypt_for"
        ) from exc
    sealed = _aead.seal(_aead.wrap_key(shared), cek, randbytes(_aead.NONCE_LEN))
    return b64e(eph_public + sealed)


def encrypt_content(
    content: str,
    recipient_keys: Mapping[str, bytes],
    randbytes: RandBytes = os.urandom,
) -> tuple[str, dict[str, str], bytes]:
    """Encrypt `content` for `{address: ed25519 pub}`; return (content_enc, blobs, CEK).

    Each key must hash to its address (a key fetched for an address verifies itself), so a
    wrong key cannot silently make a message unreadable to its recipient.
    """
    for address, pub in recipient_keys.items():
        if address_from_pub(pub) != address:
            raise InvalidValue(f"key given for {address} is not its key", field="encrypt_for")
    cek = randbytes(32)
    content_enc = b64e(_aead.seal(cek, content.encode("utf-8"), randbytes(_aead.NONCE_LEN)))
    blobs = {addr: wrap_cek(cek, pub, randbytes) for addr, pub in recipient_keys.items()}
    return content_enc, blobs, cek


def unwrap_cek(blob_b64: str, identity: Identity) -> bytes:
    try:
        blob = b64d(blob_b64, field="enc_recipients")
    except InvalidValue as exc:
        raise DecryptionError("decryption failed") from exc
    if len(blob) < 32 + _aead.NONCE_LEN + 16:
        raise DecryptionError("decryption failed")
    private = _aead.x25519_private_from_seed(identity.seed)
    shared = _aead.x25519_shared(private, blob[:32])
    cek = _aead.open_sealed(_aead.wrap_key(shared), blob[32:])
    if len(cek) != 32:  # AESGCM would also take a 16- or 24-byte key; the scheme is AES-256
        raise DecryptionError("decryption failed")
    return cek


def decrypt_content(msg: Mapping[str, Any], identity: Identity) -> str:
    """The plaintext of `msg` for `identity`.

    Raises NotARecipient when no key is wrapped for this identity, and DecryptionError
    (saying nothing more) when anything else fails.
    """
    if not msg.get("encrypted"):
        return msg["content"]
    blobs = msg.get("enc_recipients") or {}
    if not isinstance(blobs, Mapping) or identity.address not in blobs:
        raise NotARecipient("this identity is not a recipient of the message")
    cek = unwrap_cek(blobs[identity.address], identity)
    try:
        sealed = b64d(msg.get("content_enc"), field="content_enc")
        return _aead.open_sealed(cek, sealed).decode("utf-8")
    except (InvalidValue, UnicodeDecodeError) as exc:
        raise DecryptionError("decryption failed") from exc
