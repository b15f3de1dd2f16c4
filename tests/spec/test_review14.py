"""Review of issue 14 (R14): what PROTOCOL.md §10 says a receiver must refuse, sent to a
real FLUX server, and the answer compared with the text (status, `code`, `field`).

Real parts: two FLUX servers in this process (`local_servers`, memory stores, plain HTTP
between them as listed insecure peers). A is the signing peer (its real key, published at
its real `/federation/info`); B is the receiver under attack. Every request is built on
the wire by hand (headers, bytes), as a hostile peer would.

What the review changed, each pinned here: a signature header on two field lines was
judged by its first line only (now refused, naming the header); `created` with a leading
zero was taken; a key valid only inside the second `created` names was refused (§10.6).
What it wrote down: unused base64 bits, `mesh_peers: null`, the report size limit and
the order of a report's HTTP checks, resolve's `token` parameter, a batch's messages
seeing each other. §16 item 9, which it found open, is settled (a falsy `keys` of another
type refuses the whole answer).
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
from aiohttp import web
from multidict import CIMultiDict

from cli.cli_helpers import free_port
from federation.fed_helpers import local_servers, name, signer
from flux.federation.mesh import mesh_mac
from flux.federation.signing import content_digest, sign_request, signature_base, signature_params
from flux.protocol import Identity, PublishedKey, ServerSigner, append_hop, compose
from flux.protocol.tamper import validate_report
from flux.server.app import PARTS
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


# 310, not 301: `created` is whole seconds (the truncation eats up to 1 s) and the request
# reaches the check a moment later on a loaded machine; 301 in the future failed so
@pytest.mark.parametrize("skew", [-310, 310])
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


async def test_created_with_a_leading_zero_is_401_signature_input(ab: Any) -> None:
    """§10.6: `created` is RFC 8941's canonical integer; `0` + the time, though signed as
    written, is refused (so one moment has one spelling)."""
    a, b = ab
    body = txn(a, [letter(a, b)])
    digest = signed(signer(a), b, body)["Content-Digest"]
    params = signature_params(int(time.time()), name(a)).replace("created=", "created=0")
    base = signature_base("POST", name(b), DELIVER, digest, params)
    sig = base64.b64encode(signer(a).identity.sign_bytes(base)).decode()
    headers = CIMultiDict({"Content-Digest": digest, "Signature-Input": f"flux={params}",
                           "Signature": f"flux=:{sig}:"})  # fmt: skip
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


def flip_unused_bits(value: str) -> str:
    """`label=:<base64>=:` with the unused low bits of its last character set: other text,
    the same bytes (RFC 8941 §4.2.7: a parser SHOULD NOT fail on them)."""
    head, text, tail = value.split(":")
    stem = text.rstrip("=")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    unused = 4 if text.endswith("==") else 2
    last = alphabet[alphabet.index(stem[-1]) | ((1 << unused) - 1)]
    flipped = stem[:-1] + last + text[len(stem) :]
    assert flipped != text and base64.b64decode(flipped) == base64.b64decode(text)
    return f"{head}:{flipped}:{tail}"


@pytest.mark.parametrize("header", ["Content-Digest", "Signature"])
async def test_non_zero_unused_bits_in_a_byte_sequence_are_not_refused(
    ab: Any, header: str
) -> None:
    """§10.6 (as written in R14): padding is required, unused bits are not judged."""
    a, b = ab
    body = txn(a, [letter(a, b)])
    headers = signed(signer(a), b, body)
    if header == "Content-Digest":  # its text is in the signature base: signed as sent
        digest = flip_unused_bits(headers[header])
        params = signature_params(int(time.time()), name(a))
        base = signature_base("POST", name(b), DELIVER, digest, params)
        sig = base64.b64encode(signer(a).identity.sign_bytes(base)).decode()
        headers = CIMultiDict({header: digest, "Signature-Input": f"flux={params}",
                               "Signature": f"flux=:{sig}:"})  # fmt: skip
    else:
        headers[header] = flip_unused_bits(headers[header])
    status, answer = await post(b, body, headers)
    assert status == 200, answer


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


ABSENT = object()  #: a member left out of the body
WRONG = {
    "from_server another server": ({"from_server": "c.example"}, "from_server"),
    "from_server absent": ({"from_server": ABSENT}, "from_server"),
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
    doc = {k: v for k, v in doc.items() if v is not ABSENT}
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
    # `token`, the legacy token every route takes (§10.4), is the one parameter not refused
    assert refusal(*await get(b, "/federation/resolve/nobody?token=x")) == (
        404, "not_found", "name",
    )  # fmt: skip


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


def padded(a: RunningServer, b: RunningServer, size: int) -> bytes:
    """A report of exactly `size` bytes whose first refusal is its `reporter`."""
    body = report(a, b, reporter="A B", pad="")
    return body[:-2] + b"x" * (size - len(body)) + body[-2:]


async def test_a_report_is_read_up_to_256_kib_and_413_beyond(ab: Any) -> None:
    """§10.9: FLUX's limit for reports is 262,144 bytes; the 413 names the field `body`."""
    a, b = ab
    limit = 256 * 1024
    at, over = padded(a, b, limit), padded(a, b, limit + 1)
    assert (len(at), len(over)) == (limit, limit + 1)
    status, answer = await post(b, at, [], path="/integrity/tamper_report")
    assert refusal(status, answer) == (400, "invalid_proof", "reporter")
    status, answer = await post(b, over, [], path="/integrity/tamper_report")
    assert refusal(status, answer) == (413, "payload_too_large", "body")


