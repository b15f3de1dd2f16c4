"""The rule-by-rule vectors of spec/vectors/flux-v1.json, run against FLUX's protocol core.

`envelopes` (PROTOCOL.md §3.1, §4.1, §4.3) and `signed_requests` (§10.3) are run here, by
kind, from the JSON alone; `chains`, `tamper.offenses` and `tamper.forged` (whose cases
include the step-by-step vectors of §7.3, §7.4 and §7.6) are run by
test_flux_vectors.py. What a second implementation does with each kind is written in
spec/README.md; this file is that description in Python, with no server.

It also checks what makes the set usable as a specification: every vector names the rule
it checks (`rule`), names are unique, and every rule the issue lists has a vector.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from flux.federation.signing import (
    check_request,
    claimed_server,
    signature_base,
    verify_checked,
    verify_request,
)
from flux.protocol import (
    FluxError,
    Identity,
    PublishedKey,
    RateLimiter,
    ServerSigner,
    append_hop,
    b64d,
    canonical_json,
    check_spam,
    compose,
    decrypt_content,
    legacy_token,
    legacy_token_matches,
    loads_strict,
    verify_envelope,
)
from flux.protocol.chain import check_can_append
from flux.protocol.errors import all_error_classes
from flux.protocol.identity import is_address, keyfile_is_protected
from flux.protocol.outgoing import make_bounce

ROOT = Path(__file__).resolve().parents[2]
DATA: dict[str, Any] = json.loads(
    (ROOT / "spec" / "vectors" / "flux-v1.json").read_text(encoding="utf-8")
)
ENVELOPES = DATA["envelopes"]["cases"]
REQUESTS = DATA["signed_requests"]["cases"]
PUBLISHED = {
    server: [PublishedKey(b64d(k["pub"]), k["valid_from"], k["valid_until"]) for k in entries]
    for server, entries in DATA["published_keys"].items()
}


def keys(server: str) -> list[PublishedKey]:
    return list(PUBLISHED.get(server, ()))


def outcome(exc: FluxError) -> dict[str, Any]:
    return {"error": {"code": exc.code, "field": exc.field}}


# -- envelopes ----------------------------------------------------------------------------


def envelope_input(case: dict[str, Any]) -> Any:
    """The value a receiver verifies: parsed strictly (§3.1) from `raw` or `raw_b64`."""
    if "raw" in case:
        return loads_strict(case["raw"])
    if "raw_b64" in case:
        return loads_strict(base64.urlsafe_b64decode(case["raw_b64"]))
    return case["envelope"]


@pytest.mark.parametrize("case", ENVELOPES, ids=lambda c: c["name"])
def test_envelope_vector(case: dict[str, Any]) -> None:
    try:
        verify_envelope(envelope_input(case), now_ms=case.get("now_ms"))
    except FluxError as exc:
        got = outcome(exc)
        wire = exc.to_dict()  # the error as every transport sends it (PROTOCOL.md §9)
        assert wire.pop("code") == exc.code and isinstance(wire.pop("error"), str)
        assert wire == ({} if exc.field is None else {"field": exc.field})
        assert type(exc) in all_error_classes()
    else:
        got = {"valid": True}
    assert got == case["expected"]


def test_addresses_of_the_vectors() -> None:
    # §2.2: an address is "fx1" + 40 lower-case hex digits, as a whole string
    assert all(is_address(v["address"]) for v in DATA["identities"])
    bad = [c["envelope"]["from"] for c in ENVELOPES if c["name"].startswith("from-")]
    assert bad and not any(is_address(value) for value in bad)
    # a key generated from 32 random bytes uses them as its seed (§2.1)
    seed = bytes(range(32))
    assert Identity.generate(lambda n: seed[:n]).seed == seed


def test_raw_vectors_are_text_a_lax_parser_would_take() -> None:
    # The raw inputs exist because a JSON library would accept them silently: Python's own
    # json module takes every one of the float, duplicate-key and big-integer texts.
    lax = [c for c in ENVELOPES if "raw" in c and c["name"] in {
        "raw-float", "raw-exponent", "raw-duplicate-key", "raw-integer-beyond-max",
        "raw-nan", "raw-infinity", "raw-negative-zero-float", "raw-lone-surrogate"}]  # fmt: skip
    assert len(lax) == 8
    for case in lax:
        assert isinstance(json.loads(case["raw"]), dict)
        assert case["expected"] == {"error": {"code": "malformed_json", "field": None}}


def test_valid_envelopes_verify_as_text_too() -> None:
    # An envelope given as a JSON value is the same envelope as its text (the file is JSON):
    # serialising a valid one and parsing it strictly changes nothing.
    for case in ENVELOPES:
        if "envelope" in case and case["expected"] == {"valid": True}:
            verify_envelope(loads_strict(json.dumps(case["envelope"])), now_ms=case.get("now_ms"))


# -- signed requests ----------------------------------------------------------------------


def run_request(request: dict[str, Any]) -> dict[str, Any]:
    """The receiver's checks: the keyless ones (`check_request`), then the signature under
    the keys the signer publishes (`verify_checked`)."""
    body = request["body"].encode()
    try:
        checked = check_request(request["headers"], body, now_s=request["now_s"],
                                authority=request["authority"], host=request["host"])  # fmt: skip
        signed = verify_checked(request["method"], request["path"], checked, keys=keys,
                                authority=request["authority"])  # fmt: skip
    except FluxError as exc:
        return outcome(exc)
    return {"server": signed.server, "created": signed.created}


def run_request_in_one_call(request: dict[str, Any]) -> dict[str, Any]:
    """The same through `verify_request` (no Host check)."""
    try:
        signed = verify_request(request["method"], request["path"], request["headers"],
                                request["body"].encode(), keys=keys, now_s=request["now_s"],
                                authority=request["authority"])  # fmt: skip
    except FluxError as exc:
        return outcome(exc)
    return {"server": signed.server, "created": signed.created}


@pytest.mark.parametrize("case", REQUESTS, ids=lambda c: c["name"])
def test_signed_request_vector(case: dict[str, Any]) -> None:
    request = case["request"]
    assert run_request(request) == case["expected"]
    if request["host"] is None:
        assert run_request_in_one_call(request) == case["expected"]
    # whose keys a receiver fetches first (unverified): the keyid, when it is a server name
    assert claimed_server(request["headers"]) == case["claimed_server"]


def test_signature_base_of_the_valid_request() -> None:
    request = REQUESTS[0]["request"]
    assert REQUESTS[0]["name"] == "valid"
    headers = request["headers"]
    params = headers["Signature-Input"].removeprefix("flux=")
    base = signature_base(request["method"], request["authority"], request["path"],
                          headers["Content-Digest"], params)  # fmt: skip
    assert base.decode("ascii") == DATA["signed_requests"]["signature_base"]
    lines = DATA["signed_requests"]["signature_base"].split("\n")
    assert [line.split(": ", 1)[0] for line in lines] == [
        '"@method"',
        '"@authority"',
        '"@path"',
        '"content-digest"',
        '"@signature-params"',
    ]
    digest = base64.b64encode(hashlib.sha256(request["body"].encode()).digest()).decode()
    assert headers["Content-Digest"] == f"sha-256=:{digest}:"


# -- the canonical form, key files, decryption --------------------------------------------

IDENTITIES = {v["label"]: Identity.from_private_b64(v["private_key"]) for v in DATA["identities"]}


@pytest.mark.parametrize("case", DATA["canonical"]["cases"], ids=lambda c: c["name"])
def test_canonical_vector(case: dict[str, Any]) -> None:
    try:
        got: dict[str, Any] = {"canonical": canonical_json(loads_strict(case["raw"]))}
    except FluxError as exc:
        got = outcome(exc)
    assert got == case["expected"]
    if "canonical" in got:  # canonical text is its own canonical form, as bytes too
        assert canonical_json(loads_strict(got["canonical"].encode())) == got["canonical"]


@pytest.mark.parametrize("case", DATA["key_files"]["cases"], ids=lambda c: c["name"])
def test_key_file_vector(case: dict[str, Any]) -> None:
    try:
        got: dict[str, Any] = {
            "address": Identity.from_keyfile(case["key_file"], case["passphrase"]).address
        }
    except FluxError as exc:
        got = outcome(exc)
    assert got == case["expected"]
    assert keyfile_is_protected(case["key_file"]) is case["protected"]
    if case["name"] == "sealed-by-flux":  # FLUX's writer reproduces the file byte for byte
        label = "flux-vectors:key-file-flux"
        rewritten = IDENTITIES["alice"].to_keyfile(case["passphrase"], det_randbytes(label))
        assert rewritten == case["key_file"]
    if case["name"] == "plain":
        assert IDENTITIES["alice"].to_keyfile() == case["key_file"]


@pytest.mark.parametrize("case", DATA["decryption"]["cases"], ids=lambda c: c["name"])
def test_decryption_vector(case: dict[str, Any]) -> None:
    try:
        got: dict[str, Any] = {
            "plaintext": decrypt_content(case["envelope"], IDENTITIES[case["reader"]])
        }
    except FluxError as exc:
        got = {"error": {"code": exc.code}}
    assert got == case["expected"]


# -- composing, bounces ---------------------------------------------------------------------


def det_randbytes(label: str) -> Any:
    """The file's randbytes_definition (as test_flux_vectors.py implements it)."""
    stream, counter = bytearray(), 0

    def randbytes(n: int) -> bytes:
        nonlocal counter
        while len(stream) < n:
            stream.extend(hashlib.sha256(label.encode() + counter.to_bytes(8, "big")).digest())
            counter += 1
        out = bytes(stream[:n])
        del stream[:n]
        return out

    return randbytes


