"""Generate FLUX's own test vectors: spec/vectors/flux-v1.json (docs/PROTOCOL.md, spec/README.md).

    .venv/bin/python scripts/make_vectors.py           # (re)write spec/vectors/flux-v1.json
    .venv/bin/python scripts/make_vectors.py --check   # exit 1 if the file is out of date

Everything is deterministic, so the file is reproducible byte for byte (a test re-runs
`build()` and compares): identities come from fixed seeds, time is fixed (`NOW`), and every
operation that needs randomness gets `det_randbytes(label)`, a SHA-256 counter stream that a
second implementation can reproduce (its definition is written into the file). Ed25519
signatures are deterministic (RFC 8032), so the signatures are reproducible too.

The vectors cover what FLUX adds to the prototype's v1.0 (whose own vectors are
spec/vectors/seed-v1.json): sealed hops, chain verification, blame and tamper reports, BCC
copies, and encrypt-then-sign. Only the public `flux.protocol` API is used (plus
`chain.seal_payload`, `tamper.report_payload` and `e2e.unwrap_cek`, which expose the exact
bytes signed and the CEK for the file).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flux.federation.signing import (
    check_request,
    claimed_server,
    content_digest,
    sign_request,
    signature_base,
    verify_checked,
    verify_request,
)
from flux.protocol import (
    LOCAL_DELIVERY,
    ChainVerdict,
    FluxError,
    Identity,
    Offense,
    OffenseKind,
    PublishedKey,
    RateLimiter,
    ServerSigner,
    _aead,
    address_from_pub,
    append_hop,
    b64d,
    b64e,
    body_hash,
    build_report,
    canonical_json,
    check_spam,
    compose,
    decrypt_content,
    find_offense,
    integrity_hash,
    legacy_token,
    legacy_token_matches,
    loads_strict,
    make_hop,
    record_hash,
    signing_payload,
    validate_report,
    verify_chain,
    verify_envelope,
)
from flux.protocol.chain import check_can_append, seal_payload
from flux.protocol.e2e import unwrap_cek, wrap_cek
from flux.protocol.envelope import UNHASHED_FIELDS, UNSEALED_FIELDS, sign_envelope
from flux.protocol.identity import keyfile_is_protected
from flux.protocol.limits import MAX_ROUTE_HOPS
from flux.protocol.outgoing import make_bounce
from flux.protocol.tamper import report_payload

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "spec" / "vectors" / "flux-v1.json"
SEED_VECTORS = ROOT / "spec" / "vectors" / "seed-v1.json"

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z, the epoch of the prototype's vectors
DAY = 86_400_000

# -- identities ---------------------------------------------------------------------------

#: The prototype's identities (spec/vectors/seed-v1.json), reused so both files agree.
SEED_KEYS = {
    "alice": "CivzT5qr2BlSfAs5_Pbfl9sosXGLqFBbF812ax9mkyg=",
    "bob": "Z6OcPLvihywVgEXTl0TT2OvSD88IRltYYQ6FK8kh_Wc=",
    "carol": "7dBIt_Gxpch_yPhKLL530bH6SSVSdj21myFs1kEj5ic=",
    "server-a": "ro4Ckd6MckOD_1o3-UyuULrqDVIodaK-wXl91sjbbmE=",
    "server-x": "ll0fyNKFEVPboGwmQ7jPnWy5seFXOLD0AO7X6dN2aTc=",
}
#: New identities: seed = SHA-256(UTF-8 "flux-vectors:" + label).
DERIVED = (
    "dave", "erin", "mallory", "server-b", "server-c", "server-a-retired", "impostor", "server-d",
    "server-e", "server-f",
)  # fmt: skip


def derived_seed(label: str) -> bytes:
    return hashlib.sha256(f"flux-vectors:{label}".encode()).digest()


IDS: dict[str, Identity] = {
    **{label: Identity.from_private_b64(key) for label, key in SEED_KEYS.items()},
    **{label: Identity(derived_seed(label)) for label in DERIVED},
}
ALICE, BOB, CAROL, DAVE, ERIN = (IDS[n] for n in ("alice", "bob", "carol", "dave", "erin"))

A = ServerSigner("a.example", IDS["server-a"])
X = ServerSigner("x.example", IDS["server-x"])
B = ServerSigner("b.example", IDS["server-b"])
C = ServerSigner("c.example", IDS["server-c"])
A_RETIRED = ServerSigner("a.example", IDS["server-a-retired"])
#: d.example's only key is valid for less than a second, NOW + 1 to NOW + 998 ms, at neither
#: end of the second NOW (s): a request's `created` (whole seconds) counts when the key is
#: valid at any moment of that second, not only at its first or last millisecond.
D = ServerSigner("d.example", IDS["server-d"])
#: e.example's key is valid from the last millisecond of the second NOW (s), f.example's
#: from the first of the next: the second's two edges, each on its side.
E = ServerSigner("e.example", IDS["server-e"])
F = ServerSigner("f.example", IDS["server-f"])
RETIRED_UNTIL = NOW - DAY

#: What each server publishes at GET /federation/info (PROTOCOL.md §10.1). a.example also
#: lists a retired key, valid only up to RETIRED_UNTIL. Nobody publishes "impostor".
PUBLISHED: dict[str, list[PublishedKey]] = {
    "a.example": [
        PublishedKey(A_RETIRED.identity.public_key, valid_from=0, valid_until=RETIRED_UNTIL),
        PublishedKey(A.identity.public_key, valid_from=RETIRED_UNTIL - DAY),
    ],
    "x.example": [PublishedKey(X.identity.public_key)],
    "b.example": [PublishedKey(B.identity.public_key)],
    "c.example": [PublishedKey(C.identity.public_key)],
    "d.example": [PublishedKey(D.identity.public_key, valid_from=NOW + 1, valid_until=NOW + 998)],
    "e.example": [PublishedKey(E.identity.public_key, valid_from=NOW + 999)],
    "f.example": [PublishedKey(F.identity.public_key, valid_from=NOW + 1000)],
}


def keys(server: str) -> list[PublishedKey]:
    """The KeyLookup every vector is computed with."""
    return list(PUBLISHED.get(server, ()))


def impersonate(name: str) -> ServerSigner:
    """A signer using a key `name` does not publish."""
    return ServerSigner(name, IDS["impostor"])


# -- deterministic randomness -------------------------------------------------------------

RANDBYTES_DEFINITION = (
    "det_randbytes(label): the byte stream SHA-256(L || C0) || SHA-256(L || C1) || ..., where "
    "L is the UTF-8 label and Ck is the counter k as 8 bytes big-endian; each call "
    "randbytes(n) returns the next n bytes of the stream."
)


def det_randbytes(label: str) -> Callable[[int], bytes]:
    state = {"counter": 0, "buffer": b""}

    def randbytes(n: int) -> bytes:
        while len(state["buffer"]) < n:
            block = label.encode() + state["counter"].to_bytes(8, "big")
            state["buffer"] += hashlib.sha256(block).digest()
            state["counter"] += 1
        out, state["buffer"] = state["buffer"][:n], state["buffer"][n:]
        return out

    return randbytes


def traced(label: str) -> tuple[Callable[[int], bytes], list[dict[str, Any]]]:
    """det_randbytes(label) plus the list of calls it served: [{n, hex}]."""
    inner, calls = det_randbytes(label), []

    def randbytes(n: int) -> bytes:
        out = inner(n)
        calls.append({"n": n, "hex": out.hex()})
        return out

    return randbytes, calls


# -- helpers ------------------------------------------------------------------------------


def plain(obj: Any) -> Any:
    """`obj` as plain JSON data (fresh dicts and lists, nothing shared)."""
    return json.loads(json.dumps(obj))


def hashes_of(msg: Mapping[str, Any]) -> dict[str, str]:
    """The three byte strings a message is signed or hashed over, and the two digests."""
    return {
        "signing_payload": signing_payload(msg).decode("ascii"),
        "hash_payload": canonical_json({k: v for k, v in msg.items() if k not in UNHASHED_FIELDS}),
        "hash": integrity_hash(msg),
        "bh_payload": canonical_json({k: v for k, v in msg.items() if k not in UNSEALED_FIELDS}),
        "bh": body_hash(msg),
    }


def chain_result(msg: Mapping[str, Any]) -> dict[str, Any]:
    check = verify_chain(msg, keys)
    return {
        "verdict": str(check.verdict),
        "hops": [
            {"index": h.index, "server": h.server, "status": str(h.status), "reason": h.reason}
            for h in check.hops
        ],
    }


def offense_result(offense: Offense | None) -> dict[str, Any] | None:
    if offense is None:
        return None
    return {
        "kind": str(offense.kind),
        "offender": offense.offender,
        "msg_id": offense.msg_id,
        "proof_id": offense.proof_id,
    }


def with_chain(msg: Mapping[str, Any], chain: list[Any]) -> dict[str, Any]:
    return {**msg, "integrity_chain": chain}


# -- (a) sealed hops ----------------------------------------------------------------------

HOPS_ROUTE = [(A, X.name, NOW + 1_000), (X, B.name, NOW + 2_000), (B, LOCAL_DELIVERY, NOW + 3_000)]


def hops_message() -> dict[str, Any]:
    return compose(
        ALICE, BOB.address, "Hello Bob, via three servers", subject="Sealed",
        now_ms=NOW, randbytes=det_randbytes("flux-vectors:sealed-hops"),
    ).primary  # fmt: skip


def relay_states(msg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The message as handed on by each server of HOPS_ROUTE (all honest, cv = pass)."""
    states, current = [], msg
    for signer, next_hop, t in HOPS_ROUTE:
        current = append_hop(current, signer, next_hop=next_hop, now_ms=t, cv=ChainVerdict.PASS)
        states.append(current)
    return states


def sealed_hops() -> dict[str, Any]:
    msg = hops_message()
    hops = []
    for (signer, next_hop, t), state in zip(HOPS_ROUTE, relay_states(msg), strict=True):
        record = state["integrity_chain"][-1]
        hops.append(
            {
                "server": signer.name,
                "identity": label_of(signer.identity),
                "now_ms": t,
                "next": next_hop,
                "record": record,
                "sig_payload": f"{record['server']}:{record['t']}:{record['hash']}",
                "seal_payload": seal_payload(record).decode("ascii"),
                "record_hash": record_hash(record),
                "handed_on": state,
            }
        )
    return {
        "description": "alice -> bob through a.example -> x.example -> b.example (local "
        "delivery). Each server appends one sealed record; handed_on is the whole message "
        "as that server passes it on (route and integrity_chain grown by one).",
        "rule": "§7.1",
        "randbytes": "flux-vectors:sealed-hops",
        "message": msg,
        **hashes_of(msg),
        "hops": hops,
    }


def label_of(identity: Identity) -> str:
    return next(label for label, ident in IDS.items() if ident.address == identity.address)


# -- (b) chain verification ---------------------------------------------------------------


def chain_cases() -> list[dict[str, Any]]:
    msg = hops_message()
    after_a, after_x, final = relay_states(msg)
    full = final["integrity_chain"]
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("valid", "the three-hop message of sealed_hops, as delivered", final),
        ("valid-in-transit", "the same after two hops (x.example -> b.example)", after_x),
        ("no-hops", "the message as the sender signed it", msg),
        (
            "dropped-hop",
            "x.example's record removed: b.example's record (i = 3) is now number 2",
            with_chain(final, [full[0], full[2]]),
        ),
        (
            "reordered-hops",
            "x.example's and b.example's records swapped",
            with_chain(final, [full[0], full[2], full[1]]),
        ),
        ("unpublished-key", *unpublished_key_case(msg, after_a)),
        ("retired-key-after-retirement", *retired_key_case(msg, late=True)),
        ("retired-key-within-validity", *retired_key_case(msg, late=False)),
        (
            "misdirected",
            "a.example handed the message to x.example, but c.example seals it next",
            append_hop(after_a, C, next_hop=LOCAL_DELIVERY, now_ms=NOW + 2_000),
        ),
        (
            "altered-content",
            "the delivered message with its content changed afterwards",
            {**final, "content": "Hello Bob, via four servers"},
        ),
        ("rewritten-record", *rewritten_record_case(final)),
        ("prototype-record", *prototype_case(sealed=False)),
        ("prototype-then-sealed", *prototype_case(sealed=True)),
    ]
    return [
        {"name": name, "rule": CHAIN_RULES[name], "description": text, "envelope": env,
         "expected": chain_result(env)}
        for name, text, env in cases
    ] + step_chains()  # fmt: skip


#: The rule of PROTOCOL.md each of the first chain vectors checks.
CHAIN_RULES = {
    "valid": "§7.3", "valid-in-transit": "§7.3", "no-hops": "§7.2",
    "dropped-hop": "§7.3 step 6", "reordered-hops": "§7.3 step 6 / step 0",
    "unpublished-key": "§7.3 step 5", "retired-key-after-retirement": "§7.3 step 5 / §10.2",
    "retired-key-within-validity": "§7.3 step 5 / §10.2", "misdirected": "§7.3 step 9",
    "altered-content": "§7.3 step 3", "rewritten-record": "§7.3 step 5",
    "prototype-record": "§7.3 step 4", "prototype-then-sealed": "§7.3 step 4 / step 9",
}  # fmt: skip


def unpublished_key_case(msg: Mapping[str, Any], after_a: dict[str, Any]) -> tuple[str, Any]:
    forged = append_hop(after_a, impersonate(X.name), next_hop=B.name, now_ms=NOW + 2_000)
    verdict = verify_chain(forged, keys).verdict  # b.example sees the failure, says so
    delivered = append_hop(forged, B, next_hop=LOCAL_DELIVERY, now_ms=NOW + 3_000, cv=verdict)
    text = (
        "the second record is in x.example's name but sealed with a key x.example does not "
        "publish; b.example forwards with cv = fail"
    )
    return text, delivered


def retired_key_case(msg: Mapping[str, Any], *, late: bool) -> tuple[str, Any]:
    if late:
        sent = msg
        t = NOW + 1_000
        text = "a.example seals with its retired key after the key's valid_until"
    else:
        sent = compose(
            ALICE, BOB.address, "Sent before the key was retired",
            now_ms=RETIRED_UNTIL - 1_000, randbytes=det_randbytes("flux-vectors:retired"),
        ).primary  # fmt: skip
        t = RETIRED_UNTIL
        text = "a.example seals with its retired key at t = valid_until (inclusive)"
    return text, append_hop(sent, A_RETIRED, next_hop=LOCAL_DELIVERY, now_ms=t)


def rewritten_record_case(final: Mapping[str, Any]) -> tuple[str, Any]:
    chain = list(final["integrity_chain"])
    chain[1] = {**chain[1], "cv": "fail"}
    return "x.example's record has its cv changed after sealing", with_chain(final, chain)


def seed_plain_with_hop() -> dict[str, Any]:
    """The prototype's own plain message with its own hop record (seed-v1.json)."""
    seed = json.loads(SEED_VECTORS.read_text(encoding="utf-8"))
    envelope = next(m for m in seed["messages"] if m["name"] == "plain")["envelope"]
    record = seed["hop_records"][0]["record"]
    return with_chain(envelope, [record])


def prototype_case(*, sealed: bool) -> tuple[str, Any]:
    msg = seed_plain_with_hop()
    if not sealed:
        return "seed-v1.json's plain message with the prototype's own hop record", msg
    text = "the prototype's record, then x.example's sealed record (prev = its record_hash)"
    return text, append_hop(msg, X, next_hop=LOCAL_DELIVERY, now_ms=NOW + 2_000)


def chains() -> dict[str, Any]:
    return {
        "description": "verify_chain(envelope, published_keys) for each envelope; "
        "expected.hops lists each record's status (sealed | unsealed | failed) and the "
        "verdict (none | pass | fail). reason is informative, not normative.",
        "cases": chain_cases(),
    }


# -- (c) blame and tamper reports ---------------------------------------------------------


def tamper_message() -> dict[str, Any]:
    return compose(
        ALICE, BOB.address, "Pay 10 EUR to Bob", subject="invoice",
        now_ms=NOW, randbytes=det_randbytes("flux-vectors:tamper"),
    ).primary  # fmt: skip


def forged_delivery() -> dict[str, Any]:
    """a.example -> x.example, which changes the content and seals it to b.example."""
    after_a = append_hop(tamper_message(), A, next_hop=X.name, now_ms=NOW + 1_000)
    altered = {**after_a, "content": "Pay 1000 EUR to Bob"}
    return append_hop(altered, X, next_hop=B.name, now_ms=NOW + 2_000)


def false_hop_delivery() -> dict[str, Any]:
    """x.example seals an intact body, but its `hash` (and the sig over it) is false."""
    after_a = append_hop(tamper_message(), A, next_hop=X.name, now_ms=NOW + 1_000)
    record = make_hop(after_a, X, next_hop=B.name, now_ms=NOW + 2_000, cv=ChainVerdict.PASS)
    record["hash"] = "0" * 64
    record["sig"] = X.identity.sign(f"{record['server']}:{record['t']}:{record['hash']}")
    record["seal"] = X.identity.sign(seal_payload(record))
    return with_chain(after_a, [*after_a["integrity_chain"], record])