async def test_the_http_checks_of_a_report_come_before_its_shape(ab: Any) -> None:
    """§10.9: `t` out of its window is reported before a missing `type` (§7.6's order)."""
    a, b = ab
    body = report(a, b, t=now_ms() - 2 * 86_400_000)  # no `type` either
    assert b'"type"' not in body
    status, answer = await post(b, body, [], path="/integrity/tamper_report")
    assert refusal(status, answer) == (400, "invalid_proof", "t")


# -- §10.7: one message of a transaction ----------------------------------------------------
@pytest.fixture
async def abc(tmp_path: Path) -> AsyncIterator[tuple[RunningServer, ...]]:
    async with local_servers(tmp_path, "abc") as s:
        yield s["a"], s["b"], s["c"]


async def test_a_message_sealed_by_another_server_is_chain_invalid_without_a_strike(
    abc: Any,
) -> None:
    """Receiver step 3: the last record must be `from_server`'s seal. C's genuine seal to
    B, handed over by A, is refused (`integrity_chain`), and A is not blamed: its own seal
    is not there to prove anything (§7.4)."""
    a, b, c = abc
    msg = compose(ALICE, BOB.address, "hello", now_ms=now_ms()).primary
    by_c = append_hop(msg, signer(c), next_hop=name(b), now_ms=now_ms())
    body = txn(a, [by_c])
    status, answer = await post(b, body, signed(signer(a), b, body))
    assert status == 200, answer
    (result,) = answer["results"]
    assert (result["refused"], result.get("field"), result["struck"]) == (
        "chain_invalid", "integrity_chain", False,
    )  # fmt: skip


async def test_days_old_mail_without_the_senders_route_entry_is_taken(ab: Any) -> None:
    """No freshness between servers (step 1), and `route` is not judged (§10.7): a letter
    written three days ago whose route lacks A's entry is stored."""
    a, b = ab
    old = compose(ALICE, BOB.address, "from the queue", now_ms=now_ms() - 3 * 86_400_000)
    sealed = append_hop(old.primary, signer(a), next_hop=name(b), now_ms=now_ms())
    sealed["route"] = []
    body = txn(a, [sealed])
    status, answer = await post(b, body, signed(signer(a), b, body))
    assert status == 200, answer
    assert answer["results"][0]["recipients"] == {BOB.address: "stored"}


