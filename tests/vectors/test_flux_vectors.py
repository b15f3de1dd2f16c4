"""FLUX's own vectors (spec/vectors/flux-v1.json) against the public `flux.protocol` API.

Two kinds of check:

1. The generator (scripts/make_vectors.py), re-run in this process, reproduces the published
   file byte for byte, so the file and the code cannot drift apart.
2. Every vector is checked on its own, from the JSON alone: identities, keys and the
   deterministic randomness are rebuilt from what the file says (the SHA-256 counter stream
   is re-implemented here from its written definition), and each expectation is recomputed
   through the public API. A test at the end makes sure no section goes unread.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from flux.protocol import (
    BadSignature,
    ChainVerdict,
    FluxError,
    HopStatus,
    Identity,
    NotARecipient,
    PublishedKey,
    ServerSigner,
    b64d,
    b64e,
    body_hash,
    canonical_bytes,
    canonical_json,
    compose,
    decrypt_content,
    find_offense,
    integrity_hash,
    make_hop,
    record_hash,
    run_key_flow,
    signing_payload,
    validate_report,
    validate_report_flow,
    verify_chain,
    verify_envelope,
    verify_signature,
)
from flux.protocol.e2e import unwrap_cek

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "spec" / "vectors" / "flux-v1.json"
SEED_COPY = ROOT / "spec" / "vectors" / "seed-v1.json"
SEED_ORIGINAL = ROOT / "tests" / "data" / "seed-v1.json"
GENERATOR = ROOT / "scripts" / "make_vectors.py"

DATA: dict[str, Any] = json.loads(VECTORS.read_text(encoding="utf-8"))
SEED: dict[str, Any] = json.loads(SEED_COPY.read_text(encoding="utf-8"))


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("flux_make_vectors", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- 1. the published file is what the generator makes ------------------------------------


def test_generator_reproduces_the_published_file() -> None:
    generator = load_generator()
    assert generator.render(generator.build()) == VECTORS.read_text(encoding="utf-8")


def test_seed_vectors_copy_is_the_prototype_file() -> None:
    assert SEED_COPY.read_bytes() == SEED_ORIGINAL.read_bytes()


def test_every_section_is_exercised() -> None:
    assert DATA["protocol"] == "1.0" and DATA["set"] == "flux"
    assert set(DATA) == {
        "set", "protocol", "generator", "spec", "encoding", "now_ms", "randbytes_definition",
        "identities", "servers", "published_keys", "sealed_hops", "chains", "tamper", "bcc",
        "encrypted", "envelopes", "signed_requests", "canonical", "key_files", "decryption",
        "compose", "bounce", "spam", "legacy_tokens", "appending",
    }  # fmt: skip
    assert set(DATA["tamper"]) == {"description", "offenses", "genuine", "forged"}
    assert len(DATA["sealed_hops"]["hops"]) == 3
    statuses = {h["status"] for c in DATA["chains"]["cases"] for h in c["expected"]["hops"]}
    assert statuses == {"sealed", "unsealed", "failed"}
    verdicts = {c["expected"]["verdict"] for c in DATA["chains"]["cases"]}
    assert verdicts == {"none", "pass", "fail"}
    kinds = {o["expected"]["kind"] for o in DATA["tamper"]["offenses"] if o["expected"]}
    assert kinds == {"forged_body", "false_hop", "broken_chain"}
    codes = {f["expected_error"]["code"] for f in DATA["tamper"]["forged"]}
    assert codes == {"invalid_proof", "unknown_server_key"}
    assert DATA["bcc"]["copies"] and len(DATA["encrypted"]) == 2


# -- what the file defines: identities, keys, randomness ----------------------------------

IDENTITIES = {v["label"]: v for v in DATA["identities"]}
BY_ADDRESS = {v["address"]: v for v in DATA["identities"]}


def ident(label: str) -> Identity:
    return Identity.from_private_b64(IDENTITIES[label]["private_key"])


def signer(server: str) -> ServerSigner:
    return ServerSigner(server, ident(DATA["servers"][server]))


PUBLISHED = {
    server: [PublishedKey(b64d(k["pub"]), k["valid_from"], k["valid_until"]) for k in entries]
    for server, entries in DATA["published_keys"].items()
}


def keys(server: str) -> list[PublishedKey]:
    return list(PUBLISHED.get(server, ()))


def det_randbytes(label: str) -> Callable[[int], bytes]:
    """The file's `randbytes_definition`, implemented again here (not imported)."""
    stream = bytearray()
    counter = 0

    def randbytes(n: int) -> bytes:
        nonlocal counter
        while len(stream) < n:
            stream.extend(hashlib.sha256(label.encode() + counter.to_bytes(8, "big")).digest())
            counter += 1
        out = bytes(stream[:n])
        del stream[:n]
        return out

    return randbytes


