"""Composing outgoing mail: everything a send needs, in one call (docs/PROTOCOL.md §5).

BCC (§5.2). The prototype signed `bcc` and then stripped it at the server, so no recipient
could verify. FLUX signs one copy for `to` + `cc` with no `bcc` at all, and one further copy
per BCC recipient whose `bcc` names only that recipient. Each copy verifies on its own; no
recipient learns of a BCC recipient except that recipient. All copies share one `id`, as a
Message-ID does in email: receivers key state by (id, recipient).

Encryption (§5.3). With `encrypt_for`, content is encrypted first and the ciphertext is
signed. The sender's own key is added so the sender can read what it sent. A BCC copy reuses
the ciphertext and wraps the same CEK for its one extra recipient.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .e2e import encrypt_content, wrap_cek
from .encoding import b64d
from .envelope import ENCRYPTED_PLACEHOLDER, check_shape, sign_envelope
from .errors import InvalidValue, MissingField
from .identity import Identity, address_from_pub
from .limits import VERSION

RandBytes = Callable[[int], bytes]
PublicKey = bytes | str  # raw 32 bytes or base64url


@dataclass(frozen=True, slots=True)
class Outgoing:
    """What to hand to the server: `primary` for to + cc, one extra copy per BCC address."""

    primary: dict[str, Any]
    bcc_copies: tuple[tuple[str, dict[str, Any]], ...] = ()

    @property
    def all(self) -> list[dict[str, Any]]:
        return [self.primary, *(copy for _, copy in self.bcc_copies)]


def new_message_id(randbytes: RandBytes = os.urandom) -> str:
    """A uuid4 in hex (32 characters), as the prototype makes them."""
    return uuid.UUID(bytes=randbytes(16), version=4).hex


def _raw_key(address: str, key: PublicKey) -> bytes:
    if isinstance(key, bytes):
        return key
    return b64d(key, field=f"encrypt_for.{address}", length=32)


def _unique(addresses: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(addresses))


def compose(
    identity: Identity,
    to: str,
    content: str,
    *,
    subject: str | None = None,
    reply_to: str | None = None,
    cc: Iterable[str] | None = None,
    bcc: Iterable[str] | None = None,
    tags: Iterable[str] | None = None,
    expires: int | None = None,
    encrypt_for: Mapping[str, PublicKey] | None = None,
    now_ms: int,
    message_id: str | None = None,
    randbytes: RandBytes = os.urandom,
) -> Outgoing:
    """Build and sign every copy of one message.

    `encrypt_for` maps each recipient's address to its Ed25519 public key; every recipient
    (to, cc, bcc) must have one. Raises InvalidInput subclasses naming the offending field.
    """
    cc_list = [a for a in _unique(cc or ()) if a != to]
    bcc_list = [a for a in _unique(bcc or ()) if a != to and a not in cc_list]
    fields: dict[str, Any] = {
        "v": VERSION,
        "id": message_id or new_message_id(randbytes),
        "from": identity.address,
        "to": to,
        "t": now_ms,
        "content": content,
    }
    if subject:
        fields["subject"] = subject
    if reply_to:
        fields["re"] = reply_to
    if cc_list:
        fields["cc"] = cc_list
    if tags:
        fields["tags"] = sorted({t.lower() for t in tags})
    if expires is not None:
        fields["expires"] = expires
    if encrypt_for is None:
        return _plain(identity, fields, bcc_list)
    return _encrypted(identity, fields, bcc_list, encrypt_for, randbytes)


def _checked_signed(identity: Identity, fields: dict[str, Any]) -> dict[str, Any]:
    signed = sign_envelope(fields, identity)
    check_shape(signed)
    return signed


def _plain(identity: Identity, fields: dict[str, Any], bcc: list[str]) -> Outgoing:
    primary = _checked_signed(identity, fields)
    copies = tuple((addr, _checked_signed(identity, {**fields, "bcc": [addr]})) for addr in bcc)
    return Outgoing(primary, copies)


def _encrypted(
    identity: Identity,
    fields: dict[str, Any],
    bcc: list[str],
    encrypt_for: Mapping[str, PublicKey],
    randbytes: RandBytes,
) -> Outgoing:
    check_shape({**fields, "sig": "", "pub": ""})  # content limits apply to the plaintext
    keys = {addr: _raw_key(addr, key) for addr, key in encrypt_for.items()}
    keys.setdefault(identity.address, identity.public_key)
    visible = [fields["to"], *fields.get("cc", ()), identity.address]
    for address in [*visible, *bcc]:
        if address not in keys:
            raise MissingField(f"no public key to encrypt for {address}", field="encrypt_for")
    for address in bcc:  # encrypt_content checks the visible keys; BCC keys are wrapped apart
        if address_from_pub(keys[address]) != address:
            raise InvalidValue(f"key given for {address} is not its key", field="encrypt_for")
    visible_keys = {addr: keys[addr] for addr in _unique(visible)}
    content_enc, blobs, cek = encrypt_content(fields["content"], visible_keys, randbytes)
    sealed = {
        **fields,
        "content": ENCRYPTED_PLACEHOLDER,
        "encrypted": True,
        "content_enc": content_enc,
    }
    primary = _checked_signed(identity, {**sealed, "enc_recipients": blobs})
    copies = []
    for addr in bcc:
        own = {**blobs, addr: wrap_cek(cek, keys[addr], randbytes)}
        copies.append(
            (addr, _checked_signed(identity, {**sealed, "bcc": [addr], "enc_recipients": own}))
        )
    return Outgoing(primary, tuple(copies))


def build_message(
    identity: Identity,
    to: str,
    content: str,
    subject: str | None = None,
    reply_to: str | None = None,
    cc: list[str] | None = None,
    bcc: list[str] | None = None,
    tags: list[str] | None = None,
    expires: int | None = None,
    *,
    encrypt_for: Mapping[str, PublicKey] | None = None,
    now_ms: int | None = None,
    randbytes: RandBytes = os.urandom,
) -> dict[str, Any]:
    """The prototype's `build_message`: one signed envelope for `to` (+ `cc`).

    BCC needs one envelope per BCC recipient, which one dict cannot carry: use `compose`.
    """
    if bcc:
        raise InvalidValue("build_message makes one envelope; use compose() for BCC", field="bcc")
    if now_ms is None:
        import time  # the library façade may read the clock; compose() never does

        now_ms = int(time.time() * 1000)
    out = compose(
        identity,
        to,
        content,
        subject=subject,
        reply_to=reply_to,
        cc=cc,
        tags=tags,
        expires=expires,
        encrypt_for=encrypt_for,
        now_ms=now_ms,
        randbytes=randbytes,
    )
    return out.primary


BOUNCE_TAG = "bounce"


def make_bounce(
    original: Mapping[str, Any],
    recipients: Iterable[str],
    reason: str,
    server: Identity,
    now_ms: int,
    randbytes: RandBytes = os.urandom,
) -> dict[str, Any]:
    """The signed notice a server sends a sender whose message it could not deliver
    (PROTOCOL.md §10.3): from the server's own key, to the sender, `re` = the original id,
    tagged `bounce`, naming the recipients and the reason. Plain text: the server cannot
    read what it could not deliver when the original was encrypted, so it quotes only the
    subject."""
    who = ", ".join(recipients) or "its recipients"
    subject = str(original.get("subject") or "(no subject)")
    content = (
        f"Your message {original['id']} could not be delivered to {who}.\n"
        f"Reason: {reason}\n"
        f"Subject: {subject[:200]}"
    )
    return compose(
        server, original["from"], content, subject=f"Undeliverable: {subject}"[:200],
        reply_to=original["id"], tags=[BOUNCE_TAG], now_ms=now_ms, randbytes=randbytes,
    ).primary  # fmt: skip
