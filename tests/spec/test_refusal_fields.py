"""A refused result of a delivery answer carries `field` when the refusal names one field,
and `reasons` when it is spam, as an error answer does (PROTOCOL.md §10.7, §9, §8.2;
formerly §16 item 8: both were only in the `error` sentence).

Real parts: two FLUX servers in this process; A seals each message to B and delivers them
in one signed transaction; B's answer is read as sent, and checked against
spec/schemas/federation-answer.json.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from federation.fed_helpers import deliver, local_servers, name, signer
from flux.protocol import Identity, append_hop, compose
from flux.protocol.canonical import without
from flux.server.runner import RunningServer
from spec.schema_check import check

ALICE, BOB = Identity(b"\x31" * 32), Identity(b"\x32" * 32)
_last_ms = 0


def now_ms() -> int:
    """Wall-clock ms, strictly increasing (each message its own `t`)."""
    global _last_ms
    _last_ms = max(_last_ms + 1, int(time.time() * 1000))
    return _last_ms


def letter(content: str = "lunch on friday?", **kw: Any) -> dict[str, Any]:
    return compose(ALICE, BOB.address, content, subject="plans", now_ms=now_ms(), **kw).primary


def sealed(a: RunningServer, b: RunningServer, msg: dict[str, Any]) -> dict[str, Any]:
    return append_hop(msg, signer(a), next_hop=name(b), now_ms=now_ms())


async def answer_to(tmp_path: Path, make: Any) -> list[dict[str, Any]]:
    """B's results for the messages `make(a, b)` builds, delivered by A in one transaction
    (the whole answer checked against its schema)."""
    async with local_servers(tmp_path, "ab") as s:
        a, b = s["a"], s["b"]
        status, answer = await deliver(signer(a), b, make(a, b))
    assert status == 200, answer
    check("federation-answer", answer)
    return answer["results"]


def missing_t(a: RunningServer, b: RunningServer) -> dict[str, Any]:
    return without(sealed(a, b, letter()), frozenset({"t"}))


def sealed_for_another(a: RunningServer, b: RunningServer) -> dict[str, Any]:
    return append_hop(letter(), signer(a), next_hop="elsewhere.example", now_ms=now_ms())


NAMED = {
    "not an object": (lambda a, b: 7, "wrong_type", "message"),
    "a missing field": (missing_t, "missing_field", "t"),
    "the last seal is for another server": (sealed_for_another, "chain_invalid", "integrity_chain"),
}


@pytest.mark.parametrize(("make", "code", "field"), NAMED.values(), ids=NAMED.keys())
async def test_a_refusal_about_one_field_names_it(
    tmp_path: Path, make: Any, code: str, field: str
) -> None:
    [result] = await answer_to(tmp_path, lambda a, b: [make(a, b)])
    assert (result["refused"], result.get("field")) == (code, field), result
    assert "reasons" not in result, result


async def test_a_spam_refusal_lists_its_reasons(tmp_path: Path) -> None:
    [result] = await answer_to(tmp_path, lambda a, b: [sealed(a, b, letter("a" * 64))])
    assert (result["refused"], result["reasons"]) == ("spam", ["repetitive content"]), result
    assert "field" not in result and result["struck"] is False, result


async def test_an_accepted_result_has_neither(tmp_path: Path) -> None:
    """And the fields belong to each refused result alone, in a mixed batch."""
    results = await answer_to(
        tmp_path,
        lambda a, b: [sealed(a, b, letter()), missing_t(a, b), sealed(a, b, letter("a" * 64))],
    )
    assert results[0]["recipients"] == {BOB.address: "stored"}, results
    assert not {"field", "reasons", "refused"} & set(results[0]), results
    assert (results[1].get("field"), "reasons" in results[1]) == ("t", False), results
    assert (results[2].get("field"), results[2]["reasons"]) == (None, ["repetitive content"])