# -- §10.8: the mesh proof ------------------------------------------------------------------
TOKEN = "t" * 32


@pytest.fixture
async def mesh_abc(tmp_path: Path) -> AsyncIterator[tuple[RunningServer, ...]]:
    """A and B in mesh `m` (broadcast); C, outside it, a FLUX server B also knows."""

    def per_server(label: str, names: dict[str, str]) -> dict[str, Any]:
        if label == "c":
            return {}
        peers = sorted([names["a"], names["b"]])
        doc = {"meshes": {"m": {"token": TOKEN, "mode": "broadcast", "peers": peers}}}
        path = tmp_path / f"{label}.mesh.json"
        path.write_text(json.dumps(doc))
        return {"mesh_config": path}

    async with local_servers(tmp_path, "abc", per_server=per_server) as s:
        yield s["a"], s["b"], s["c"]


@pytest.fixture
async def mesh_ab(mesh_abc: tuple[RunningServer, ...]) -> tuple[RunningServer, RunningServer]:
    return mesh_abc[0], mesh_abc[1]


def relay_headers(
    a: RunningServer, b: RunningServer, body: bytes, *, mesh: str = "m", token: str = TOKEN,
    over: str | None = None, now_s: int = 0,
) -> CIMultiDict[str]:  # fmt: skip
    """A's signed relay to B with its Flux-Mesh proof (the MAC over `over`, else over this
    request's own Signature header)."""
    headers = signed(signer(a), b, body, path="/mesh/relay", now_s=now_s)
    mac = mesh_mac(token, over if over is not None else headers["Signature"])
    headers["Flux-Mesh"] = f"{mesh};mac={mac}"
    return headers


async def test_a_relay_with_its_mesh_proof_is_taken(mesh_ab: Any) -> None:
    a, b = mesh_ab
    body = txn(a, [letter(a, b)], mesh_peers=[name(a), name(b)])
    status, answer = await post(b, body, relay_headers(a, b, body), path="/mesh/relay")
    assert status == 200, answer
    check("federation-answer", answer)


PROOFS = {
    "another token": {"token": "u" * 32},
    "a mesh B is not in": {"mesh": "other"},
    "a MAC captured from another request": {"over": "flux=:" + "A" * 86 + "==:"},
}


@pytest.mark.parametrize("change", PROOFS.values(), ids=PROOFS.keys())
async def test_a_relay_whose_mesh_proof_fails_is_401_flux_mesh(mesh_ab: Any, change: dict) -> None:
    a, b = mesh_ab
    body = txn(a, [letter(a, b)], mesh_peers=[name(a), name(b)])
    headers = relay_headers(a, b, body, **change)
    status, answer = await post(b, body, headers, path="/mesh/relay")
    assert refusal(status, answer) == (401, "bad_request_signature", "Flux-Mesh")


async def test_a_server_outside_the_mesh_that_knows_its_token_is_401_flux_mesh(
    mesh_abc: Any,
) -> None:
    """§10.8: the signing server must be a peer of the mesh the header names; the token
    alone (here C's own correct MAC over its own signature) is not membership."""
    _, b, c = mesh_abc
    body = txn(c, [letter(c, b)], mesh_peers=[name(b)])
    status, answer = await post(b, body, relay_headers(c, b, body), path="/mesh/relay")
    assert refusal(status, answer) == (401, "bad_request_signature", "Flux-Mesh")


async def test_the_mesh_proof_is_judged_after_the_signature_and_before_the_body(
    mesh_ab: Any,
) -> None:
    """§10.6 check 6 comes after checks 1-5 and before the body's shape (check 7)."""
    a, b = mesh_ab
    junk = b'{"txn": 5}'
    headers = signed(signer(a), b, junk, path="/mesh/relay")  # no Flux-Mesh
    status, answer = await post(b, junk, headers, path="/mesh/relay")
    assert refusal(status, answer) == (401, "bad_request_signature", "Flux-Mesh")
    stale = relay_headers(a, b, junk, now_s=int(time.time()) - 600)
    status, answer = await post(b, junk, stale, path="/mesh/relay")
    assert refusal(status, answer) == (401, "bad_request_signature", "Signature-Input")