@pytest.mark.parametrize("case", DATA["compose"]["cases"], ids=lambda c: c["name"])
def test_compose_vector(case: dict[str, Any]) -> None:
    given = dict(case["input"])
    to, content = given.pop("to"), given.pop("content")
    try:
        out = compose(IDENTITIES["alice"], to, content, now_ms=DATA["now_ms"],
                      message_id="cd" * 16, randbytes=det_randbytes("flux-vectors:compose"),
                      **given)  # fmt: skip
    except FluxError as exc:
        got = outcome(exc)
    else:
        got = {"primary": out.primary, "copies": [list(c) for c in out.bcc_copies]}
        for envelope in out.all:
            verify_envelope(envelope, now_ms=DATA["now_ms"])
    assert got == case["expected"]


@pytest.mark.parametrize("case", DATA["bounce"]["cases"], ids=lambda c: c["name"])
def test_bounce_vector(case: dict[str, Any]) -> None:
    server = IDENTITIES[DATA["servers"][case["server"]]]
    notice = make_bounce(case["original"], case["recipients"], case["reason"], server,
                         case["now_ms"], randbytes=det_randbytes(case["randbytes"]))  # fmt: skip
    assert notice == case["bounce"]
    verify_envelope(notice)
    original = case["original"]
    assert (notice["from"], notice["to"], notice["re"]) == (
        server.address, original["from"], original["id"])  # fmt: skip
    assert notice["tags"] == ["bounce"]
    subject = "Undeliverable: " + original.get("subject", "(no subject)")
    assert notice["subject"] == subject[:200]
    assert original["id"] in notice["content"] and case["reason"] in notice["content"]
    assert all(address in notice["content"] for address in case["recipients"])


