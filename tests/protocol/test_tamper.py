"""Blame and tamper reports (flux.protocol.tamper): the tamperer is named, nobody else is,
and no forged proof yields a strike."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from protocol_helpers import (
    ALICE,
    BOB,
    IMPOSTOR_KEY,
    MALLORY,
    NOW,
    POOL_KEYS,
    SERVER_POOL,
    keyring,
    next_of,
    plain_message,
    relay,
    signed,
)

from flux.protocol import (
    LOCAL_DELIVERY,
    BadSignature,
    ChainVerdict,
    HopStatus,
    InvalidProof,
    Offense,
    OffenseKind,
    ServerSigner,
    UnknownServerKey,
    append_hop,
    build_report,
    compose,
    find_offense,
    integrity_hash,
    make_hop,
    run_key_flow,
    validate_report,
    validate_report_flow,
    verify_chain,
    verify_envelope,
)
from flux.protocol.canonical import sha256_hex
from flux.protocol.chain import seal_payload
from flux.protocol.tamper import servers_named

A, X, B, C, D = SERVER_POOL[:5]  # A, D honest relays, X the tamperer, B the receiver, C a bystander
MSG = plain_message("Pay 10 EUR to Bob", subject="invoice")

# -- tampering moves ----------------------------------------------------------------------

BODY_MOVES = ("content", "subject")
CHAIN_MOVES = ("resign", "drop", "drop-previous", "reorder", "rewrite")


def tamper(received: dict[str, Any], move: str) -> dict[str, Any]:
    """What the tamperer does to the message it received, before sealing its own hop."""
    chain = list(received.get("integrity_chain") or [])
    if move == "content":
        return {**received, "content": received["content"].replace("10", "1000")}
    if move == "subject":
        return {**received, "subject": "URGENT"}
    if move == "resign":  # claims the message as its own: a valid signature, a new sender
        return signed({**received, "from": MALLORY.address}, MALLORY)
    if move == "drop":
        del chain[0]
    elif move == "drop-previous":
        del chain[-1]
    elif move == "reorder":  # the last two it received (swapping two further back is not
        chain[-2], chain[-1] = chain[-1], chain[-2]  # provable: see the test below)
    elif move == "rewrite":  # the record it received altered (its cv), so its seal breaks
        chain[-1] = {**chain[-1], "cv": "fail" if chain[-1]["cv"] != "fail" else "pass"}
    else:  # pragma: no cover
        raise AssertionError(move)
    return {**received, "integrity_chain": chain}


def min_position(move: str) -> int:
    """How many honest hops must precede the tamperer for the move to mean anything."""
    return {"resign": 1, "drop": 2, "drop-previous": 2, "reorder": 2, "rewrite": 1}.get(move, 0)


def expected_kind(move: str) -> OffenseKind:
    return OffenseKind.FORGED_BODY if move in BODY_MOVES else OffenseKind.BROKEN_CHAIN


def tampered_route(route: list[ServerSigner], k: int, move: str) -> list[dict[str, Any]]:
    """States after each hop: honest before k, the tamperer at k, then (for chain moves,
    which leave a verifiable body) honest servers that forward with cv=fail.

    After a body move honest servers refuse the message (the sender signature fails), so
    the route stops at the tamperer.
    """
    states = relay(MSG, route[:k], final_next=route[k].name)  # honestly handed to the tamperer
    received = states[-1] if states else MSG
    sealed = append_hop(
        tamper(received, move), route[k], next_hop=next_of(route, k), now_ms=NOW + 5_000 + k
    )
    states.append(sealed)
    if move in BODY_MOVES:
        return states
    for j in range(k + 1, len(route)):
        check = verify_chain(states[-1], POOL_KEYS)
        assert check.verdict is ChainVerdict.FAIL  # the honest server sees the damage...
        states.append(
            append_hop(
                states[-1],
                route[j],
                next_hop=next_of(route, j),
                now_ms=NOW + 6_000 + j,
                cv=check.verdict,
            )
        )  # ...and says so in its own seal
    return states


def test_tamperer_is_named_for_each_move() -> None:
    route = [A, C, X, B]
    for move in (*BODY_MOVES, *CHAIN_MOVES):
        states = tampered_route(route, 2, move)
        offense = find_offense(states[2], POOL_KEYS, receiver=B.name)
        assert offense is not None, move
        assert (offense.offender, offense.kind) == (X.name, expected_kind(move)), move
        assert offense.msg_id == MSG["id"]
        assert offense.proof_id == sha256_hex(states[2]["integrity_chain"][-1]["seal"].encode())
        for j in (0, 1):
            assert find_offense(states[j], POOL_KEYS, receiver=route[j + 1].name) is None
        if move in BODY_MOVES:
            with pytest.raises(BadSignature):
                verify_envelope(states[2])


def test_dropping_the_record_just_before_its_own_is_named() -> None:
    # The tamperer's seal links (prev) to a record that handed the message to someone else.
    states = tampered_route([A, C, X, B], 2, "drop-previous")
    check = verify_chain(states[2], POOL_KEYS)
    assert check.hops[-1].status is HopStatus.FAILED and C.name in check.hops[-1].reason
    offense = find_offense(states[2], POOL_KEYS, receiver=B.name)
    assert offense is not None and offense.offender == X.name


def test_rewriting_a_record_the_seal_does_not_reach_proves_nothing() -> None:
    # X alters A's record, two links back: C's `prev` no longer matches it. Whoever holds
    # the message could have done that after X sealed it (the accuser included), so it is
    # refused (the chain fails) but blamed on no one (PROTOCOL.md §7.4 step 5).
    received = relay(MSG, [A, C], final_next=X.name)[-1]
    chain = list(received["integrity_chain"])
    chain[0] = {**chain[0], "t": chain[0]["t"] + 1}
    sealed = append_hop({**received, "integrity_chain": chain}, X, next_hop=B.name, now_ms=NOW)
    assert verify_chain(sealed, POOL_KEYS).verdict is ChainVerdict.FAIL
    assert find_offense(sealed, POOL_KEYS, receiver=B.name) is None
    # ...and the same change made by B to an honest X's delivery frames nobody either.
    honest = relay(MSG, [A, C, X], final_next=B.name)[-1]
    chain = list(honest["integrity_chain"])
    chain[0] = {**chain[0], "t": chain[0]["t"] + 1}
    assert find_offense({**honest, "integrity_chain": chain}, POOL_KEYS, receiver=B.name) is None


def test_reordering_records_the_seal_does_not_reach_proves_nothing() -> None:
    received = relay(MSG, [A, C, D], final_next=X.name)[-1]
    chain = list(received["integrity_chain"])
    chain[0], chain[1] = chain[1], chain[0]
    sealed = append_hop({**received, "integrity_chain": chain}, X, next_hop=B.name, now_ms=NOW)
    assert verify_chain(sealed, POOL_KEYS).verdict is ChainVerdict.FAIL
    assert find_offense(sealed, POOL_KEYS, receiver=B.name) is None


def false_hop(received: dict[str, Any], signer: ServerSigner, *, lie: str) -> dict[str, Any]:
    record = make_hop(received, signer, next_hop=B.name, now_ms=NOW, cv=ChainVerdict.PASS)
    if lie == "hash":
        record["hash"] = "0" * 64
        record["sig"] = signer.identity.sign(f"{record['server']}:{record['t']}:{record['hash']}")
    else:
        record["sig"] = signer.identity.sign("something else")
    record["seal"] = signer.identity.sign(seal_payload(record))
    return {**received, "integrity_chain": [*(received.get("integrity_chain") or []), record]}


@pytest.mark.parametrize("lie", ["hash", "sig"])
def test_false_hop_is_named(lie: str) -> None:
    received = relay(MSG, [A], final_next=X.name)[-1]
    delivered = false_hop(received, X, lie=lie)
    offense = find_offense(delivered, POOL_KEYS, receiver=B.name)
    assert offense is not None and (offense.kind, offense.offender) == (
        OffenseKind.FALSE_HOP,
        X.name,
    )


def test_innocent_and_unprovable_deliveries_name_nobody() -> None:
    honest = relay(MSG, [A, X], final_next=B.name)[-1]
    assert find_offense(honest, POOL_KEYS, receiver=B.name) is None
    assert find_offense(MSG, POOL_KEYS, receiver=B.name) is None  # no chain at all
    forged = tampered_route([A, X, B], 1, "content")[1]
    assert find_offense(forged, POOL_KEYS, receiver=C.name) is None  # not sealed to C
    assert find_offense(forged, keyring([A, B]), receiver=B.name) is None  # X's key unknown


# -- property: blame lands on the tamperer and nowhere else -------------------------------

routes = st.lists(st.sampled_from(SERVER_POOL), min_size=1, max_size=6, unique_by=lambda s: s.name)


@st.composite
def tamper_cases(draw: st.DrawFn) -> tuple[list[ServerSigner], int, str]:
    route = draw(routes)
    k = draw(st.integers(0, len(route) - 1))
    move = draw(st.sampled_from([m for m in (*BODY_MOVES, *CHAIN_MOVES) if min_position(m) <= k]))
    return route, k, move


@settings(max_examples=100, deadline=None)
@given(tamper_cases())
def test_blame_names_exactly_the_tamperer(case: tuple[list[ServerSigner], int, str]) -> None:
    route, k, move = case
    states = tampered_route(route, k, move)
    tamperer = route[k].name
    for j, state in enumerate(states):
        offense = find_offense(state, POOL_KEYS, receiver=next_of(route, j))
        if j == k:
            assert offense is not None
            assert (offense.offender, offense.kind) == (tamperer, expected_kind(move))
        else:
            assert offense is None, (j, offense)
        # A delivery sealed for someone else proves nothing against anyone.
        assert find_offense(state, POOL_KEYS, receiver="elsewhere.example") is None


# -- reports ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def genuine() -> tuple[Offense, dict[str, Any]]:
    delivered = tampered_route([A, X, B], 1, "content")[1]
    offense = find_offense(delivered, POOL_KEYS, receiver=B.name)
    assert offense is not None
    return offense, build_report(offense, B, now_ms=NOW + 10_000)


def validate_both_ways(report: Any, keys=POOL_KEYS) -> Offense:
    """validate_report, and the same through the key flow; both must agree."""
    try:
        direct = validate_report(report, keys)
    except Exception as exc:
        with pytest.raises(type(exc)):
            run_key_flow(validate_report_flow(report), keys)
        raise
    via_flow = run_key_flow(validate_report_flow(report), keys)
    assert via_flow.proof_id == direct.proof_id and via_flow.offender == direct.offender
    return direct


def test_genuine_report_validates(genuine) -> None:
    offense, report = genuine
    assert report["type"] == "tamper_report" and report["offender"] == X.name
    assert report["reporter"] == B.name and report["kind"] == "forged_body"
    proven = validate_both_ways(report)
    assert (proven.offender, proven.kind, proven.proof_id) == (
        X.name,
        offense.kind,
        offense.proof_id,
    )
    rewired = json.loads(json.dumps(report))  # as received over the wire
    assert validate_both_ways(rewired).proof_id == offense.proof_id


def test_key_flow_asks_only_for_the_reporter_and_the_accused(genuine) -> None:
    # A's record is judged offline (under its own pub): validating costs two fetches, however
    # many servers the chain names (PROTOCOL.md §7.4 step 5, §7.6).
    _, report = genuine
    flow = validate_report_flow(report)
    asked = [next(flow)]
    with pytest.raises(StopIteration) as done:
        while True:
            asked.append(flow.send(tuple(POOL_KEYS(asked[-1]))))
    assert asked == [B.name, X.name] == servers_named(report)
    assert done.value.value.offender == X.name


def resigned(report: dict[str, Any], signer: ServerSigner = B, **changes: Any) -> dict[str, Any]:
    """`report` with `changes`, signed again by `signer` (so only the proof is wrong)."""
    out = {**report, **changes, "reporter": signer.name, "pub": signer.identity.pub_b64()}
    payload = f"tamper:{out['msg_id']}:{out['offender']}:{out['reporter']}:{out['t']}"
    out["sig"] = signer.identity.sign(payload)
    return out


def report_for(
    envelope: dict[str, Any], offender: str, reporter: ServerSigner = B
) -> dict[str, Any]:
    """A report built as a forger would: a hand-made Offense over `envelope`."""
    seal = envelope["integrity_chain"][-1]["seal"]
    offense = Offense(
        OffenseKind.FORGED_BODY,
        offender,
        envelope["id"],
        sha256_hex(seal.encode()),
        envelope,
        "made up",
    )
    return build_report(offense, reporter, now_ms=NOW + 10_000)


def forged_impostor_hop(genuine) -> dict[str, Any]:
    # Framing A: a record in A's name, under a key A does not publish, sealing a forgery.
    impostor = ServerSigner(A.name, IMPOSTOR_KEY)
    forged = {**MSG, "content": "forged"}
    delivered = append_hop(forged, impostor, next_hop=B.name, now_ms=NOW)
    offense = find_offense(delivered, keyring([impostor]), receiver=B.name)  # the forger's view
    assert offense is not None
    return build_report(offense, B, now_ms=NOW + 10_000)


def forged_other_msg_id(genuine) -> dict[str, Any]:
    return resigned(genuine[1], msg_id="ab" * 16)


def forged_other_msg_id_everywhere(genuine) -> dict[str, Any]:
    _, report = genuine
    envelope = {**report["envelope"], "id": "ab" * 16}
    return resigned(
        report, msg_id="ab" * 16, envelope=envelope, msg_hash_baseline=integrity_hash(envelope)
    )


def forged_baseline(genuine) -> dict[str, Any]:
    return {**genuine[1], "msg_hash_baseline": "0" * 64}


def forged_double_signed_id(genuine) -> dict[str, Any]:
    # MALLORY signs two messages with one id; A seals message 1 honestly; the report pairs
    # message 2's (validly signed) body with A's seal.
    one = compose(MALLORY, BOB.address, "first", now_ms=NOW, message_id="cd" * 16).primary
    two = compose(MALLORY, BOB.address, "second", now_ms=NOW, message_id="cd" * 16).primary
    sealed_one = append_hop(one, A, next_hop=B.name, now_ms=NOW + 1)
    paired = {**two, "route": sealed_one["route"], "integrity_chain": sealed_one["integrity_chain"]}
    verify_envelope(paired)  # message 2 is genuinely signed
    assert find_offense(sealed_one, POOL_KEYS, receiver=B.name) is None
    return report_for(paired, A.name)


def forged_swapped_body(genuine) -> dict[str, Any]:
    # B received an honest delivery from A and swaps the content under ALICE's signature.
    delivered = append_hop(MSG, A, next_hop=B.name, now_ms=NOW + 1)
    return report_for({**delivered, "content": "Pay 1000 EUR to Bob"}, A.name)


def forged_swapped_signed_body(genuine) -> dict[str, Any]:
    # ... or swaps in a different, genuinely signed message of ALICE's with the same id.
    delivered = append_hop(MSG, A, next_hop=B.name, now_ms=NOW + 1)
    other = compose(ALICE, BOB.address, "other", now_ms=NOW, message_id=MSG["id"]).primary
    return report_for({**other, "integrity_chain": delivered["integrity_chain"]}, A.name)


def forged_unpublished_reporter(genuine) -> dict[str, Any]:
    return resigned(genuine[1], ServerSigner(B.name, IMPOSTOR_KEY))


def forged_unknown_reporter(genuine) -> dict[str, Any]:
    return resigned(genuine[1], ServerSigner("nobody.example", IMPOSTOR_KEY))


def forged_honest_offender(genuine) -> dict[str, Any]:
    return resigned(genuine[1], offender=A.name)


def forged_third_party_reporter(genuine) -> dict[str, Any]:
    # C holds a copy of the proof, but X sealed that delivery to B, not to C.
    return resigned(genuine[1], C)


def forged_report_signature(genuine) -> dict[str, Any]:
    return {**genuine[1], "sig": resigned(genuine[1], offender=A.name)["sig"]}


def forged_chain_mismatch(genuine) -> dict[str, Any]:
    return {**genuine[1], "integrity_chain": genuine[1]["integrity_chain"][:-1]}


FORGERIES = [
    (forged_impostor_hop, InvalidProof),
    (forged_other_msg_id, InvalidProof),
    (forged_other_msg_id_everywhere, InvalidProof),
    (forged_baseline, InvalidProof),
    (forged_double_signed_id, InvalidProof),
    (forged_swapped_body, InvalidProof),
    (forged_swapped_signed_body, InvalidProof),
    (forged_unpublished_reporter, UnknownServerKey),
    (forged_unknown_reporter, InvalidProof),  # refused offline: x sealed to b, not to it
    (forged_honest_offender, InvalidProof),
    (forged_third_party_reporter, InvalidProof),
    (forged_report_signature, InvalidProof),
    (forged_chain_mismatch, InvalidProof),
]


@pytest.mark.parametrize(("forge", "error"), FORGERIES, ids=[f.__name__[7:] for f, _ in FORGERIES])
def test_forged_proofs_never_yield_a_strike(genuine, forge, error) -> None:
    report = forge(genuine)
    with pytest.raises(error):
        validate_both_ways(report)


MALFORMED = [
    ("not-object", []),
    ("missing-field", "msg_hash_baseline"),
    ("wrong-type", ("t", "now")),
    ("bool-t", ("t", True)),
    ("wrong-type-name", ("type", "report")),
    ("bad-offender-name", ("offender", "X Server")),
    ("bad-reporter-name", ("reporter", "b.example\n")),
]


@pytest.mark.parametrize(("name", "how"), MALFORMED, ids=[n for n, _ in MALFORMED])
def test_malformed_reports(genuine, name: str, how: Any) -> None:
    _, report = genuine
    if isinstance(how, list):
        bad: Any = how
    elif isinstance(how, str):
        bad = {k: v for k, v in report.items() if k != how}
    else:
        bad = {**report, how[0]: how[1]}
    with pytest.raises(InvalidProof):
        validate_report(bad, POOL_KEYS)


def test_local_delivery_tamper_is_named_with_receiver_local() -> None:
    # The last server tampers before local delivery; the recipient's check names it.
    states = tampered_route([A, X], 1, "content")
    assert states[-1]["integrity_chain"][-1]["next"] == LOCAL_DELIVERY
    offense = find_offense(states[-1], POOL_KEYS, receiver=LOCAL_DELIVERY)
    assert offense is not None and offense.offender == X.name
