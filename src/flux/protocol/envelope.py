"""Envelopes: building, signing and verifying the v1.0 message (docs/PROTOCOL.md §4).

An envelope is a JSON object. The sender signs its *core*: every field except `sig`, `pub`,
`route`, `integrity_chain` and the retrieval-only `_status`, `_inbox`, `_tags`, in the
canonical form of `canonical.py`. Servers add `route` and `integrity_chain` without breaking
that signature; the chain (see `chain.py`) is what protects the unsigned part.

`verify_envelope` checks, in this order, and raises at the first failure with its reason:
shape (each field present and of its type), version, values (addresses, ids, sizes,
encodings), freshness (when a clock is given), key ↔ address binding, signature. On success
it returns an `Envelope`, a frozen value that the rest of FLUX accepts as "verified".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .canonical import MAX_SAFE_INTEGER, canonical_bytes, sha256_hex, without
from .encoding import b64d
from .errors import (
    AddressMismatch,
    BadSignature,
    FutureMessage,
    InvalidValue,
    MissingField,
    StaleMessage,
    TooLarge,
    UnknownVersion,
    WrongType,
)
from .identity import ADDRESS_RE, Identity, address_from_pub, verify_signature
from .limits import (
    MAX_CLOCK_SKEW_MS,
    MAX_CONTENT_BYTES,
    MAX_RECIPIENTS,
    MAX_ROUTE_HOPS,
    MAX_SUBJECT_BYTES,
    MAX_TAG_CHARS,
    MAX_TAGS,
    VERSION,
)

#: Fields outside the sender's signature.
UNSIGNED_FIELDS = frozenset(
    {"sig", "pub", "route", "integrity_chain", "_status", "_inbox", "_tags", "_from_name",
     "_sent_at", "_delivery"}
)  # fmt: skip
#: Fields outside a hop's integrity `hash` (the prototype also leaves out `bcc`).
UNHASHED_FIELDS = UNSIGNED_FIELDS | {"bcc"}
#: Fields outside the body hash `bh` a sealed hop commits to: only what servers add.
UNSEALED_FIELDS = frozenset(
    {"route", "integrity_chain", "_status", "_inbox", "_tags", "_from_name", "_sent_at",
     "_delivery"}
)  # fmt: skip
#: Added by a server when a message is read back; never part of what was sent.
#: (`_from_name`: the sender's name@domain where the server knows it; `_sent_at`,
#: `_delivery`: a sent message's time and each recipient's delivery state.)
RETRIEVAL_FIELDS = frozenset(
    {"_status", "_inbox", "_tags", "_from_name", "_sent_at", "_delivery"}
)  # fmt: skip
ENCRYPTED_PLACEHOLDER = "[encrypted]"

CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")  #: no tag or folder name may hold these
ID_RE = re.compile(r"^[0-9a-f]{32}\Z")  # \Z, not $: "$" matches before a final "\n"
SERVER_RE = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?(:[0-9]{1,5})?\Z")


def signing_payload(msg: Mapping[str, Any]) -> bytes:
    """The exact bytes the sender signs (byte-identical to the prototype's)."""
    return canonical_bytes(without(msg, UNSIGNED_FIELDS))


def integrity_hash(msg: Mapping[str, Any]) -> str:
    """The prototype's hop `hash`: SHA-256 of the core without `bcc`."""
    return sha256_hex(canonical_bytes(without(msg, UNHASHED_FIELDS)))


def body_hash(msg: Mapping[str, Any]) -> str:
    """`bh`: SHA-256 of everything the sender sent, signature and key included."""
    return sha256_hex(canonical_bytes(without(msg, UNSEALED_FIELDS)))


@dataclass(frozen=True, slots=True)
class Digests:
    """A message's hop `hash` and `bh` (`integrity_hash`, `body_hash`), made once: a
    server needs both of every message it takes, for the chain check, its own hop and
    the store's dedupe key, and each is a canonical encoding of nearly the whole message.

    (Why not one encoding for the signing payload, `hash` and `bh`, each a subset of the
    same members: encoding each member apart and joining the wanted ones was measured no
    faster than encoding each subset whole, the C encoder being quick and the Python
    around each member not. What saves the time is making each once per message.)
    """

    integrity_hash: str  #: the hop's `hash`
    body_hash: str  #: the sealed hop's `bh`


def message_digests(msg: Mapping[str, Any]) -> Digests:
    return Digests(integrity_hash(msg), body_hash(msg))


def sign_envelope(fields: Mapping[str, Any], identity: Identity) -> dict[str, Any]:
    """A new dict: `fields` plus `sig` and `pub` by `identity` (the input is not touched)."""
    if fields.get("from") != identity.address:
        raise InvalidValue("from must be the signing identity's address", field="from")
    signed = dict(fields)
    signed.setdefault("route", [])
    signed.setdefault("integrity_chain", [])
    signed["sig"] = identity.sign(signing_payload(signed))
    signed["pub"] = identity.pub_b64()
    return signed


@dataclass(frozen=True, slots=True)
class Envelope:
    """A verified envelope. `data` is the wire dict; treat it as read-only."""

    data: Mapping[str, Any]
    _hashes: dict[str, Digests] = field(default_factory=dict, repr=False, compare=False)

    @property
    def id(self) -> str:
        return self.data["id"]

    @property
    def sender(self) -> str:
        return self.data["from"]

    @property
    def to(self) -> str:
        return self.data["to"]

    @property
    def t(self) -> int:
        return self.data["t"]

    @property
    def cc(self) -> tuple[str, ...]:
        return tuple(self.data.get("cc") or ())

    @property
    def bcc(self) -> tuple[str, ...]:
        return tuple(self.data.get("bcc") or ())

    @property
    def recipients(self) -> tuple[str, ...]:
        """to, cc and bcc, each once, in that order."""
        return tuple(dict.fromkeys((self.to, *self.cc, *self.bcc)))

    @property
    def chain(self) -> list[dict[str, Any]]:
        return list(self.data.get("integrity_chain") or ())

    @property
    def digests(self) -> Digests:
        """The `hash` and `bh` of `data`, made once (the chain check, this server's hop
        and the store all need them)."""
        digests = self._hashes.get("digests")
        if digests is None:
            digests = self._hashes["digests"] = message_digests(self.data)
        return digests

    @property
    def body_hash(self) -> str:
        return self.digests.body_hash

    @property
    def integrity_hash(self) -> str:
        return self.digests.integrity_hash


# -- verification -----------------------------------------------------------------------

Check = Callable[[str, Any], None]


def _require_str(name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise WrongType(f"{name} must be a string", field=name)


def _require_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise WrongType(f"{name} must be an integer", field=name)
    if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        raise InvalidValue(f"{name} is outside ±(2^53-1)", field=name)


def require_address(name: str, value: Any) -> None:
    if isinstance(value, str) and ADDRESS_RE.match(value):
        return
    _require_str(name, value)
    raise InvalidValue(f"{name} is not an fx1 address", field=name)


def require_id(name: str, value: Any) -> None:
    if isinstance(value, str) and ID_RE.match(value):
        return
    _require_str(name, value)
    raise InvalidValue(f"{name} must be 32 lower-case hex digits", field=name)


def _require_utf8(name: str, value: str, limit: int) -> None:
    if value.isascii():  # O(1) in CPython: ASCII text is valid and one byte a character
        if len(value) > limit:
            raise TooLarge(f"{name} is {len(value)} bytes; the limit is {limit}", field=name)
        return
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidValue(f"{name} is not valid Unicode", field=name) from exc
    if size > limit:
        raise TooLarge(f"{name} is {size} bytes; the limit is {limit}", field=name)


def _check_text(name: str, value: Any, limit: int) -> None:
    if isinstance(value, str) and value.isascii() and len(value) <= limit:
        return  # the common case, without the calls below
    _require_str(name, value)
    _require_utf8(name, value, limit)


def _check_content(name: str, value: Any) -> None:
    _check_text(name, value, MAX_CONTENT_BYTES)


def _check_subject(name: str, value: Any) -> None:
    _check_text(name, value, MAX_SUBJECT_BYTES)


def _check_address_list(name: str, value: Any) -> None:
    if not isinstance(value, list):
        raise WrongType(f"{name} must be a list of addresses", field=name)
    if len(value) > MAX_RECIPIENTS:
        raise TooLarge(f"{name} has more than {MAX_RECIPIENTS} addresses", field=name)
    for i, item in enumerate(value):
        if not isinstance(item, str) or not ADDRESS_RE.match(item):
            require_address(f"{name}[{i}]", item)  # raises; the name is built only then


def _check_tags(name: str, value: Any) -> None:
    if not isinstance(value, list):
        raise WrongType("tags must be a list of strings", field=name)
    if len(value) > MAX_TAGS:
        raise TooLarge(f"more than {MAX_TAGS} tags", field=name)
    for i, tag in enumerate(value):
        if _is_plain_tag(tag):
            continue
        _require_str(f"tags[{i}]", tag)
        if not tag or len(tag) > MAX_TAG_CHARS or tag != tag.lower() or tag.strip() != tag:
            raise InvalidValue(
                f"tags[{i}] must be 1-{MAX_TAG_CHARS} lower-case characters", field=f"tags[{i}]"
            )
        if CONTROL_RE.search(tag):  # a NUL cannot even be stored by PostgreSQL
            raise InvalidValue(f"tags[{i}] must not hold control characters", field=f"tags[{i}]")
        _require_utf8(f"tags[{i}]", tag, 4 * MAX_TAG_CHARS)  # refuses lone surrogates


def _is_plain_tag(tag: Any) -> bool:
    # The common case in one expression: an ASCII tag that passes every check of the loop
    # in `_check_tags` (ASCII text is valid Unicode of len(tag) bytes). Anything else takes
    # that loop, which names the first failure.
    return (
        isinstance(tag, str)
        and tag.isascii()
        and 0 < len(tag) <= MAX_TAG_CHARS
        and tag == tag.lower()
        and tag.strip() == tag
        and not CONTROL_RE.search(tag)
    )


def _check_expires(name: str, value: Any) -> None:
    _require_int(name, value)
    if value < 0:
        raise InvalidValue("expires must be 0 or a time in ms", field=name)


def _check_encrypted(name: str, value: Any) -> None:
    # Of its type first, then its value (§4.3 step 4): a string "true" is the wrong type,
    # `false` a boolean with a value v1.0 does not allow.
    if not isinstance(value, bool):
        raise WrongType("encrypted, when present, must be the boolean true", field=name)
    if value is not True:
        raise InvalidValue("encrypted, when present, must be true", field=name)


def _check_b64(name: str, value: Any) -> None:
    _require_str(name, value)
    b64d(value, field=name)


def _check_content_enc(name: str, value: Any) -> None:
    _require_str(name, value)
    # nonce(12) + ciphertext + tag(16): the ciphertext obeys the content limit too.
    if len(value) > (MAX_CONTENT_BYTES + 28 + 2) // 3 * 4:
        raise TooLarge(f"{name} is larger than {MAX_CONTENT_BYTES} bytes of content", field=name)
    b64d(value, field=name)


def _check_enc_recipients(name: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise WrongType("enc_recipients must be an object of address -> blob", field=name)
    if not value:  # the right type, a wrong value (PROTOCOL.md §4.3)
        raise InvalidValue("enc_recipients must name at least one reader", field=name)
    if len(value) > MAX_RECIPIENTS + 1:
        raise TooLarge("enc_recipients has too many entries", field=name)
    for addr, blob in value.items():
        # A key that is not an address cannot be used in a field name (`name.key` would
        # echo arbitrary text), so the object itself is named (§4.3).
        if not (isinstance(addr, str) and ADDRESS_RE.match(addr)):
            raise InvalidValue(f"a key of {name} is not an fx1 address", field=name)
        _check_b64(f"{name}.{addr}", blob)


def _check_route(name: str, value: Any) -> None:
    if not isinstance(value, list):
        raise WrongType("route must be a list", field=name)
    if len(value) > MAX_ROUTE_HOPS:
        raise TooLarge(f"route has more than {MAX_ROUTE_HOPS} entries", field=name)
    for i, entry in enumerate(value):
        if not isinstance(entry, dict) or set(entry) - {"server", "t"}:
            raise WrongType(f"route[{i}] must be {{server, t}}", field=f"route[{i}]")
        _require_str(f"route[{i}].server", entry.get("server"))
        _require_int(f"route[{i}].t", entry.get("t"))


def _check_chain_shape(name: str, value: Any) -> None:
    # Each record's own shape is checked by chain.verify_chain; here only the container.
    if not isinstance(value, list):
        raise WrongType("integrity_chain must be a list", field=name)
    if len(value) > MAX_ROUTE_HOPS:
        raise TooLarge(f"integrity_chain has more than {MAX_ROUTE_HOPS} hops", field=name)
    for i, record in enumerate(value):
        if not isinstance(record, dict):
            raise WrongType(f"integrity_chain[{i}] must be an object", field=f"{name}[{i}]")


def _ignore(name: str, value: Any) -> None:
    return None


REQUIRED: dict[str, Check] = {
    "v": _require_str,
    "id": require_id,
    "from": require_address,
    "to": require_address,
    "t": _require_int,
    "content": _check_content,
    "sig": _require_str,
    "pub": _require_str,
}
OPTIONAL: dict[str, Check] = {
    "subject": _check_subject,
    "re": require_id,
    "cc": _check_address_list,
    "bcc": _check_address_list,
    "tags": _check_tags,
    "expires": _check_expires,
    "route": _check_route,
    "integrity_chain": _check_chain_shape,
    "encrypted": _check_encrypted,
    "content_enc": _check_content_enc,
    "enc_recipients": _check_enc_recipients,
    "_status": _ignore,
    "_inbox": _ignore,
    "_tags": _ignore,
    "_from_name": _ignore,
    "_sent_at": _ignore,
    "_delivery": _ignore,
}


#: REQUIRED and OPTIONAL in one table, for one lookup per field (they share no name).
_CHECKS: dict[str, Check] = {**REQUIRED, **OPTIONAL}
_ENCRYPTION_FIELDS = ("encrypted", "content_enc", "enc_recipients")


def check_shape(msg: Any) -> None:
    """Raise the first shape error of `msg` (missing, wrong type, bad value, too large)."""
    if not isinstance(msg, dict):
        raise WrongType("a message must be a JSON object", field="message")
    if not msg.keys() >= REQUIRED.keys():
        for name in REQUIRED:
            if name not in msg:
                raise MissingField(f"{name} is required", field=name)
    # v first: a message of another version is refused as such, not for its fields.
    _require_str("v", msg["v"])
    if msg["v"] != VERSION:
        raise UnknownVersion(f"unknown version {msg['v'][:16]!r}; this is {VERSION}", field="v")
    checks = _CHECKS
    for name, value in msg.items():
        check = checks.get(name)
        if check is None:
            raise InvalidValue(f"unknown field {name[:40]!r}", field=name[:40])
        check(name, value)
    count = 1 + len(msg.get("cc") or ()) + len(msg.get("bcc") or ())
    if count > MAX_RECIPIENTS:
        raise TooLarge(f"{count} recipients; the limit is {MAX_RECIPIENTS}", field="cc")
    if "encrypted" in msg or "content_enc" in msg or "enc_recipients" in msg:
        _check_encryption_fields(msg)


def _check_encryption_fields(msg: Mapping[str, Any]) -> None:
    parts = [k for k in _ENCRYPTION_FIELDS if k in msg]
    if not parts:
        return
    if len(parts) != 3:
        missing = {"encrypted", "content_enc", "enc_recipients"} - set(parts)
        name = sorted(missing)[0]
        raise MissingField(f"an encrypted message needs {name}", field=name)
    if msg["content"] != ENCRYPTED_PLACEHOLDER:
        raise InvalidValue("an encrypted message's content must be '[encrypted]'", field="content")


def check_freshness(t: int, now_ms: int, max_skew_ms: int = MAX_CLOCK_SKEW_MS) -> None:
    if t < now_ms - max_skew_ms:
        raise StaleMessage(f"t is {(now_ms - t) // 1000} s in the past", field="t")
    if t > now_ms + max_skew_ms:
        raise FutureMessage(f"t is {(t - now_ms) // 1000} s in the future", field="t")


def check_signature(msg: Mapping[str, Any]) -> None:
    """Key ↔ address binding, then the Ed25519 signature over the signing payload."""
    pub = b64d(msg["pub"], field="pub", length=32)
    if address_from_pub(pub) != msg["from"]:
        raise AddressMismatch("pub does not hash to from", field="pub")
    sig = b64d(msg["sig"], field="sig", length=64)
    try:
        verify_signature(pub, signing_payload(msg), sig)
    except BadSignature as exc:
        raise BadSignature("sig does not verify over the message", field="sig") from exc


def verify_envelope(
    msg: Any, *, now_ms: int | None = None, max_skew_ms: int = MAX_CLOCK_SKEW_MS
) -> Envelope:
    """Verify a received message; return it as an `Envelope` or raise the precise reason.

    Raises InvalidInput subclasses (shape), StaleMessage/FutureMessage (when `now_ms` is
    given), AddressMismatch, BadSignature.
    """
    check_shape(msg)
    if now_ms is not None:
        check_freshness(msg["t"], now_ms, max_skew_ms)
    check_signature(msg)
    return Envelope(msg)


def for_storage(msg: Mapping[str, Any]) -> dict[str, Any]:
    """The message without retrieval-only fields a client may have echoed back."""
    return without(msg, RETRIEVAL_FIELDS)