def uuid4_hex(raw: bytes) -> str:
    """A message id as the prototype makes it: the 16 bytes with uuid4's version/variant."""
    b = bytearray(raw)
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    return b.hex()


@pytest.mark.parametrize("vector", DATA["identities"], ids=lambda v: v["label"])
def test_identities(vector: dict[str, Any]) -> None:
    identity = Identity.from_private_b64(vector["private_key"])
    assert (identity.pub_b64(), identity.address) == (vector["pub"], vector["address"])
    if vector["origin"] == "seed-v1.json":
        (seed,) = [v for v in SEED["identities"] if v["label"] == vector["label"]]
        assert seed["private_key"] == vector["private_key"]
    else:
        expected = hashlib.sha256(f"flux-vectors:{vector['label']}".encode()).digest()
        assert identity.seed == expected


def test_servers_publish_their_own_keys() -> None:
    for server, label in DATA["servers"].items():
        assert any(k.pub == ident(label).public_key and k.valid_until is None for k in keys(server))
    assert not any(k.pub == ident("impostor").public_key for ks in PUBLISHED.values() for k in ks)


# -- (a) sealed hops ----------------------------------------------------------------------

HOPS = DATA["sealed_hops"]


def test_sealed_hops_message() -> None:
    msg = HOPS["message"]
    verify_envelope(msg, now_ms=DATA["now_ms"])
    assert msg["id"] == uuid4_hex(det_randbytes(HOPS["randbytes"])(16))
    assert signing_payload(msg).decode() == HOPS["signing_payload"]
    assert integrity_hash(msg) == HOPS["hash"]
    assert hashlib.sha256(HOPS["hash_payload"].encode()).hexdigest() == HOPS["hash"]
    assert body_hash(msg) == HOPS["bh"]
    assert hashlib.sha256(HOPS["bh_payload"].encode()).hexdigest() == HOPS["bh"]


@pytest.mark.parametrize("index", range(len(HOPS["hops"])))
def test_sealed_hop(index: int) -> None:
    hop = HOPS["hops"][index]
    received = HOPS["hops"][index - 1]["handed_on"] if index else HOPS["message"]
    record = hop["record"]
    # The record is exactly what make_hop produces from what the server received.
    made = make_hop(
        received, signer(hop["server"]), next_hop=hop["next"], now_ms=hop["now_ms"],
        cv=ChainVerdict.PASS,
    )  # fmt: skip
    assert made == record
    assert record["i"] == index + 1 and record["cv"] == ("none" if index == 0 else "pass")
    assert record["prev"] == (HOPS["hops"][index - 1]["record_hash"] if index else "")
    assert (record["hash"], record["bh"]) == (HOPS["hash"], HOPS["bh"])
    # The exact bytes: prototype signature, seal, record hash.
    pub = b64d(record["pub"])
    assert hop["sig_payload"] == f"{record['server']}:{record['t']}:{record['hash']}"
    verify_signature(pub, hop["sig_payload"].encode(), b64d(record["sig"]))
    unsealed = {k: v for k, v in record.items() if k != "seal"}
    assert hop["seal_payload"] == "flux-seal:1:" + canonical_json(unsealed)
    verify_signature(pub, hop["seal_payload"].encode(), b64d(record["seal"]))
    assert hop["record_hash"] == record_hash(record)
    assert hop["record_hash"] == hashlib.sha256(canonical_bytes(record)).hexdigest()
    # What is handed on: the received message with one route entry and this record more.
    handed_on = hop["handed_on"]
    assert handed_on["integrity_chain"] == [*received["integrity_chain"], record]
    assert handed_on["route"] == [*received["route"], {"server": hop["server"], "t": hop["now_ms"]}]
    rest = {k: v for k, v in handed_on.items() if k not in ("route", "integrity_chain")}
    assert rest == {k: v for k, v in received.items() if k not in ("route", "integrity_chain")}
    check = verify_chain(handed_on, keys)
    assert check.sealed and check.verdict is ChainVerdict.PASS


