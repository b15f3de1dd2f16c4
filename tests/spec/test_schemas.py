"""The JSON Schemas of spec/schemas/ (PROTOCOL.md §14): each is a valid draft 2020-12
schema; every vector of spec/vectors/ validates under the schema of its kind (and the
vectors built to break a shape rule do not); what real FLUX servers send each other and
answer validates; and near misses of each shape are refused.

The real traffic comes from three FLUX servers in this process (memory stores, plain HTTP
between peers listed as insecure, as tests/federation/fed_helpers.py runs them): A, where
alice is hosted; B and D, each behind a capturing proxy (tests/spec/capture.py) whose name
is the server's own, so every request A makes to B, and B to D, is recorded with B's or
D's real answer. One scenario runs once for the module; each test checks one kind.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from jsonschema import Draft202012Validator

from cli.cli_helpers import free_port
from federation.fed_helpers import signer
from flux.client import FluxClient
from flux.federation.signing import sign_request
from flux.protocol import Identity, compose
from flux.protocol.chain import ChainVerdict, _check_record_shape, _verify_prototype_sig, append_hop
from flux.protocol.encoding import b64d
from flux.protocol.envelope import check_shape
from flux.protocol.errors import FluxError
from flux.protocol.tamper import _check_report_shape
from flux.server.config import ServerConfig
from flux.server.runner import RunningServer, start_server
from spec.capture import CapturingProxy, Exchange
from spec.schema_check import SCHEMAS, check, errors, refused, schema_files, validator

VECTORS = Path(__file__).resolve().parents[2] / "spec" / "vectors"
SEED = json.loads((VECTORS / "seed-v1.json").read_text(encoding="utf-8"))
FLUX = json.loads((VECTORS / "flux-v1.json").read_text(encoding="utf-8"))

module_loop = pytest.mark.asyncio(loop_scope="module")


# -- the schemas themselves -------------------------------------------------------------
@pytest.mark.parametrize("path", schema_files(), ids=lambda p: p.name)
def test_every_schema_is_a_valid_draft_2020_12_schema(path: Path) -> None:
    doc = json.loads(path.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(doc)
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert doc["$id"] == f"https://flux.invalid/schemas/v1/{path.name}"
    assert doc.get("title") and doc.get("description")


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [*([node["$ref"]] if "$ref" in node else []), *(r for v in node.values() for r in _refs(v))]  # fmt: skip
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_every_reference_names_a_schema_file_and_a_definition_in_it() -> None:
    for path in schema_files():
        for ref in _refs(json.loads(path.read_text(encoding="utf-8"))):
            file, _, pointer = ref.partition("#")
            target = json.loads((SCHEMAS / (file or path.name)).read_text(encoding="utf-8"))
            for part in [p for p in pointer.split("/") if p]:
                target = target[part]  # KeyError: a dangling reference


def test_the_readme_and_protocol_list_every_schema() -> None:
    root = SCHEMAS.parents[1]
    readme = (root / "spec" / "README.md").read_text(encoding="utf-8")
    protocol = (root / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")
    for path in schema_files():
        assert f"`{path.name}`" in readme, path.name
        assert f"`{path.name}`" in protocol, path.name


# -- vectors ----------------------------------------------------------------------------
def test_seed_vectors_validate() -> None:
    for vector in SEED["messages"]:  # the invalid ones fail a signature, not a shape rule
        check("envelope", vector["envelope"])
        agrees_with_protocol(vector["envelope"])
    for vector in SEED["encrypted"]:
        check("envelope", vector["envelope"])
    for vector in SEED["hop_records"]:
        check("hop-record", vector["record"])
        check("hop-record#/$defs/prototype", vector["record"])


def test_sealed_hop_vectors_validate() -> None:
    check("envelope", FLUX["sealed_hops"]["message"])
    for hop in FLUX["sealed_hops"]["hops"]:
        check("hop-record#/$defs/sealed", hop["record"])
        check("transit-envelope", hop["handed_on"])


def test_chain_vectors_validate_where_their_records_are_not_failed() -> None:
    for case in FLUX["chains"]["cases"]:
        envelope = case["envelope"]
        agrees_with_protocol(envelope)
        statuses = [h["status"] for h in case["expected"]["hops"]]
        chain = envelope.get("integrity_chain", [])
        records = chain if isinstance(chain, list) else []  # not a list: one status, no record
        for record, status in zip(records, statuses, strict=False):
            if status != "failed":  # a failed record may fail for its shape: not asserted
                check("hop-record", record)


def _protocol_refuses(envelope: Any) -> str | None:
    """The code `flux.protocol` (the reference implementation) refuses `envelope`'s shape
    with (§4.3 steps 1-5, and the encodings of `pub` and `sig` that steps 7-8 check), or
    None when the shape is accepted."""
    try:
        check_shape(envelope)
        b64d(envelope["pub"], field="pub", length=32)
        b64d(envelope["sig"], field="sig", length=64)
    except FluxError as exc:
        return exc.code
    return None


def agrees_with_protocol(envelope: Any) -> None:
    """The envelope schema accepts exactly what the protocol's shape check accepts (for
    the rules a schema can express, which every vector here keeps to)."""
    code = _protocol_refuses(envelope)
    if code is None:
        check("envelope", envelope)
    else:
        refused("envelope", envelope)


def test_offense_vectors_validate_unless_built_to_break_a_shape_rule() -> None:
    shape_breaking = []
    for case in FLUX["tamper"]["offenses"]:
        agrees_with_protocol(case["envelope"])
        if _protocol_refuses(case["envelope"]):
            shape_breaking.append(case["name"])
    # the §7.5 cases: a rule of the receiver's, never evidence (blame-* vectors)
    assert {"blame-route-past-limit", "blame-unknown-field-signed", "blame-malformed-sig"} <= set(shape_breaking)  # fmt: skip


def _report_protocol_refuses(report: Any) -> bool:
    """Whether FLUX refuses `report` for its shape (§7.6 step 1, the chain's length, and the
    encodings of steps 2-3): what a schema can say."""
    try:
        _check_report_shape(report)
        if report["kind"] not in {"forged_body", "false_hop", "broken_chain"}:
            return True
        b64d(report["pub"], field="pub", length=32)
        b64d(report["sig"], field="sig", length=64)
    except FluxError:
        return True
    return not 1 <= len(report["integrity_chain"]) <= 32


def test_tamper_report_vectors_validate_unless_refused_for_their_shape() -> None:
    check("tamper-report", FLUX["tamper"]["genuine"]["report"])
    for case in FLUX["tamper"]["forged"]:
        if _report_protocol_refuses(case["report"]):
            refused("tamper-report", case["report"])
        else:  # refused for what they (fail to) prove, which no schema can see
            check("tamper-report", case["report"])


#: rules of §4.3 a schema cannot express (spec/README.md): UTF-8 byte limits of non-ASCII
#: text, Unicode case, and the total recipient count across cc and bcc
def _inexpressible(envelope: dict[str, Any], code: str, field: str | None) -> bool:
    if code == "too_large" and field in ("content", "subject"):
        return not envelope[field].isascii()
    if code == "too_large" and field == "cc":
        return len(envelope.get("cc") or ()) <= 100 and len(envelope.get("bcc") or ()) <= 100
    if code == "invalid_value" and field and field.startswith("tags["):
        tag = envelope["tags"][int(field[5:-1])]
        return isinstance(tag, str) and not tag.isascii()
    return False


SHAPE_CODES = {"missing_field", "wrong_type", "invalid_value", "unknown_version", "too_large"}


def test_envelope_rule_vectors_agree_with_the_schema() -> None:
    """Every `envelopes` vector given as a value: valid ones validate; one refused for a
    shape rule (§4.3 steps 1-5, and the encodings of steps 7-8) is refused by the schema,
    unless the rule is one a schema cannot express."""
    cases = [c for c in FLUX.get("envelopes", {}).get("cases", []) if "envelope" in c]
    assert len(cases) > 100, "the rule-by-rule envelope vectors are missing"
    for case in cases:
        envelope, expected = case["envelope"], case["expected"]
        if expected.get("valid"):
            check("envelope", envelope)
            continue
        code, field = expected["error"]["code"], expected["error"]["field"]
        if code in SHAPE_CODES and not _inexpressible(envelope, code, field):
            assert errors("envelope", envelope), f"{case['name']}: the schema accepts it"
        elif code not in SHAPE_CODES:  # authenticity: only the encodings are the schema's
            assert bool(errors("envelope", envelope)) == bool(_protocol_refuses(envelope)), case[
                "name"
            ]


def test_bcc_encrypted_and_published_key_vectors_validate() -> None:
    check("envelope", FLUX["bcc"]["primary"]["envelope"])
    for copy_ in FLUX["bcc"]["copies"]:
        check("envelope", copy_["envelope"])
    for case in FLUX["encrypted"]:
        for env in case["envelopes"]:
            check("envelope", env["envelope"])
    for entries in FLUX["published_keys"].values():
        for entry in entries:
            check("federation-info#/$defs/published_key", entry)


# -- near misses: a shape one step off is refused ---------------------------------------
def _sealed_record() -> dict[str, Any]:
    return copy.deepcopy(FLUX["sealed_hops"]["hops"][0]["record"])


def _envelope() -> dict[str, Any]:
    return copy.deepcopy(FLUX["sealed_hops"]["message"])


def _with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = {**base, **changes}
    return {k: v for k, v in out.items() if v is not ...}


ENVELOPE_NEAR_MISSES = {
    "version 1.1": {"v": "1.1"},
    "unknown field": {"x-extra": 1},
    "id upper case": {"id": "A" * 32},
    "id with a newline": {"id": "a" * 31 + "\n"},
    "address with a newline": {"to": "fx1" + "0" * 39 + "\n"},
    "t as a string": {"t": "1767225600000"},
    "t past 2^53": {"t": 2**53},
    "t a boolean": {"t": True},
    "sig base64 (not url)": {"sig": "+" * 86 + "=="},
    "sig non-canonical": {"sig": "A" * 85 + "B=="},
    "sig without padding": {"sig": "A" * 86},
    "pub 31 bytes": {"pub": "A" * 40 + "AA=="},
    "missing sig": {"sig": ...},
    "cc not a list": {"cc": "fx1" + "0" * 40},
    "101 cc": {"cc": ["fx1" + "0" * 40] * 101},
    "33 tags": {"tags": ["a"] * 33},
    "empty tag": {"tags": [""]},
    "upper-case tag": {"tags": ["Work"]},
    "tag with a control character": {"tags": ["a\u0007b"]},
    "tag with leading space": {"tags": [" a"]},
    "65-character tag": {"tags": ["a" * 65]},
    "expires negative": {"expires": -1},
    "encrypted false": {"encrypted": False, "content_enc": "", "enc_recipients": {}},
    "encrypted without content_enc": {"encrypted": True, "enc_recipients": {}},
    "empty enc_recipients": {
        "encrypted": True,
        "content": "[encrypted]",
        "content_enc": "AAAA",
        "enc_recipients": {},
    },
    "encrypted but content in clear": {
        "encrypted": True,
        "content_enc": "AAAA",
        "enc_recipients": {"fx1" + "0" * 40: "AAAA"},
    },
    "route entry with an extra field": {"route": [{"server": "a.example", "t": 1, "x": 1}]},
    "chain record not an object": {"integrity_chain": ["x"]},
    "33 route entries": {"route": [{"server": "a.example", "t": 1}] * 33},
    "re not an id": {"re": "x"},
    "subject too long": {"subject": "s" * 4097},
}


@pytest.mark.parametrize("change", ENVELOPE_NEAR_MISSES.values(), ids=ENVELOPE_NEAR_MISSES.keys())
def test_envelope_near_misses_are_refused(change: dict[str, Any]) -> None:
    check("envelope", _envelope())
    near_miss = _with(_envelope(), **change)
    refused("envelope", near_miss)
    assert _protocol_refuses(near_miss), "the near miss breaks no rule of §4.3 steps 1-5"


RECORD_NEAR_MISSES = {
    "server local": {"server": "local"},
    "server upper case": {"server": "A.example"},
    "cv unknown": {"cv": "ok"},
    "prev not hex": {"prev": "x"},
    "hash upper-case hex": {"hash": "A" * 64},
    "i a string": {"i": "1"},
    "a twelfth field": {"extra": 1},
    "seal missing (then it is not a prototype record either)": {"seal": ...},
    "seal short": {"seal": "AAAA"},
}


@pytest.mark.parametrize("change", RECORD_NEAR_MISSES.values(), ids=RECORD_NEAR_MISSES.keys())
def test_hop_record_near_misses_are_refused(change: dict[str, Any]) -> None:
    check("hop-record", _sealed_record())
    near_miss = _with(_sealed_record(), **change)
    refused("hop-record", near_miss)
    with pytest.raises(FluxError):  # and §7.3 steps 1-2 (and the seal's encoding) refuse it too
        _check_record_shape(near_miss)
        _verify_prototype_sig(near_miss)
        b64d(near_miss["seal"], field="seal", length=64)


def test_report_near_misses_are_refused() -> None:
    report = FLUX["tamper"]["genuine"]["report"]
    for change in (
        {"type": "tamper"}, {"kind": "forgery"}, {"t": "1"}, {"envelope": []},
        {"offender": "local"}, {"reporter": "B.example"}, {"msg_hash_baseline": "0"},
        {"integrity_chain": []}, {"sig": ...},
    ):  # fmt: skip
        refused("tamper-report", _with(report, **change))


def test_answer_near_misses_are_refused() -> None:
    txn = uuid.uuid4().hex
    good = {"ok": True, "txn": txn, "results": [{"id": "a" * 32, "recipients": {"fx1" + "0" * 40: "stored"}}]}  # fmt: skip
    check("federation-answer", good)
    for bad in (
        {"ok": True},  # retried until the window closes (§10.7)
        {"ok": True, "txn": txn},
        {"ok": True, "txn": txn, "results": []},
        {"ok": True, "txn": txn, "results": [{"id": "a" * 32, "status": "stored"}]},
        {"ok": True, "txn": txn, "results": [{"id": "a" * 32, "recipients": ["fx1" + "0" * 40]}]},
        {
            "ok": True,
            "txn": txn,
            "results": [{"id": "a" * 32, "recipients": {"fx1" + "0" * 40: "delivered"}}],
        },
        {"ok": True, "txn": txn, "results": [{"id": "a" * 32, "refused": "spam"}]},
        {
            "ok": True,
            "txn": txn,
            "results": [{"id": "a" * 32, "refused": "spam", "error": "", "struck": "no"}],
        },
        {"ok": True, "txn": txn, "results": ["stored"]},
        {"ok": "true", "txn": txn, "results": good["results"]},
    ):
        refused("federation-answer", bad)
    refused("error", {"ok": False, "error": "x"})
    refused("error", {"ok": False, "error": "x", "code": "Bad Thing"})
    refused("federation-info", {"ok": True, "domain": "a.example", "version": "1", "protocol": "1.0", "keys": [], "retired_keys": []})  # fmt: skip
    refused("federation-info", {"ok": True, "domain": "a.example", "version": "1", "protocol": "1.0", "federation": True})  # fmt: skip
    refused("well-known", {"ok": True, "server": "https://a.example"})
    refused("well-known", {"ok": True, "server": "a.example/path"})
    refused("resolve-answer", {"ok": True, "address": "fx1" + "0" * 40, "pub": "x", "domain": "a.example"})  # fmt: skip
    refused("tamper-report-answer", {"ok": True, "offender": "a.example", "kind": "forged_body", "proof_id": "x", "counted": True})  # fmt: skip


# -- what real servers send and answer ---------------------------------------------------
ALICE = Identity(b"\x01" * 32)
BOB = Identity(b"\x02" * 32)
DAVE = Identity(b"\x04" * 32)
MESH_TOKEN = "spec-schemas-mesh-token"


@dataclass
class Traffic:
    """What the scenario recorded."""

    to_b: CapturingProxy
    to_d: CapturingProxy
    a: RunningServer
    gets: dict[str, tuple[int, Any]] = field(default_factory=dict)
    direct: dict[str, tuple[int, Any]] = field(default_factory=dict)
    bounce: dict[str, Any] | None = None


def _config(port: int, domain: str, data: Path, peers: set[str], **extra: Any) -> ServerConfig:
    return ServerConfig.from_env(
        {}, host="127.0.0.1", port=port, domain=domain, data_dir=data, backend="memory",
        insecure_peers=frozenset(peers), **extra,
    )  # fmt: skip


def _mesh(path: Path, peers: list[str]) -> Path:
    doc = {"meshes": {"m": {"token": MESH_TOKEN, "mode": "broadcast", "peers": peers}}}
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as response:
        return response.status, await response.json()


async def _post(
    http: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with http.post(url, data=data, headers=headers or {}) as response:
        return response.status, await response.json()


def _now() -> int:
    return int(time.time() * 1000)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def traffic(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Traffic]:
    tmp = tmp_path_factory.mktemp("spec-schemas")
    port_a, port_b, port_d = free_port(), free_port(), free_port()
    name_a = f"127.0.0.1:{port_a}"
    async with CapturingProxy(target_port=port_b) as to_b, CapturingProxy(target_port=port_d) as to_d:  # fmt: skip
        everyone = {name_a, to_b.name, to_d.name}
        (tmp / "a").mkdir()
        (tmp / "b").mkdir()
        a = await start_server(_config(
            port_a, name_a, tmp / "a", everyone,
            mesh_config=_mesh(tmp / "a" / "mesh.json", [name_a, to_b.name]),
        ))  # fmt: skip
        b = await start_server(_config(
            port_b, to_b.name, tmp / "b", everyone, open_mode=True,
            mesh_config=_mesh(tmp / "b" / "mesh.json", [name_a, to_b.name, to_d.name]),
        ))  # fmt: skip
        d = await start_server(_config(port_d, to_d.name, tmp / "d", everyone, open_mode=True))
        try:
            yield await _scenario(Traffic(to_b, to_d, a), a, b, name_a)
        finally:
            for server in (a, b, d):
                await server.stop()


async def _scenario(traffic: Traffic, a: RunningServer, b: RunningServer, name_a: str) -> Traffic:
    to_b = traffic.to_b
    async with aiohttp.ClientSession() as http:
        alice = FluxClient(ALICE, a.url, session=http, plain_http_domains=())
        await alice.register()
        bob_at_b = FluxClient(BOB, to_b.url, session=http, plain_http_domains=())
        await bob_at_b.register()
        # 1. alice -> bob@B: A resolves B (/.well-known/flux), tells its dialect
        #    (/federation/info) and delivers a signed transaction
        letter = compose(ALICE, BOB.address, "hello from A", subject="hi", now_ms=_now()).primary
        status, answer = await _post(http, a.url + "/send", {"message": letter, "domains": {BOB.address: to_b.name}})  # fmt: skip
        assert status == 200 and answer["recipients"] == {BOB.address: "queued"}, answer
        await to_b.wait_for("POST", "/federation/deliver")
        # 2. alice -> dave, a bare address A does not host: relayed through the mesh to B
        relayed = compose(ALICE, DAVE.address, "through the mesh", now_ms=_now()).primary
        status, answer = await _post(http, a.url + "/send", relayed)
        assert status == 200 and answer["recipients"] == {DAVE.address: "queued"}, answer
        await to_b.wait_for("POST", "/mesh/relay")
        # 3. a transaction signed with A's key, as A's worker would, carrying what B refuses:
        #    a forged body under A's seal (a strike, and a report to B's mesh peer D), spam,
        #    and a retry of a stored message (duplicate)
        forged = compose(ALICE, BOB.address, "the real words", now_ms=_now()).primary
        forged = {**forged, "content": "words A put there"}
        spam = compose(ALICE, BOB.address, "WINNER! claim your prize, click here: free money", now_ms=_now()).primary  # fmt: skip
        stored = await b.store.get(BOB.address, letter["id"], ALICE.address)
        assert stored is not None
        original = {k: v for k, v in stored.envelope.items()}
        original["integrity_chain"] = original["integrity_chain"][:-1]
        original["route"] = original["route"][:-1]
        sealed = [
            append_hop(m, signer(a), next_hop=to_b.name, now_ms=_now(), cv=ChainVerdict.NONE)
            for m in (forged, spam)
        ]
        sealed.append(original)  # as A sealed it the first time: a retry
        body = json.dumps({"txn": uuid.uuid4().hex, "from_server": name_a, "messages": sealed}).encode()  # fmt: skip
        headers = sign_request(signer(a), "POST", to_b.name, "/federation/deliver", body, now_s=_now() // 1000)  # fmt: skip
        headers["Content-Type"] = "application/json"
        traffic.direct["mixed"] = await _post(http, to_b.url + "/federation/deliver", body, headers)  # fmt: skip
        await traffic.to_d.wait_for("POST", "/integrity/tamper_report")
        # 4. refusals of the whole transaction
        bad_sig = {**headers, "Signature": "flux=:" + "A" * 86 + "==:"}
        traffic.direct["bad_signature"] = await _post(http, to_b.url + "/federation/deliver", body, bad_sig)  # fmt: skip
        # 5. a bounce: a domain that cannot exist (RFC 6761) bounces at once
        lost = compose(ALICE, BOB.address, "to nowhere", subject="lost", now_ms=_now()).primary
        status, answer = await _post(http, a.url + "/send", {"message": lost, "domains": {BOB.address: "nowhere.invalid"}})  # fmt: skip
        assert status == 200, answer
        traffic.bounce = await _bounce(alice, lost["id"])
        # 6. what servers publish
        for label, url in {
            "info_a": a.url + "/federation/info",
            "info_b": to_b.url + "/federation/info",
            "well_known_b": to_b.url + "/.well-known/flux",
            "resolve_address": f"{to_b.url}/federation/resolve/{BOB.address}",
            "resolve_missing": f"{to_b.url}/federation/resolve/nobody",
            "mesh_info_a": a.url + "/mesh/info",
            "mesh_info_b": to_b.url + "/mesh/info",
        }.items():
            traffic.gets[label] = await _get(http, url)
        status, answer = await _post(http, to_b.url + "/account/register", {"username": "carol", "password": "a long enough password"})  # fmt: skip
        assert status == 200, answer
        traffic.gets["resolve_name"] = await _get(http, f"{to_b.url}/federation/resolve/Carol")
    return traffic


async def _bounce(alice: FluxClient, original_id: str) -> dict[str, Any]:
    """The bounce A stored in alice's mailbox for `original_id` (it is stored at once: the
    domain cannot exist)."""
    for _ in range(300):
        for msg in (await alice.inbox()).messages:
            if msg.get("re") == original_id:
                return dict(msg)
        await asyncio.sleep(0.05)  # polling a condition, bounded by the loop
    raise AssertionError("no bounce arrived")


def _one(exchanges: list[Exchange]) -> Exchange:
    assert exchanges, "nothing was captured"
    return exchanges[0]


@module_loop
async def test_a_real_delivery_request_and_answer_validate(traffic: Traffic) -> None:
    exchange = _one(traffic.to_b.where("POST", "/federation/deliver"))
    check("federation-transaction", exchange.body)
    assert exchange.status == 200, exchange.answer
    check("federation-answer", exchange.answer)
    assert exchange.answer["txn"] == exchange.body["txn"]
    assert exchange.answer["results"] == [
        {"id": exchange.body["messages"][0]["id"], "recipients": {BOB.address: "stored"}}
    ]
    for message in exchange.body["messages"]:
        check("transit-envelope", message)
        for record in message["integrity_chain"]:
            check("hop-record#/$defs/sealed", record)
        assert message["integrity_chain"][-1]["next"] == traffic.to_b.name


@module_loop
async def test_a_real_request_carries_the_signature_profile(traffic: Traffic) -> None:
    exchange = _one(traffic.to_b.where("POST", "/federation/deliver"))
    headers = {k.lower(): v for k, v in exchange.headers.items()}
    assert headers["host"] == traffic.to_b.name
    assert headers["content-digest"].startswith("sha-256=:")
    created = int(headers["signature-input"].split(";created=")[1].split(";")[0])
    assert abs(created - time.time()) < 300  # seconds, not milliseconds (§10.6)
    assert headers["signature-input"] == (
        'flux=("@method" "@authority" "@path" "content-digest");'
        f'created={created};keyid="{exchange.body["from_server"]}";alg="ed25519"'
    )
    assert headers["signature"].startswith("flux=:") and headers["signature"].endswith(":")


@module_loop
async def test_a_real_mesh_relay_validates(traffic: Traffic) -> None:
    exchange = _one(traffic.to_b.where("POST", "/mesh/relay"))
    check("mesh-relay", exchange.body)
    check("federation-transaction", exchange.body)
    headers = {k.lower(): v for k, v in exchange.headers.items()}
    assert headers["flux-mesh"].startswith("m;mac=")
    assert exchange.status == 200, exchange.answer
    check("federation-answer", exchange.answer)
    assert exchange.answer["results"][0]["recipients"] == {DAVE.address: "stored"}


@module_loop
async def test_real_refusals_in_an_answer_validate(traffic: Traffic) -> None:
    status, answer = traffic.direct["mixed"]
    assert status == 200, answer
    check("federation-answer", answer)
    forged, spam, retry = answer["results"]
    assert (forged["refused"], forged["struck"]) == ("bad_signature", True)
    assert (spam["refused"], spam["struck"]) == ("spam", False)
    assert list(retry["recipients"].values()) == ["duplicate"]


@module_loop
async def test_a_real_transaction_refusal_is_an_error_answer(traffic: Traffic) -> None:
    status, answer = traffic.direct["bad_signature"]
    assert (status, answer["code"], answer["field"]) == (401, "bad_request_signature", "Signature")
    check("error", answer)
    refused("federation-answer", answer)


@module_loop
async def test_a_real_tamper_report_and_its_answer_validate(traffic: Traffic) -> None:
    exchange = _one(traffic.to_d.where("POST", "/integrity/tamper_report"))
    check("tamper-report", exchange.body)
    assert exchange.body["reporter"] == traffic.to_b.name
    assert exchange.body["offender"] == f"127.0.0.1:{traffic.a.port}"
    assert exchange.status == 200, exchange.answer
    check("tamper-report-answer", exchange.answer)
    assert (exchange.answer["kind"], exchange.answer["counted"]) == ("forged_body", True)


@module_loop
async def test_what_servers_publish_validates(traffic: Traffic) -> None:
    for label in ("info_a", "info_b"):
        status, answer = traffic.gets[label]
        assert status == 200, answer
        check("federation-info", answer)
    status, answer = traffic.gets["well_known_b"]
    assert status == 200 and answer["server"] == traffic.to_b.name, answer
    check("well-known", answer)
    for label in ("mesh_info_a", "mesh_info_b"):
        status, answer = traffic.gets[label]
        assert status == 200, answer
        check("mesh-info", answer)
        assert "token" not in json.dumps(answer)


@module_loop
async def test_real_resolve_answers_validate(traffic: Traffic) -> None:
    status, answer = traffic.gets["resolve_address"]
    assert status == 200 and answer["address"] == BOB.address, answer
    check("resolve-answer", answer)
    assert "name" not in answer
    status, answer = traffic.gets["resolve_name"]
    assert status == 200 and answer["name"] == "carol", answer
    check("resolve-answer", answer)
    status, answer = traffic.gets["resolve_missing"]
    assert (status, answer["code"], answer["field"]) == (404, "not_found", "name")
    check("error", answer)


@module_loop
async def test_a_real_bounce_is_an_envelope(traffic: Traffic) -> None:
    bounce = traffic.bounce
    assert bounce is not None
    retrieval = {k: v for k, v in bounce.items() if k.startswith("_")}
    assert retrieval, "a message read back carries its retrieval fields"
    check("envelope", bounce)
    assert bounce["tags"] == ["bounce"] and bounce["subject"] == "Undeliverable: lost"
    _, info = traffic.gets["info_a"]
    published = {k["pub"] for k in info["keys"]}
    assert bounce["pub"] in published  # signed with the key A publishes (§10.3)
    assert not errors("envelope", {k: v for k, v in bounce.items() if not k.startswith("_")})


def test_the_validator_reads_dollar_as_the_end_of_the_string() -> None:
    # ECMA-262 `$` is the end; Python's re would also match before a final newline
    assert validator("common#/$defs/address") is not None
    refused("common#/$defs/address", "fx1" + "0" * 40 + "\n")
    refused("common#/$defs/b64url", "AAAA\n")
    check("common#/$defs/b64url", "AAAA")
