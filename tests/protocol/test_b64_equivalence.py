"""The fast strict base64url decoder accepts and refuses exactly what the plain one did."""

from __future__ import annotations

import base64
import binascii
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from flux.protocol.encoding import b64d
from flux.protocol.errors import InvalidValue

_B64URL = re.compile(r"^[A-Za-z0-9_-]*={0,2}\Z")


def reference(text: str) -> bytes | None:
    """The first implementation: alphabet regex, base64's decoder, canonical re-encoding."""
    if len(text) % 4 or not _B64URL.match(text):
        return None
    try:
        raw = base64.urlsafe_b64decode(text)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.urlsafe_b64encode(raw).decode() == text else None


def fast(text: str) -> bytes | None:
    try:
        return b64d(text)
    except InvalidValue:
        return None


ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/ \n\té\x00."


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=24))
def test_same_verdict_on_arbitrary_text(text: str) -> None:
    assert fast(text) == reference(text)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=48), st.integers(min_value=0, max_value=63), st.sampled_from(ALPHABET))
def test_same_verdict_on_near_misses_of_valid_encodings(raw: bytes, at: int, char: str) -> None:
    text = base64.urlsafe_b64encode(raw).decode()
    assert fast(text) == raw
    if text:
        i = at % len(text)
        mutated = text[:i] + char + text[i + 1 :]
        assert fast(mutated) == reference(mutated)