# -- (b) chain verification ---------------------------------------------------------------


@pytest.mark.parametrize("case", DATA["chains"]["cases"], ids=lambda c: c["name"])
def test_chain_case(case: dict[str, Any]) -> None:
    check = verify_chain(case["envelope"], keys)
    expected = case["expected"]
    assert check.verdict is ChainVerdict(expected["verdict"])
    got = [
        {"index": h.index, "server": h.server, "status": str(h.status), "reason": h.reason}
        for h in check.hops
    ]
    assert got == expected["hops"]
    assert all(h.status in HopStatus for h in check.hops)
    if expected["verdict"] == "fail":
        with pytest.raises(FluxError) as info:
            check.raise_for_failure()
        first = next(h for h in expected["hops"] if h["status"] == "failed")
        assert (info.value.code, info.value.field) == (
            "chain_invalid", f"integrity_chain[{first['index']}]")  # fmt: skip
    else:
        assert check.raise_for_failure() is None


def test_chain_failures_need_published_keys() -> None:
    # Offline (keys=None) a seal counts under the key in its record: the impostor's and the
    # retired key's seals then verify, which is why a server always passes its KeyLookup.
    cases = {c["name"]: c for c in DATA["chains"]["cases"]}
    for name in ("unpublished-key", "retired-key-after-retirement"):
        offline = verify_chain(cases[name]["envelope"], None)
        assert offline.hops[0 if name.startswith("retired") else 1].status is HopStatus.SEALED


# -- (c) blame and tamper reports ---------------------------------------------------------

TAMPER = DATA["tamper"]


@pytest.mark.parametrize("case", TAMPER["offenses"], ids=lambda c: c["name"])
def test_offense(case: dict[str, Any]) -> None:
    offense = find_offense(case["envelope"], keys, receiver=case["receiver"])
    expected = case["expected"]
    if expected is None:
        assert offense is None
        return
    assert offense is not None
    got = {
        "kind": str(offense.kind),
        "offender": offense.offender,
        "msg_id": offense.msg_id,
        "proof_id": offense.proof_id,
    }
    assert got == expected
    last = case["envelope"]["integrity_chain"][-1]
    assert expected["proof_id"] == hashlib.sha256(last["seal"].encode("ascii")).hexdigest()
    assert (last["server"], last["next"]) == (expected["offender"], case["receiver"])


BLAME_NEGATIVE = {
    "blame-route-past-limit", "blame-chain-past-limit", "blame-route-added",
    "blame-route-removed", "blame-route-garbage", "blame-retrieval-fields",
    "blame-earlier-record-altered", "blame-unknown-field-signed", "blame-subject-past-limit",
}  # fmt: skip


def test_blame_vectors_cover_what_is_never_evidence() -> None:
    # PROTOCOL.md §7.5: unsigned fields, records beyond the seal's prev links and
    # whole-message limits never prove anything; a failed sender signature does.
    cases = {c["name"]: c for c in TAMPER["offenses"]}
    assert cases.keys() >= BLAME_NEGATIVE
    assert all(cases[name]["expected"] is None for name in BLAME_NEGATIVE)
    for name in ("blame-key-swapped", "blame-malformed-sig"):
        assert cases[name]["expected"]["kind"] == "forged_body"
    asked: list[str] = []
    over = cases["blame-chain-past-limit"]
    assert (
        find_offense(over["envelope"], lambda s: asked.append(s) or keys(s), receiver="b.example")
        is None
    )
    assert asked == []  # refused on its length, before any key is looked up