# -- spam heuristics, legacy tokens --------------------------------------------------------


@pytest.mark.parametrize("case", DATA["spam"]["cases"], ids=lambda c: c["name"])
def test_spam_vector(case: dict[str, Any]) -> None:
    msg = {"content": case["content"]}
    if case["subject"] is not None:
        msg["subject"] = case["subject"]
    verdict = check_spam(msg, None, DATA["now_ms"])
    assert list(verdict.reasons) == case["expected_reasons"]
    assert verdict.score == case["expected_score"]
    assert verdict.is_spam is bool(case["expected_reasons"])


def test_spam_rate_vector() -> None:
    rate = DATA["spam"]["rate"]
    limiter = RateLimiter(limit=rate["limit"], window_ms=rate["window_ms"])
    assert [limiter.hit(rate["from"], h["t"]) for h in rate["hits"]] == [
        h["over_limit"] for h in rate["hits"]
    ]
    last = rate["hits"][-1]["t"]
    assert limiter.active(last) == {rate["from"]: rate["limit"]}
    # over the limit, check_spam names the rate first, then the content's own reasons
    verdict = check_spam({"from": rate["from"], "content": ""}, limiter, last)
    assert verdict.reasons == ("rate limit exceeded", "empty content")
    # the window is (now - window_ms, now]: a hit exactly window_ms old has left it
    first_kept = min(h["t"] for h in rate["hits"][1:] if not h["over_limit"])
    assert limiter.active(first_kept + rate["window_ms"]) == {rate["from"]: rate["limit"] - 1}
    # prune forgets only senders whose last hit has left the window
    limiter.prune(last - 1)
    limiter.prune(last + rate["window_ms"] // 2)  # older hits are out, the last one is not
    assert rate["from"] in limiter.active(last)
    limiter.prune(last + rate["window_ms"])
    assert limiter.active(last + rate["window_ms"]) == {}


@pytest.mark.parametrize("case", DATA["legacy_tokens"], ids=lambda c: c["name"])
def test_legacy_token_vector(case: dict[str, Any]) -> None:
    assert legacy_token(case["address"], case["secret"]) == case["token"]
    assert legacy_token_matches(case["address"], case["secret"], case["token"])
    for token in case["rejected"]:
        assert not legacy_token_matches(case["address"], case["secret"], token)
    # a token that is not even valid Unicode (from a broken header) is refused, not an error
    assert not legacy_token_matches(case["address"], case["secret"], "\ud800" + case["token"])


@pytest.mark.parametrize("case", DATA["appending"]["cases"], ids=lambda c: c["name"])
def test_appending_vector(case: dict[str, Any]) -> None:
    signer = ServerSigner("b.example", IDENTITIES["server-b"])
    try:
        check_can_append(case["envelope"])
    except FluxError as exc:
        assert outcome(exc) == case["expected"]
        if exc.code == "too_large":  # append_hop refuses the same message the same way
            with pytest.raises(FluxError) as info:
                append_hop(case["envelope"], signer, next_hop="local", now_ms=DATA["now_ms"])
            assert outcome(info.value) == case["expected"]
    else:
        assert case["expected"] == {"ok": True}
        out = append_hop(case["envelope"], signer, next_hop="local", now_ms=DATA["now_ms"])
        assert len(out["route"]) == len(out["integrity_chain"]) == 32


# -- the set as a whole -------------------------------------------------------------------


def every_vector() -> list[tuple[str, dict[str, Any]]]:
    """(section, vector) for every vector that names a rule."""
    out = [("sealed_hops", DATA["sealed_hops"]), ("bcc", DATA["bcc"]),
           ("tamper.genuine", DATA["tamper"]["genuine"])]  # fmt: skip
    out += [("encrypted", c) for c in DATA["encrypted"]]
    out += [("chains", c) for c in DATA["chains"]["cases"]]
    out += [("tamper.offenses", c) for c in DATA["tamper"]["offenses"]]
    out += [("tamper.forged", c) for c in DATA["tamper"]["forged"]]
    out += [("envelopes", c) for c in ENVELOPES]
    out += [("signed_requests", c) for c in REQUESTS]
    for section in ("canonical", "key_files", "decryption", "compose", "spam"):
        out += [(section, c) for c in DATA[section]["cases"]]
    out += [("spam", DATA["spam"]["rate"])]
    out += [("appending", c) for c in DATA["appending"]["cases"]]
    out += [("bounce", c) for c in DATA["bounce"]["cases"]]
    out += [("legacy_tokens", c) for c in DATA["legacy_tokens"]]
    return out


RULE_RE = re.compile(r"^§\d+(\.\d+)*")


def rules_of(rule: str) -> list[str]:
    """The rules one `rule` field names: "§7.3 step 4 / step 9" is §7.3 steps 4 and 9,
    "§4.3 step 4-6" steps 4, 5 and 6, "§10.3 / RFC 9421" both."""
    out: list[str] = []
    section = ""
    for part in rule.split(" / "):
        if part.startswith("step"):
            part = f"{section} {part}"
        section = part.split(" step")[0] if part.startswith("§") else section
        match = re.fullmatch(r"(.* step )(\d+)-(\d+)", part)
        if match:
            first, last = int(match.group(2)), int(match.group(3))
            out += [f"{match.group(1)}{k}" for k in range(first, last + 1)]
        else:
            out.append(part)
    return out


def vectors_by_rule() -> Counter[str]:
    """How many vectors check each rule (a vector naming two rules counts for both): the
    table of spec/README.md, "Vectors by rule"."""
    return Counter(rule for _, vector in every_vector() for rule in rules_of(vector["rule"]))


def test_every_vector_names_its_rule_and_a_unique_name() -> None:
    for section, vector in every_vector():
        assert RULE_RE.match(vector["rule"]), (section, vector.get("name"))
    sections = {s for s, v in every_vector() if "name" in v and s != "spam"}
    for section in sections:
        names = [v["name"] for s, v in every_vector() if s == section]
        assert len(names) == len(set(names)), section


#: The rules issue 14 names as unchecked (and the other sections' rules), each with at
#: least one vector now.
REQUIRED_RULES = [
    "§1", "§2.3", "§3.1", "§3.2", "§4.1", "§4.2", "§4.3 step 1", "§4.3 step 2", "§4.3 step 3",
    "§4.3 step 4", "§4.3 step 5", "§4.3 step 6", "§4.3 step 7", "§4.3 step 8", "§5.1",
    "§5.2", "§5.3 step 1", "§5.3 step 2", "§6.2", "§7.1", "§7.2",
    *[f"§7.3 step {k}" for k in range(0, 11)], *[f"§7.4 step {k}" for k in range(0, 7)],
    "§7.5", *[f"§7.6 step {k}" for k in (1, 2, 3, 4, 5, 6, 7, 9)], "§8.1", "§8.2",
    "§10.1", "§10.2", "§10.3", "§10.4", "§10.6", "RFC 9421", "RFC 9530",
]  # fmt: skip


def test_every_named_rule_has_a_vector() -> None:
    counts = vectors_by_rule()
    assert not [rule for rule in REQUIRED_RULES if not counts[rule]], sorted(counts)


def test_the_chain_splice_of_issue_14_is_caught_by_prev_alone() -> None:
    # A chain spliced from two properly sealed records: every check but §7.3 step 7 holds.
    (case,) = [c for c in DATA["chains"]["cases"] if c["name"] == "spliced"]
    first, second = case["envelope"]["integrity_chain"]
    assert second["i"] == 2 and first["next"] == second["server"] and second["cv"] == "pass"
    assert case["expected"]["hops"][1]["status"] == "failed"
    assert "prev" in case["expected"]["hops"][1]["reason"]