def broken_chain_delivery() -> dict[str, Any]:
    """a.example -> c.example -> x.example, which drops c.example's record and seals 'pass'."""
    msg = tamper_message()
    after_a = append_hop(msg, A, next_hop=C.name, now_ms=NOW + 1_000)
    after_c = append_hop(after_a, C, next_hop=X.name, now_ms=NOW + 1_500)
    dropped = with_chain(after_c, after_c["integrity_chain"][:1])
    return append_hop(dropped, X, next_hop=B.name, now_ms=NOW + 2_000)


def honest_delivery() -> dict[str, Any]:
    after_a = append_hop(tamper_message(), A, next_hop=X.name, now_ms=NOW + 1_000)
    return append_hop(after_a, X, next_hop=B.name, now_ms=NOW + 2_000)


def declared_fail_delivery() -> dict[str, Any]:
    after_a = append_hop(tamper_message(), A, next_hop=X.name, now_ms=NOW + 1_000)
    forged = append_hop(after_a, impersonate(C.name), next_hop=X.name, now_ms=NOW + 1_500)
    return append_hop(forged, X, next_hop=B.name, now_ms=NOW + 2_000, cv=ChainVerdict.FAIL)


# -- blame only what the accused sealed (PROTOCOL.md §7.4-§7.5): the negative cases -------


def sealed_unchecked(
    msg: dict[str, Any], signer: ServerSigner, next_hop: str, t: int
) -> dict[str, Any]:
    """`signer`'s genuine route entry and seal on `msg`, without the check before sealing
    (what a server that did not apply it handed on): the proofs below must ignore it."""
    chain = msg.get("integrity_chain") or []
    hop = make_hop(msg, signer, next_hop=next_hop, now_ms=t,
                   cv=ChainVerdict.PASS if chain else ChainVerdict.NONE)  # fmt: skip
    route = [*(msg.get("route") or []), {"server": signer.name, "t": t}]
    return {**msg, "route": route, "integrity_chain": [*chain, hop]}


def sender_signed(**changes: Any) -> dict[str, Any]:
    """The tamper message with `changes` to its signed core, signed again by alice."""
    fields = {k: v for k, v in tamper_message().items() if k not in ("sig", "pub")}
    return sign_envelope({**fields, **changes}, ALICE)


def route_past_limit() -> dict[str, Any]:
    """The issue's case: 32 route entries from the user, a.example's own makes 33."""
    full = {**tamper_message(), "route": [{"server": "u.example", "t": NOW}] * MAX_ROUTE_HOPS}
    return sealed_unchecked(full, A, B.name, NOW + 1_000)


def chain_past_limit() -> dict[str, Any]:
    """33 genuine seals, alternately a.example's and x.example's, the last one to b.example."""
    msg = tamper_message()
    for k in range(MAX_ROUTE_HOPS + 1):
        here, there = (A, X) if k % 2 == 0 else (X, A)
        last = k == MAX_ROUTE_HOPS
        msg = sealed_unchecked(msg, here, B.name if last else there.name, NOW + 1_000 + k)
    return msg


def earlier_record_altered() -> dict[str, Any]:
    """An honest a -> c -> x -> b delivery in which b (the holder) altered a.example's
    record, which x.example's seal reaches only through c.example's `prev`."""
    after_a = append_hop(tamper_message(), A, next_hop=C.name, now_ms=NOW + 1_000)
    after_c = append_hop(after_a, C, next_hop=X.name, now_ms=NOW + 1_500)
    honest = append_hop(after_c, X, next_hop=B.name, now_ms=NOW + 2_000)
    chain = list(honest["integrity_chain"])
    chain[0] = {**chain[0], "t": chain[0]["t"] + 1}
    return with_chain(honest, chain)


def key_swapped_delivery() -> dict[str, Any]:
    """x.example seals a body whose `pub` it replaced: the key no longer hashes to `from`."""
    after_a = append_hop(tamper_message(), A, next_hop=X.name, now_ms=NOW + 1_000)
    return append_hop(
        {**after_a, "pub": C.identity.pub_b64()}, X, next_hop=B.name, now_ms=NOW + 2_000
    )


def malformed_sig_delivery() -> dict[str, Any]:
    """x.example seals a body whose `sig` is not even base64url: a failed signature."""
    after_a = append_hop(tamper_message(), A, next_hop=X.name, now_ms=NOW + 1_000)
    return append_hop({**after_a, "sig": "not a signature"}, X, next_hop=B.name, now_ms=NOW + 2_000)


def blame_cases() -> list[tuple[str, str, dict[str, Any], str]]:
    """Changes outside the seal and whole-message limits prove nothing (expected null);
    failures of the sender's signature inside it do (forged_body)."""
    honest = honest_delivery()
    return [
        ("blame-route-past-limit",
         "a.example sealed to b.example a message whose route (unsigned) holds 33 entries",
         route_past_limit(), B.name),
        ("blame-chain-past-limit",
         "33 genuine seals, the last x.example's to b.example: over the limit, judged on nothing",
         chain_past_limit(), B.name),
        ("blame-route-added",
         "an honest delivery whose route the holder extended by 40 entries",
         {**honest, "route": honest["route"] * 20}, B.name),
        ("blame-route-removed",
         "an honest delivery whose route the holder emptied",
         {**honest, "route": []}, B.name),
        ("blame-route-garbage",
         "an honest delivery whose route the holder replaced with a string",
         {**honest, "route": "anything"}, B.name),
        ("blame-retrieval-fields",
         "an honest delivery with _status, _inbox and _tags added by the holder",
         {**honest, "_status": 1, "_inbox": [], "_tags": {"x": None}}, B.name),
        ("blame-earlier-record-altered",
         "a record before the part x.example's seal reaches through prev links was altered",
         earlier_record_altered(), B.name),
        ("blame-unknown-field-signed",
         "alice signed a field v1.0 does not know, a.example sealed it: refused, not blamed",
         sealed_unchecked(sender_signed(x_extra="?"), A, B.name, NOW + 1_000), B.name),
        ("blame-subject-past-limit",
         "alice signed a subject over 4096 bytes, a.example sealed it: refused, not blamed",
         sealed_unchecked(sender_signed(subject="s" * 5_000), A, B.name, NOW + 1_000), B.name),
        ("blame-key-swapped",
         "x.example replaced the sender's pub and sealed it: forged_body",
         key_swapped_delivery(), B.name),
        ("blame-malformed-sig",
         "x.example sealed a body whose sig is not base64url: forged_body",
         malformed_sig_delivery(), B.name),
    ]  # fmt: skip


def offenses() -> list[dict[str, Any]]:
    cases = [
        ("forged-body", "x.example changed the content and sealed it", forged_delivery(), B.name),
        ("false-hop", "x.example's own hash is false", false_hop_delivery(), B.name),
        (
            "broken-chain",
            "x.example dropped c.example's record and sealed cv = pass",
            broken_chain_delivery(),
            B.name,
        ),
        (
            "innocent",
            "an honest delivery a.example -> x.example -> b.example",
            honest_delivery(),
            B.name,
        ),
        (
            "sealed-to-someone-else",
            "the forged delivery, checked by c.example: x.example sealed it to b.example",
            forged_delivery(),
            C.name,
        ),
        (
            "declared-fail",
            "x.example forwards a chain with an impostor record but declares cv = fail",
            declared_fail_delivery(),
            B.name,
        ),
        *blame_cases(),
    ]
    return [
        {
            "name": name,
            "rule": OFFENSE_RULES[name],
            "description": text,
            "receiver": receiver,
            "envelope": env,
            "expected": offense_result(find_offense(env, keys, receiver=receiver)),
        }
        for name, text, env, receiver in cases
    ] + step_offenses()


#: The rule of PROTOCOL.md each of the first offense vectors checks.
OFFENSE_RULES = {
    "forged-body": "§7.4 step 2", "false-hop": "§7.4 step 3", "broken-chain": "§7.4 step 5",
    "innocent": "§7.4 step 6", "sealed-to-someone-else": "§7.4 step 1",
    "declared-fail": "§7.4 step 4", "blame-route-past-limit": "§7.5",
    "blame-chain-past-limit": "§7.4 step 0", "blame-route-added": "§7.5",
    "blame-route-removed": "§7.5", "blame-route-garbage": "§7.5",
    "blame-retrieval-fields": "§7.5", "blame-earlier-record-altered": "§7.4 step 5",
    "blame-unknown-field-signed": "§7.4 step 2 / §7.5", "blame-subject-past-limit": "§7.5",
    "blame-key-swapped": "§7.4 step 2", "blame-malformed-sig": "§7.4 step 2",
}  # fmt: skip
#: The rule of PROTOCOL.md each of the first forged reports checks.
REPORT_RULES = {
    "replayed-other-msg-id": "§7.6 step 4", "replayed-other-msg-id-in-envelope": "§7.6 step 4",
    "made-up-baseline": "§7.6 step 6", "receiver-swapped-body": "§7.6 (L.bh binding)",
    "double-signed-id": "§7.6 (L.bh binding)", "offender-key-not-published": "§7.6 step 7",
    "reporter-key-not-published": "§7.6 step 2", "innocent-accused": "§7.6 (L.server binding)",
    "third-party-reporter": "§7.6 (L.next binding)", "bad-report-signature": "§7.6 step 3",
    "chain-mismatch": "§7.6 step 5",
}  # fmt: skip


def genuine_report() -> dict[str, Any]:
    offense = find_offense(forged_delivery(), keys, receiver=B.name)
    assert offense is not None and offense.kind is OffenseKind.FORGED_BODY
    return build_report(offense, B, now_ms=NOW + 10_000)


def resigned(report: Mapping[str, Any], signer: ServerSigner, **changes: Any) -> dict[str, Any]:
    """`report` with `changes`, signed again by `signer` as reporter."""
    out = {**plain(report), **changes, "reporter": signer.name, "pub": signer.identity.pub_b64()}
    payload = report_payload(out["msg_id"], out["offender"], out["reporter"], out["t"])
    out["sig"] = signer.identity.sign(payload)
    return out


def report_over(envelope: Mapping[str, Any], offender: str, reporter: ServerSigner) -> dict:
    """A report as a forger builds it: a hand-made offense over `envelope`."""
    seal = envelope["integrity_chain"][-1]["seal"]
    proof_id = hashlib.sha256(seal.encode()).hexdigest()
    offense = Offense(
        OffenseKind.FORGED_BODY, offender, envelope["id"], proof_id, envelope, "made up"
    )
    return build_report(offense, reporter, now_ms=NOW + 10_000)


