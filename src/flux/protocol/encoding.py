"""Binary encoding on the wire: base64url *with* `=` padding (Python's `urlsafe_b64encode`).

Decoding is strict: the alphabet is base64url, padding is required and non-canonical
encodings (stray bits in the last character) are refused, so one value has one spelling.
"""

from __future__ import annotations

import base64
import binascii

from .errors import InvalidValue

_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def b64d(text: object, *, field: str = "value", length: int | None = None) -> bytes:
    """Decode strict padded base64url; raise `InvalidValue` naming `field` otherwise."""
    if not isinstance(text, str) or len(text) % 4:
        raise InvalidValue(f"{field} is not padded base64url", field=field)
    # binascii directly, in strict mode (it refuses characters outside the alphabet and
    # misplaced padding): base64's wrappers cost more than the decoding, and this runs
    # twice for every message verified. A `+` or `/` decodes, but the canonical check
    # below refuses it, since the url-safe spelling of those bits is `-` or `_`.
    try:
        encoded = text.encode("ascii")
        raw = binascii.a2b_base64(encoded.translate(_TO_STANDARD), strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidValue(f"{field} is not padded base64url", field=field) from exc
    canonical = binascii.b2a_base64(raw, newline=False).translate(_TO_URLSAFE)
    if canonical != encoded:
        raise InvalidValue(f"{field} is not canonical base64url", field=field)
    if length is not None and len(raw) != length:
        raise InvalidValue(f"{field} must encode {length} bytes, not {len(raw)}", field=field)
    return raw
