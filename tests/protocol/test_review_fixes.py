"""Regressions for flaws found in review of the chain, blame, E2E and parsing code."""

from __future__ import annotations

import copy
import json

import pytest
from protocol_helpers import ALICE, BOB, NOW, SERVER_POOL, keyring, plain_message, relay

from flux.protocol import (
    ChainVerdict,
    DecryptionError,
    HopStatus,
    InvalidProof,
    MalformedJSON,
    PublishedKey,
    _aead,
    append_hop,
    build_report,
    compose,
    decrypt_content,
    find_offense,
    loads_strict,
    validate_report,
    verify_chain,
)
from flux.protocol.encoding import b64d, b64e

A, X, B = SERVER_POOL[0], SERVER_POOL[1], SERVER_POOL[2]


def _tampered_report() -> tuple[dict, object]:
    """X alters the content it received from A, seals it and hands it to B."""
    via_a = relay(plain_message(), [A], final_next=X.name)[-1]
    forged = {**via_a, "content": "altered by x"}
    delivered = append_hop(forged, X, next_hop=B.name, now_ms=NOW + 2_000)
    keys = keyring([A, X, B])
    offense = find_offense(delivered, keys, receiver=B.name)
    assert offense is not None and offense.offender == X.name
    return build_report(offense, B, now_ms=NOW + 3_000), keys


def test_upstream_withdrawing_its_key_cannot_frame_an_honest_relay() -> None:
    # A seals to X; X checks it under the key A publishes and honestly hands it on.
    honest = relay(plain_message(), [A, X], final_next=B.name)[-1]
    assert find_offense(honest, keyring([A, X, B]), receiver=B.name) is None
    # Later A publishes nothing valid at that time (withdrawn, or unreachable): still no case.
    withdrawn = {A.name: [PublishedKey(A.identity.public_key, valid_until=NOW)]}
    published = keyring([X, B])

    def keys(name: str) -> list[PublishedKey]:
        return withdrawn.get(name) or published(name)

    assert find_offense(honest, keys, receiver=B.name) is None
    assert find_offense(honest, lambda name: published(name), receiver=B.name) is None
    # ...while acceptance still checks publication: B refuses the chain as it stands now.
    assert verify_chain(honest, keys).verdict is ChainVerdict.FAIL


def test_report_kind_must_be_known_and_match_the_proof() -> None:
    report, keys = _tampered_report()
    assert validate_report(report, keys).kind == report["kind"]
    for kind in ("made_up", "broken_chain"):
        wrong = {**report, "kind": kind}
        with pytest.raises(InvalidProof) as caught:
            validate_report(wrong, keys)
        assert caught.value.field == "kind"


@pytest.mark.parametrize("name", ["pub", "sig"])
def test_badly_encoded_report_keys_are_invalid_proofs(name: str) -> None:
    report, keys = _tampered_report()
    with pytest.raises(InvalidProof) as caught:
        validate_report({**report, name: "not base64!"}, keys)
    assert caught.value.field == name


def test_cv_must_say_none_exactly_for_the_first_record() -> None:
    states = relay(plain_message(), [A, X])
    keys = keyring([A, X])
    assert verify_chain(states[-1], keys).verdict is ChainVerdict.PASS
    for index, cv in ((0, "pass"), (1, "none")):
        msg = copy.deepcopy(states[-1])
        record = msg["integrity_chain"][index]
        record["cv"] = cv
        # re-seal so only the cv rule can fail it
        signer = (A, X)[index]
        record["seal"] = signer.identity.sign(
            b"flux-seal:1:"
            + json.dumps(
                {k: v for k, v in record.items() if k != "seal"},
                sort_keys=True,
                separators=(",", ":"),
            ).encode()
        )
        if index == 0:  # X's prev covers A's record; rebuild X's hop over the new record
            msg = append_hop(
                {**msg, "integrity_chain": msg["integrity_chain"][:1]},
                X,
                next_hop="local",
                now_ms=NOW + 5,
            )
        check = verify_chain(msg, keys)
        assert check.hops[index].status is HopStatus.FAILED, (index, check)
        assert "cv" in check.hops[index].reason


def test_local_is_not_a_server_name_in_a_record() -> None:
    msg = relay(plain_message(), [A])[-1]
    record = dict(msg["integrity_chain"][0])
    record["server"] = "local"
    check = verify_chain({**msg, "integrity_chain": [record]}, None)
    assert check.hops[0].status is HopStatus.FAILED and "local" in check.hops[0].reason


@pytest.mark.parametrize("chain", [5, "x", {"a": 1}])
def test_a_chain_that_is_not_a_list_fails_without_raising(chain: object) -> None:
    check = verify_chain({**plain_message(), "integrity_chain": chain}, None)
    assert check.verdict is ChainVerdict.FAIL


def test_a_short_wrapped_key_is_refused() -> None:
    msg = compose(
        ALICE, BOB.address, "secret", now_ms=NOW, encrypt_for={BOB.address: BOB.public_key}
    ).primary
    # Re-wrap a 16-byte key for bob: AES-GCM would accept it as AES-128.
    eph = bytes(range(1, 33))
    peer = _aead.x25519_public_from_ed25519(BOB.public_key)
    wrap = _aead.wrap_key(_aead.x25519_shared(eph, peer))
    blob = _aead.x25519_public(eph) + _aead.seal(wrap, b"k" * 16, b"n" * 12)
    short = {**msg, "enc_recipients": {**msg["enc_recipients"], BOB.address: b64e(blob)}}
    assert len(b64d(msg["enc_recipients"][BOB.address])) == 32 + 12 + 32 + 16
    with pytest.raises(DecryptionError):
        decrypt_content(short, BOB)


@pytest.mark.parametrize("text", ["[" * 100_000, '{"a":' * 10_000, "[" * 65 + "]" * 65])
def test_deep_nesting_is_malformed_not_a_crash(text: str) -> None:
    with pytest.raises(MalformedJSON):
        loads_strict(text)


def test_nesting_up_to_the_limit_parses() -> None:
    assert loads_strict("[" * 64 + "]" * 64) == json.loads("[" * 64 + "]" * 64)
