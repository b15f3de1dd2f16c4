"""The prototype's `flux.encryption` module, kept for code written against it (PROTOCOL.md §6).

    msg = build_message(alice, bob.address, "Secret content")
    sealed = encrypt_message(msg, {bob.address: bob.pub_b64()}, identity=alice)
    decrypt_message(sealed, bob)   # "Secret content"

The scheme is the prototype's (X25519 from the Ed25519 keys, AES-256-GCM), so blobs made by
either side open on the other. What differs is the order (PROTOCOL.md §13 item 2): the
prototype encrypted a message *after* it was signed, so the signature covered a plaintext
no recipient ever saw and none of its encrypted messages verified. Encrypting a signed
message therefore means signing it again, which needs the sender's key: pass `identity=`
(the sender), or build encrypted in one step with `build_message(..., encrypt_for=...)`.
Without it `encrypt_message` raises `EncryptNeedsIdentity` rather than hand back a message
that no server or recipient will accept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .protocol.e2e import decrypt_content, encrypt_content
from .protocol.encoding import b64d
from .protocol.envelope import (
    ENCRYPTED_PLACEHOLDER,
    UNSIGNED_FIELDS,
    check_shape,
    sign_envelope,
)
from .protocol.errors import DecryptionError, InvalidValue, MissingField
from .protocol.identity import Identity

__all__ = ["EncryptNeedsIdentity", "decrypt_message", "encrypt_message", "is_encrypted"]


class EncryptNeedsIdentity(MissingField):
    """`encrypt_message` was not given the sender's identity: the encrypted message must be
    signed again (PROTOCOL.md §13 item 2), and only the sender can sign. Field `identity`."""

    def __init__(self) -> None:
        super().__init__(
            "encrypting a signed message changes what was signed; pass identity= (the "
            "sender) so it is signed again, or use build_message(..., encrypt_for=...) "
            "(PROTOCOL.md §13 item 2: FLUX refuses sign-then-encrypt)",
            field="identity",
        )


def encrypt_message(
    msg: Mapping[str, Any],
    recipient_pub_b64s: Mapping[str, str],
    identity: Identity | None = None,
) -> dict[str, Any]:
    """`msg` (as built, not yet sent) with its content encrypted for `{fx1 address:
    base64url Ed25519 key}` plus the sender, then signed again by `identity`.

    Returns a new dict (`msg` is not touched): `content` "[encrypted]", `encrypted` true,
    `content_enc`, `enc_recipients`, and a fresh `sig`. Raises EncryptNeedsIdentity without
    `identity`; InvalidValue when `identity` is not the sender (`from`), when a key does not
    hash to its address (`encrypt_for`; the prototype skipped such a recipient with a log
    line), when `msg` is already encrypted or already passed a server (`integrity_chain`),
    or carries `bcc` (use `compose`, which gives each BCC copy its own wrapped key).
    """
    if identity is None:
        raise EncryptNeedsIdentity()
    if msg.get("encrypted"):
        raise InvalidValue("the message is already encrypted", field="encrypted")
    if msg.get("integrity_chain") or msg.get("route"):
        raise InvalidValue(
            "the message already passed a server; encrypt before sending", field="integrity_chain"
        )
    if msg.get("bcc"):
        raise InvalidValue("a BCC message needs one copy per BCC recipient: use compose()", field="bcc")  # fmt: skip
    if msg.get("from") != identity.address:
        raise InvalidValue("identity must be the message's sender", field="from")
    fields = {k: v for k, v in msg.items() if k not in UNSIGNED_FIELDS}  # signed anew
    content = fields.get("content")
    if not isinstance(content, str):
        raise MissingField("the message has no text content", field="content")
    keys = {addr: b64d(pub, field=f"encrypt_for.{addr}", length=32) for addr, pub in recipient_pub_b64s.items()}  # fmt: skip
    keys.setdefault(identity.address, identity.public_key)  # the sender can read what it sent
    content_enc, blobs, _ = encrypt_content(content, keys)
    sealed = {**fields, "content": ENCRYPTED_PLACEHOLDER, "encrypted": True,
              "content_enc": content_enc, "enc_recipients": blobs}  # fmt: skip
    signed = sign_envelope(sealed, identity)
    check_shape(signed)
    return signed


def decrypt_message(msg: Mapping[str, Any], identity: Identity) -> str | None:
    """The plaintext, or None when `identity` is not a recipient or decryption fails
    (the prototype's contract). Use `flux.protocol.decrypt_content` to get the reason."""
    try:
        return decrypt_content(msg, identity)
    except DecryptionError:
        return None


def is_encrypted(msg: Mapping[str, Any]) -> bool:
    return bool(msg.get("encrypted"))
