"""The canonical form: the exact bytes that get signed and hashed (docs/PROTOCOL.md §3).

v1.0 fixes the form as what the prototype produced: JSON with keys sorted at every depth,
separators `,` and `:` with no spaces, and every non-ASCII character escaped as `\\uXXXX`
(characters beyond the BMP as a surrogate pair), i.e. Python's
`json.dumps(obj, sort_keys=True, separators=(",", ":"))` with `ensure_ascii` on.

That form is only unambiguous for a restricted data model, so FLUX decides the edge cases
explicitly, in this one place, and refuses anything else when parsing:

* no floats (their text form differs between implementations), no NaN or infinities;
* integers only within ±(2^53 - 1), the range every JSON implementation agrees on;
* no duplicate keys in an object (which one would a second implementation keep?);
* strings must be valid Unicode: a lone surrogate cannot be encoded as UTF-8.
"""

from __future__ import annotations

import hashlib
import json
import json.encoder
import re
from collections.abc import Mapping
from typing import Any

from .errors import MalformedJSON

MAX_SAFE_INTEGER = 2**53 - 1

_encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)
_encode = _encoder.encode

# Speed (benchmarks/protocol.py): `JSONEncoder.encode` builds a new C encoder on every call,
# which costs about as much as encoding a whole envelope. `_fast_encode` is that same C
# encoder with the same settings, built once. It is built without the circular-reference
# table, which a shared encoder must not have (a failed call would leave stale entries
# behind, and another thread could see them); a circular or too-deep value therefore ends
# in RecursionError, and is encoded again the checked way so the caller sees exactly the
# error `_encode` raises. Without the C accelerator, `_encode` is used throughout.
_fast_encode = (
    None
    if json.encoder.c_make_encoder is None
    else json.encoder.c_make_encoder(
        None,
        _encoder.default,
        json.encoder.encode_basestring_ascii,
        _encoder.indent,
        _encoder.key_separator,
        _encoder.item_separator,
        _encoder.sort_keys,
        _encoder.skipkeys,
        _encoder.allow_nan,
    )
)


def canonical_json(obj: Any) -> str:
    """The canonical text of `obj` (assumed already within the data model)."""
    if _fast_encode is None:
        return _encode(obj)
    try:
        return "".join(_fast_encode(obj, 0))
    except RecursionError:
        return _encode(obj)


def canonical_bytes(obj: Any) -> bytes:
    return canonical_json(obj).encode("ascii")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def without(obj: Mapping[str, Any], excluded: frozenset[str]) -> dict[str, Any]:
    """A copy of `obj` without the `excluded` keys (the input is never mutated)."""
    # Copy then pop: twice as fast as filtering in a comprehension, same keys, same order.
    out = dict(obj)
    for key in excluded:
        out.pop(key, None)
    return out


def _refuse_constant(name: str) -> Any:
    raise MalformedJSON(f"{name} is not allowed in FLUX JSON")


def _refuse_float(text: str) -> Any:
    raise MalformedJSON(f"non-integer number {text[:20]} is not allowed in FLUX JSON")


def _bounded_int(text: str) -> int:
    if len(text) > 17:  # cheap guard before int(): 2^53 has 16 digits
        raise MalformedJSON("integer outside ±(2^53-1)")
    value = int(text)
    if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return value
    raise MalformedJSON("integer outside ±(2^53-1)")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise MalformedJSON(f"duplicate key {key!r}")
            seen.add(key)
    return obj


_decoder = json.JSONDecoder(
    object_pairs_hook=_unique_keys,
    parse_float=_refuse_float,
    parse_int=_bounded_int,
    parse_constant=_refuse_constant,
)


_BINARY = (bytes, bytearray)  # a tuple: `bytes | bytearray` would build a union per call
_WS = " \t\n\r"  # JSON's whitespace (RFC 8259 §2)


def loads_strict(data: bytes | str) -> Any:
    """Parse JSON within the FLUX data model; raise `MalformedJSON` with the reason otherwise."""
    from_bytes = isinstance(data, _BINARY)
    try:
        text = data.decode("utf-8") if from_bytes else data
        # `_skip_ws` only when there is whitespace to skip (it costs a call per message)
        value, end = _decoder.raw_decode(text, _skip_ws(text, 0) if text[:1] in _WS else 0)
    except MalformedJSON:
        raise
    except RecursionError as exc:
        raise MalformedJSON(f"nested deeper than {MAX_DEPTH} levels") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedJSON(f"not valid JSON: {exc}") from exc
    if end != len(text) and _skip_ws(text, end) != len(text):
        raise MalformedJSON("not valid JSON: extra data after the value")
    if _openers(data if from_bytes else text) > MAX_DEPTH and _depth(value) > MAX_DEPTH:
        raise MalformedJSON(f"nested deeper than {MAX_DEPTH} levels")
    if _may_hold_surrogate(text, from_bytes=from_bytes):
        _require_valid_unicode(value)
    return value


def _openers(data: bytes | bytearray | str) -> int:
    """How many `[` and `{` `data` holds: a bound on its nesting, so `_depth` runs only when
    it could exceed the limit. On bytes one pass (deleting them and comparing the lengths)
    instead of two counts; in UTF-8 those bytes are always those characters."""
    if isinstance(data, str):
        return data.count("[") + data.count("{")
    return len(data) - len(data.translate(None, b"[{"))


#: Deepest nesting of arrays and objects accepted. An envelope needs 4 levels; the limit
#: keeps a hostile body from costing recursion in every layer that walks it.
MAX_DEPTH = 64


def _depth(value: Any) -> int:
    """Nesting depth of a parsed value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


_RAW_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD]")  # one pass; two `in` tests took four times as long


def _may_hold_surrogate(text: str, *, from_bytes: bool) -> bool:
    # Cheap pre-filter so the walk below runs only when a surrogate could be there: as a
    # `\uD8xx`-`\uDFxx` escape, or as a raw code point in a str the caller decoded itself
    # (UTF-8 decoding of bytes never yields one).
    if _SURROGATE_ESCAPE.search(text) is not None:
        return True
    return not from_bytes and not text.isascii() and _RAW_SURROGATE.search(text) is not None


def _require_valid_unicode(value: Any) -> None:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MalformedJSON("a string holds a lone surrogate (not valid Unicode)") from exc


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\n\r":
        pos += 1
    return pos
