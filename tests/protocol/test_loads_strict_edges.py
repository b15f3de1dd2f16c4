"""`loads_strict` at the edges its shortcuts touch: whitespace is skipped only when there is
some, and the `[`/`{` count that bounds the nesting is taken of bytes in one pass. Both
must decide exactly as before, for str, bytes and bytearray alike."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flux.protocol import MalformedJSON, loads_strict
from flux.protocol import canonical as canonical_module

# -- loads_strict: whitespace and the nesting bound ----------------------------------------


@pytest.mark.parametrize(
    "text",
    ["", " ", "\t", "{}", " {}", "{} ", "\n{}\r\n", "\r[1]\t", " x", "{}x", "{} x", "x{}",
     "\u00a0{}", "{}\u00a0", "\x0b{}", "{}\x0c", "[1] [2]"],
)  # fmt: skip
def test_whitespace_around_the_value(text: str) -> None:
    def outcome(data: Any) -> Any:
        try:
            return ("ok", loads_strict(data))
        except MalformedJSON as exc:
            return ("refused", exc.message)

    try:
        expected: Any = ("ok", json.loads(text))
    except ValueError:
        expected = None
    got = outcome(text)
    assert outcome(text.encode()) == got == outcome(bytearray(text.encode()))
    if expected is not None:
        assert got == expected
    else:
        assert got[0] == "refused"


@pytest.mark.parametrize("depth", [63, 64, 65, 66])
@pytest.mark.parametrize("padding", ["", '"[[{{[{é👋', "[" * 70])
def test_nesting_limit_from_bytes_and_text(depth: int, padding: str) -> None:
    nested = "[" * (depth - 1) + "]" * (depth - 1)  # in the object: `depth` levels in all
    text = f'{{"p": {json.dumps(padding, ensure_ascii=False)}, "x": {nested}}}'
    for data in (text, text.encode(), bytearray(text.encode())):
        if depth <= 64:
            assert loads_strict(data)["p"] == padding
        else:
            with pytest.raises(MalformedJSON, match="nested deeper than 64 levels"):
                loads_strict(data)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from('[{]}"é👋a \\'), max_size=80))
def test_openers_counts_brackets_of_bytes_as_of_text(text: str) -> None:
    expected = text.count("[") + text.count("{")
    assert canonical_module._openers(text) == expected
    assert canonical_module._openers(text.encode()) == expected
    assert canonical_module._openers(bytearray(text.encode())) == expected
