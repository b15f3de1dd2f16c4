"""Review of issue 14 (R14): what PROTOCOL.md §10 says a receiver must refuse, sent to a
real FLUX server, and the answer compared with the text (status, `code`, `field`).

Real parts: two FLUX servers in this process (`local_servers`, memory stores, plain HTTP
between them as listed insecure peers). A is the signing peer (its real key, published at
its real `/federation/info`); B is the receiver under attack. Every request is built on
the wire by hand (headers, bytes), as a hostile peer would.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from federation.fed_helpers import local_servers, name, signer
from flux.federation.signing import sign_request
from flux.protocol import Identity, ServerSigner, append_hop, compose
from flux.server.runner import RunningServer
from spec.schema_check import check

ALICE, BOB = Identity(b"\x41" * 32), Identity(b"\x42" * 32)
DELIVER = "/federation/deliver"
_last_ms = 0


def now_ms() -> int:
    """Wall-clock ms, strictly increasing (each message its own `t`)."""
    global _last_ms
    _last_ms = max(_last_ms + 1, int(time.time() * 1000))
    return _last_ms


@pytest.fixture
async def ab(tmp_path: Path) -> AsyncIterator[tuple[RunningServer, RunningServer]]:
    async with local_servers(tmp_path, "ab") as s:
        yield s["a"], s["b"]


def letter(a: RunningServer, b: RunningServer) -> dict[str, Any]:
    """Alice's letter to Bob, sealed by A to B (a message B must take)."""
    msg = compose(ALICE, BOB.address, "lunch on friday?", subject="plans", now_ms=now_ms())
    return append_hop(msg.primary, signer(a), next_hop=name(b), now_ms=now_ms())


def txn(a: RunningServer, messages: list[Any], **members: Any) -> bytes:
    doc = {"txn": uuid.uuid4().hex, "from_server": name(a), "messages": messages, **members}
    return json.dumps(doc).encode()


def signed(
    frm: ServerSigner, b: RunningServer, body: bytes, *, path: str = DELIVER, now_s: int = 0
) -> CIMultiDict[str]:
    now_s = now_s or int(time.time())
    return CIMultiDict(sign_request(frm, "POST", name(b), path, body, now_s=now_s))