def test_genuine_report() -> None:
    genuine = TAMPER["genuine"]
    report = genuine["report"]
    assert report["type"] == "tamper_report"
    verify_signature(b64d(report["pub"]), genuine["sig_payload"].encode(), b64d(report["sig"]))
    assert genuine["sig_payload"] == (
        f"tamper:{report['msg_id']}:{report['offender']}:{report['reporter']}:{report['t']}"
    )
    assert report["integrity_chain"] == report["envelope"]["integrity_chain"]
    assert report["msg_hash_baseline"] == integrity_hash(report["envelope"])
    assert report["kind"] == genuine["expected"]["kind"]
    with pytest.raises(BadSignature):  # the proof: the body x.example sealed is forged
        verify_envelope(report["envelope"])
    for offense in (
        validate_report(report, keys),
        run_key_flow(validate_report_flow(report), keys),
    ):
        got = {
            "kind": str(offense.kind),
            "offender": offense.offender,
            "msg_id": offense.msg_id,
            "proof_id": offense.proof_id,
        }
        assert got == genuine["expected"]
    offenses = {c["name"]: c["expected"] for c in TAMPER["offenses"]}
    assert genuine["expected"] == offenses["forged-body"]


@pytest.mark.parametrize("case", TAMPER["forged"], ids=lambda c: c["name"])
def test_forged_report(case: dict[str, Any]) -> None:
    expected = case["expected_error"]
    for validate in (
        lambda r: validate_report(r, keys),
        lambda r: run_key_flow(validate_report_flow(r), keys),
    ):
        with pytest.raises(FluxError) as info:
            validate(case["report"])
        assert (info.value.code, info.value.field) == (expected["code"], expected["field"])


# -- (d) BCC ------------------------------------------------------------------------------

BCC = DATA["bcc"]


def bcc_inputs() -> dict[str, Any]:
    given = BCC["input"]
    return {
        "cc": given["cc"],
        "bcc": given["bcc"],
        "subject": given["subject"],
        "tags": given["tags"],
        "now_ms": given["now_ms"],
        "randbytes": det_randbytes(BCC["randbytes"]),
    }


def test_bcc_compose_reproduces_every_copy() -> None:
    given = BCC["input"]
    sender = ident(BY_ADDRESS[given["from"]]["label"])
    out = compose(sender, given["to"], given["content"], **bcc_inputs())
    assert out.primary == BCC["primary"]["envelope"]
    assert [(a, env) for a, env in out.bcc_copies] == [
        (c["recipient"], c["envelope"]) for c in BCC["copies"]
    ]


def test_bcc_copy_structure() -> None:
    given, primary = BCC["input"], BCC["primary"]["envelope"]
    assert "bcc" not in primary
    assert primary["cc"] == given["cc"] and primary["tags"] == ["work"]
    assert BCC["primary"]["deliver_to"] == [given["to"], *given["cc"]]
    assert [c["recipient"] for c in BCC["copies"]] == given["bcc"]
    for entry in [BCC["primary"], *BCC["copies"]]:
        env = entry["envelope"]
        verify_envelope(env, now_ms=DATA["now_ms"])
        assert env["id"] == primary["id"]
        assert entry["signing_payload"] == signing_payload(env).decode()
        # The prototype's hop hash leaves out bcc and sig: equal for every copy. bh differs.
        assert entry["hash"] == integrity_hash(env) == BCC["primary"]["hash"]
        assert entry["bh"] == body_hash(env)
    for copy in BCC["copies"]:
        env = copy["envelope"]
        assert env["bcc"] == [copy["recipient"]] == copy["deliver_to"]
        assert copy["bh"] != BCC["primary"]["bh"]
        unsigned = {k: v for k, v in env.items() if k not in ("bcc", "sig")}
        assert unsigned == {k: v for k, v in primary.items() if k != "sig"}
        others = [c["recipient"] for c in BCC["copies"] if c is not copy]
        assert not any(addr in json.dumps(env) for addr in others)
    assert not any(addr in json.dumps(primary) for addr in given["bcc"])