async def test_the_same_message_twice_in_one_transaction_is_stored_once(ab: Any) -> None:
    """§10.7: accepted messages are stored in batch order, and a message already stored is
    `duplicate`: the second copy in the same batch is that."""
    a, b = ab
    sealed = letter(a, b)
    body = txn(a, [sealed, sealed])
    status, answer = await post(b, body, signed(signer(a), b, body))
    assert status == 200, answer
    outcomes = [r.get("recipients", r) for r in answer["results"]]
    assert outcomes == [{BOB.address: "stored"}, {BOB.address: "duplicate"}]


async def test_one_id_with_two_bodies_in_one_transaction_is_a_conflict(ab: Any) -> None:
    a, b = ab
    first = compose(ALICE, BOB.address, "one", now_ms=now_ms(), message_id="ab" * 16).primary
    other = compose(ALICE, BOB.address, "two", now_ms=now_ms(), message_id="ab" * 16).primary
    msgs = [append_hop(m, signer(a), next_hop=name(b), now_ms=now_ms()) for m in (first, other)]
    body = txn(a, msgs)
    status, answer = await post(b, body, signed(signer(a), b, body))
    assert status == 200, answer
    first_result, second = answer["results"]
    assert first_result["recipients"] == {BOB.address: "stored"}
    assert (second["refused"], second.get("field")) == ("conflict", "id")


# -- §10.1: a reader of /federation/info ----------------------------------------------------
class InfoPeer:
    """A peer (a real aiohttp server on 127.0.0.1) that publishes `info` as its
    /federation/info and signs with `identity`."""

    def __init__(self, info: dict[str, Any], identity: Identity) -> None:
        self.info, self.port = info, free_port()
        self.signer = ServerSigner(f"127.0.0.1:{self.port}", identity)
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> InfoPeer:
        app = web.Application()
        app.router.add_get("/federation/info", self._info)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _info(self, _: web.Request) -> web.Response:
        return web.json_response(self.info)


def key_entry(identity: Identity) -> dict[str, Any]:
    pub = base64.urlsafe_b64encode(identity.public_key).decode()
    return {"pub": pub, "valid_from": 0, "valid_until": None}


async def signed_by_info_peer(tmp_path: Path, members: dict[str, Any]) -> int:
    """The status B answers a transaction signed by a peer whose /federation/info is
    `{"ok": true, **members}` (with `$key` standing for its key's entry)."""
    identity = Identity.generate()
    info = {"ok": True, **{k: [key_entry(identity)] if v == "$key" else v for k, v in members.items()}}  # fmt: skip
    peer = InfoPeer(info, identity)
    async with peer, local_servers(tmp_path, "b", extra_insecure=[peer.signer.name]) as s:
        b = s["b"]
        doc = {"txn": "t1", "from_server": peer.signer.name, "messages": [{}]}
        body = json.dumps(doc).encode()
        status, _ = await post(b, body, signed(peer.signer, b, body))
        return status


async def test_a_peer_publishing_its_key_is_heard(tmp_path: Path) -> None:
    assert await signed_by_info_peer(tmp_path, {"keys": "$key", "unknown": {"x": 1}}) == 200


@pytest.mark.parametrize(
    "keys", [{}, False, 0, ""], ids=["object", "false", "zero", "empty string"]
)
async def test_keys_of_another_type_refuse_the_whole_answer(tmp_path: Path, keys: Any) -> None:
    """§10.1: a reader refuses the whole answer when `keys` or `retired_keys` is another type
    than an array (or null), so the key listed beside it is not taken either."""
    status = await signed_by_info_peer(tmp_path, {"keys": keys, "retired_keys": "$key"})
    assert status == 401


