"""Hop records and the sealed chain (flux.protocol.chain)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from protocol_helpers import (
    BOB,
    IMPOSTOR_KEY,
    NOW,
    POOL_KEYS,
    SEED,
    SERVER_POOL,
    keyring,
    plain_message,
    relay,
    server,
)

from flux.protocol import (
    LOCAL_DELIVERY,
    ChainError,
    ChainVerdict,
    HopStatus,
    PublishedKey,
    ServerSigner,
    append_hop,
    b64d,
    integrity_hash,
    make_hop,
    record_hash,
    servers_in_chain,
    verify_chain,
    verify_signature,
)
from flux.protocol.chain import SEALED_FIELDS, seal_payload
from flux.protocol.tamper import bound_seal, handed_over

A, B, C = SERVER_POOL[:3]
MSG = plain_message("chain me")


def honest(route=(A, B, C), msg=MSG) -> dict[str, Any]:
    return relay(msg, list(route))[-1]


def statuses(msg: dict[str, Any], keys=POOL_KEYS) -> list[HopStatus]:
    return [h.status for h in verify_chain(msg, keys).hops]


def test_sealed_record_fields() -> None:
    first = make_hop(MSG, A, next_hop=B.name, now_ms=NOW, cv=ChainVerdict.PASS)
    assert set(first) == SEALED_FIELDS
    assert (first["i"], first["prev"], first["cv"], first["next"]) == (1, "", "none", B.name)
    assert first["hash"] == integrity_hash(MSG)
    verify_signature(
        b64d(first["pub"]), f"{A.name}:{NOW}:{first['hash']}".encode(), b64d(first["sig"])
    )
    verify_signature(b64d(first["pub"]), seal_payload(first), b64d(first["seal"]))
    after_a = append_hop(MSG, A, next_hop=B.name, now_ms=NOW)
    second = make_hop(after_a, B, next_hop=LOCAL_DELIVERY, now_ms=NOW + 1, cv=ChainVerdict.FAIL)
    assert (second["i"], second["prev"], second["cv"]) == (
        2,
        record_hash(after_a["integrity_chain"][0]),
        "fail",
    )


def test_append_hop_is_pure_and_extends_route() -> None:
    before = copy.deepcopy(MSG)
    out = append_hop(MSG, A, next_hop=B.name, now_ms=NOW)
    assert before == MSG
    assert out["route"] == [{"server": A.name, "t": NOW}]
    assert len(out["integrity_chain"]) == 1


def test_honest_route_is_sealed_and_passes() -> None:
    msg = honest()
    check = verify_chain(msg, POOL_KEYS)
    assert [h.server for h in check.hops] == [A.name, B.name, C.name]
    assert statuses(msg) == [HopStatus.SEALED] * 3
    assert check.verdict is ChainVerdict.PASS and check.sealed
    assert check.raise_for_failure() is None
    assert servers_in_chain(msg) == [A.name, B.name, C.name]


def test_empty_chain() -> None:
    check = verify_chain(MSG, POOL_KEYS)
    assert check.hops == () and check.verdict is ChainVerdict.NONE


def test_unpublished_key_fails_only_when_keys_are_checked() -> None:
    impostor = ServerSigner(B.name, IMPOSTOR_KEY)
    msg = relay(MSG, [A, impostor, C])[-1]
    assert statuses(msg, None) == [HopStatus.SEALED] * 3
    check = verify_chain(msg, POOL_KEYS)
    assert [h.status for h in check.hops] == [HopStatus.SEALED, HopStatus.FAILED, HopStatus.FAILED]
    assert "publishes" in check.hops[1].reason
    assert check.hops[2].reason == "follows a failed hop"
    with pytest.raises(ChainError) as info:
        check.raise_for_failure()
    assert info.value.field == "integrity_chain[1]"


def test_key_validity_window() -> None:
    msg = honest((A,))  # sealed at NOW + 1000
    t = msg["integrity_chain"][0]["t"]
    pub = A.identity.public_key
    for key, ok in [
        (PublishedKey(pub, valid_from=t, valid_until=t), True),
        (PublishedKey(pub, valid_from=0, valid_until=t - 1), False),  # retired before
        (PublishedKey(pub, valid_from=t + 1), False),  # not yet valid
        (PublishedKey(B.identity.public_key), False),
    ]:
        status = statuses(msg, lambda name, key=key: [key] if name == A.name else [])
        assert status == [HopStatus.SEALED if ok else HopStatus.FAILED], key


def test_handoff_to_someone_else_fails() -> None:
    wrong = append_hop(MSG, A, next_hop="elsewhere.example", now_ms=NOW)
    msg = append_hop(wrong, B, next_hop=LOCAL_DELIVERY, now_ms=NOW + 1)
    check = verify_chain(msg, POOL_KEYS)
    assert check.hops[1].status is HopStatus.FAILED and "elsewhere.example" in check.hops[1].reason


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"content": "changed"}, "hash does not match"),
        ({"subject": "added"}, "hash does not match"),
        (
            {"bcc": [BOB.address]},
            "bh does not match",
        ),  # outside `hash` (as the prototype) but in `bh`
        ({"sig": "x"}, "bh does not match"),  # the sender's signature is part of the body
    ],
)
def test_body_changes_after_sealing_fail(change: dict[str, Any], reason: str) -> None:
    msg = {**honest(), **change}
    check = verify_chain(msg, POOL_KEYS)
    assert check.hops[0].status is HopStatus.FAILED and reason in check.hops[0].reason


def test_route_is_not_covered() -> None:
    # Documented: `route` is informational; the chain is what protects the path.
    msg = {**honest(), "route": []}
    assert verify_chain(msg, POOL_KEYS).verdict is ChainVerdict.PASS


def test_prototype_record_then_sealed_records() -> None:
    (vector,) = SEED["hop_records"]
    (plain,) = [m["envelope"] for m in SEED["messages"] if m["name"] == "plain"]
    start = {**plain, "integrity_chain": [vector["record"]]}
    msg = relay(start, [B, C])[-1]
    assert msg["integrity_chain"][1]["prev"] == record_hash(vector["record"])
    assert statuses(msg) == [HopStatus.UNSEALED, HopStatus.SEALED, HopStatus.SEALED]
    assert verify_chain(msg, POOL_KEYS).verdict is ChainVerdict.PASS
    assert not verify_chain(msg, POOL_KEYS).sealed


BAD_SHAPES = [
    ("extra-field", lambda r: {**r, "x": 1}),
    ("missing-seal-field", lambda r: {k: v for k, v in r.items() if k != "bh"}),
    ("not-an-object", lambda r: [r]),
    ("bad-server", lambda r: {**r, "server": "Bad Name"}),
    ("server-newline", lambda r: {**r, "server": r["server"] + "\n"}),
    ("float-t", lambda r: {**r, "t": float(r["t"])}),
    ("bool-i", lambda r: {**r, "i": True}),
    ("short-hash", lambda r: {**r, "hash": r["hash"][:-1]}),
    ("hash-newline", lambda r: {**r, "hash": r["hash"] + "\n"}),
    ("bad-cv", lambda r: {**r, "cv": "maybe"}),
    ("bad-prev", lambda r: {**r, "prev": "zz"}),
]


@pytest.mark.parametrize(("name", "damage"), BAD_SHAPES, ids=[n for n, _ in BAD_SHAPES])
def test_malformed_records_fail(name: str, damage) -> None:
    msg = honest()
    chain = list(msg["integrity_chain"])
    chain[1] = damage(chain[1])
    check = verify_chain({**msg, "integrity_chain": chain}, POOL_KEYS)
    assert [h.status for h in check.hops] == [HopStatus.SEALED, HopStatus.FAILED, HopStatus.FAILED]


def test_server_signer_names() -> None:
    for bad in (LOCAL_DELIVERY, "Upper.example", "-x.example", "a.example\n", "a b"):
        with pytest.raises(ValueError):
            server(bad)
    assert server("a.example:8765").name == "a.example:8765"


# -- properties ---------------------------------------------------------------------------

routes = st.lists(st.sampled_from(SERVER_POOL), min_size=1, max_size=6, unique_by=lambda s: s.name)
OTHER_MSG = plain_message("another message")


@settings(max_examples=60, deadline=None)
@given(routes)
def test_any_honest_route_is_sealed_and_passes(route: list[ServerSigner]) -> None:
    states = relay(MSG, route)
    for k, state in enumerate(states):
        check = verify_chain(state, POOL_KEYS)
        assert check.verdict is ChainVerdict.PASS and check.sealed and len(check.hops) == k + 1
    assert states[-1]["integrity_chain"][-1]["next"] == LOCAL_DELIVERY


def _mutate_field(record: dict[str, Any], name: str, data: st.DataObject) -> dict[str, Any]:
    value = record[name]
    if isinstance(value, int):
        new: Any = value + data.draw(st.sampled_from([-1, 1, 1000]))
    elif name in ("server", "next"):
        new = data.draw(
            st.sampled_from([s.name for s in SERVER_POOL] + [LOCAL_DELIVERY, "x.example"]).filter(
                lambda v: v != value
            )
        )
    elif name == "cv":
        new = data.draw(st.sampled_from([v.value for v in ChainVerdict if v.value != value]))
    elif name == "pub":
        new = data.draw(
            st.sampled_from([s.identity.pub_b64() for s in SERVER_POOL]).filter(
                lambda v: v != value
            )
        )
    elif name == "prev" and value == "":
        new = "0" * 64
    else:
        # Replace one character with another from the same alphabet (hex or base64url).
        pos = data.draw(st.integers(0, len(value.rstrip("=")) - 1))
        alphabet = (
            "0123456789abcdef"
            if name in ("hash", "prev", "bh")
            else "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )
        char = data.draw(st.sampled_from(alphabet).filter(lambda c: c != value[pos]))
        new = value[:pos] + char + value[pos + 1 :]
    assert new != value
    return {**record, name: new}


@settings(max_examples=150, deadline=None)
@given(routes, st.data())
def test_any_rearrangement_or_change_of_the_chain_fails(
    route: list[ServerSigner], data: st.DataObject
) -> None:
    msg = relay(MSG, route)[-1]
    chain = list(msg["integrity_chain"])
    n = len(chain)
    ops = ["insert", "duplicate", "change"]
    if n > 1:
        ops += ["remove", "reorder"]
    op = data.draw(st.sampled_from(ops))
    if op == "remove":
        # Removing the *last* record yields exactly an earlier honest state (see the
        # truncation test below); any other removal breaks a link.
        del chain[data.draw(st.integers(0, n - 2))]
    elif op == "reorder":
        i, j = data.draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True))
        chain[i], chain[j] = chain[j], chain[i]
    elif op == "duplicate":
        i = data.draw(st.integers(0, n - 1))
        chain.insert(data.draw(st.integers(0, n)), chain[i])
    elif op == "insert":
        foreign = relay(OTHER_MSG, route)[-1]["integrity_chain"]
        chain.insert(data.draw(st.integers(0, n)), data.draw(st.sampled_from(foreign)))
    else:
        i = data.draw(st.integers(0, n - 1))
        name = data.draw(st.sampled_from(sorted(SEALED_FIELDS)))
        chain[i] = _mutate_field(chain[i], name, data)
    assert chain != msg["integrity_chain"]
    check = verify_chain({**msg, "integrity_chain": chain}, POOL_KEYS)
    assert check.verdict is ChainVerdict.FAIL, (op, check)


@settings(max_examples=40, deadline=None)
@given(routes, st.data())
def test_a_hop_sealed_into_the_middle_breaks_the_chain(
    route: list[ServerSigner], data: st.DataObject
) -> None:
    # A published server seals a genuine record over a prefix of the chain and splices it in.
    states = relay(MSG, route)
    msg = states[-1]
    n = len(msg["integrity_chain"])
    pos = data.draw(st.integers(0, n - 1))
    prefix = states[pos - 1] if pos else MSG
    intruder = data.draw(st.sampled_from(SERVER_POOL))
    spliced = make_hop(prefix, intruder, next_hop=route[pos].name, now_ms=NOW, cv=ChainVerdict.PASS)
    chain = [*msg["integrity_chain"][:pos], spliced, *msg["integrity_chain"][pos:]]
    assert verify_chain({**msg, "integrity_chain": chain}, POOL_KEYS).verdict is ChainVerdict.FAIL


@settings(max_examples=30, deadline=None)
@given(routes)
def test_dropping_the_last_record_is_an_earlier_honest_state(route: list[ServerSigner]) -> None:
    # Not detectable by verify_chain alone, by construction: the truncated chain *is* what the
    # previous server handed on, and its last seal names that hand-off (`next`), so a
    # receiver checks `next` against itself (tamper.bound_seal) before trusting a delivery.
    states = relay(MSG, route)
    truncated = {**states[-1], "integrity_chain": states[-1]["integrity_chain"][:-1]}
    earlier = states[-2] if len(states) > 1 else MSG
    assert truncated["integrity_chain"] == list(earlier.get("integrity_chain") or [])
    if len(states) > 1:
        assert truncated["integrity_chain"][-1]["next"] == route[-1].name


def test_keyring_helper_publishes_only_own_keys() -> None:
    keys = keyring([A])
    assert [k.pub for k in keys(A.name)] == [A.identity.public_key]
    assert list(keys(B.name)) == []


RECEIVERS = [s.name for s in SERVER_POOL] + [LOCAL_DELIVERY, "elsewhere.example"]


@settings(max_examples=150, deadline=None)
@given(routes, st.data())
def test_handed_over_agrees_with_bound_seal_on_any_delivery(
    route: list[ServerSigner], data: st.DataObject
) -> None:
    # A receiver checks a delivery with verify_chain and then `handed_over`, and calls
    # bound_seal (which verifies the last seal again) only when that gives None. For any
    # honest or damaged chain and any receiver, a record handed_over names is the one
    # bound_seal names, and a chain that passes gives both the same answer.
    states = relay(MSG, route, final_next=data.draw(st.sampled_from(RECEIVERS)))
    msg = copy.deepcopy(states[-1])
    chain = msg["integrity_chain"]
    if data.draw(st.booleans()):  # damage one field of one record
        i = data.draw(st.integers(0, len(chain) - 1))
        chain[i] = _mutate_field(chain[i], data.draw(st.sampled_from(sorted(SEALED_FIELDS))), data)
    if data.draw(st.booleans()):  # or the body the seals commit to
        msg["content"] = msg["content"] + "!"
    keys = data.draw(st.sampled_from([POOL_KEYS, keyring(route[:-1])]))
    receiver = data.draw(st.sampled_from(RECEIVERS))
    check = verify_chain(msg, keys)
    named = handed_over(msg, check, receiver)
    bound = bound_seal(msg, keys, receiver)
    if named is not None:
        assert named is bound
    if check.verdict is ChainVerdict.PASS:
        assert named is bound
