"""Binary encoding on the wire: base64url *with* `=` padding (Python's `urlsafe_b64encode`).

Decoding is strict: the alphabet is base64url, padding is required and non-canonical
encodings (stray bits in the last character) are refused, so one value has one spelling.
"""

from __future__ import annotations

import base64
import binascii
import re

from .errors import InvalidValue

_B64URL = re.compile(r"^[A-Za-z0-9_-]*={0,2}\Z")


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def b64d(text: object, *, field: str = "value", length: int | None = None) -> bytes:
    """Decode strict padded base64url; raise `InvalidValue` naming `field` otherwise."""
    if not isinstance(text, str) or len(text) % 4 or not _B64URL.match(text):
        raise InvalidValue(f"{field} is not padded base64url", field=field)
    try:
        raw = base64.urlsafe_b64decode(text)
    except (binascii.Error, ValueError) as exc:
        raise InvalidValue(f"{field} is not padded base64url", field=field) from exc
    if b64e(raw) != text:
        raise InvalidValue(f"{field} is not canonical base64url", field=field)
    if length is not None and len(raw) != length:
        raise InvalidValue(f"{field} must encode {length} bytes, not {len(raw)}", field=field)
    return raw
