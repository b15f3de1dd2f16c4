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
import hashlib
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flux.protocol import (
    LOCAL_DELIVERY,
    ChainVerdict,
    FluxError,
    Identity,
    Offense,
    OffenseKind,
    PublishedKey,
    ServerSigner,
    append_hop,
    b64e,
    body_hash,
    build_report,
    canonical_json,
    compose,
    find_offense,
    integrity_hash,
    make_hop,
    record_hash,
    signing_payload,
    validate_report,
    verify_chain,
)
from flux.protocol.chain import seal_payload
from flux.protocol.e2e import unwrap_cek
from flux.protocol.envelope import UNHASHED_FIELDS, UNSEALED_FIELDS, sign_envelope
from flux.protocol.limits import MAX_ROUTE_HOPS
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
DERIVED = ("dave", "erin", "mallory", "server-b", "server-c", "server-a-retired", "impostor")


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
        {"name": name, "description": text, "envelope": env, "expected": chain_result(env)}
        for name, text, env in cases
    ]


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
            "description": text,
            "receiver": receiver,
            "envelope": env,
            "expected": offense_result(find_offense(env, keys, receiver=receiver)),
        }
        for name, text, env, receiver in cases
    ]


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
        {"name": name, "description": text, "report": report, "expected_error": expected_error(report)}
        for name, text, report in forged_reports(genuine)
    ]  # fmt: skip
    return {
        "description": "offenses: find_offense(envelope, published_keys, receiver) -> the "
        "proven offense or null. genuine: b.example's report on the forged-body offense; "
        "validate_report must return expected. forged: validate_report must refuse each "
        "with expected_error.code (and field).",
        "offenses": offenses(),
        "genuine": {
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