async def test_keys_of_a_truthy_other_type_refuse_the_whole_answer(tmp_path: Path) -> None:
    status = await signed_by_info_peer(tmp_path, {"keys": {"a": 1}, "retired_keys": "$key"})
    assert status == 401


# -- §7.6 / §15: members a report may carry beyond its own ----------------------------------
VECTORS = json.loads(
    (Path(__file__).resolve().parents[2] / "spec" / "vectors" / "flux-v1.json").read_text()
)


def vector_keys(server: str) -> list[PublishedKey]:
    return [
        PublishedKey(base64.urlsafe_b64decode(k["pub"]), k.get("valid_from", 0), k.get("valid_until"))
        for k in VECTORS["published_keys"].get(server, [])
    ]  # fmt: skip


def test_unknown_members_of_a_report_are_ignored() -> None:
    """§7.6 "Fields beyond these are ignored" and §15: the genuine report of the vectors,
    with members a later version might add, proves the same offense."""
    genuine = VECTORS["tamper"]["genuine"]
    report_with_more = {**genuine["report"], "version": "1.1", "extra": {"a": [1]}}
    offense = validate_report(report_with_more, vector_keys)
    assert (offense.offender, str(offense.kind), offense.proof_id) == (
        genuine["expected"]["offender"], genuine["expected"]["kind"],
        genuine["expected"]["proof_id"],
    )  # fmt: skip


# -- §2.4: `local` is never a server's name -------------------------------------------------
def fetches(server: RunningServer) -> int:
    return server.app[PARTS]["reports"].peers.fetcher().fetches


def signed_as(keyid: str, identity: Identity, b: RunningServer, body: bytes) -> CIMultiDict[str]:
    """Headers signed by `identity` under any `keyid` (ServerSigner refuses `local`)."""
    digest = content_digest(body)
    params = signature_params(int(time.time()), keyid)
    sig = identity.sign_bytes(signature_base("POST", name(b), DELIVER, digest, params))
    return CIMultiDict({"Content-Digest": digest, "Signature-Input": f"flux={params}",
                        "Signature": "flux=:" + base64.b64encode(sig).decode() + ":"})  # fmt: skip


async def test_keyid_local_is_401_signature_input_before_any_fetch(ab: Any) -> None:
    """§10.6 check 2: `keyid` is a server name, and `local` is none (§2.4): refused with
    the checks that need no network, not by a key fetch from a host called `local`."""
    _, b = ab
    body = json.dumps({"txn": "t", "from_server": "local", "messages": [{}]}).encode()
    status, answer = await post(b, body, signed_as("local", Identity.generate(), b, body))
    assert refusal(status, answer) == (401, "bad_request_signature", "Signature-Input")
    assert fetches(b) == 0


@pytest.mark.parametrize("member", ["reporter", "offender"])
async def test_a_report_naming_local_is_400_before_any_fetch(ab: Any, member: str) -> None:
    """§10.9: `reporter` and `offender` are server names; a seal to `local` (delivery to the
    sealing server's own users) names no reporter (§16, local-delivery tampering)."""
    a, b = ab
    status, answer = await post(b, report(a, b, **{member: "local"}), [], path="/integrity/tamper_report")  # fmt: skip
    assert refusal(status, answer) == (400, "invalid_proof", member)
    assert fetches(b) == 0


async def test_a_sealed_record_naming_local_makes_no_fetch(ab: Any) -> None:
    """§10.7 step 6 fetches the keys of sealed records' *server names*; a record claiming
    to be sealed by `local` fails §7.3 step 1 and costs the receiver no request."""
    a, b = ab
    sealed = letter(a, b)
    forged = {**sealed["integrity_chain"][0], "server": "local"}
    sealed["integrity_chain"] = [forged, *sealed["integrity_chain"]]
    body = txn(a, [sealed])
    status, answer = await post(b, body, signed(signer(a), b, body))
    assert status == 200, answer
    assert answer["results"][0]["refused"] == "chain_invalid"
    assert fetches(b) == 1  # A's keys, to authenticate the transaction; nothing for `local`
