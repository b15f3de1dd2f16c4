"""Envelope verification (flux.protocol.envelope): every refusal names its reason and field."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from protocol_helpers import ALICE, BOB, CAROL, DAVE, MINUTE, NOW, identity, plain_message, signed

from flux.protocol import (
    AddressMismatch,
    BadSignature,
    Envelope,
    FutureMessage,
    InvalidInput,
    InvalidValue,
    MalformedJSON,
    MissingField,
    StaleMessage,
    TooLarge,
    UnknownVersion,
    WrongType,
    b64e,
    compose,
    for_storage,
    loads_strict,
    signing_payload,
    verify_envelope,
)

MAX = 2**53 - 1
BASE = plain_message("Hello Bob", subject="Hi", cc=[CAROL.address], tags=["work"], expires=0)
REQUIRED = ["v", "id", "from", "to", "t", "content", "sig", "pub"]
ADDRESSES = [identity(f"r{i}").address for i in range(101)]


def without(msg: dict, name: str) -> dict:
    return {k: v for k, v in msg.items() if k != name}


def test_base_message_verifies() -> None:
    env = verify_envelope(BASE, now_ms=NOW)
    assert isinstance(env, Envelope)
    assert (env.sender, env.to, env.cc, env.t) == (
        ALICE.address,
        BOB.address,
        (CAROL.address,),
        NOW,
    )


@pytest.mark.parametrize("name", REQUIRED)
def test_missing_required_field(name: str) -> None:
    with pytest.raises(MissingField) as info:
        verify_envelope(without(BASE, name))
    assert info.value.field == name


WRONG_TYPES: list[tuple[str, Any, str]] = [
    ("v", 1, "v"),
    ("v", None, "v"),
    ("id", 5, "id"),
    ("from", None, "from"),
    ("to", [BOB.address], "to"),
    ("t", "1767225600000", "t"),
    ("t", 1.5, "t"),
    ("t", float(NOW), "t"),
    ("t", True, "t"),
    ("content", b"bytes", "content"),
    ("content", None, "content"),
    ("sig", 1, "sig"),
    ("pub", ["x"], "pub"),
    ("subject", 3, "subject"),
    ("re", 3, "re"),
    ("cc", CAROL.address, "cc"),
    ("bcc", {}, "bcc"),
    ("tags", "work", "tags"),
    ("tags", [1], "tags[0]"),
    ("expires", "0", "expires"),
    ("expires", 1.0, "expires"),
    ("route", {}, "route"),
    ("route", ["a.example"], "route[0]"),
    ("route", [{"server": "a", "t": 1, "x": 1}], "route[0]"),
    ("route", [{"server": "a", "t": 1.5}], "route[0].t"),
    ("integrity_chain", {}, "integrity_chain"),
    ("integrity_chain", [1], "integrity_chain[0]"),
]


@pytest.mark.parametrize(("name", "value", "field"), WRONG_TYPES, ids=lambda x: repr(x)[:20])
def test_wrong_type(name: str, value: Any, field: str) -> None:
    with pytest.raises(WrongType) as info:
        verify_envelope({**BASE, name: value})
    assert info.value.field == field


@pytest.mark.parametrize("version", ["2.0", "1", "1.0 ", "", "1.1"])
def test_unknown_version(version: str) -> None:
    with pytest.raises(UnknownVersion) as info:
        verify_envelope({**BASE, "v": version})
    assert info.value.field == "v"


def test_version_is_checked_before_other_fields() -> None:
    with pytest.raises(UnknownVersion):
        verify_envelope({**BASE, "v": "2.0", "to": "someone", "new_field": 1})


def non_canonical(text: str) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    body = text.rstrip("=")
    return body[:-1] + alphabet[alphabet.index(body[-1]) ^ 1] + text[len(body) :]


INVALID_VALUES: list[tuple[str, Any, str]] = [
    ("from", "fx1" + "0" * 39, "from"),
    ("from", BOB.address.upper(), "from"),
    ("to", "bob@example.org", "to"),
    ("to", "fx2" + BOB.address[3:], "to"),
    ("to", BOB.address + "\n", "to"),
    ("cc", [CAROL.address, "fx1nothex" + "0" * 32], "cc[1]"),
    ("bcc", ["x"], "bcc[0]"),
    ("id", "0" * 31, "id"),
    ("id", "A" * 32, "id"),
    ("id", "g" * 32, "id"),
    ("id", "0" * 32 + "\n", "id"),
    ("re", "0" * 32 + "\n", "re"),
    ("cc", [CAROL.address + "\n"], "cc[0]"),
    ("from", ALICE.address + "\n", "from"),
    ("re", "0" * 33, "re"),
    ("pub", "not base64!", "pub"),
    ("pub", ALICE.pub_b64().rstrip("="), "pub"),
    ("pub", ALICE.pub_b64().replace("-", "+").replace("_", "/"), "pub"),
    ("pub", non_canonical(ALICE.pub_b64()), "pub"),
    ("pub", b64e(ALICE.public_key[:31]), "pub"),
    ("sig", non_canonical(BASE["sig"]), "sig"),
    ("sig", b64e(b"\x00" * 63), "sig"),
    ("tags", ["Work"], "tags[0]"),
    ("tags", [""], "tags[0]"),
    ("tags", [" work"], "tags[0]"),
    ("tags", ["x" * 65], "tags[0]"),
    ("tags", ["a\x00b"], "tags[0]"),
    ("tags", ["line\nbreak"], "tags[0]"),
    ("tags", ["\ud800"], "tags[0]"),
    ("expires", -1, "expires"),
    ("t", MAX + 1, "t"),
    ("t", -MAX - 1, "t"),
    ("expires", 2**64, "expires"),
    ("content", "lone \ud800 surrogate", "content"),
    ("subject", "\udfff", "subject"),
    ("encrypted", False, "encrypted"),
    ("unknown", 1, "unknown"),
    ("Content", "x", "Content"),
]


@pytest.mark.parametrize(("name", "value", "field"), INVALID_VALUES, ids=lambda x: repr(x)[:20])
def test_invalid_value(name: str, value: Any, field: str) -> None:
    with pytest.raises(InvalidValue) as info:
        verify_envelope({**BASE, name: value})
    assert info.value.field == field


def test_non_canonical_pub_decodes_to_the_same_key() -> None:
    # Guards the table: the only thing wrong with that spelling is that it is not canonical.
    assert base64.urlsafe_b64decode(non_canonical(ALICE.pub_b64())) == ALICE.public_key


def test_integer_limits_are_inclusive() -> None:
    for t in (MAX, -MAX):
        verify_envelope(signed({**BASE, "t": t}, ALICE))
    verify_envelope(signed({**BASE, "expires": MAX}, ALICE))


@pytest.mark.parametrize("value", [1.5, 1e300, MAX + 1, -(2**60)])
def test_numbers_outside_the_model_are_refused_as_json_text(value: float) -> None:
    text = json.dumps({**BASE, "t": value})
    with pytest.raises(MalformedJSON):
        loads_strict(text)


def test_duplicate_key_in_an_envelope_is_refused() -> None:
    text = json.dumps(BASE)[:-1] + ', "content": "Hello Mallory"}'
    with pytest.raises(MalformedJSON):
        loads_strict(text)


def test_nan_in_an_envelope_is_refused() -> None:
    with pytest.raises(MalformedJSON):
        loads_strict(json.dumps({**BASE, "expires": float("nan")}))


# -- sizes --------------------------------------------------------------------------------


def test_content_limit_is_in_utf8_bytes() -> None:
    verify_envelope(plain_message("é" * 32_768))  # exactly 65,536 bytes
    with pytest.raises(TooLarge) as info:
        verify_envelope({**BASE, "content": "é" * 32_769})  # 32,769 characters, 65,538 bytes
    assert info.value.field == "content"
    with pytest.raises(TooLarge):
        verify_envelope({**BASE, "content": "x" * 65_537})


def test_content_limit_applies_when_composing() -> None:
    with pytest.raises(TooLarge):
        compose(ALICE, BOB.address, "x" * 65_537, now_ms=NOW)


@pytest.mark.parametrize(
    ("cc", "bcc"),
    [(ADDRESSES[:100], []), (ADDRESSES[:50], ADDRESSES[50:100]), ([], ADDRESSES[:101])],
    ids=["cc-100", "cc-50-bcc-50", "bcc-101"],
)
def test_more_than_100_recipients(cc: list[str], bcc: list[str]) -> None:
    msg = {**BASE, "cc": cc}
    if bcc:
        msg["bcc"] = bcc
    with pytest.raises(TooLarge):
        verify_envelope(msg)


def test_100_recipients_are_allowed() -> None:
    msg = plain_message(cc=ADDRESSES[:99])
    assert len(msg["cc"]) == 99
    verify_envelope(msg)
    with pytest.raises(TooLarge):
        compose(ALICE, BOB.address, "x", cc=ADDRESSES[:100], now_ms=NOW)


# -- freshness ----------------------------------------------------------------------------

FRESHNESS = [
    (NOW, None),
    (NOW + 5 * MINUTE, None),
    (NOW - 5 * MINUTE, None),
    (NOW + 5 * MINUTE + 1, StaleMessage),  # now is later than t + 5 min
    (NOW - 5 * MINUTE - 1, FutureMessage),
    (NOW + 10**9, StaleMessage),
    (NOW - 10**9, FutureMessage),
]


@pytest.mark.parametrize(("now_ms", "error"), FRESHNESS)
def test_freshness(now_ms: int, error: type[Exception] | None) -> None:
    if error is None:
        verify_envelope(BASE, now_ms=now_ms)
    else:
        with pytest.raises(error) as info:
            verify_envelope(BASE, now_ms=now_ms)
        assert info.value.field == "t"
    verify_envelope(BASE)  # without a clock, no freshness check


def test_custom_skew() -> None:
    verify_envelope(BASE, now_ms=NOW + 1000, max_skew_ms=1000)
    with pytest.raises(StaleMessage):
        verify_envelope(BASE, now_ms=NOW + 1001, max_skew_ms=1000)


# -- unsigned fields ----------------------------------------------------------------------


def test_retrieval_fields_are_allowed_and_unsigned() -> None:
    read_back = {**BASE, "_status": "read", "_inbox": "work", "_tags": ["important"]}
    verify_envelope(read_back)
    assert signing_payload(read_back) == signing_payload(BASE)
    assert for_storage(read_back) == BASE


def test_route_and_chain_are_unsigned() -> None:
    hopped = {**BASE, "route": [{"server": "a.example", "t": NOW}], "integrity_chain": [{}]}
    assert signing_payload(hopped) == signing_payload(BASE)
    verify_envelope(hopped)


def test_not_an_object() -> None:
    for value in ([], "x", None, 1):
        with pytest.raises(WrongType) as info:
            verify_envelope(value)
        assert info.value.field == "message"


def test_encryption_fields_come_together() -> None:
    enc = compose(
        ALICE, BOB.address, "x", now_ms=NOW, encrypt_for={BOB.address: BOB.public_key}
    ).primary
    verify_envelope(enc)
    for name in ("content_enc", "enc_recipients"):
        with pytest.raises(MissingField) as info:
            verify_envelope(without(enc, name))
        assert info.value.field == name
    with pytest.raises(InvalidValue) as info:
        verify_envelope({**enc, "content": "the plaintext"})
    assert info.value.field == "content"
    with pytest.raises(InvalidValue):  # the right type, no member: PROTOCOL.md §4.3
        verify_envelope({**enc, "enc_recipients": {}})
    with pytest.raises(InvalidValue):
        verify_envelope({**enc, "enc_recipients": {"nobody": "AAAA"}})


def test_errors_are_invalid_input_with_codes() -> None:
    with pytest.raises(InvalidInput) as info:
        verify_envelope(without(BASE, "to"))
    assert info.value.to_dict() == {
        "code": "missing_field",
        "error": "to is required",
        "field": "to",
    }


def test_envelope_recipients_order_and_dedup() -> None:
    env = Envelope({**BASE, "cc": [CAROL.address, BOB.address], "bcc": [DAVE.address]})
    assert env.recipients == (BOB.address, CAROL.address, DAVE.address)


def test_signature_checks() -> None:
    with pytest.raises(AddressMismatch) as info:
        verify_envelope({**BASE, "pub": BOB.pub_b64()})
    assert info.value.field == "pub"
    with pytest.raises(BadSignature) as info:
        verify_envelope({**BASE, "sig": signed({**BASE, "content": "other"}, ALICE)["sig"]})
    assert info.value.field == "sig"


# -- properties ---------------------------------------------------------------------------

utf8_text = st.text(alphabet=st.characters(codec="utf-8"))
tag_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Lu", "Lt", "Zs", "Cc")),
    min_size=1,
    max_size=20,
).filter(lambda t: t == t.lower() and t.strip() == t and t.lower().lower() == t)
msg_id = st.binary(min_size=16, max_size=16).map(bytes.hex)
PEOPLE = [BOB, CAROL, DAVE, identity("p4"), identity("p5")]


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"now_ms": draw(st.integers(0, MAX))}
    if draw(st.booleans()):
        kwargs["subject"] = draw(utf8_text.filter(lambda s: len(s.encode()) <= 4096))
    if draw(st.booleans()):
        kwargs["reply_to"] = draw(msg_id)
    if draw(st.booleans()):
        kwargs["cc"] = [p.address for p in draw(st.lists(st.sampled_from(PEOPLE[1:])))]
    if draw(st.booleans()):
        kwargs["tags"] = draw(st.lists(tag_text, max_size=5))
    if draw(st.booleans()):
        kwargs["expires"] = draw(st.integers(0, MAX))
    content = draw(utf8_text)
    return compose(ALICE, BOB.address, content, **kwargs).primary


@settings(max_examples=100, deadline=None)
@given(messages())
def test_round_trip_property(msg: dict[str, Any]) -> None:
    verify_envelope(msg)
    for text in (json.dumps(msg), json.dumps(msg, ensure_ascii=False).encode("utf-8")):
        parsed = loads_strict(text)
        assert parsed == msg
        verify_envelope(parsed)


Mutation = Callable[[dict[str, Any]], tuple[dict[str, Any], type[Exception]]]


ADDABLE: dict[str, Any] = {
    "subject": "added", "re": "ab" * 16, "cc": [DAVE.address], "tags": ["added"], "expires": 1,
}  # fmt: skip


def _other_int(value: int, delta: int) -> int:
    return value + delta if value + delta <= MAX else value - delta


@st.composite
def signed_field_changes(draw: st.DrawFn) -> tuple[dict[str, Any], type[Exception]]:
    msg = draw(messages())
    signed_fields = [k for k in msg if k not in ("sig", "pub", "route", "integrity_chain")]
    choice = draw(st.sampled_from([*signed_fields, "add", "remove", "pub", "sig"]))
    out = dict(msg)
    expected: type[Exception] = BadSignature
    if choice == "add":
        missing = [n for n in ADDABLE if n not in msg]
        if missing:
            name = draw(st.sampled_from(missing))
            out[name] = ADDABLE[name]
        else:
            out["content"] = msg["content"] + "x"
    elif choice == "remove":
        optional = [n for n in msg if n in ("subject", "re", "cc", "tags", "expires")]
        if not optional:
            out["content"] = msg["content"] + "x"
        else:
            del out[draw(st.sampled_from(optional))]
    elif choice == "pub":
        out["pub"] = draw(st.sampled_from(PEOPLE)).pub_b64()
        expected = AddressMismatch
    elif choice == "from":
        out["from"] = draw(st.sampled_from(PEOPLE)).address
        expected = AddressMismatch
    elif choice == "sig":
        raw = bytearray(base64.urlsafe_b64decode(msg["sig"]))
        raw[draw(st.integers(0, 63))] ^= 1 << draw(st.integers(0, 7))
        out["sig"] = b64e(bytes(raw))
    elif choice == "v":  # no other version is valid, so the version check speaks first
        out["v"] = "1.1"
        expected = UnknownVersion
    elif choice == "to":
        out["to"] = draw(st.sampled_from(PEOPLE[1:])).address
    elif choice in ("id", "re"):
        out[choice] = draw(msg_id.filter(lambda i: i != msg[choice]))
    elif choice in ("t", "expires"):
        out[choice] = _other_int(msg[choice], draw(st.integers(1, 10**6)))
    elif choice in ("content", "subject"):
        out[choice] = draw(utf8_text.filter(lambda s: s != msg[choice] and len(s.encode()) < 4096))
    elif choice == "cc":
        out["cc"] = [*msg["cc"], DAVE.address] if draw(st.booleans()) else msg["cc"][:-1]
    elif choice == "tags":
        out["tags"] = [*msg["tags"], "zzz-added"] if draw(st.booleans()) else msg["tags"][:-1]
    else:  # pragma: no cover - every signed field has a branch above
        raise AssertionError(choice)
    assert out != msg
    return out, expected


@settings(max_examples=150, deadline=None)
@given(signed_field_changes())
def test_any_change_to_a_signed_field_fails(case: tuple[dict[str, Any], type[Exception]]) -> None:
    changed, expected = case
    with pytest.raises(expected):
        verify_envelope(changed)


def test_pub_and_from_swapped_together_fail_the_signature() -> None:
    with pytest.raises(BadSignature):
        verify_envelope({**BASE, "from": BOB.address, "pub": BOB.pub_b64()})