async def post(
    b: RunningServer, body: bytes, headers: CIMultiDict[str] | list[tuple[str, str]],
    *, path: str = DELIVER,
) -> tuple[int, Any]:  # fmt: skip
    """`body` POSTed to B's `path` with exactly these header lines: (status, JSON answer)."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(b.url + path, data=body, headers=headers) as response,
    ):
        return response.status, json.loads(await response.text())


def refusal(status: int, answer: Any) -> tuple[int, str, str | None]:
    check("error", answer)
    return status, answer["code"], answer.get("field")


# -- §10.6: the signature profile, check by check -------------------------------------------
async def test_a_valid_transaction_is_taken_and_its_answer_fits_the_schema(ab: Any) -> None:
    a, b = ab
    body = txn(a, [letter(a, b)])
    status, answer = await post(b, body, signed(signer(a), b, body))
    assert status == 200, answer
    check("federation-answer", answer)
    assert answer["txn"] == json.loads(body)["txn"]
    assert answer["results"][0]["recipients"] == {BOB.address: "stored"}


async def test_a_signature_by_another_key_under_the_peers_name_is_401_signature(
    ab: Any,
) -> None:
    a, b = ab
    impostor = ServerSigner(name(a), Identity.generate())
    body = txn(a, [letter(a, b)])
    status, answer = await post(b, body, signed(impostor, b, body))
    assert refusal(status, answer) == (401, "bad_request_signature", "Signature")


async def test_a_digest_of_other_bytes_is_401_content_digest(ab: Any) -> None:
    a, b = ab
    body = txn(a, [letter(a, b)])
    headers = signed(signer(a), b, body)
    status, answer = await post(b, body + b" ", headers)
    assert refusal(status, answer) == (401, "bad_request_signature", "Content-Digest")


@pytest.mark.parametrize("skew", [-301, 301])
async def test_created_more_than_300_s_away_is_401_signature_input(ab: Any, skew: int) -> None:
    a, b = ab
    body = txn(a, [letter(a, b)])
    headers = signed(signer(a), b, body, now_s=int(time.time()) + skew)
    status, answer = await post(b, body, headers)
    assert refusal(status, answer) == (401, "bad_request_signature", "Signature-Input")


async def test_created_in_milliseconds_is_401_signature_input(ab: Any) -> None:
    """The one time in seconds (§10.6): a sender that writes ms (13 digits) is refused."""
    a, b = ab
    body = txn(a, [letter(a, b)])
    headers = signed(signer(a), b, body, now_s=int(time.time() * 1000))
    status, answer = await post(b, body, headers)
    assert refusal(status, answer) == (401, "bad_request_signature", "Signature-Input")


async def test_a_request_for_another_host_is_401_authority(ab: Any) -> None:
    a, b = ab
    body = txn(a, [letter(a, b)])
    headers = signed(signer(a), b, body)
    headers["Host"] = "c.example"
    status, answer = await post(b, body, headers)
    assert refusal(status, answer) == (401, "bad_request_signature", "@authority")


async def test_a_query_string_is_401_signature(ab: Any) -> None:
    """§10.6 difference 2: the receiver verifies over the path with its query."""
    a, b = ab
    body = txn(a, [letter(a, b)])
    status, answer = await post(b, body, signed(signer(a), b, body), path=DELIVER + "?x=1")
    assert refusal(status, answer) == (401, "bad_request_signature", "Signature")


SECOND_MEMBER = {
    "Signature-Input": 'other=("@method");created=1;keyid="x.example";alg="ed25519"',
    "Signature": "other=:" + base64.b64encode(b"\0" * 64).decode() + ":",
    "Content-Digest": "sha-512=:" + base64.b64encode(hashlib.sha512(b"").digest()).decode() + ":",
}


@pytest.mark.parametrize("header", SECOND_MEMBER)
async def test_a_second_member_in_one_line_is_401_naming_the_header(ab: Any, header: str) -> None:
    a, b = ab
    body = txn(a, [letter(a, b)])
    headers = signed(signer(a), b, body)
    headers[header] = headers[header] + ", " + SECOND_MEMBER[header]
    status, answer = await post(b, body, headers)
    assert refusal(status, answer) == (401, "bad_request_signature", header)


@pytest.mark.parametrize("header", SECOND_MEMBER)
async def test_a_repeated_header_line_is_401_naming_the_header(ab: Any, header: str) -> None:
    """Two field lines of one name are one field, their values joined by a comma (RFC 9110
    §5.3): a second `Signature` line is a second signature, refused as the one-line form
    is (§10.6 difference 3), whichever line comes first."""
    a, b = ab
    body = txn(a, [letter(a, b)])
    headers = signed(signer(a), b, body)
    lines = [*headers.items(), (header, SECOND_MEMBER[header])]
    status, answer = await post(b, body, lines)
    assert refusal(status, answer) == (401, "bad_request_signature", header)


async def test_the_same_valid_line_twice_is_refused_too(ab: Any) -> None:
    a, b = ab
    body = txn(a, [letter(a, b)])
    headers = signed(signer(a), b, body)
    lines = [*headers.items(), ("Signature", headers["Signature"])]
    status, answer = await post(b, body, lines)
    assert refusal(status, answer) == (401, "bad_request_signature", "Signature")


@pytest.mark.parametrize("header", ["Content-Digest", "Signature-Input", "Signature"])
async def test_a_missing_header_is_401_naming_it(ab: Any, header: str) -> None:
    a, b = ab
    body = txn(a, [letter(a, b)])
    headers = signed(signer(a), b, body)
    del headers[header]
    status, answer = await post(b, body, headers)
    assert refusal(status, answer) == (401, "bad_request_signature", header)


# -- §10.7: the transaction -----------------------------------------------------------------
async def test_a_replayed_transaction_is_answered_duplicate(ab: Any) -> None:
    """No replay cache (§15): the same signed bytes again within 300 s repeat what the
    signer sent, answered `duplicate` with the same `txn`; nothing is stored twice."""
    a, b = ab
    body = txn(a, [letter(a, b)])
    headers = signed(signer(a), b, body)
    first = await post(b, body, headers)
    again = await post(b, body, headers)
    assert first[0] == again[0] == 200
    assert first[1]["results"][0]["recipients"] == {BOB.address: "stored"}
    assert again[1]["results"][0]["recipients"] == {BOB.address: "duplicate"}
    assert again[1]["txn"] == json.loads(body)["txn"]


async def test_a_body_over_8_mib_is_413_body(ab: Any) -> None:
    a, b = ab
    pad = "x" * (8 * 1024 * 1024)
    body = txn(a, [letter(a, b)], pad=pad)
    assert len(body) > 8 * 1024 * 1024
    status, answer = await post(b, body, signed(signer(a), b, body))
    assert refusal(status, answer) == (413, "payload_too_large", "body")


async def test_unknown_members_of_a_transaction_are_ignored(ab: Any) -> None:
    a, b = ab
    body = txn(a, [letter(a, b)], future_member={"anything": [1, "x"]}, priority="high")
    status, answer = await post(b, body, signed(signer(a), b, body))
    assert status == 200, answer
    assert answer["results"][0]["recipients"] == {BOB.address: "stored"}


async def test_mesh_peers_null_is_read_as_absent(ab: Any) -> None:
    """§10.7 step 3 (as amended in R14): `null` is no list of peers, not a malformed one."""
    a, b = ab
    body = txn(a, [letter(a, b)], mesh_peers=None)
    status, answer = await post(b, body, signed(signer(a), b, body))
    assert status == 200, answer


BODIES = {
    "duplicate key": (b'{"txn":"a","txn":"b","from_server":"x","messages":[{}]}', "malformed_json"),
    "a float": (b'{"txn":"a","from_server":"x","messages":[{}],"n":1.0}', "malformed_json"),
    "trailing data": (b'{"txn":"a","from_server":"x","messages":[{}]} x', "malformed_json"),
    "not UTF-8": (b'{"txn":"\xff","from_server":"x","messages":[{}]}', "malformed_json"),
    "empty": (b"", "malformed_json"),
}


@pytest.mark.parametrize(("body", "code"), BODIES.values(), ids=BODIES.keys())
async def test_a_body_outside_the_data_model_is_400(ab: Any, body: bytes, code: str) -> None:
    a, b = ab
    status, answer = await post(b, body, signed(signer(a), b, body))
    assert refusal(status, answer)[:2] == (400, code)


WRONG = {
    "from_server another server": ({"from_server": "c.example"}, "from_server"),
    "from_server absent": ({"from_server": None}, "from_server"),
    "txn 65 characters": ({"txn": "x" * 65}, "txn"),
    "txn null": ({"txn": None}, "txn"),
    "messages null": ({"messages": None}, "messages"),
    "mesh_peers 257 names": ({"mesh_peers": ["a.example"] * 257}, "mesh_peers"),
    "mesh_peers an upper-case name": ({"mesh_peers": ["A.example"]}, "mesh_peers"),
}


@pytest.mark.parametrize(("members", "field"), WRONG.values(), ids=WRONG.keys())
async def test_a_member_the_text_refuses_is_400_invalid_value_naming_it(
    ab: Any, members: dict[str, Any], field: str
) -> None:
    a, b = ab
    doc = json.loads(txn(a, [letter(a, b)]))
    doc.update(members)
    doc = {k: v for k, v in doc.items() if v is not None or k not in ("from_server",)}
    body = json.dumps(doc).encode()
    status, answer = await post(b, body, signed(signer(a), b, body))
    assert refusal(status, answer) == (400, "invalid_value", field)


async def test_a_message_that_is_not_an_object_is_refused_alone_with_a_null_id(ab: Any) -> None:
    a, b = ab
    body = txn(a, [[1], letter(a, b)])
    status, answer = await post(b, body, signed(signer(a), b, body))
    assert status == 200, answer
    check("federation-answer", answer)
    first, second = answer["results"]
    assert (first["id"], first["refused"], first.get("field")) == (None, "wrong_type", "message")
    assert second["recipients"] == {BOB.address: "stored"}


# -- the other federation endpoints ---------------------------------------------------------
async def get(b: RunningServer, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(b.url + path) as response:
        return response.status, json.loads(await response.text())


async def test_federation_info_is_what_10_1_says(ab: Any) -> None:
    _, b = ab
    status, info = await get(b, "/federation/info")
    assert status == 200
    check("federation-info", info)
    assert len(info["keys"]) == 1 and len(info["keys"]) + len(info["retired_keys"]) <= 16
    assert base64.urlsafe_b64decode(info["keys"][0]["pub"]) == signer(b).identity.public_key
    assert info["domain"] == name(b)


async def test_well_known_names_the_server_itself(ab: Any) -> None:
    _, b = ab
    status, answer = await get(b, "/.well-known/flux")
    assert status == 200
    check("well-known", answer)
    assert answer["server"] == name(b)


async def test_resolve_refuses_a_query_and_answers_404_name(ab: Any) -> None:
    _, b = ab
    assert refusal(*await get(b, "/federation/resolve/nobody?x=1")) == (
        400, "invalid_value", "x",
    )  # fmt: skip
    assert refusal(*await get(b, "/federation/resolve/nobody")) == (404, "not_found", "name")


# -- §10.9: tamper reports ------------------------------------------------------------------
def report(a: RunningServer, b: RunningServer, **changes: Any) -> bytes:
    doc = {
        "reporter": name(a), "offender": "c.example", "msg_id": "0" * 32, "t": now_ms(),
        "sig": "", "pub": "", "kind": "forged_body", "envelope": {},
    }  # fmt: skip
    doc.update(changes)
    return json.dumps(doc).encode()


REPORTS = {
    "offender is the receiver": (lambda a, b: report(a, b, offender=name(b)), "offender"),
    "offender is the reporter": (lambda a, b: report(a, b, offender=name(a)), "offender"),
    "reporter not a name": (lambda a, b: report(a, b, reporter="A B"), "reporter"),
    "t a day and a minute old": (lambda a, b: report(a, b, t=now_ms() - 86_460_000), "t"),
    "t six minutes ahead": (lambda a, b: report(a, b, t=now_ms() + 360_000), "t"),
    "t a string": (lambda a, b: report(a, b, t="1"), "t"),
    "envelope a list": (lambda a, b: report(a, b, envelope=[]), "envelope"),
    "sig a number": (lambda a, b: report(a, b, sig=5), "sig"),
}


@pytest.mark.parametrize(("make", "field"), REPORTS.values(), ids=REPORTS.keys())
async def test_a_report_the_text_refuses_is_400_invalid_proof(
    ab: Any, make: Any, field: str
) -> None:
    a, b = ab
    status, answer = await post(b, make(a, b), [], path="/integrity/tamper_report")
    assert refusal(status, answer) == (400, "invalid_proof", field)


async def test_a_report_over_the_request_limit_is_413(ab: Any) -> None:
    a, b = ab
    body = report(a, b, pad="x" * (9 * 1024 * 1024))
    status, answer = await post(b, body, [], path="/integrity/tamper_report")
    assert refusal(status, answer)[:2] == (413, "payload_too_large")