# -- (e) encrypt-then-sign ----------------------------------------------------------------


@pytest.mark.parametrize("case", DATA["encrypted"], ids=lambda c: c["name"])
def test_encrypted_compose_reproduces(case: dict[str, Any]) -> None:
    primary = case["envelopes"][0]["envelope"]
    bcc = [e["bcc_recipient"] for e in case["envelopes"][1:]]
    randbytes = det_randbytes(case["randbytes"])
    served: list[dict[str, Any]] = []

    def traced(n: int) -> bytes:
        out = randbytes(n)
        served.append({"n": n, "hex": out.hex()})
        return out

    out = compose(
        ident(BY_ADDRESS[primary["from"]]["label"]), primary["to"], case["plaintext"],
        subject=primary.get("subject"), cc=primary.get("cc"), bcc=bcc,
        encrypt_for=case["encrypt_for"], now_ms=primary["t"], randbytes=traced,
    )  # fmt: skip
    assert [out.primary, *(env for _, env in out.bcc_copies)] == [
        e["envelope"] for e in case["envelopes"]
    ]
    assert served == case["randbytes_calls"]


@pytest.mark.parametrize("case", DATA["encrypted"], ids=lambda c: c["name"])
def test_encrypted_envelopes(case: dict[str, Any]) -> None:
    calls = case["randbytes_calls"]
    # Order of use: message id (16), CEK (32), content nonce (12), then per wrapped key an
    # ephemeral X25519 private key (32) and a nonce (12).
    assert [c["n"] for c in calls[:3]] == [16, 32, 12]
    assert case["cek_hex"] == calls[1]["hex"]
    for entry in case["envelopes"]:
        env = entry["envelope"]
        verify_envelope(env, now_ms=DATA["now_ms"])  # the signature covers the ciphertext
        assert env["content"] == "[encrypted]" and env["encrypted"] is True
        assert env["id"] == uuid4_hex(bytes.fromhex(calls[0]["hex"]))
        assert b64d(env["content_enc"])[:12].hex() == calls[2]["hex"]
        assert entry["signing_payload"] == signing_payload(env).decode()
        assert sorted(entry["readers"]) == sorted(env["enc_recipients"])
        assert env["from"] in entry["readers"]  # the sender can read what it sent
        for address in entry["readers"]:
            reader = ident(BY_ADDRESS[address]["label"])
            assert decrypt_content(env, reader) == case["plaintext"]
            assert unwrap_cek(env["enc_recipients"][address], reader).hex() == case["cek_hex"]
        for address in entry["non_readers"]:
            with pytest.raises(NotARecipient):
                decrypt_content(env, ident(BY_ADDRESS[address]["label"]))
        # Encrypt-then-sign: swapping the ciphertext breaks the sender's signature.
        other = b64d(env["content_enc"])
        swapped = {**env, "content_enc": b64e(other[:-1] + bytes([other[-1] ^ 1]))}
        with pytest.raises(BadSignature):
            verify_envelope(swapped)


def test_encrypted_bcc_copy_adds_only_its_own_blob() -> None:
    (case,) = [c for c in DATA["encrypted"] if c["name"] == "encrypted-bcc"]
    primary, copy = (e["envelope"] for e in case["envelopes"])
    extra = set(copy["enc_recipients"]) - set(primary["enc_recipients"])
    assert extra == {case["envelopes"][1]["bcc_recipient"]} and copy["bcc"] == list(extra)
    assert copy["content_enc"] == primary["content_enc"]
    for address, blob in primary["enc_recipients"].items():
        assert copy["enc_recipients"][address] == blob
