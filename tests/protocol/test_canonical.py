"""The canonical form and the strict parser (flux.protocol.canonical, encoding)."""

from __future__ import annotations

import base64
import json

import pytest

from flux.protocol import (
    InvalidValue,
    MalformedJSON,
    b64d,
    b64e,
    canonical_bytes,
    canonical_json,
    loads_strict,
)

MAX = 2**53 - 1

REFUSED = [
    ("float", '{"t": 1.5}'),
    ("float-zero", "1.0"),
    ("negative-zero-float", "-0.0"),
    ("exponent", "1e3"),
    ("big-exponent", "1E400"),
    ("int-above-range", str(MAX + 1)),
    ("int-below-range", str(-MAX - 1)),
    ("huge-int", "1" + "0" * 30),
    ("huge-int-nested", '{"a": [1, 2, ' + "9" * 4000 + "]}"),
    ("nan", "NaN"),
    ("nan-in-object", '{"x": NaN}'),
    ("infinity", "Infinity"),
    ("minus-infinity", "[-Infinity]"),
    ("duplicate-key", '{"a": 1, "a": 1}'),
    ("duplicate-key-nested", '{"a": {"b": 1, "c": 2, "b": 3}}'),
    ("lone-high-surrogate", '"\\ud800"'),
    ("lone-low-surrogate", '{"content": "x\\udc00y"}'),
    ("reversed-pair", '["\\udc4b\\ud83d"]'),
    ("raw-lone-surrogate-in-str", '"\ud800"'),
    ("trailing-data", "{} {}"),
    ("trailing-garbage", '{"a": 1}x'),
    ("empty", ""),
    ("whitespace-only", "   "),
    ("not-json", "{'a': 1}"),
    ("trailing-comma", "[1,]"),
]


@pytest.mark.parametrize(("name", "text"), REFUSED, ids=[n for n, _ in REFUSED])
def test_loads_strict_refuses(name: str, text: str) -> None:
    with pytest.raises(MalformedJSON):
        loads_strict(text)


@pytest.mark.parametrize(
    "data",
    [
        b"\xff{}",  # not UTF-8
        b'"\xed\xa0\x80"',  # a surrogate encoded as UTF-8 (CESU-8): not UTF-8 either
        b'"\\ud800"',
    ],
)
def test_loads_strict_refuses_bytes(data: bytes) -> None:
    with pytest.raises(MalformedJSON):
        loads_strict(data)


ACCEPTED = [
    (str(MAX), MAX),
    (str(-MAX), -MAX),
    ("0", 0),
    ("-0", 0),
    (' \n\t{"a": [1, "x", true, false, null]} \r\n', {"a": [1, "x", True, False, None]}),
    ('"\\ud83d\\udc4b"', "👋"),  # a surrogate *pair* is one valid character
    ('"\\\\ud800"', "\\ud800"),  # an escaped backslash, not an escape
    ('"\\ud7ff\\ue000"', "\ud7ff\ue000"),  # neighbours of the surrogate block
    ('{"a": {"a": 1}}', {"a": {"a": 1}}),  # equal keys at different depths are fine
]


@pytest.mark.parametrize(("text", "value"), ACCEPTED, ids=[t[:20] for t, _ in ACCEPTED])
def test_loads_strict_accepts(text: str, value: object) -> None:
    assert loads_strict(text) == value
    assert loads_strict(text.encode("utf-8")) == value


def test_canonical_form_is_the_prototypes() -> None:
    obj = {"b": [1, {"d": "é", "c": "👋"}], "a": '"\\\n\x01'}
    expected = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    assert canonical_json(obj) == expected
    assert canonical_bytes(obj) == expected.encode("ascii")
    assert (
        canonical_json(obj)
        == '{"a":"\\"\\\\\\n\\u0001","b":[1,{"c":"\\ud83d\\udc4b","d":"\\u00e9"}]}'
    )


# -- base64url ----------------------------------------------------------------------------


def test_b64_round_trip_with_padding() -> None:
    for raw in (b"", b"\x00", b"\xfb\xff", b"\xff" * 32):
        text = b64e(raw)
        assert text == base64.urlsafe_b64encode(raw).decode()
        assert b64d(text) == raw


def non_canonical(text: str) -> str:
    """The same bytes with a stray low bit set in the last character before the padding."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    body = text.rstrip("=")
    last = alphabet[alphabet.index(body[-1]) ^ 1]
    return body[:-1] + last + "=" * (len(text) - len(body))


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("AAA", "no padding"),
        ("AAAA=", "bad length"),
        ("+/8=", "standard alphabet"),
        ("AA==\n", "whitespace"),
        ("A===", "three pad chars"),
        ("AB==", "stray bits (non-canonical)"),
        (non_canonical(b64e(b"\x01" * 32)), "stray bits in a 32-byte key"),
        (None, "not a string"),
    ],
)
def test_b64d_refuses(text: object, why: str) -> None:
    with pytest.raises(InvalidValue) as info:
        b64d(text, field="pub")
    assert info.value.field == "pub"


def test_non_canonical_helper_keeps_the_bytes() -> None:
    # Guards the table above: the stray-bit spelling decodes to the same bytes.
    text = b64e(b"\x01" * 32)
    assert non_canonical(text) != text
    assert base64.urlsafe_b64decode(non_canonical(text)) == b"\x01" * 32


def test_b64d_length() -> None:
    assert b64d(b64e(b"x" * 32), length=32) == b"x" * 32
    with pytest.raises(InvalidValue):
        b64d(b64e(b"x" * 31), length=32)