def forged_reports(genuine: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    other_id = hops_message()["id"]
    moved = {**genuine["envelope"], "id": other_id}
    honest_to_b = append_hop(tamper_message(), A, next_hop=B.name, now_ms=NOW + 1_000)
    impostor_a = append_hop(
        {**tamper_message(), "content": "forged"}, impersonate(A.name), next_hop=B.name,
        now_ms=NOW + 1_000,
    )  # fmt: skip
    mallory = IDS["mallory"]  # a sender who signs two bodies with one id
    one, two = (
        compose(mallory, BOB.address, text, now_ms=NOW, message_id="cd" * 16).primary
        for text in ("first", "second")
    )
    sealed_one = append_hop(one, A, next_hop=B.name, now_ms=NOW + 1_000)
    return [
        (
            "replayed-other-msg-id",
            "the genuine proof re-signed under another message's id",
            resigned(genuine, B, msg_id=other_id),
        ),
        (
            "replayed-other-msg-id-in-envelope",
            "... with the envelope's id and msg_hash_baseline changed to match",
            resigned(
                genuine,
                B,
                msg_id=other_id,
                envelope=moved,
                msg_hash_baseline=integrity_hash(moved),
            ),
        ),
        (
            "made-up-baseline",
            "the prototype trusted msg_hash_baseline; FLUX recomputes it",
            {**plain(genuine), "msg_hash_baseline": "0" * 64},
        ),
        (
            "receiver-swapped-body",
            "b.example got an honest delivery from a.example and swapped the content",
            report_over({**honest_to_b, "content": "Pay 1000 EUR to Bob"}, A.name, B),
        ),
        (
            "double-signed-id",
            "the sender signed two bodies with one id; a.example sealed the first, the "
            "report pairs the second with that seal",
            report_over({**two, "integrity_chain": sealed_one["integrity_chain"]}, A.name, B),
        ),
        (
            "offender-key-not-published",
            "a forged record in a.example's name under a key a.example does not publish",
            report_over(impostor_a, A.name, B),
        ),
        (
            "reporter-key-not-published",
            "the genuine report signed as b.example with a key b.example does not publish",
            resigned(genuine, impersonate(B.name)),
        ),
        (
            "innocent-accused",
            "the genuine proof, but naming a.example as the offender",
            resigned(genuine, B, offender=A.name),
        ),
        (
            "third-party-reporter",
            "c.example reports a delivery x.example sealed to b.example",
            resigned(genuine, C),
        ),
        (
            "bad-report-signature",
            "the report's sig is over another payload",
            {**plain(genuine), "sig": resigned(genuine, B, offender=A.name)["sig"]},
        ),
        (
            "chain-mismatch",
            "integrity_chain differs from the envelope's",
            {**plain(genuine), "integrity_chain": genuine["integrity_chain"][:-1]},
        ),
    ]


def expected_error(report: Mapping[str, Any]) -> dict[str, Any]:
    try:
        validate_report(report, keys)
    except FluxError as exc:
        return {"code": exc.code, "field": exc.field}
    raise AssertionError("a forged report validated")


def tamper_reports() -> dict[str, Any]:
    genuine = genuine_report()
    forged = [
        {"name": name, "rule": REPORT_RULES[name], "description": text, "report": report,
         "expected_error": expected_error(report)}
        for name, text, report in forged_reports(genuine)
    ]  # fmt: skip
    for name, rule, text, report, code, field in step_reports(genuine):
        got = expected_error(report)
        if got != {"code": code, "field": field}:
            raise AssertionError(f"report vector {name}: the code gives {got}, not {code}/{field}")
        forged.append({"name": name, "rule": rule, "description": text, "report": report,
                       "expected_error": got})  # fmt: skip
    return {
        "description": "offenses: find_offense(envelope, published_keys, receiver) -> the "
        "proven offense or null. genuine: b.example's report on the forged-body offense; "
        "validate_report must return expected. forged: validate_report must refuse each "
        "with expected_error.code (and field).",
        "offenses": offenses(),
        "genuine": {
            "rule": "§7.6",
            "report": genuine,
            "sig_payload": report_payload(
                genuine["msg_id"], genuine["offender"], genuine["reporter"], genuine["t"]
            ).decode("ascii"),
            "expected": offense_result(find_offense(forged_delivery(), keys, receiver=B.name)),
        },
        "forged": forged,
    }


# -- (d) BCC copies -----------------------------------------------------------------------


def bcc() -> dict[str, Any]:
    out = compose(
        ALICE, BOB.address, "Team update: the launch moves to Friday.", subject="Launch",
        cc=[CAROL.address], bcc=[DAVE.address, ERIN.address], tags=["Work"],
        now_ms=NOW, randbytes=det_randbytes("flux-vectors:bcc"),
    )  # fmt: skip
    return {
        "description": "compose(alice, to=bob, cc=[carol], bcc=[dave, erin], ...): one "
        "primary for to + cc with no bcc field, and one copy per BCC recipient whose bcc "
        "names only that recipient. Every envelope verifies on its own; all share one id. "
        "The prototype's hop hash is the same for all (it excludes sig, pub and bcc); bh is not.",
        "rule": "§5.1 / §5.2",
        "randbytes": "flux-vectors:bcc",
        "input": {
            "from": ALICE.address,
            "to": BOB.address,
            "cc": [CAROL.address],
            "bcc": [DAVE.address, ERIN.address],
            "content": out.primary["content"],
            "subject": out.primary["subject"],
            "tags": ["Work"],
            "now_ms": NOW,
        },
        "primary": {
            "deliver_to": [BOB.address, CAROL.address],
            "envelope": out.primary,
            **hashes_of(out.primary),
        },
        "copies": [
            {"recipient": addr, "deliver_to": [addr], "envelope": env, **hashes_of(env)}
            for addr, env in out.bcc_copies
        ],
    }


# -- (e) encrypt-then-sign ----------------------------------------------------------------


def encrypted_case(
    name: str, text: str, plaintext: str, *, cc: list[Identity], bcc: list[Identity]
) -> dict[str, Any]:
    label = f"flux-vectors:{name}"
    randbytes, calls = traced(label)
    people = [BOB, *cc, *bcc]
    out = compose(
        ALICE, BOB.address, plaintext, subject="Secret", cc=[i.address for i in cc],
        bcc=[i.address for i in bcc], encrypt_for={i.address: i.pub_b64() for i in people},
        now_ms=NOW, randbytes=randbytes,
    )  # fmt: skip
    envelopes = [(None, out.primary), *out.bcc_copies]
    everyone = [ALICE, BOB, CAROL, DAVE, ERIN]
    return {
        "name": name,
        "rule": "§5.3 / §6",
        "description": text,
        "plaintext": plaintext,
        "encrypt_for": {i.address: i.pub_b64() for i in people},
        "randbytes": label,
        "randbytes_calls": calls,
        "cek_hex": unwrap_cek(out.primary["enc_recipients"][ALICE.address], ALICE).hex(),
        "envelopes": [
            {
                "bcc_recipient": who,
                "envelope": env,
                "signing_payload": signing_payload(env).decode("ascii"),
                "readers": list(env["enc_recipients"]),
                "non_readers": [
                    i.address for i in everyone if i.address not in env["enc_recipients"]
                ],
            }
            for who, env in envelopes
        ],
    }


def encrypted() -> list[dict[str, Any]]:
    return [
        encrypted_case(
            "encrypted",
            "alice -> bob, cc carol, encrypted for both (alice's own key is added)",
            "Secret: the eagle lands at noon ✈ — 你好 👋",
            cc=[CAROL],
            bcc=[],
        ),
        encrypted_case(
            "encrypted-bcc",
            "alice -> bob, bcc dave, encrypted: dave's copy adds one blob for dave",
            "Dave is copied without Bob knowing.",
            cc=[],
            bcc=[DAVE],
        ),
    ]


# -- (f) envelope verification, rule by rule (PROTOCOL.md §3.1, §4.1, §4.3) ----------------
#
# Each vector breaks exactly one rule (or, for the order of the checks, two, to show which
# one is reported). The expectation is written here by hand, from the specification, and
# the generator checks that the code agrees before it writes the file: a disagreement is a
# bug in one of them, never something to regenerate away.

MAX_SAFE = 2**53 - 1
MINUTE = 60_000


def envelope_message() -> dict[str, Any]:
    return compose(
        ALICE, BOB.address, "Hello Bob", subject="Vectors",
        now_ms=NOW, randbytes=det_randbytes("flux-vectors:envelopes"),
    ).primary  # fmt: skip


def signed_as(fields: Mapping[str, Any], identity: Identity = ALICE) -> dict[str, Any]:
    """`fields` (without sig and pub) signed by `identity`, whatever `from` says: shape
    errors are found before the signature, so a vector breaks only its own rule."""
    core = {k: v for k, v in fields.items() if k not in ("sig", "pub")}
    return {**core, "sig": identity.sign(signing_payload(core)), "pub": identity.pub_b64()}


def changed(*, drop: tuple[str, ...] = (), resign: bool = True, **changes: Any) -> dict:
    """The envelope vector message with `changes` (and without `drop`), signed again."""
    fields = {**envelope_message(), **changes}
    for name in drop:
        fields.pop(name, None)
    return signed_as(fields) if resign else fields


def compact(value: Any) -> str:
    """JSON text as a sender might write it (insertion order kept, nothing escaped)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def raw_replace(value: Any, old: str, new: str) -> str:
    text = compact(value)
    assert text.count(old) == 1, (old, text.count(old))
    return text.replace(old, new)


def nested(depth: int) -> Any:
    """An array nested `depth` levels deep (level 1 is the outer array)."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def tamper_b64_bits(text: str) -> str:
    """`text` (padded base64url) with a stray bit in its last character: non-canonical."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    body = text.rstrip("=")
    last = alphabet[alphabet.index(body[-1]) | 1]
    assert last != body[-1]
    return body[:-1] + last + "=" * (len(text) - len(body))


def small_order_sender() -> dict[str, Any]:
    """An envelope from the address of the identity point (a small-order key) with the
    signature R = identity, S = 0, which a cofactorless verifier that does not refuse
    small-order keys accepts for every message (PROTOCOL.md §1: libsodium refuses it)."""
    identity_point = bytes([1]) + bytes(31)
    core = {k: v for k, v in envelope_message().items() if k not in ("sig", "pub")}
    core["from"] = address_from_pub(identity_point)
    return {**core, "sig": b64e(identity_point + bytes(32)), "pub": b64e(identity_point)}


def s_plus_l(envelope: Mapping[str, Any]) -> dict[str, Any]:
    """`envelope` with its signature's S replaced by S + L (non-canonical, §1)."""
    order = 2**252 + 27742317777372353535851937790883648493
    raw = b64d(envelope["sig"])
    s = int.from_bytes(raw[32:], "little") + order
    return {**envelope, "sig": b64e(raw[:32] + s.to_bytes(32, "little"))}


def encrypted_message() -> dict[str, Any]:
    """A valid encrypted envelope (alice -> bob), the encryption rules' starting point."""
    return compose(
        ALICE, BOB.address, "sealed", encrypt_for={BOB.address: BOB.pub_b64()},
        now_ms=NOW, randbytes=det_randbytes("flux-vectors:envelopes-encrypted"),
    ).primary  # fmt: skip


def enc_changed(*, drop: tuple[str, ...] = (), **changes: Any) -> dict[str, Any]:
    fields = {**encrypted_message(), **changes}
    for name in drop:
        fields.pop(name, None)
    return signed_as(fields)


def addresses(n: int) -> list[str]:
    """n distinct well-formed addresses (nobody's keys: shape checks only)."""
    return ["fx1" + hashlib.sha256(f"flux-vectors:address:{k}".encode()).hexdigest()[:40]
            for k in range(n)]  # fmt: skip


Case = tuple[str, str, str, dict[str, Any], tuple[str, str] | None]


def envelope_cases() -> list[Case]:
    """(name, rule, description, input, expected (code, field) or None for valid).

    input is {"envelope": value} or {"raw": JSON text} or {"raw_b64": bytes}, optionally
    with "now_ms" (verification at submission, §4.3 step 6)."""
    msg = envelope_message()
    env = lambda value, **more: {"envelope": value, **more}  # noqa: E731
    raw = lambda text, **more: {"raw": text, **more}  # noqa: E731
    t_text = f'"t":{NOW}'
    dup = compact(msg).replace("{", '{"to":"' + CAROL.address + '",', 1)
    surrogate = compact(changed(subject="x")).replace('"subject":"x"', '"subject":"\\ud800"')
    deep_ok = changed(_tags=nested(63))  # the envelope is level 1: 64 levels in all
    deep_bad = changed(_tags=nested(64))
    other_key = IDS["mallory"]
    cases: list[Case] = [
        # valid envelopes
        ("valid", "§4.3", "the vector message, as compose() signs it", env(msg), None),
        ("valid-all-optional-fields", "§4.1",
         "subject, re, cc, bcc, tags, expires: all signed, all within limits",
         env(changed(re="ab" * 16, cc=[CAROL.address], bcc=[DAVE.address],
                     tags=["work", "é"], expires=0)), None),
        ("valid-retrieval-fields", "§4.4",
         "retrieval fields of any value, outside the signature",
         env({**msg, "_status": {"x": [1]}, "_inbox": None, "_tags": 3, "_from_name": "a@b",
              "_sent_at": NOW, "_delivery": []}), None),
        ("valid-no-route-or-chain", "§4.1", "route and integrity_chain are optional on input",
         env({k: v for k, v in msg.items() if k not in ("route", "integrity_chain")}), None),
        ("valid-encrypted", "§4.1", "an encrypted envelope", env(encrypted_message()), None),
        # §3.1: the data model, on the raw text (step 1)
        ("raw-valid-spacing-and-escapes", "§3.2",
         "whitespace around and inside the value, and escapes the canonical form would not "
         "use: the signature is over the re-serialised parsed value",
         raw(" \n" + json.dumps(msg, indent=1).replace("Hello", "\\u0048ello") + "\t\r\n"), None),
        ("raw-float", "§3.1 / §4.3 step 1", "t written as 1767225600000.0",
         raw(raw_replace(msg, t_text, t_text + ".0")), ("malformed_json", None)),
        ("raw-exponent", "§3.1 / §4.3 step 1", "t written with an exponent",
         raw(raw_replace(msg, t_text, '"t":1.7672256e12')), ("malformed_json", None)),
        ("raw-negative-zero-float", "§3.1 / §4.3 step 1", "expires written as -0.0",
         raw(compact(changed(expires=0)).replace('"expires":0', '"expires":-0.0')),
         ("malformed_json", None)),
        ("raw-nan", "§3.1 / §4.3 step 1", "expires is NaN",
         raw(compact(changed(expires=0)).replace('"expires":0', '"expires":NaN')),
         ("malformed_json", None)),
        ("raw-infinity", "§3.1 / §4.3 step 1", "expires is Infinity",
         raw(compact(changed(expires=0)).replace('"expires":0', '"expires":Infinity')),
         ("malformed_json", None)),
        ("raw-duplicate-key", "§3.1 / §4.3 step 1", "to appears twice (carol's, then bob's)",
         raw(dup), ("malformed_json", None)),
        ("raw-integer-max", "§3.1", "expires = 2^53 - 1, the largest integer allowed",
         raw(compact(changed(expires=MAX_SAFE))), None),
        ("raw-integer-beyond-max", "§3.1 / §4.3 step 1", "expires = 2^53",
         raw(compact(changed(expires=MAX_SAFE)).replace(str(MAX_SAFE), str(MAX_SAFE + 1))),
         ("malformed_json", None)),
        ("raw-integer-below-min", "§3.1 / §4.3 step 1", "expires = -(2^53)",
         raw(compact(changed(expires=MAX_SAFE)).replace(str(MAX_SAFE), str(-MAX_SAFE - 1))),
         ("malformed_json", None)),
        ("raw-lone-surrogate", "§3.1 / §4.3 step 1", "subject holds an unpaired \\ud800",
         raw(surrogate), ("malformed_json", None)),
        ("raw-trailing-data", "§3.1 / §4.3 step 1", "a second value after the envelope",
         raw(compact(msg) + " {}"), ("malformed_json", None)),
        ("raw-not-json", "§3.1 / §4.3 step 1", "not JSON at all",
         raw("{v: 1.0}"), ("malformed_json", None)),
        ("raw-depth-64", "§3.1", "nested exactly 64 levels (in _tags, unsigned)",
         raw(compact(deep_ok)), None),
        ("raw-depth-65", "§3.1 / §4.3 step 1", "nested 65 levels", raw(compact(deep_bad)),
         ("malformed_json", None)),
        ("raw-invalid-utf8", "§3.1 / §4.3 step 1",
         "the content holds the byte 0xff (not UTF-8); given as raw_b64",
         {"raw_b64": b64e(compact(msg).encode().replace(b"Hello", b"H\xffllo"))},
         ("malformed_json", None)),
        ("not-an-object", "§4.3 step 1", "a JSON array", env([msg]), ("wrong_type", "message")),
        ("not-an-object-string", "§4.3 step 1", "a JSON string", env("hello"),
         ("wrong_type", "message")),
        # step 2: required fields, in the order v, id, from, to, t, content, sig, pub
        *[(f"missing-{name}", "§4.3 step 2", f"no {name}",
           env(changed(drop=(name,)) if name not in ("sig", "pub")
               else {k: v for k, v in msg.items() if k != name}),
           ("missing_field", name))
          for name in ("v", "id", "from", "to", "t", "content", "sig", "pub")],
        ("missing-first-in-order", "§4.3 step 2", "pub, content and to missing: to is named",
         env({k: v for k, v in msg.items() if k not in ("pub", "content", "to")}),
         ("missing_field", "to")),
        ("missing-before-version", "§4.3 step 2-3", "v is 2.0 and id is missing: id is named",
         env(changed(v="2.0", drop=("id",))), ("missing_field", "id")),
        # step 3: the version
        ("v-not-string", "§4.3 step 3", "v is the number 1", env(changed(v=1)),
         ("wrong_type", "v")),
        ("v-other", "§4.3 step 3", "v is 2.0", env(changed(v="2.0")), ("unknown_version", "v")),
        ("v-other-spelling", "§4.3 step 3", "v is 1.00", env(changed(v="1.00")),
         ("unknown_version", "v")),
        ("v-other-before-fields", "§4.3 step 3", "v is 2.0 and a field is unknown: the version "
         "is refused first", env(changed(v="2.0", x_new="?")), ("unknown_version", "v")),
        # step 4: each field, in object order
        ("unknown-field", "§4.1 / §4.3 step 4", "a field v1.0 does not define, signed",
         env(changed(x_new="?")), ("invalid_value", "x_new")),
        ("unknown-field-long-name", "§4.1 / §4.3 step 4", "an unknown field of 50 characters: "
         "FLUX names its first 40 (the field echoed back is bounded)",
         env(changed(**{"x" * 50: 1})), ("invalid_value", "x" * 40)),
        ("unknown-field-underscore", "§4.1 / §4.3 step 4",
         "an underscore field that is not a retrieval field", env({**msg, "_other": 1}),
         ("invalid_value", "_other")),
        ("field-order-subject-first", "§4.3 step 4",
         "subject (a number) appears before cc (a string): subject is named",
         raw(compact({**changed(subject=5, cc="x")})), ("wrong_type", "subject")),
        ("field-order-cc-first", "§4.3 step 4",
         "the same two errors with cc first in the object: cc is named",
         raw(compact(dict(sorted(changed(subject=5, cc="x").items(),
                                 key=lambda kv: kv[0] != "cc")))), ("wrong_type", "cc")),
        ("id-not-string", "§4.3 step 4", "id is a number", env(changed(id=7)),
         ("wrong_type", "id")),
        ("id-upper-hex", "§4.1 / §4.3 step 4", "id in upper-case hex",
         env(changed(id=msg["id"].upper())), ("invalid_value", "id")),
        ("id-short", "§4.1 / §4.3 step 4", "id of 31 hex digits", env(changed(id=msg["id"][:31])),
         ("invalid_value", "id")),
        ("id-trailing-newline", "§4.1 / §4.3 step 4", "id followed by a newline",
         env(changed(id=msg["id"] + "\n")), ("invalid_value", "id")),
        ("from-not-address", "§2.2 / §4.3 step 4", "from is not an fx1 address",
         env(changed(**{"from": "alice@example.org"})), ("invalid_value", "from")),
        ("from-upper-case", "§2.2 / §4.3 step 4", "from in upper case",
         env(changed(**{"from": msg["from"].upper()})), ("invalid_value", "from")),
        ("from-trailing-newline", "§2.2 / §4.3 step 4", "from followed by a newline",
         env(changed(**{"from": msg["from"] + "\n"})), ("invalid_value", "from")),
        ("from-not-string", "§4.3 step 4", "from is a list", env(changed(**{"from": [1]})),
         ("wrong_type", "from")),
        ("to-not-address", "§2.2 / §4.3 step 4", "to has 39 hex digits",
         env(changed(to=msg["to"][:-1])), ("invalid_value", "to")),
        ("t-not-integer", "§4.3 step 4", "t is a string", env(changed(t=str(NOW))),
         ("wrong_type", "t")),
        ("t-boolean", "§4.3 step 4", "t is true", env(changed(t=True)), ("wrong_type", "t")),
        ("t-beyond-max", "§3.1 / §4.3 step 4", "t is 2^53 as a value (exactly representable "
         "in a double; a parser of the text refuses it first, raw-integer-beyond-max)",
         env(changed(t=2**53)), ("invalid_value", "t")),
        ("t-at-min", "§3.1", "t is -(2^53 - 1): an integer in range, relayed",
         env(changed(t=-MAX_SAFE)), None),
        ("content-not-string", "§4.3 step 4", "content is null", env(changed(content=None)),
         ("wrong_type", "content")),
        ("content-at-limit", "§4.1 / §8.1", "65,536 UTF-8 bytes (21,845 x '€' + 'a')",
         env(changed(content="€" * 21_845 + "a")), None),
        ("content-over-limit", "§4.1 / §8.1 / §4.3 step 4",
         "65,538 UTF-8 bytes in 21,846 characters: the limit counts bytes",
         env(changed(content="€" * 21_846)), ("too_large", "content")),
        ("subject-not-string", "§4.3 step 4", "subject is a number", env(changed(subject=5)),
         ("wrong_type", "subject")),
        ("subject-at-limit", "§4.1 / §8.1", "4,096 UTF-8 bytes", env(changed(subject="é" * 2_048)),
         None),
        ("subject-over-limit-ascii", "§4.1 / §8.1 / §4.3 step 4", "4,097 ASCII characters",
         env(changed(subject="s" * 4_097)), ("too_large", "subject")),
        ("subject-over-limit", "§4.1 / §8.1 / §4.3 step 4", "4,098 UTF-8 bytes in 2,049 characters",
         env(changed(subject="é" * 2_049)), ("too_large", "subject")),
        ("re-not-id", "§4.1 / §4.3 step 4", "re is not 32 lower-case hex", env(changed(re="x")),
         ("invalid_value", "re")),
        ("re-not-string", "§4.3 step 4", "re is a number", env(changed(re=1)), ("wrong_type", "re")),
        ("cc-not-list", "§4.3 step 4", "cc is a string", env(changed(cc=CAROL.address)),
         ("wrong_type", "cc")),
        ("cc-element-invalid", "§4.3 step 4", "cc[1] is not an address",
         env(changed(cc=[CAROL.address, "carol"])), ("invalid_value", "cc[1]")),
        ("cc-element-not-string", "§4.3 step 4", "cc[0] is a number", env(changed(cc=[5])),
         ("wrong_type", "cc[0]")),
        ("cc-over-limit", "§4.1 / §8.1 / §4.3 step 4", "cc lists 101 addresses",
         env(changed(cc=addresses(101))), ("too_large", "cc")),
        ("cc-count-before-elements", "§4.3 step 4",
         "cc lists 101 entries, the first not an address: the count is reported",
         env(changed(cc=["x", *addresses(100)])), ("too_large", "cc")),
        ("bcc-not-list", "§4.3 step 4", "bcc is an object", env(changed(bcc={})),
         ("wrong_type", "bcc")),
        ("bcc-element-invalid", "§4.3 step 4", "bcc[0] is upper case",
         env(changed(bcc=[DAVE.address.upper()])), ("invalid_value", "bcc[0]")),
        ("bcc-over-limit", "§4.1 / §8.1 / §4.3 step 4", "bcc lists 101 addresses",
         env(changed(bcc=addresses(101))), ("too_large", "bcc")),
        ("tags-not-list", "§4.3 step 4", "tags is a string", env(changed(tags="work")),
         ("wrong_type", "tags")),
        ("tags-at-limit", "§4.1 / §8.1", "32 tags of 64 characters",
         env(changed(tags=[f"{k:02d}" + "t" * 62 for k in range(32)])), None),
        ("tags-over-limit", "§4.1 / §8.1 / §4.3 step 4", "33 tags", env(changed(tags=[f"t{k}" for k in range(33)])),
         ("too_large", "tags")),
        ("tags-count-before-elements", "§4.3 step 4",
         "33 tags, the first upper case: the count is reported",
         env(changed(tags=["Work", *[f"t{k}" for k in range(32)]])), ("too_large", "tags")),
        ("tag-not-string", "§4.3 step 4", "tags[1] is a number", env(changed(tags=["a", 1])),
         ("wrong_type", "tags[1]")),
        ("tag-empty", "§4.1 / §4.3 step 4", "tags[0] is empty", env(changed(tags=[""])),
         ("invalid_value", "tags[0]")),
        ("tag-65-characters", "§4.1 / §4.3 step 4", "tags[0] has 65 characters",
         env(changed(tags=["t" * 65])), ("invalid_value", "tags[0]")),
        ("tag-64-non-ascii", "§4.1", "64 characters of 2 UTF-8 bytes each: characters count",
         env(changed(tags=["é" * 64])), None),
        ("tag-upper-case", "§4.1 / §4.3 step 4", "tags[0] is Work", env(changed(tags=["Work"])),
         ("invalid_value", "tags[0]")),
        ("tag-upper-case-non-ascii", "§4.1 / §4.3 step 4", "tags[0] is É (Unicode lower-case)",
         env(changed(tags=["É"])), ("invalid_value", "tags[0]")),
        ("tag-leading-space", "§4.1 / §4.3 step 4", "tags[0] starts with a space",
         env(changed(tags=[" work"])), ("invalid_value", "tags[0]")),
        ("tag-trailing-newline", "§4.1 / §4.3 step 4", "tags[0] ends with a newline",
         env(changed(tags=["work\n"])), ("invalid_value", "tags[0]")),
        ("tag-unicode-whitespace", "§4.1 / §4.3 step 4", "tags[0] ends with U+00A0 (Unicode space)",
         env(changed(tags=["work\u00a0"])), ("invalid_value", "tags[0]")),
        ("tag-inner-control", "§4.1 / §4.3 step 4", "tags[0] holds U+0001 inside",
         env(changed(tags=["a\u0001b"])), ("invalid_value", "tags[0]")),
        ("tag-inner-delete", "§4.1 / §4.3 step 4", "tags[0] holds U+007F inside",
         env(changed(tags=["a\u007fb"])), ("invalid_value", "tags[0]")),
        ("tag-inner-space", "§4.1", "a space inside a tag is allowed", env(changed(tags=["a b"])),
         None),
        ("expires-negative", "§4.1 / §4.3 step 4", "expires is -1", env(changed(expires=-1)),
         ("invalid_value", "expires")),
        ("expires-string", "§4.3 step 4", "expires is a string", env(changed(expires="0")),
         ("wrong_type", "expires")),
        ("expires-boolean", "§4.3 step 4", "expires is false", env(changed(expires=False)),
         ("wrong_type", "expires")),
        ("sig-not-string", "§4.3 step 4", "sig is a number", env({**msg, "sig": 1}),
         ("wrong_type", "sig")),
        ("pub-not-string", "§4.3 step 4", "pub is null", env({**msg, "pub": None}),
         ("wrong_type", "pub")),
        ("route-not-list", "§4.3 step 4", "route is a string", env({**msg, "route": "a"}),
         ("wrong_type", "route")),
        ("route-over-limit", "§4.1 / §8.1 / §4.3 step 4", "route has 33 entries",
         env({**msg, "route": [{"server": "a.example", "t": NOW}] * 33}), ("too_large", "route")),
        ("route-at-limit", "§4.1 / §8.1", "route has 32 entries",
         env({**msg, "route": [{"server": "a.example", "t": NOW}] * 32}), None),
        ("route-entry-not-object", "§4.3 step 4", "route[0] is a string",
         env({**msg, "route": ["a.example"]}), ("wrong_type", "route[0]")),
        ("route-entry-extra-field", "§4.3 step 4", "route[0] has a third field",
         env({**msg, "route": [{"server": "a.example", "t": NOW, "x": 1}]}),
         ("wrong_type", "route[0]")),
        ("route-entry-server-not-string", "§4.3 step 4", "route[0].server is a number",
         env({**msg, "route": [{"server": 1, "t": NOW}]}), ("wrong_type", "route[0].server")),
        ("route-entry-t-missing", "§4.3 step 4", "route[0] has no t",
         env({**msg, "route": [{"server": "a.example"}]}), ("wrong_type", "route[0].t")),
        ("chain-not-list", "§4.3 step 4", "integrity_chain is an object",
         env({**msg, "integrity_chain": {}}), ("wrong_type", "integrity_chain")),
        ("chain-over-limit", "§4.1 / §8.1 / §4.3 step 4", "integrity_chain has 33 records",
         env({**msg, "integrity_chain": [{}] * 33}), ("too_large", "integrity_chain")),
        ("chain-at-limit", "§4.1 / §8.1 / §4.3", "32 records (each record is judged by §7.3, "
         "not here)", env({**msg, "integrity_chain": [{}] * 32}), None),
        ("chain-record-not-object", "§4.3 step 4", "integrity_chain[1] is a list",
         env({**msg, "integrity_chain": [{}, []]}), ("wrong_type", "integrity_chain[1]")),
        # step 4, the encryption fields' own values
        ("encrypted-false", "§4.1 / §4.3 step 4", "encrypted is false",
         env(enc_changed(encrypted=False)), ("invalid_value", "encrypted")),
        ("encrypted-not-boolean", "§4.1 / §4.3 step 4", "encrypted is the string true",
         env(enc_changed(encrypted="true")), ("wrong_type", "encrypted")),
        ("content-enc-not-string", "§4.3 step 4", "content_enc is a number",
         env(enc_changed(content_enc=1)), ("wrong_type", "content_enc")),
        ("content-enc-not-base64url", "§1 / §4.3 step 4", "content_enc in the standard alphabet",
         env(enc_changed(content_enc="ab+/")), ("invalid_value", "content_enc")),
        ("content-enc-unpadded", "§1 / §4.3 step 4", "content_enc without its padding",
         env(enc_changed(content_enc=encrypted_message()["content_enc"].rstrip("="))),
         ("invalid_value", "content_enc")),
        ("content-enc-non-canonical", "§1 / §4.3 step 4", "content_enc with a stray bit",
         env(enc_changed(content_enc=tamper_b64_bits(encrypted_message()["content_enc"]))),
         ("invalid_value", "content_enc")),
        ("content-enc-whitespace", "§1 / §4.3 step 4", "content_enc with a newline inside",
         env(enc_changed(content_enc="AAAA\nAAAA")), ("invalid_value", "content_enc")),
        ("content-enc-at-limit", "§4.1 / §8.1", "content_enc of 87,420 characters",
         env(enc_changed(content_enc="A" * 87_420)), None),
        ("content-enc-over-limit", "§4.1 / §8.1 / §4.3 step 4", "content_enc of 87,424 characters",
         env(enc_changed(content_enc="A" * 87_424)), ("too_large", "content_enc")),
        ("enc-recipients-not-object", "§4.3 step 4", "enc_recipients is a list",
         env(enc_changed(enc_recipients=[])), ("wrong_type", "enc_recipients")),
        ("enc-recipients-empty", "§4.1 / §4.3 step 4", "enc_recipients is {}: the right type, "
         "no reader", env(enc_changed(enc_recipients={})), ("invalid_value", "enc_recipients")),
        ("enc-recipients-at-limit", "§4.1 / §8.1", "101 entries",
         env(enc_changed(enc_recipients=dict.fromkeys(addresses(101), "AAAA"))), None),
        ("enc-recipients-over-limit", "§4.1 / §8.1 / §4.3 step 4", "102 entries",
         env(enc_changed(enc_recipients=dict.fromkeys(addresses(102), "AAAA"))),
         ("too_large", "enc_recipients")),
        ("enc-recipients-key-not-address", "§4.3 step 4", "a key that is not an address: the "
         "object is named", env(enc_changed(enc_recipients={"bob": "AAAA"})),
         ("invalid_value", "enc_recipients")),
        ("enc-recipients-blob-not-base64url", "§1 / §4.3 step 4", "a blob that is not base64url",
         env(enc_changed(enc_recipients={BOB.address: "A==="})),
         ("invalid_value", f"enc_recipients.{BOB.address}")),
        ("enc-recipients-blob-not-string", "§4.3 step 4", "a blob that is a number",
         env(enc_changed(enc_recipients={BOB.address: 1})),
         ("wrong_type", f"enc_recipients.{BOB.address}")),
        # step 5: the recipient count, then the encryption rule
        ("recipients-at-limit", "§4.1 / §8.1", "to + 98 cc + 1 bcc = 100",
         env(changed(cc=addresses(98), bcc=[DAVE.address])), None),
        ("recipients-over-limit", "§4.1 / §8.1 / §4.3 step 5", "to + 99 cc + 1 bcc = 101",
         env(changed(cc=addresses(99), bcc=[DAVE.address])), ("too_large", "cc")),
        ("recipients-over-limit-bcc", "§4.1 / §4.3 step 5", "to + 100 bcc = 101: still named cc",
         env(changed(bcc=addresses(100))), ("too_large", "cc")),
        ("recipients-after-fields", "§4.3 step 4-5",
         "101 recipients and an upper-case tag: the field error comes first",
         env(changed(cc=addresses(100), tags=["Work"])), ("invalid_value", "tags[0]")),
        ("recipients-before-encryption", "§4.3 step 5",
         "101 recipients and encrypted alone: the count comes first",
         env(changed(cc=addresses(100), encrypted=True)), ("too_large", "cc")),
        ("encrypted-alone", "§4.1 / §4.3 step 5", "encrypted without the other two",
         env(changed(encrypted=True)), ("missing_field", "content_enc")),
        ("content-enc-alone", "§4.1 / §4.3 step 5", "content_enc without the other two",
         env(changed(content_enc="AAAA")), ("missing_field", "enc_recipients")),
        ("enc-recipients-alone", "§4.1 / §4.3 step 5", "enc_recipients without the other two",
         env(changed(enc_recipients={BOB.address: "AAAA"})), ("missing_field", "content_enc")),
        ("encryption-missing-enc-recipients", "§4.1 / §4.3 step 5", "no enc_recipients",
         env(enc_changed(drop=("enc_recipients",))), ("missing_field", "enc_recipients")),
        ("encryption-missing-encrypted", "§4.1 / §4.3 step 5", "no encrypted",
         env(enc_changed(drop=("encrypted",))), ("missing_field", "encrypted")),
        ("encryption-content-not-placeholder", "§4.1 / §4.3 step 5",
         "all three fields, but content is not [encrypted]",
         env(enc_changed(content="sealed")), ("invalid_value", "content")),
        ("placeholder-without-encryption", "§4.1", "content [encrypted] alone is plain text",
         env(changed(content="[encrypted]")), None),
        # step 6: freshness, at submission only
        ("fresh-oldest", "§4.3 step 6", "t = now - 5 min, at submission",
         env(msg, now_ms=NOW + 5 * MINUTE), None),
        ("fresh-newest", "§4.3 step 6", "t = now + 5 min, at submission",
         env(msg, now_ms=NOW - 5 * MINUTE), None),
        ("stale", "§4.3 step 6", "t = now - 5 min - 1 ms, at submission",
         env(msg, now_ms=NOW + 5 * MINUTE + 1), ("stale", "t")),
        ("future", "§4.3 step 6", "t = now + 5 min + 1 ms, at submission",
         env(msg, now_ms=NOW - 5 * MINUTE - 1), ("future", "t")),
        ("stale-relayed", "§4.3 step 6", "a day old, relayed between servers (no now_ms)",
         env(changed(t=NOW - DAY)), None),
        ("stale-after-shape", "§4.3 step 4-6", "stale and an unknown field: the field first",
         env(changed(x_new=1), now_ms=NOW + DAY), ("invalid_value", "x_new")),
        ("stale-before-signature", "§4.3 step 6-8", "stale and a bad signature: stale first",
         env({**msg, "content": "changed"}, now_ms=NOW + DAY), ("stale", "t")),
        # step 7: the key and the address
        ("pub-not-base64url", "§1 / §4.3 step 7", "pub is not base64url",
         env({**msg, "pub": "not a key"}), ("invalid_value", "pub")),
        ("pub-standard-alphabet", "§1 / §4.3 step 7", "pub with + and / for - and _",
         env({**msg, "pub": msg["pub"].replace("-", "+").replace("_", "/")}
             if ("-" in msg["pub"] or "_" in msg["pub"]) else {**msg, "pub": "+" + msg["pub"][1:]}),
         ("invalid_value", "pub")),
        ("pub-unpadded", "§1 / §4.3 step 7", "pub without its = padding",
         env({**msg, "pub": msg["pub"].rstrip("=")}), ("invalid_value", "pub")),
        ("pub-non-canonical", "§1 / §4.3 step 7", "pub with a stray bit in its last character",
         env({**msg, "pub": tamper_b64_bits(msg["pub"])}), ("invalid_value", "pub")),
        ("pub-wrong-length", "§4.3 step 7", "pub encodes 31 bytes",
         env({**msg, "pub": b64e(ALICE.public_key[:31])}), ("invalid_value", "pub")),
        ("pub-not-from", "§2.2 / §4.3 step 7", "mallory's key under alice's address",
         env(signed_as(msg, other_key)), ("address_mismatch", "pub")),
        ("pub-before-sig", "§4.3 step 7-8", "pub does not match and sig is garbage: pub first",
         env({**msg, "pub": other_key.pub_b64(), "sig": "!"}), ("address_mismatch", "pub")),
        # step 8: the signature
        ("sig-not-base64url", "§1 / §4.3 step 8", "sig is not base64url",
         env({**msg, "sig": "not a signature"}), ("invalid_value", "sig")),
        ("sig-wrong-length", "§4.3 step 8", "sig encodes 63 bytes",
         env({**msg, "sig": b64e(b64d(msg["sig"])[:63])}), ("invalid_value", "sig")),
        ("sig-non-canonical-base64", "§1 / §4.3 step 8", "sig with a stray bit in its last character",
         env({**msg, "sig": tamper_b64_bits(msg["sig"])}), ("invalid_value", "sig")),
        ("sig-over-other-body", "§4.3 step 8", "the content changed after signing",
         env({**msg, "content": "Hello Carol"}), ("bad_signature", "sig")),
        ("sig-covers-bcc", "§4.2 / §4.3 step 8", "a bcc added after signing",
         env({**msg, "bcc": [DAVE.address]}), ("bad_signature", "sig")),
        ("sig-not-route", "§4.2", "route and integrity_chain changed after signing: still valid",
         env({**msg, "route": [{"server": "a.example", "t": NOW}]}), None),
        ("sig-s-not-canonical", "§1 / §4.3 step 8", "the signature's S replaced by S + L",
         env(s_plus_l(msg)), ("bad_signature", "sig")),
        ("sig-small-order-key", "§1 / §4.3 step 8",
         "from is the address of a small-order key, with a signature that key 'verifies' "
         "under a lax verifier", env(small_order_sender()), ("bad_signature", "sig")),
    ]  # fmt: skip
    return cases


def run_envelope_vector(given: Mapping[str, Any]) -> dict[str, Any]:
    """What a receiver does with one envelope vector: {"valid": true} or {"error": ...}."""
    try:
        if "raw" in given:
            value = loads_strict(given["raw"])
        elif "raw_b64" in given:
            value = loads_strict(b64d(given["raw_b64"]))
        else:
            value = given["envelope"]
        verify_envelope(value, now_ms=given.get("now_ms"))
    except FluxError as exc:
        return {"error": {"code": exc.code, "field": exc.field}}
    return {"valid": True}


def envelopes() -> dict[str, Any]:
    out = []
    for name, rule, text, given, want in envelope_cases():
        expected = (
            {"valid": True} if want is None else {"error": {"code": want[0], "field": want[1]}}
        )
        got = run_envelope_vector(given)
        if got != expected:
            raise AssertionError(f"envelope vector {name}: the code gives {got}, not {expected}")
        out.append({"name": name, "rule": rule, "description": text, **given, "expected": expected})
    names = [c["name"] for c in out]
    assert len(names) == len(set(names)), "duplicate vector names"
    return {
        "description": "verify_envelope, rule by rule (PROTOCOL.md §3.1, §4.1, §4.3). The "
        "input is `envelope` (a JSON value), `raw` (JSON text, parsed with the strict parser "
        "of §3.1 first) or `raw_b64` (bytes that are not even UTF-8). With `now_ms` the "
        "envelope is verified as a submission (§4.3 step 6, freshness); without, as relayed. "
        "expected is {valid: true} or {error: {code, field}} (field null when none).",
        "cases": out,
    }


# -- (g) chain verification, step by step (PROTOCOL.md §7.3) ------------------------------


def resealed(record: Mapping[str, Any], identity: Identity, **changes: Any) -> dict[str, Any]:
    """`record` with `changes`, its hop `sig` and its `seal` made again by `identity`: a
    record that is genuinely signed, so only the changed rule can fail."""
    out = {k: v for k, v in {**record, **changes}.items() if k != "seal"}
    if "sig" not in changes:
        out["sig"] = identity.sign(f"{out['server']}:{out['t']}:{out['hash']}")
    if "seal" in record:
        out["seal"] = identity.sign(seal_payload(out))
    return out


def prototype_record(msg: Mapping[str, Any], server: str, identity: Identity, t: int) -> dict:
    """A prototype (unsealed) hop record over `msg`, as the prototype makes it."""
    digest = integrity_hash(msg)
    return {"server": server, "t": t, "hash": digest,
            "sig": identity.sign(f"{server}:{t}:{digest}"), "pub": identity.pub_b64()}  # fmt: skip


def one_record(msg: Mapping[str, Any], record: Mapping[str, Any]) -> dict[str, Any]:
    return with_chain(msg, [record])


ChainCase = tuple[str, str, str, dict[str, Any], list[str]]


def step_chain_cases() -> list[ChainCase]:
    """(name, rule, description, envelope, expected statuses). Each record fails (or
    holds) for the one reason its name gives; every other check of §7.3 holds."""
    msg = hops_message()
    after_a, after_x, _ = relay_states(msg)
    a_rec = after_x["integrity_chain"][0]
    sa, sx = A.identity, X.identity
    lone = make_hop(msg, A, next_hop=LOCAL_DELIVERY, now_ms=NOW + 1_000, cv=ChainVerdict.NONE)
    # Two honest paths of the same body through a.example -> x.example, a.example's
    # records made a second apart: x.example's record of the second path, after
    # a.example's record of the first, is sealed, numbered, addressed and about the right
    # body; only its prev link says it followed another record.
    other_a = append_hop(msg, A, next_hop=X.name, now_ms=NOW + 1_001)
    other_x = append_hop(other_a, X, next_hop=B.name, now_ms=NOW + 2_000)["integrity_chain"][1]
    published_from = PUBLISHED["a.example"][1].valid_from
    bcc_out = compose(
        ALICE, BOB.address, "Hello", bcc=[DAVE.address], now_ms=NOW,
        randbytes=det_randbytes("flux-vectors:chain-bh"),
    )  # fmt: skip
    primary, (_, copy) = bcc_out.primary, bcc_out.bcc_copies[0]
    copy_record = make_hop(
        copy, A, next_hop=LOCAL_DELIVERY, now_ms=NOW + 1_000, cv=ChainVerdict.NONE
    )
    other_msg = compose(ALICE, BOB.address, "Another body", now_ms=NOW,
                        randbytes=det_randbytes("flux-vectors:chain-other")).primary  # fmt: skip
    F, S, U = "failed", "sealed", "unsealed"
    cases: list[ChainCase] = [
        # step 1: the chain and each record's shape
        ("chain-not-a-list", "§7.3 step 1", "integrity_chain is a string",
         with_chain(msg, "x"), [F]),  # type: ignore[arg-type]
        ("chain-empty-string", "§7.3 step 1", "integrity_chain is \"\" (not an array, though "
         "empty)", with_chain(msg, ""), [F]),  # type: ignore[arg-type]
        ("chain-empty-object", "§7.3 step 1", "integrity_chain is {}",
         with_chain(msg, {}), [F]),  # type: ignore[arg-type]
        ("record-not-object", "§7.3 step 1", "the record is a string",
         with_chain(msg, ["a.example"]), [F]),
        ("record-extra-field", "§7.3 step 1", "a sealed record with a twelfth field, sealed",
         one_record(msg, resealed(lone, sa, note="x")), [F]),
        ("record-missing-field", "§7.3 step 1", "a sealed record without cv, sealed",
         one_record(msg, resealed({k: v for k, v in lone.items() if k != "cv"}, sa)), [F]),
        ("record-six-fields", "§7.3 step 1", "a prototype record plus i",
         one_record(msg, {**prototype_record(msg, "a.example", sa, NOW + 1_000), "i": 1}), [F]),
        ("sealed-server-not-a-name", "§2.4 / §7.3 step 1", "a sealed record's server is "
         "A.example (upper case)", one_record(msg, resealed(lone, sa, server="A.example")), [F]),
        ("sealed-server-local", "§7.3 step 1", "a sealed record in the name of local",
         one_record(msg, resealed(lone, sa, server="local")), [F]),
        ("prototype-server-label", "§7.1 / §13.11", "a prototype record names "
         "Mail.Example.com: a label, kept as written", one_record(
             msg, prototype_record(msg, "Mail.Example.com", sa, NOW + 1_000)), [U]),
        ("prototype-server-with-space", "§7.1 / §7.3 step 1", "a prototype record's server "
         "holds a space", one_record(msg, prototype_record(msg, "a example", sa, NOW)), [F]),
        ("prototype-server-local", "§7.3 step 1", "a prototype record in the name of local",
         one_record(msg, prototype_record(msg, "local", sa, NOW)), [F]),
        ("t-string", "§7.3 step 1", "t is a string", one_record(
            msg, resealed(lone, sa, t=str(NOW + 1_000))), [F]),
        ("t-boolean", "§7.3 step 1", "t is true", one_record(msg, resealed(lone, sa, t=True)), [F]),
        ("t-beyond-max", "§7.3 step 1", "t is 2^53", one_record(
            msg, resealed(lone, sa, t=2**53)), [F]),
        ("t-at-max", "§7.3 step 1", "t is 2^53 - 1, within a.example's open-ended key",
         one_record(msg, resealed(lone, sa, t=2**53 - 1)), [S]),
        ("no-chain-field", "§7.2", "no integrity_chain at all: an empty chain",
         {k: v for k, v in msg.items() if k != "integrity_chain"}, []),
        ("record-without-server", "§7.3 step 1", "a record with no server (named \"?\")",
         one_record(msg, {k: v for k, v in lone.items() if k != "server"}), [F]),
        ("record-server-not-string", "§7.3 step 1", "a record whose server is a number "
         "(named \"?\", not \"5\")", one_record(msg, {**lone, "server": 5}), [F]),
        ("record-pub-not-string", "§7.3 step 2", "pub is a number",
         one_record(msg, {**lone, "pub": 5}), [F]),
        ("hash-upper-case", "§7.3 step 1", "hash in upper-case hex", one_record(
            msg, resealed(lone, sa, hash=lone["hash"].upper())), [F]),
        ("i-string", "§7.3 step 1", "i is \"1\"", one_record(msg, resealed(lone, sa, i="1")), [F]),
        ("next-not-string", "§7.3 step 1", "next is null", one_record(
            msg, resealed(lone, sa, next=None)), [F]),
        ("cv-unknown", "§7.3 step 1", "cv is ok", one_record(msg, resealed(lone, sa, cv="ok")), [F]),
        ("prev-not-hex", "§7.3 step 1", "prev is 00", one_record(
            msg, resealed(lone, sa, prev="00")), [F]),
        ("bh-not-hex", "§7.3 step 1", "bh is upper-case hex", one_record(
            msg, resealed(lone, sa, bh=lone["bh"].upper())), [F]),
        # step 2: the prototype part of the record
        ("pub-wrong-length", "§7.3 step 2", "pub encodes 31 bytes", one_record(
            msg, {**lone, "pub": b64e(sa.public_key[:31])}), [F]),
        ("sig-wrong-length", "§7.3 step 2", "sig encodes 63 bytes, sealed", one_record(
            msg, resealed({**lone, "sig": b64e(bytes(63))}, sa, sig=b64e(bytes(63)))), [F]),
        ("hop-sig-invalid", "§7.3 step 2", "sig over another t; the seal (over that sig) "
         "verifies", one_record(msg, seal_only(lone, sa, sig=sa.sign(
             f"{lone['server']}:{lone['t'] + 1}:{lone['hash']}"))), [F]),
        ("prototype-sig-invalid", "§7.3 step 2", "a prototype record whose sig is over "
         "another t", one_record(msg, {**prototype_record(msg, "a.example", sa, NOW),
                                       "sig": prototype_record(msg, "a.example", sa, NOW + 1)["sig"]}),
         [F]),
        # step 3: hash
        ("hash-other-body", "§7.3 step 3", "a sealed record about another body, genuinely "
         "signed and sealed", one_record(msg, resealed(lone, sa, hash=integrity_hash(other_msg))),
         [F]),
        ("prototype-hash-other-body", "§7.3 step 3", "a prototype record about another body",
         one_record(msg, prototype_record(other_msg, "a.example", sa, NOW)), [F]),
        # step 5: the seal and the published key
        ("seal-wrong-length", "§7.3 step 5", "seal encodes 63 bytes",
         one_record(msg, {**lone, "seal": b64e(bytes(63))}), [F]),
        ("seal-not-base64url", "§7.3 step 5", "seal is not base64url",
         one_record(msg, {**lone, "seal": "not a seal"}), [F]),
        ("key-before-valid-from", "§7.3 step 5 / §10.1", "a.example's key, 1 ms before its "
         "valid_from", append_hop(msg, A, next_hop=LOCAL_DELIVERY, now_ms=published_from - 1),
         [F]),
        ("key-at-valid-from", "§7.3 step 5 / §10.1", "a.example's key at valid_from "
         "(inclusive)", append_hop(msg, A, next_hop=LOCAL_DELIVERY, now_ms=published_from), [S]),
        ("unknown-server", "§7.3 step 5", "a record of a server that publishes no key",
         append_hop(msg, ServerSigner("nobody.example", IDS["impostor"]),
                    next_hop=LOCAL_DELIVERY, now_ms=NOW), [F]),
        # step 6: i
        ("i-wrong", "§7.3 step 6", "the first record says i = 2, sealed",
         one_record(msg, resealed(lone, sa, i=2)), [F]),
        # step 7: prev
        ("first-prev-not-empty", "§7.3 step 7", "the first record's prev is a digest, sealed",
         one_record(msg, resealed(lone, sa, prev=record_hash(lone))), [F]),
        ("spliced", "§7.3 step 7", "a.example's record of one path, then x.example's record "
         "of another path of the same body: both genuinely sealed, numbered and addressed; "
         "only prev tells", with_chain(after_x, [a_rec, other_x]), [S, F]),
        # step 8: bh
        ("bh-other-body", "§7.3 step 8", "a record sealed over a BCC copy, attached to the "
         "primary: the same hash (it leaves out bcc), another bh",
         one_record(primary, copy_record), [F]),
        # step 9: next
        ("next-after-prototype", "§7.3 step 9", "no next to check after a prototype record",
         with_chain(msg, [prototype_record(msg, "a.example", sa, NOW),
                          make_hop(with_chain(msg, [prototype_record(msg, "a.example", sa, NOW)]),
                                   X, next_hop=LOCAL_DELIVERY, now_ms=NOW + 2_000,
                                   cv=ChainVerdict.PASS)]), [U, S]),
        # step 10: cv
        ("cv-none-after-first", "§7.3 step 10", "x.example seals cv = none as the second "
         "record", with_chain(msg, [a_rec, make_hop(after_a, X, next_hop=B.name,
                                                    now_ms=NOW + 2_000, cv=ChainVerdict.NONE)]),
         [S, F]),
        ("cv-pass-first", "§7.3 step 10", "the first record says cv = pass, sealed",
         one_record(msg, resealed(lone, sa, cv="pass")), [F]),
        ("cv-fail-after-first", "§7.3 step 10 / §7.2", "x.example declares fail as the second "
         "record: a well-formed verdict", append_hop(after_a, X, next_hop=B.name,
                                                      now_ms=NOW + 2_000, cv=ChainVerdict.FAIL),
         [S, S]),
        ("prototype-after-sealed", "§7.3 step 4", "a prototype record after a sealed one: "
         "unsealed, and the verdict is pass (it proves nothing either way)",
         with_chain(msg, [lone, prototype_record(msg, "x.example", sx, NOW + 2_000)]), [S, U]),
    ]  # fmt: skip
    return cases


def seal_only(record: Mapping[str, Any], identity: Identity, **changes: Any) -> dict[str, Any]:
    """`record` with `changes` and its seal made again, its hop `sig` left as given."""
    out = {k: v for k, v in {**record, **changes}.items() if k != "seal"}
    out["seal"] = identity.sign(seal_payload(out))
    return out


def step_chains() -> list[dict[str, Any]]:
    out = []
    for name, rule, text, envelope, statuses in step_chain_cases():
        expected = chain_result(envelope)
        got = [h["status"] for h in expected["hops"]]
        if got != statuses:
            raise AssertionError(f"chain vector {name}: the code gives {got}, not {statuses}")
        out.append({"name": name, "rule": rule, "description": text, "envelope": envelope,
                    "expected": expected})  # fmt: skip
    return out


# -- (h) blame and reports, step by step (PROTOCOL.md §7.4, §7.6) --------------------------


def x_seals(
    received: Mapping[str, Any], body: Mapping[str, Any] | None = None, **record_changes: Any
) -> dict[str, Any]:
    """x.example's sealed record, to b.example, over `body` (default: `received` as is),
    with `record_changes` made before sealing (so the seal is genuine)."""
    body = dict(body if body is not None else received)
    hop = make_hop(body, X, next_hop=B.name, now_ms=NOW + 2_000, cv=ChainVerdict.PASS)
    if record_changes:
        hop = resealed(hop, X.identity, **record_changes)
    route = [*(body.get("route") or []), {"server": X.name, "t": NOW + 2_000}]
    return {**body, "route": route, "integrity_chain": [*body["integrity_chain"], hop]}


def step_offense_cases() -> list[tuple[str, str, str, dict[str, Any], str, str | None]]:
    """(name, rule, description, envelope, receiver, expected kind or None)."""
    after_a = append_hop(tamper_message(), A, next_hop=X.name, now_ms=NOW + 1_000)
    forged = {**after_a, "content": "Pay 1000 EUR to Bob"}
    honest_x = make_hop(after_a, X, next_hop=B.name, now_ms=NOW + 2_000, cv=ChainVerdict.PASS)
    prototype_last = with_chain(
        forged,
        [*after_a["integrity_chain"], prototype_record(forged, X.name, X.identity, NOW + 2_000)],
    )
    unsigned = {k: v for k, v in forged.items() if k != "sig"}
    a_rec = after_a["integrity_chain"][0]
    return [
        # step 0
        ("blame-chain-not-a-list", "§7.4 step 0", "the chain is a string",
         {**forged, "integrity_chain": "x"}, B.name, None),
        ("blame-chain-empty", "§7.4 step 0", "no record at all", {**forged, "integrity_chain": []},
         B.name, None),
        ("blame-envelope-not-object", "§7.4 step 0", "the message is a JSON array", [forged],
         B.name, None),
        ("forged-body-at-chain-limit", "§7.4 step 0 / step 2", "31 genuine seals, then "
         "x.example's seal over a forged body as the 32nd record: judged",
         forged_at_chain_limit(), B.name, "forged_body"),
        # step 1: L must be sealed, published, and bound to this receiver, position, chain, body
        ("blame-last-unsealed", "§7.4 step 1", "x.example's last record over the forged body "
         "is a prototype record", prototype_last, B.name, None),
        ("blame-last-malformed", "§7.4 step 1", "x.example's seal over the forged body is "
         "genuine, but its cv is not a verdict", x_seals(forged, cv="ok"), B.name, None),
        ("blame-last-key-unpublished", "§7.4 step 1", "the forged body sealed in x.example's "
         "name by a key it does not publish", append_hop(forged, impersonate(X.name),
                                                       next_hop=B.name, now_ms=NOW + 2_000),
         B.name, None),
        ("blame-last-i-wrong", "§7.4 step 1", "x.example sealed the forged body with i = 3 "
         "(L.i must be n)", x_seals(forged, i=3), B.name, None),
        ("blame-last-prev-wrong", "§7.4 step 1", "x.example sealed the forged body with a prev "
         "that is not the previous record's hash", x_seals(forged, prev="0" * 64), B.name, None),
        ("blame-last-bh-wrong", "§7.4 step 1", "x.example sealed the original body's bh, and "
         "the body is the forged one", x_seals(forged, bh=body_hash(after_a)), B.name, None),
        ("blame-last-next-local", "§7.4 step 1", "x.example sealed the forged body for local "
         "delivery; b.example is not named", x_seals(forged, next="local"), B.name, None),
        # step 2: forged_body, every way the sender's key or signature can fail
        ("blame-sig-missing", "§7.4 step 2", "x.example sealed a body with no sig",
         x_seals(unsigned), B.name, "forged_body"),
        ("blame-pub-not-string", "§7.4 step 2", "x.example sealed a body whose pub is a number",
         x_seals({**after_a, "pub": 1}), B.name, "forged_body"),
        ("blame-pub-wrong-length", "§7.4 step 2", "x.example sealed a body whose pub is 31 bytes",
         x_seals({**after_a, "pub": b64e(ALICE.public_key[:31])}), B.name, "forged_body"),
        ("blame-sig-wrong-length", "§7.4 step 2", "x.example sealed a body whose sig is 63 bytes",
         x_seals({**after_a, "sig": b64e(b64d(after_a["sig"])[:63])}), B.name, "forged_body"),
        ("blame-from-missing", "§7.4 step 2", "x.example sealed a body without from",
         x_seals({k: v for k, v in after_a.items() if k != "from"}), B.name, "forged_body"),
        ("blame-forged-and-false-hop", "§7.4 step 2-3", "a forged body and a false hash: "
         "forged_body is named first", x_seals(forged, hash="0" * 64), B.name, "forged_body"),
        # step 3: false_hop
        ("false-hop-sig", "§7.4 step 3", "x.example's hash is right, its hop sig is over "
         "another t; its seal is genuine", with_chain(after_a, [a_rec, seal_only(
             honest_x, X.identity, sig=X.identity.sign(
                 f"{X.name}:{NOW + 2_001}:{honest_x['hash']}"))]), B.name, "false_hop"),
        ("false-hop-before-chain", "§7.4 step 3-5", "a false hash over a rewritten "
         "earlier record: false_hop is named first",
         x_seals(with_chain(after_a, [{**a_rec, "cv": "fail"}]), hash="0" * 64), B.name,
         "false_hop"),
        # step 5: broken_chain
        ("broken-chain-rewritten", "§7.4 step 5", "x.example changed a.example's cv and "
         "sealed pass over it (prev covers the rewritten record)",
         x_seals(with_chain(after_a, [{**a_rec, "cv": "fail"}])), B.name, "broken_chain"),
        ("broken-chain-first-prev", "§7.4 step 5", "the first committed record is the chain's "
         "first, and its prev is not \"\": x.example sealed pass over it",
         x_seals(with_chain(after_a, [resealed(a_rec, A.identity, prev="0" * 64)])), B.name,
         "broken_chain"),
        ("broken-chain-cv-none", "§7.4 step 5 / §7.3 step 10", "x.example sealed cv = none "
         "after a.example's record", x_seals(after_a, cv="none"), B.name, "broken_chain"),
        ("no-offense-after-middle-prototype", "§7.4 step 5", "a prototype record between "
         "a.example's and x.example's: the committed records start at it, and they hold",
         x_seals(with_chain(after_a, [a_rec, prototype_record(after_a, "c.example", C.identity,
                                                              NOW + 1_500)])), B.name, None),
        ("broken-chain-non-object-record", "§7.4 step 5 / §7.3 step 1", "x.example's prev "
         "links to a record that is the string \"seal\": committed, and not a record",
         x_seals(with_chain(after_a, [a_rec, "seal"])), B.name, "broken_chain"),
        ("no-offense-after-prototype", "§7.4 step 5", "a prototype record before x.example's: "
         "nothing before it is committed, and it holds",
         x_seals(with_chain(tamper_message(), [prototype_record(tamper_message(), A.name,
                                                                 A.identity, NOW + 1_000)])),
         B.name, None),
    ]  # fmt: skip


def forged_at_chain_limit() -> dict[str, Any]:
    """31 genuine seals alternately a.example's and x.example's (the last to x.example),
    then x.example's seal over a forged body to b.example: 32 records, within the limit."""
    msg = tamper_message()
    for k in range(MAX_ROUTE_HOPS - 1):
        here, there = (A, X) if k % 2 == 0 else (X, A)
        msg = sealed_unchecked(msg, here, there.name, NOW + 1_000 + k)
    forged = {**msg, "content": "Pay 1000 EUR to Bob"}
    return sealed_unchecked(forged, X, B.name, NOW + 2_000)


def step_offenses() -> list[dict[str, Any]]:
    out = []
    for name, rule, text, envelope, receiver, kind in step_offense_cases():
        expected = offense_result(find_offense(envelope, keys, receiver=receiver))
        got = expected and expected["kind"]
        if got != kind:
            raise AssertionError(f"offense vector {name}: the code gives {got}, not {kind}")
        out.append({"name": name, "rule": rule, "description": text, "receiver": receiver,
                    "envelope": envelope, "expected": expected})  # fmt: skip
    return out


def step_reports(genuine: dict[str, Any]) -> list[tuple[str, str, str, Any, str, str]]:
    """(name, rule, description, report, code, field) for §7.6 steps 1-3 and 7-9."""
    base = plain(genuine)
    without = lambda name: {k: v for k, v in base.items() if k != name}  # noqa: E731
    honest = honest_delivery()
    innocent = resigned(
        base,
        B,
        envelope=honest,
        integrity_chain=honest["integrity_chain"],
        msg_hash_baseline=integrity_hash(honest),
        offender=X.name,
    )
    empty = {**base["envelope"], "integrity_chain": []}
    too_long = chain_past_limit()
    IP = "invalid_proof"
    return [
        ("report-not-object", "§7.6 step 1", "the report is a list", [base], IP, "report"),
        *[(f"report-missing-{name}", "§7.6 step 1", f"no {name}", without(name), IP, name)
          for name in ("type", "msg_id", "offender", "reporter", "t", "sig", "pub",
                       "integrity_chain", "msg_hash_baseline", "kind", "envelope")],
        ("report-t-boolean", "§7.6 step 1", "t is true", {**base, "t": True}, IP, "t"),
        ("report-t-string", "§7.6 step 1", "t is a string", {**base, "t": str(base["t"])}, IP, "t"),
        ("report-envelope-not-object", "§7.6 step 1", "envelope is a list",
         {**base, "envelope": []}, IP, "envelope"),
        ("report-chain-not-list", "§7.6 step 1", "integrity_chain is an object",
         {**base, "integrity_chain": {}}, IP, "integrity_chain"),
        ("report-type-other", "§7.6 step 1", "type is report", {**base, "type": "report"}, IP,
         "type"),
        ("report-offender-not-name", "§7.6 step 1", "offender is X.example",
         resigned(base, B, offender="X.example"), IP, "offender"),
        ("report-reporter-not-name", "§7.6 step 1", "reporter is b example",
         {**base, "reporter": "b example"}, IP, "reporter"),
        ("report-offender-local", "§7.6 step 1 / §2.4", "offender is local (the pattern's "
         "one reserved match)", resigned(base, B, offender="local"), IP, "offender"),
        ("report-reporter-local", "§7.6 step 1 / §2.4", "reporter is local (a seal to local "
         "delivery names no reporter)", {**base, "reporter": "local"}, IP, "reporter"),
        ("report-kind-unknown", "§7.6 step 1", "kind is lying", {**base, "kind": "lying"}, IP,
         "kind"),
        ("report-chain-empty", "§7.6 / §7.4 step 0", "the envelope's chain is empty",
         {**base, "envelope": empty, "integrity_chain": [],
          "msg_hash_baseline": integrity_hash(empty)}, IP, "integrity_chain"),
        ("report-chain-past-limit", "§7.6 / §7.4 step 0", "33 records",
         {**base, "envelope": too_long, "integrity_chain": too_long["integrity_chain"],
          "msg_hash_baseline": integrity_hash(too_long)}, IP, "integrity_chain"),
        ("report-pub-wrong-length", "§7.6 step 2", "pub encodes 31 bytes",
         {**base, "pub": b64e(B.identity.public_key[:31])}, IP, "pub"),
        ("report-pub-not-base64url", "§7.6 step 2", "pub is not base64url",
         {**base, "pub": "not a key"}, IP, "pub"),
        ("report-sig-not-base64url", "§7.6 step 3", "sig is not base64url",
         {**base, "sig": "!!!!"}, IP, "sig"),
        ("report-sig-wrong-length", "§7.6 step 3", "sig encodes 63 bytes",
         {**base, "sig": b64e(bytes(63))}, IP, "sig"),
        ("report-innocent-envelope", "§7.6 step 7", "b.example reports an honest delivery "
         "x.example sealed to it", innocent, IP, "envelope"),
        ("report-kind-mismatch", "§7.6 step 9", "the genuine proof, reported as false_hop",
         {**base, "kind": "false_hop"}, IP, "kind"),
        ("report-retired-reporter-key", "§7.6 step 2 / §10.2", "a.example reports with its "
         "retired key after valid_until", report_by_retired_a(), "unknown_server_key", "pub"),
    ]  # fmt: skip


def report_by_retired_a() -> dict[str, Any]:
    """A genuine offense against x.example proven to a.example, reported under a.example's
    retired key after the key's valid_until."""
    after_b = append_hop(tamper_message(), B, next_hop=X.name, now_ms=NOW + 1_000)
    forged = {**after_b, "content": "Pay 1000 EUR to Bob"}
    delivered = append_hop(forged, X, next_hop=A.name, now_ms=NOW + 2_000)
    offense = find_offense(delivered, keys, receiver=A.name)
    assert offense is not None
    return build_report(offense, A_RETIRED, now_ms=NOW + 10_000)


# -- (i) signed server-to-server requests (PROTOCOL.md §10.3, docs/FEDERATION.md) --------

REQUEST_BODY = '{"txn":"vectors-1","from_server":"a.example","messages":[]}'
REQUEST_PATH = "/federation/deliver"
NOW_S = NOW // 1000


def signed_request(signer: ServerSigner = A, *, method: str = "POST", authority: str = "b.example",
                   path: str = REQUEST_PATH, body: str = REQUEST_BODY,
                   now_s: int = NOW_S) -> dict[str, str]:  # fmt: skip
    return sign_request(signer, method, authority, path, body.encode(), now_s=now_s)


def request_cases() -> list[tuple[str, str, str, dict[str, Any], str | None]]:
    """(name, rule, description, request, expected error field or None when valid).

    request: method, path, authority (the receiver's own name), host (the Host header, or
    null: not checked), headers, body (UTF-8 text), now_s."""
    good = signed_request()

    def req(headers: Mapping[str, str] | None = None, **more: Any) -> dict[str, Any]:
        base = {"method": "POST", "path": REQUEST_PATH, "authority": "b.example",
                "host": "b.example", "headers": dict(good if headers is None else headers),
                "body": REQUEST_BODY, "now_s": NOW_S}  # fmt: skip
        return {**base, **more}

    def edit(**changes: str | None) -> dict[str, str]:
        out = {**good, **changes}
        return {k: v for k, v in out.items() if v is not None}

    sig_input = good["Signature-Input"]
    other_body = REQUEST_BODY.replace("vectors-1", "vectors-2")
    retired_at = RETIRED_UNTIL // 1000
    return [
        ("valid", "§10.6", "a.example's request to b.example", req(), None),
        ("valid-no-host-check", "§10.6", "the same, the Host header not given", req(host=None),
         None),
        ("valid-host-default-port", "§10.6", "Host b.example:443 is b.example", req(
            host="b.example:443"), None),
        ("valid-host-upper-case", "§10.6", "Host names are case-insensitive", req(
            host="B.Example"), None),
        ("valid-method-lower-case", "§10.6", "@method is upper-cased in the base",
         req(method="post"), None),
        ("created-oldest", "§10.6", "created = now - 300 s", req(now_s=NOW_S + 300), None),
        ("created-newest", "§10.6", "created = now + 300 s", req(now_s=NOW_S - 300), None),
        ("created-too-old", "§10.6", "created = now - 301 s", req(now_s=NOW_S + 301),
         "Signature-Input"),
        ("created-too-new", "§10.6", "created = now + 301 s", req(now_s=NOW_S - 301),
         "Signature-Input"),
        ("digest-missing", "§10.6 / RFC 9530", "no Content-Digest", req(edit(**{"Content-Digest": None})),
         "Content-Digest"),
        ("digest-other-body", "§10.6 / RFC 9530", "the body changed after signing",
         req(body=other_body), "Content-Digest"),
        ("digest-other-algorithm", "§10.6 / RFC 9530", "a sha-512 digest",
         req(edit(**{"Content-Digest": good["Content-Digest"].replace("sha-256", "sha-512")})),
         "Content-Digest"),
        ("digest-not-base64", "§10.6 / RFC 9530", "the digest is not base64",
         req(edit(**{"Content-Digest": "sha-256=:!!!!:"})), "Content-Digest"),
        ("digest-matching-other-body", "§10.6", "body and digest both replaced: the signature "
         "covers the digest", req(edit(**{"Content-Digest": content_digest(other_body.encode())}),
                                  body=other_body), "Signature"),
        ("input-missing", "§10.6 / RFC 9421", "no Signature-Input",
         req(edit(**{"Signature-Input": None})), "Signature-Input"),
        ("input-other-components", "§10.6 / RFC 9421", "content-digest not covered",
         req(edit(**{"Signature-Input": sig_input.replace(' "content-digest"', "")})),
         "Signature-Input"),
        ("input-other-label", "§10.6 / RFC 9421", "label sig1 instead of flux",
         req(edit(**{"Signature-Input": "sig1" + sig_input[4:]})), "Signature-Input"),
        ("input-other-alg", "§10.6 / RFC 9421", "alg rsa-pss-sha512",
         req(edit(**{"Signature-Input": sig_input.replace("ed25519", "rsa-pss-sha512")})),
         "Signature-Input"),
        ("input-keyid-not-a-name", "§10.6", "keyid A.example",
         req(edit(**{"Signature-Input": sig_input.replace('"a.example"', '"A.example"')})),
         "Signature-Input"),
        ("input-keyid-local", "§10.6 / §2.4", "keyid local: the pattern matches, but it names "
         "no server", req(edit(**{"Signature-Input": sig_input.replace('"a.example"',
                                                                       '"local"')})),
         "Signature-Input"),
        ("host-other-server", "§10.6", "a request for b.example, received by c.example (Host "
         "c.example)", req(authority="c.example", host="c.example"), "Signature"),
        ("no-host-digest-other-body", "§10.6", "the body changed, checked in one call",
         req(body=other_body, host=None), "Content-Digest"),
        ("no-host-signature-other-path", "§10.6", "signed for another path, checked in one call",
         req(signed_request(path="/federation/other"), host=None), "Signature"),
        ("host-mismatch", "§10.6", "the Host header names another server",
         req(host="c.example"), "@authority"),
        ("signature-missing", "§10.6 / RFC 9421", "no Signature", req(edit(Signature=None)),
         "Signature"),
        ("signature-other-label", "§10.6 / RFC 9421", "Signature labelled sig1",
         req(edit(Signature="sig1" + good["Signature"][4:])), "Signature"),
        ("signature-not-base64", "§10.6 / RFC 9421", "Signature is flux=:!!!!:",
         req(edit(Signature="flux=:!!!!:")), "Signature"),
        ("signature-other-method", "§10.6", "signed as GET, sent as POST",
         req(signed_request(method="GET")), "Signature"),
        ("signature-other-path", "§10.6", "signed for /federation/other",
         req(signed_request(path="/federation/other")), "Signature"),
        ("signature-other-authority", "§10.6", "signed for c.example, sent to b.example",
         req(signed_request(authority="c.example")), "Signature"),
        ("signature-unpublished-key", "§10.6 / §10.1", "signed as a.example by a key it does "
         "not publish", req(signed_request(impersonate(A.name))), "Signature"),
        ("signature-retired-key", "§10.2", "signed with a.example's retired key after its "
         "valid_until", req(signed_request(A_RETIRED)), "Signature"),
        ("key-valid-within-the-second", "§10.6 / §10.1", "d.example's key is valid from "
         "NOW + 1 to NOW + 998 ms; created = NOW (s) covers it (the key is valid inside "
         "that second, at neither end)", req(signed_request(D)), None),
        ("key-valid-before-the-second", "§10.6 / §10.1", "the same key, created one second "
         "later: no moment of that second is covered",
         req(signed_request(D, now_s=NOW_S + 1), now_s=NOW_S + 1), "Signature"),
        ("key-valid-from-the-last-ms", "§10.6 / §10.1", "e.example's key is valid from "
         "NOW + 999 ms, the last millisecond of the second created = NOW (s) names: it counts",
         req(signed_request(E)), None),
        ("key-valid-from-the-next-second", "§10.6 / §10.1", "f.example's key is valid from "
         "NOW + 1000 ms, the first of the next second: created = NOW (s) is not covered",
         req(signed_request(F)), "Signature"),
        ("signature-overlapping-keys", "§10.2", "a.example's current key, at a time both its "
         "keys cover: the retired one (listed first) does not verify, the current one does",
         req(signed_request(A, now_s=retired_at), now_s=retired_at), None),
        ("authority-with-default-port", "§10.6", "a receiver named b.example:443, Host "
         "b.example", req(signed_request(authority="b.example:443"), authority="b.example:443"),
         None),
        ("authority-other-port", "§10.6", "a receiver named b.example:8443, Host b.example",
         req(signed_request(authority="b.example:8443"), authority="b.example:8443"),
         "@authority"),
        ("host-http-default-port", "§10.6", "Host b.example:80 is b.example",
         req(host="b.example:80"), None),
        ("digest-bad-padding", "§10.6 / RFC 9530", "the digest is A= (not base64)",
         req(edit(**{"Content-Digest": "sha-256=:A=:"})), "Content-Digest"),
        ("signature-bad-padding", "§10.6 / RFC 9421", "the signature is A= (not base64)",
         req(edit(Signature="flux=:A=:")), "Signature"),
        ("signature-retired-key-in-time", "§10.2", "signed with the retired key at "
         "valid_until", req(signed_request(A_RETIRED, now_s=retired_at), now_s=retired_at), None),
        # one spelling of each value, one member per header: a second header line is a
        # second member (RFC 9110 §5.3), so these are also what two lines of one name join to
        ("input-created-leading-zero", "§10.6", "created=01767225600 (RFC 8941 writes no "
         "leading zero)", req(edit(**{"Signature-Input": sig_input.replace("created=",
                                                                           "created=0")})),
         "Signature-Input"),
        ("input-two-members", "§10.6 / RFC 9421", "a second signature's parameters after the "
         "first (or on a second header line)", req(edit(**{"Signature-Input": sig_input + ", "
                                                          + "sig2" + sig_input[4:]})),
         "Signature-Input"),
        ("signature-two-members", "§10.6 / RFC 9421", "the valid signature twice (or on two "
         "header lines)", req(edit(Signature=good["Signature"] + ", " + good["Signature"])),
         "Signature"),
        ("digest-two-members", "§10.6 / RFC 9530", "the valid digest and a sha-512 one (or two "
         "header lines)", req(edit(**{"Content-Digest": good["Content-Digest"] + ", sha-512=:"
                                      + base64.b64encode(bytes(64)).decode() + ":"})),
         "Content-Digest"),
    ]  # fmt: skip


def run_request_vector(request: Mapping[str, Any]) -> dict[str, Any]:
    """What the receiving server does with one request vector."""
    headers = request["headers"]
    body = request["body"].encode()
    try:
        if request["host"] is None:  # the whole check in one call
            signed = verify_request(request["method"], request["path"], headers, body,
                                    keys=keys, now_s=request["now_s"],
                                    authority=request["authority"])  # fmt: skip
        else:
            checked = check_request(headers, body, now_s=request["now_s"],
                                    authority=request["authority"], host=request["host"])  # fmt: skip
            signed = verify_checked(request["method"], request["path"], checked, keys=keys,
                                    authority=request["authority"])  # fmt: skip
    except FluxError as exc:
        return {"error": {"code": exc.code, "field": exc.field}}
    return {"server": signed.server, "created": signed.created}


def signed_requests() -> dict[str, Any]:
    cases = []
    for name, rule, text, request, field in request_cases():
        got = run_request_vector(request)
        want = field and {"code": "bad_request_signature", "field": field}
        if got.get("error") != want:
            raise AssertionError(f"request vector {name}: the code gives {got}, not {want}")
        claimed = claimed_server(request["headers"])
        cases.append({"name": name, "rule": rule, "description": text, "request": request,
                      "claimed_server": claimed, "expected": got})  # fmt: skip
    good = cases[0]["request"]
    params = good["headers"]["Signature-Input"].removeprefix("flux=")
    base = signature_base(good["method"], good["authority"], good["path"],
                          good["headers"]["Content-Digest"], params)  # fmt: skip
    return {
        "description": "server-to-server request signatures (PROTOCOL.md §10.3; RFC 9421 "
        "with FLUX's fixed profile). Each request is checked as the receiver `authority` "
        "would at `now_s` (unix seconds), under published_keys, with its Host header `host` "
        "(null: not checked). expected is {server, created} or {error: {code, field}}; "
        "`signature_base` is the exact text the valid request's Signature signs.",
        "signature_base": base.decode("ascii"),
        "cases": cases,
    }


# -- (j) the canonical form (PROTOCOL.md §3) ----------------------------------------------


def canonical_cases() -> list[tuple[str, str, str, str, str | None]]:
    """(name, rule, description, raw JSON text, canonical text or None when refused)."""
    return [
        ("keys-sorted-at-every-depth", "§3.2", "members sorted by key, nested too",
         '{"b": 1, "a": {"d": [3, {"z": 1, "y": 2}], "c": null}}',
         '{"a":{"c":null,"d":[3,{"y":2,"z":1}]},"b":1}'),
        ("keys-code-point-order", "§3.2", "U+FFFF sorts before U+1F600 (code points, not "
         "UTF-16 units)", '{"\\ud83d\\ude00": 1, "\\uffff": 2, "z": 3, "Z": 4}',
         '{"Z":4,"z":3,"\\uffff":2,"\\ud83d\\ude00":1}'),
        ("short-escapes", "§3.2", "the five short escapes, quote and backslash",
         '"\\"\\\\\\b\\f\\n\\r\\t"', '"\\"\\\\\\b\\f\\n\\r\\t"'),
        ("other-controls", "§3.2", "other controls and U+007F as lower-case \\u escapes",
         '"\\u0000\\u001F\\u007f\\u000B"', '"\\u0000\\u001f\\u007f\\u000b"'),
        ("non-ascii", "§3.2", "non-ASCII as \\u escapes, beyond the BMP as a surrogate pair",
         '"é€👋"', '"\\u00e9\\u20ac\\ud83d\\udc4b"'),
        ("printable-ascii", "§3.2", "printable ASCII as itself, / < > & ' included",
         '"\\/<>&\' ~"', '"/<>&\' ~"'),
        ("escaped-ascii", "§3.2", "an escaped printable character is written as itself",
         '"\\u0041"', '"A"'),
        ("integers", "§3.2", "shortest form; -0 is 0", "[0, -0, 10, -7, 9007199254740991, "
         "-9007199254740991]", "[0,0,10,-7,9007199254740991,-9007199254740991]"),
        ("literals", "§3.2", "true, false, null, empty containers",
         '[true, false, null, {}, []]', "[true,false,null,{},[]]"),
        ("whitespace", "§3.1", "space, tab, LF and CR around and between tokens",
         ' \t\r\n[ 1 ,\n{ "a" :\t2 } ]\n', '[1,{"a":2}]'),
        ("top-level-string", "§3.1", "any value may be at the top", '"x"', '"x"'),
        ("trailing-value", "§3.1", "two values", "1 2", None),
        ("trailing-letter", "§3.1", "a letter after the value is not whitespace", "{}X", None),
        ("leading-letter", "§3.1", "a letter before the value is not whitespace", "X{}", None),
        ("empty-text", "§3.1", "no value at all", "", None),
        ("byte-order-mark", "§3.1", "a UTF-8 BOM before the value is not whitespace",
         "\ufeff{}", None),
        ("vertical-tab", "§3.1", "U+000B is not JSON whitespace", "\u000b{}", None),
        ("trailing-comma", "§3.1", "[1,]", "[1,]", None),
        ("single-quotes", "§3.1", "'a'", "'a'", None),
        ("bad-escape", "§3.1", "\\x is not an escape", '"\\x41"', None),
        ("raw-control-in-string", "§3.1", "an unescaped LF inside a string", '"a\nb"', None),
        ("leading-zero", "§3.1", "01", "01", None),
        ("plus-sign", "§3.1", "+1", "+1", None),
        ("float-zero", "§3.1", "0.0", "0.0", None),
        ("exponent-integer", "§3.1", "1e3 (an integer value, but written with an exponent)",
         "1e3", None),
        ("lone-low-surrogate", "§3.1", "\\udc00 alone", '"\\udc00"', None),
        ("reversed-surrogates", "§3.1", "low then high surrogate", '"\\udc00\\ud800"', None),
        ("duplicate-key-nested", "§3.1", "a duplicate key inside a nested object",
         '{"a": {"b": 1, "b": 1}}', None),
        ("depth-64", "§3.1", "64 nested arrays", "[" * 64 + "]" * 64, "[" * 64 + "]" * 64),
        ("depth-65", "§3.1", "65 nested arrays", "[" * 65 + "]" * 65, None),
        ("depth-65-objects", "§3.1", "65 nested levels, objects and arrays",
         '{"a":' * 33 + "[" * 32 + "]" * 32 + "}" * 33, None),
    ]  # fmt: skip


def canonical() -> dict[str, Any]:
    cases = []
    for name, rule, text, raw, want in canonical_cases():
        try:
            got: dict[str, Any] = {"canonical": canonical_json(loads_strict(raw))}
        except FluxError as exc:
            got = {"error": {"code": exc.code, "field": exc.field}}
        expected = {"canonical": want} if want is not None else {
            "error": {"code": "malformed_json", "field": None}}  # fmt: skip
        if got != expected:
            raise AssertionError(f"canonical vector {name}: the code gives {got}, not {expected}")
        cases.append({"name": name, "rule": rule, "description": text, "raw": raw,
                      "expected": expected})  # fmt: skip
    return {
        "description": "Parse `raw` strictly (PROTOCOL.md §3.1) and serialise it canonically "
        "(§3.2): expected is {canonical: text} or {error: {code: malformed_json}}.",
        "cases": cases,
    }


# -- (k) key files (PROTOCOL.md §2.3) -----------------------------------------------------


def key_file_cases() -> list[tuple[str, str, str, str, str | None, bool]]:
    """(name, description, key file text, passphrase, expected address or None, protected)."""
    plain_file = ALICE.to_keyfile()
    sealed_file = sealed_key_file(ALICE, "correct horse", det_randbytes("flux-vectors:key-file"))
    sealed = json.loads(sealed_file)
    as_text = lambda value: json.dumps(value)  # noqa: E731
    return [
        ("sealed-by-flux", "FLUX's own writer (scrypt n = 32768), randomness "
         "det_randbytes('flux-vectors:key-file-flux')", ALICE.to_keyfile(
             "correct horse", det_randbytes("flux-vectors:key-file-flux")), "correct horse",
         ALICE.address, True),
        ("plain", "the prototype's key file", plain_file, None, ALICE.address, False),
        ("plain-without-address", "no address: it is the key's",
         as_text({"private_key": ALICE.private_b64()}), None, ALICE.address, False),
        ("plain-address-mismatch", "the address is bob's",
         as_text({"address": BOB.address, "private_key": ALICE.private_b64()}), None, None,
         False),
        ("plain-seed-wrong-length", "the seed is 31 bytes",
         as_text({"address": ALICE.address, "private_key": b64e(ALICE.seed[:31])}), None, None,
         False),
        ("plain-seed-not-base64url", "the seed is not base64url",
         as_text({"address": ALICE.address, "private_key": "not a seed"}), None, None, False),
        ("not-json", "not JSON", "address: fx1...", None, None, False),
        ("not-an-object", "a JSON array", "[]", None, None, False),
        ("no-key", "neither private_key nor private_key_enc",
         as_text({"address": ALICE.address}), None, None, False),
        ("sealed", "passphrase-protected (scrypt, AES-256-GCM)", sealed_file, "correct horse",
         ALICE.address, True),
        ("sealed-wrong-passphrase", "the wrong passphrase", sealed_file, "Correct horse", None,
         True),
        ("sealed-no-passphrase", "no passphrase given", sealed_file, None, None, True),
        ("sealed-without-address", "no address member: the associated data is the empty "
         "string, and the address is the key's", sealed_key_file(
             ALICE, "correct horse", det_randbytes("flux-vectors:key-file-no-address"),
             address=False), "correct horse", ALICE.address, True),
        ("sealed-address-removed", "the writer's file without its address: sealed under the "
         "address, opened with the empty string", as_text(
             {k: v for k, v in sealed.items() if k != "address"}), "correct horse", None, True),
        ("sealed-other-address", "the address (the AEAD's associated data) changed",
         as_text({**sealed, "address": BOB.address}), "correct horse", None, True),
        ("sealed-other-kdf", "kdf name is argon2id", as_text(
            {**sealed, "kdf": {**sealed["kdf"], "name": "argon2id"}}), "correct horse", None,
         True),
        ("sealed-other-salt", "another salt: another key", as_text(
            {**sealed, "kdf": {**sealed["kdf"], "salt": b64e(bytes(16))}}), "correct horse",
         None, True),
        ("sealed-truncated", "private_key_enc cut short", as_text(
            {**sealed, "private_key_enc": b64e(b64d(sealed["private_key_enc"])[:20])}),
         "correct horse", None, True),
        ("sealed-kdf-missing-n", "kdf without n", as_text(
            {**sealed, "kdf": {k: v for k, v in sealed["kdf"].items() if k != "n"}}),
         "correct horse", None, True),
    ]  # fmt: skip


#: scrypt's cost in the vectors' sealed key file: a reader takes n, r and p from the file,
#: so a cheap n keeps the vectors fast (FLUX writes n = 32768, PROTOCOL.md §2.3).
VECTOR_SCRYPT = {"n": 1024, "r": 8, "p": 1}


def sealed_key_file(
    identity: Identity, passphrase: str, randbytes: Callable[[int], bytes], *, address: bool = True
) -> str:
    """A passphrase-protected key file exactly as §2.3 defines it, with VECTOR_SCRYPT.
    `address=False`: without an `address` member, so sealed with the empty string as the
    associated data (what a reader uses then; no conforming writer makes such a file)."""
    salt = randbytes(16)
    key = _aead.scrypt(passphrase.encode("utf-8"), salt, **VECTOR_SCRYPT)
    aad = identity.address.encode("ascii") if address else b""
    sealed = _aead.seal(key, identity.seed, randbytes(12), aad)
    return json.dumps({**({"address": identity.address} if address else {}),
                       "private_key_enc": b64e(sealed),
                       "kdf": {"name": "scrypt", "salt": b64e(salt), **VECTOR_SCRYPT}})  # fmt: skip


def key_files() -> dict[str, Any]:
    cases = []
    for name, text, key_file, passphrase, address, protected in key_file_cases():
        try:
            got: dict[str, Any] = {"address": Identity.from_keyfile(key_file, passphrase).address}
        except FluxError as exc:
            got = {"error": {"code": exc.code, "field": exc.field}}
        want = {"address": address} if address else {"error": {"code": "bad_key_file",
                                                                "field": None}}  # fmt: skip
        if got != want:
            raise AssertionError(f"key file vector {name}: the code gives {got}, not {want}")
        assert keyfile_is_protected(key_file) is protected, name
        cases.append({"name": name, "rule": "§2.3", "description": text, "key_file": key_file,
                      "passphrase": passphrase, "protected": protected, "expected": want})  # fmt: skip
    return {
        "description": "Open `key_file` (its JSON text) with `passphrase` (PROTOCOL.md §2.3): "
        "expected is {address} or {error: {code: bad_key_file}}. `protected` says whether "
        "the file holds the seed sealed under a passphrase. The sealed file was made with "
        "det_randbytes('flux-vectors:key-file') (salt 16 bytes, then nonce 12) and scrypt "
        "n = 1024 (a reader takes n, r, p from the file).",
        "cases": cases,
    }


# -- (l) spam heuristics (PROTOCOL.md §8.2) -----------------------------------------------


def spam_cases() -> list[tuple[str, str, str, str | None, list[str]]]:
    """(name, description, content, subject, expected reasons)."""
    return [
        ("clean", "an ordinary message", "Lunch tomorrow at noon?", "Lunch", []),
        ("empty", "empty content", "", None, ["empty content"]),
        ("whitespace-only", "only whitespace", " \n\t ", None, ["empty content"]),
        ("repetitive", "18 of 20 characters are 'a' (90 %)", "a" * 18 + "bc", None,
         ["repetitive content"]),
        ("repetitive-boundary", "17 of 20 (85 %): not more than 85 %", "a" * 17 + "bcd", None,
         []),
        ("repetitive-short", "10 characters are never judged", "a" * 10, None, []),
        ("repetitive-11", "11 identical characters", "a" * 11, None, ["repetitive content"]),
        ("urls-excessive", "one URL in 39 characters: 1 / (39/200) > 5",
         "see http://x.example/" + "-" * 18, None, ["excessive URLs"]),
        ("urls-boundary", "one URL in 40 characters: 1 / (40/200) = 5, not more",
         "see http://x.example/" + "-" * 19, None, []),
        ("urls-case-insensitive", "HTTPS:// counts too", "HTTPS://x.example/a b c", None,
         ["excessive URLs"]),
        ("keywords-4", "winner (2) + click here (2) = 4", "You are a winner, click here",
         None, ["spam keyword score 4"]),
        ("keywords-3", "claim your prize (3) alone", "Please claim your prize today", None, []),
        ("keywords-once-each", "winner twice counts once (2)", "winner winner dinner", None, []),
        ("keywords-in-subject", "content winner (2), subject click here (2)", "You are a winner",
         "click here", ["spam keyword score 4"]),
        ("keywords-across-the-join", "the text is content + \" \" + subject: winner (2) and "
         "click here (2), a phrase that only the joining space makes", "You are a winner, click",
         "here", ["spam keyword score 4"]),
        ("keywords-case", "upper-case phrases count", "FREE MONEY, ACT NOW", None,
         ["spam keyword score 5"]),
        ("subject-abusive", "act now (2) + a run of capitals + !!!: 4",
         "act now please", "URGENT!!!", ["abusive subject line"]),
        ("subject-capitals-only", "act now (2) + capitals: 3", "act now please", "URGENT", []),
        ("subject-short-capitals", "four capitals are not a run", "act now please", "URGE!!!",
         []),
        ("every-reason", "empty content, and a subject scoring 4 in keywords", "",
         "winner click here", ["empty content", "spam keyword score 4"]),
        ("encrypted-placeholder", "an encrypted message is judged on [encrypted]",
         "[encrypted]", "Secret", []),
    ]  # fmt: skip


def spam() -> dict[str, Any]:
    cases = []
    for name, text, content, subject, reasons in spam_cases():
        msg = {"content": content, **({"subject": subject} if subject is not None else {})}
        verdict = check_spam(msg, None, NOW)
        if list(verdict.reasons) != reasons:
            raise AssertionError(f"spam vector {name}: the code gives {verdict.reasons}")
        cases.append({"name": name, "rule": "§8.2", "description": text, "content": content,
                      "subject": subject, "expected_reasons": reasons,
                      "expected_score": verdict.score})  # fmt: skip
    limiter, hits = RateLimiter(), []
    times = [NOW + k for k in range(21)] + [NOW + 60_000, NOW + 60_000]
    for t in times:
        hits.append({"t": t, "over_limit": limiter.hit(ALICE.address, t)})
    rate = {
        "name": "rate-limit", "rule": "§8.2",
        "description": "one sender's messages at these times: over the limit is the 21st in "
        "any 60 s (a refused message is not counted; a hit 60,000 ms old has left the window)",
        "from": ALICE.address, "limit": 20, "window_ms": 60_000, "hits": hits,
    }  # fmt: skip
    assert [h["over_limit"] for h in hits] == [False] * 20 + [True, False, True]
    return {
        "description": "check the content heuristics of PROTOCOL.md §8.2 on {content, "
        "subject}: expected_reasons in order (the rate is judged apart, `rate`). "
        "expected_score (the keyword score, plus the subject's points when it is judged) is "
        "informative.",
        "cases": cases,
        "rate": rate,
    }


# -- (m) legacy tokens (PROTOCOL.md §10.4) ------------------------------------------------


def legacy_tokens() -> list[dict[str, Any]]:
    out = []
    for name, address, secret in (("alice", ALICE.address, "s3cret"),
                                  ("unicode-secret", BOB.address, "pässwörd")):  # fmt: skip
        token = legacy_token(address, secret)
        out.append({"name": name, "rule": "§10.4", "address": address, "secret": secret,
                    "token": token, "rejected": [token.upper(), token[:-1], legacy_token(
                        address, secret + " ")]})  # fmt: skip
        assert legacy_token_matches(address, secret, token)
        assert not any(legacy_token_matches(address, secret, t) for t in out[-1]["rejected"])
    return out


# -- (n) decryption (PROTOCOL.md §6.2) ----------------------------------------------------


def decryption() -> dict[str, Any]:
    out = compose(
        ALICE, BOB.address, "Decrypt me", cc=[CAROL.address],
        encrypt_for={BOB.address: BOB.pub_b64(), CAROL.address: CAROL.pub_b64()},
        now_ms=NOW, randbytes=det_randbytes("flux-vectors:decryption"),
    )  # fmt: skip
    env = out.primary
    blobs = env["enc_recipients"]
    bob_blob = b64d(blobs[BOB.address])
    cek = unwrap_cek(blobs[BOB.address], BOB)
    short_cek = wrap_cek(cek[:16], BOB.public_key, det_randbytes("flux-vectors:short-cek"))
    small_order = b64e(bytes(32) + bob_blob[32:])  # E is the all-zero point
    content = b64d(env["content_enc"])
    seed = json.loads(SEED_VECTORS.read_text(encoding="utf-8"))["encrypted"][0]
    empty = compose(
        ALICE, BOB.address, "", encrypt_for={BOB.address: BOB.pub_b64()}, now_ms=NOW,
        randbytes=det_randbytes("flux-vectors:decryption-empty"),
    ).primary  # fmt: skip
    with_blob = lambda blob: {**env, "enc_recipients": {**blobs, BOB.address: blob}}  # noqa: E731
    cases: list[tuple[str, str, dict[str, Any], str, str | None]] = [
        ("bob", "bob decrypts", env, "bob", "Decrypt me"),
        ("carol", "carol (cc) decrypts", env, "carol", "Decrypt me"),
        ("sender", "the sender decrypts what it sent", env, "alice", "Decrypt me"),
        ("not-a-recipient", "dave has no blob", env, "dave", None),
        ("empty-plaintext", "an empty content: content_enc is nonce and tag only (28 bytes)",
         empty, "bob", ""),
        ("plain", "a plain message: its content", sender_plain(), "bob", "Hello Bob"),
        ("prototype", "the prototype's encrypted message (seed-v1.json)", seed["envelope"],
         next(label for label, i in IDS.items() if i.address in seed["envelope"]["to"]),
         seed["plaintext"]),
        ("blob-of-another", "bob's entry holds carol's blob", with_blob(blobs[CAROL.address]),
         "bob", None),
        ("blob-short", "bob's blob is 59 bytes", with_blob(b64e(bob_blob[:59])), "bob", None),
        ("blob-not-base64url", "bob's blob is not base64url", with_blob("!!!!"), "bob", None),
        ("blob-tag-flipped", "the last byte of bob's blob flipped", with_blob(
            b64e(bob_blob[:-1] + bytes([bob_blob[-1] ^ 1]))), "bob", None),
        ("blob-small-order-ephemeral", "the ephemeral key is the all-zero point",
         with_blob(small_order), "bob", None),
        ("blob-short-cek", "the blob wraps a 16-byte CEK", with_blob(short_cek), "bob", None),
        ("content-tag-flipped", "the last byte of content_enc flipped",
         {**env, "content_enc": b64e(content[:-1] + bytes([content[-1] ^ 1]))}, "bob", None),
        ("content-short", "content_enc is 27 bytes", {**env, "content_enc": b64e(content[:27])},
         "bob", None),
        ("content-not-base64url", "content_enc is not base64url",
         {**env, "content_enc": "!!!!"}, "bob", None),
        ("content-not-utf8", "content_enc opens to bytes that are not UTF-8",
         {**env, "content_enc": b64e(_seal(cek, b"\xff\xfe"))}, "bob", None),
    ]  # fmt: skip
    result = []
    for name, text, envelope, reader, plaintext in cases:
        try:
            got: dict[str, Any] = {"plaintext": decrypt_content(envelope, IDS[reader])}
        except FluxError as exc:
            got = {"error": {"code": exc.code}}
        code = "not_a_recipient" if name == "not-a-recipient" else "decryption_failed"
        want = {"plaintext": plaintext} if plaintext is not None else {"error": {"code": code}}
        if got != want:
            raise AssertionError(f"decryption vector {name}: the code gives {got}, not {want}")
        result.append({"name": name, "rule": "§6.2", "description": text, "envelope": envelope,
                       "reader": reader, "expected": want})  # fmt: skip
    return {
        "description": "decrypt `envelope` as `reader` (an identity label), PROTOCOL.md §6.2: "
        "expected is {plaintext} or {error: {code}} (decryption_failed says nothing of the "
        "step that failed).",
        "cases": result,
    }


def _seal(key: bytes, plaintext: bytes) -> bytes:
    """nonce ‖ AES-256-GCM(key, plaintext) ‖ tag, with a fixed nonce (vectors only)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = bytes(12)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, None)


def sender_plain() -> dict[str, Any]:
    return envelope_message()


# -- (o) composing (PROTOCOL.md §5.1-§5.3) and bounces (§10.3) ----------------------------


def compose_cases() -> list[tuple[str, str, str, dict[str, Any]]]:
    keys_for = lambda *people: {p.address: p.pub_b64() for p in people}  # noqa: E731
    return [
        ("dedupe", "§5.1", "cc without duplicates or to; bcc without to, cc or duplicates; "
         "tags lower-cased, deduplicated, sorted; empty subject left out; expires 0 kept",
         {"to": BOB.address, "content": "Hi", "subject": "",
          "cc": [CAROL.address, CAROL.address, BOB.address],
          "bcc": [DAVE.address, CAROL.address, BOB.address, DAVE.address],
          "tags": ["Work", "work", "B", "a"], "expires": 0}),
        ("reply", "§5.1", "a reply: re is the id replied to",
         {"to": BOB.address, "content": "Re: hi", "reply_to": "ab" * 16}),
        ("no-cc-left", "§5.1", "cc holding only to is left out",
         {"to": BOB.address, "content": "Hi", "cc": [BOB.address]}),
        ("encrypt-missing-key", "§5.3 step 2", "no key for the cc recipient",
         {"to": BOB.address, "content": "x", "cc": [CAROL.address],
          "encrypt_for": keys_for(BOB)}),
        ("encrypt-missing-bcc-key", "§5.3 step 2", "no key for the bcc recipient",
         {"to": BOB.address, "content": "x", "bcc": [DAVE.address],
          "encrypt_for": keys_for(BOB)}),
        ("encrypt-wrong-key", "§5.3 step 2", "carol's key given for bob",
         {"to": BOB.address, "content": "x", "encrypt_for": {BOB.address: CAROL.pub_b64()}}),
        ("encrypt-wrong-bcc-key", "§5.3 step 2", "carol's key given for dave (bcc)",
         {"to": BOB.address, "content": "x", "bcc": [DAVE.address],
          "encrypt_for": {**keys_for(BOB), DAVE.address: CAROL.pub_b64()}}),
        ("encrypt-key-not-base64url", "§5.3 step 2", "bob's key is not base64url",
         {"to": BOB.address, "content": "x", "encrypt_for": {BOB.address: "not a key"}}),
        ("encrypt-key-wrong-length", "§5.3 step 2", "bob's key given as 31 bytes",
         {"to": BOB.address, "content": "x", "encrypt_for": {BOB.address: b64e(BOB.public_key[:31])}}),
        ("encrypt-small-order-key", "§5.3 step 2 / §6.1", "the recipient's address is the "
         "hash of a small-order key, which cannot be encrypted to",
         {"to": address_from_pub(bytes([1]) + bytes(31)), "content": "x",
          "encrypt_for": {address_from_pub(bytes([1]) + bytes(31)): b64e(bytes([1]) + bytes(31))}}),
        ("encrypt-plaintext-over-limit", "§5.3 step 1", "the limit applies to the plaintext",
         {"to": BOB.address, "content": "€" * 21_846, "encrypt_for": keys_for(BOB)}),
        ("plain-content-over-limit", "§5.1 / §4.1", "checked before it is handed over",
         {"to": BOB.address, "content": "€" * 21_846}),
    ]  # fmt: skip


def run_compose(given: Mapping[str, Any]) -> dict[str, Any]:
    args = {k: v for k, v in given.items() if k not in ("to", "content")}
    try:
        out = compose(ALICE, given["to"], given["content"], now_ms=NOW, message_id="cd" * 16,
                      randbytes=det_randbytes("flux-vectors:compose"), **args)  # fmt: skip
    except FluxError as exc:
        return {"error": {"code": exc.code, "field": exc.field}}
    return {"primary": out.primary, "copies": [list(c) for c in out.bcc_copies]}


def compose_vectors() -> dict[str, Any]:
    cases = []
    wanted = {
        "encrypt-missing-key": ("missing_field", "encrypt_for"),
        "encrypt-missing-bcc-key": ("missing_field", "encrypt_for"),
        "encrypt-wrong-key": ("invalid_value", "encrypt_for"),
        "encrypt-wrong-bcc-key": ("invalid_value", "encrypt_for"),
        "encrypt-key-not-base64url": ("invalid_value", f"encrypt_for.{BOB.address}"),
        "encrypt-key-wrong-length": ("invalid_value", f"encrypt_for.{BOB.address}"),
        "encrypt-small-order-key": ("invalid_value", "encrypt_for"),
        "encrypt-plaintext-over-limit": ("too_large", "content"),
        "plain-content-over-limit": ("too_large", "content"),
    }
    for name, rule, text, given in compose_cases():
        got = run_compose(given)
        if name in wanted:
            code, field = wanted[name]
            if got != {"error": {"code": code, "field": field}}:
                raise AssertionError(f"compose vector {name}: the code gives {got}")
        cases.append({"name": name, "rule": rule, "description": text, "input": given,
                      "expected": got})  # fmt: skip
    dedupe = cases[0]["expected"]["primary"]
    assert dedupe["cc"] == [CAROL.address] and dedupe["tags"] == ["a", "b", "work"]
    assert [c[0] for c in cases[0]["expected"]["copies"]] == [DAVE.address]
    assert "subject" not in dedupe and dedupe["expires"] == 0
    return {
        "description": "compose(alice, ...) with `input` as its arguments, now_ms = now_ms, "
        "id cdcd...cd, randomness det_randbytes('flux-vectors:compose') (PROTOCOL.md "
        "§5.1-§5.3): expected is {primary, copies: [[address, envelope]]} or {error}.",
        "cases": cases,
    }


def bounce() -> dict[str, Any]:
    server = IDS["server-b"]
    no_subject = {k: v for k, v in envelope_message().items() if k != "subject"}
    cases = [
        ("bounce", "b.example gives up on alice's message to bob", envelope_message(),
         [BOB.address], "the receiving server does not host this address"),
        ("bounce-no-subject", "the original had no subject: (no subject)", no_subject,
         [BOB.address, CAROL.address], "the domain x.invalid does not exist (no such domain)"),
        ("bounce-no-recipients", "no recipient named: its recipients", envelope_message(), [],
         "expired"),
        ("bounce-long-subject", "the subject is cut to 200 characters", changed(subject="s" * 300),
         [BOB.address], "expired"),
    ]  # fmt: skip
    out = []
    for name, text, original, recipients, reason in cases:
        label = f"flux-vectors:{name}"
        notice = make_bounce(original, recipients, reason, server, NOW + DAY,
                             randbytes=det_randbytes(label))  # fmt: skip
        verify_envelope(notice)
        out.append({"name": name, "rule": "§10.3", "description": text, "original": original,
                    "recipients": recipients, "reason": reason, "server": "b.example",
                    "now_ms": NOW + DAY, "randbytes": label, "bounce": notice})  # fmt: skip
    return {
        "description": "make_bounce(original, recipients, reason, server's identity, now_ms, "
        "randbytes): the signed bounce a server sends the sender (PROTOCOL.md §10.3): from "
        "its own key's address, to the sender, re = the original id, tags [bounce], subject "
        "'Undeliverable: ' + the original's (or '(no subject)'), cut to 200 characters.",
        "cases": out,
    }


# -- (p) room for one more hop (PROTOCOL.md §7.2) -----------------------------------------


def appending() -> dict[str, Any]:
    """check_can_append: may a server seal and hand on this message (its own route entry and
    record appended, every limit of §8 still held)?"""
    msg = envelope_message()
    entry = {"server": "u.example", "t": NOW}
    record = make_hop(msg, A, next_hop=LOCAL_DELIVERY, now_ms=NOW, cv=ChainVerdict.NONE)
    cases = [
        ("room", "31 route entries and 31 records: room for one more", {
            **msg, "route": [entry] * 31, "integrity_chain": [record] * 31}, None),
        ("route-full", "32 route entries: no room for this server's", {
            **msg, "route": [entry] * 32}, ("too_large", "route")),
        ("chain-full", "32 records: no room for this server's", {
            **msg, "integrity_chain": [record] * 32}, ("too_large", "integrity_chain")),
        ("route-checked-first", "both full: route is named", {
            **msg, "route": [entry] * 32, "integrity_chain": [record] * 32}, ("too_large", "route")),
        ("shape-first", "an unknown field and a full route: the shape error comes first",
         {**msg, "x_new": 1, "route": [entry] * 32}, ("invalid_value", "x_new")),
    ]  # fmt: skip
    out = []
    for name, text, message, want in cases:
        try:
            check_can_append(message)
            got: dict[str, Any] = {"ok": True}
        except FluxError as exc:
            got = {"error": {"code": exc.code, "field": exc.field}}
        expected = {"ok": True} if want is None else {"error": {"code": want[0], "field": want[1]}}
        if got != expected:
            raise AssertionError(f"append vector {name}: the code gives {got}")
        out.append({"name": name, "rule": "§7.2", "description": text, "envelope": message,
                    "expected": expected})  # fmt: skip
    return {
        "description": "Before sealing, the message as it will leave (one route entry and one "
        "record more) must pass §4.3 steps 1-5 (PROTOCOL.md §7.2): expected is {ok: true} or "
        "{error: {code, field}}.",
        "cases": out,
    }


# -- the file -----------------------------------------------------------------------------


def identities() -> list[dict[str, Any]]:
    out = []
    for label, ident in IDS.items():
        origin = (
            "seed-v1.json"
            if label in SEED_KEYS
            else f'SHA-256(UTF-8 "flux-vectors:{label}")'  # derived_seed
        )
        out.append(
            {
                "label": label,
                "origin": origin,
                "private_key": ident.private_b64(),
                "pub": ident.pub_b64(),
                "address": ident.address,
            }
        )
    return out


def published_keys() -> dict[str, list[dict[str, Any]]]:
    return {
        server: [
            {"pub": b64e(k.pub), "valid_from": k.valid_from, "valid_until": k.valid_until}
            for k in published
        ]
        for server, published in PUBLISHED.items()
    }


def build() -> dict[str, Any]:
    """Every vector, as plain JSON data."""
    data = {
        "set": "flux",
        "protocol": "1.0",
        "generator": "scripts/make_vectors.py",
        "spec": "docs/PROTOCOL.md",
        "encoding": "binary values are base64url with '=' padding, except fields named *_hex "
        "(lower-case hex) and SHA-256 digests (hash, bh, prev, record_hash, proof_id: 64 "
        "lower-case hex digits); *_payload fields are the exact signed or hashed text "
        "(ASCII, so its UTF-8 bytes are the bytes signed); times are unix ms.",
        "now_ms": NOW,
        "randbytes_definition": RANDBYTES_DEFINITION,
        "identities": identities(),
        "servers": {s.name: label_of(s.identity) for s in (A, X, B, C)},
        "published_keys": published_keys(),
        "sealed_hops": sealed_hops(),
        "chains": chains(),
        "tamper": tamper_reports(),
        "bcc": bcc(),
        "encrypted": encrypted(),
        "envelopes": envelopes(),
        "signed_requests": signed_requests(),
        "canonical": canonical(),
        "key_files": key_files(),
        "decryption": decryption(),
        "compose": compose_vectors(),
        "bounce": bounce(),
        "spam": spam(),
        "legacy_tokens": legacy_tokens(),
        "appending": appending(),
    }
    return plain(data)


def render(data: Mapping[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    args = parser.parse_args(argv)
    text = render(build())
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT.relative_to(ROOT)} is out of date; run {__file__}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
