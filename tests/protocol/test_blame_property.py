"""Blame only what the accused signed (PROTOCOL.md §7.4-§7.6; issue 9, section 1).

For any honest chain of 1-5 servers (real identities, real `append_hop`; optionally behind
prototype records), whatever an attacker holding the delivery changes outside the seals
(`route`, the retrieval fields, unknown top-level fields, sizes and counts past the limits,
chain records appended, removed, duplicated or reordered) never yields an offense against
an honest server, and no tamper report built from it validates. Positive controls: a real
tamperer is still named, whatever is done to the unsigned fields around its seal.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protocol_helpers import MALLORY, NOW, POOL_KEYS, SERVER_POOL, plain_message

from flux.protocol import (
    LOCAL_DELIVERY,
    ChainVerdict,
    InvalidProof,
    Offense,
    OffenseKind,
    PublishedKey,
    ServerSigner,
    TooLarge,
    append_hop,
    build_report,
    find_offense,
    integrity_hash,
    validate_report,
)
from flux.protocol.chain import check_can_append, make_hop
from flux.protocol.limits import MAX_ROUTE_HOPS

RECEIVERS = [s.name for s in SERVER_POOL] + [LOCAL_DELIVERY, "elsewhere.example"]
MSG = plain_message("Pay 10 EUR to Bob", subject="invoice")
PROTOTYPE_SERVER = ServerSigner("proto.example", MALLORY)  # an honest prototype relay


def prototype_record(msg: dict[str, Any], t: int) -> dict[str, Any]:
    """A prototype server's record: the five unsealed fields, honestly made."""
    digest = integrity_hash(msg)
    signer = PROTOTYPE_SERVER
    return {
        "server": signer.name, "t": t, "hash": digest,
        "sig": signer.identity.sign(f"{signer.name}:{t}:{digest}"), "pub": signer.identity.pub_b64(),
    }  # fmt: skip


def honest_chain(servers: list[ServerSigner], receiver: str, prototypes: int) -> dict[str, Any]:
    """MSG through `prototypes` prototype relays, then honestly along `servers` to `receiver`."""
    msg: dict[str, Any] = dict(MSG)
    for k in range(prototypes):
        msg["integrity_chain"] = [*msg["integrity_chain"], prototype_record(msg, NOW + k)]
        msg["route"] = [*msg["route"], {"server": PROTOTYPE_SERVER.name, "t": NOW + k}]
    for k, server in enumerate(servers):
        nxt = servers[k + 1].name if k + 1 < len(servers) else receiver
        msg = append_hop(msg, server, next_hop=nxt, now_ms=NOW + 1_000 + k)
    return msg


# -- what an attacker holding the message can do outside the seals ------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
ROUTE_ENTRY = st.fixed_dictionaries(
    {"server": st.sampled_from([*RECEIVERS, "x" * 300]), "t": st.integers(0, 2**40)}
)


@st.composite
def mutation(draw: st.DrawFn) -> Callable[[dict[str, Any]], None]:
    kind = draw(st.sampled_from([
        "route-add", "route-remove", "route-duplicate", "route-reorder", "route-replace",
        "retrieval", "unknown-field", "chain-append-copy", "chain-append-garbage",
        "chain-remove", "chain-duplicate", "chain-reorder", "chain-alter", "chain-past-limit",
        "content-past-limit",
    ]))  # fmt: skip
    count = draw(st.integers(1, MAX_ROUTE_HOPS + 8))
    index = draw(st.integers(0, 64))
    entry = draw(ROUTE_ENTRY)
    value = draw(JSON)
    field = draw(st.sampled_from(["_status", "_inbox", "_tags"]))

    def mutate(msg: dict[str, Any]) -> None:
        route = msg.get("route") if isinstance(msg.get("route"), list) else []
        chain = msg["integrity_chain"]
        at = index % max(len(chain), 1)
        if kind == "route-add":
            msg["route"] = route + [entry] * count
        elif kind == "route-remove":
            msg["route"] = route[: index % (len(route) + 1)]
        elif kind == "route-duplicate":
            msg["route"] = route + route * (count % 4 + 1)
        elif kind == "route-reorder":
            msg["route"] = list(reversed(route))
        elif kind == "route-replace":
            msg["route"] = value
        elif kind == "retrieval":
            msg[field] = value
        elif kind == "unknown-field":
            msg["x_extra"] = value
        elif kind == "chain-append-copy" and chain:
            chain.extend(copy.deepcopy(chain[at]) for _ in range(count % 3 + 1))
        elif kind == "chain-append-garbage":
            chain.append(value)
        elif kind == "chain-remove" and chain:
            del chain[at]
        elif kind == "chain-duplicate" and chain:
            chain.insert(at, copy.deepcopy(chain[at]))
        elif kind == "chain-reorder" and len(chain) > 1:
            chain[at], chain[at - 1] = chain[at - 1], chain[at]
        elif kind == "chain-alter" and chain and isinstance(chain[at], dict):
            chain[at] = {**chain[at], "t": entry["t"]}
        elif kind == "chain-past-limit" and chain:
            chain[:0] = [copy.deepcopy(chain[0]) for _ in range(count)]
        elif kind == "content-past-limit":
            msg["content"] = "x" * 70_000

    mutate.kind = kind  # type: ignore[attr-defined]
    return mutate


@st.composite
def honest_cases(draw: st.DrawFn) -> tuple[list[ServerSigner], str, dict[str, Any]]:
    servers = draw(
        st.lists(st.sampled_from(SERVER_POOL), min_size=1, max_size=5, unique_by=lambda s: s.name)
    )
    receiver = draw(
        st.sampled_from([*(s.name for s in SERVER_POOL if s not in servers), LOCAL_DELIVERY])
    )
    msg = honest_chain(servers, receiver, draw(st.integers(0, 2)))
    attacked = copy.deepcopy(msg)
    for change in draw(st.lists(mutation(), min_size=1, max_size=4)):
        change(attacked)
    return servers, receiver, attacked


def recording(keys: Callable[[str], Any]) -> tuple[Callable[[str], list[PublishedKey]], list[str]]:
    asked: list[str] = []

    def lookup(name: str) -> list[PublishedKey]:
        asked.append(name)
        return list(keys(name))

    return lookup, asked


def framed_reports(msg: dict[str, Any], servers: list[ServerSigner]) -> list[dict[str, Any]]:
    """Every report the attacker (any server, under its own published key) could send
    accusing an honest server of any kind of offense on this message."""
    reports = []
    for reporter in SERVER_POOL:
        for accused in servers:
            for kind in OffenseKind:
                claim = Offense(kind, accused.name, str(msg.get("id")), "", msg, "")
                reports.append(build_report(claim, reporter, now_ms=NOW + 50_000))
    return reports


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(honest_cases())
def test_no_change_outside_the_seals_frames_an_honest_server(
    case: tuple[list[ServerSigner], str, dict[str, Any]],
) -> None:
    servers, _, attacked = case
    chain = attacked["integrity_chain"]
    last = chain[-1] if chain and isinstance(chain[-1], dict) else {}
    for receiver in RECEIVERS:
        keys, asked = recording(POOL_KEYS)
        assert find_offense(attacked, keys, receiver=receiver) is None
        # Only the accused's keys are ever needed, and none for a chain over the limit.
        assert set(asked) <= ({last.get("server")} if len(chain) <= MAX_ROUTE_HOPS else set())
    for report in framed_reports(attacked, servers[-1:]):
        with pytest.raises(InvalidProof):
            validate_report(report, POOL_KEYS)


@settings(max_examples=50, deadline=None)
@given(honest_cases())
def test_reports_against_any_honest_server_on_the_chain_are_refused(
    case: tuple[list[ServerSigner], str, dict[str, Any]],
) -> None:
    servers, _, attacked = case
    for report in framed_reports(attacked, servers):
        with pytest.raises(InvalidProof):
            validate_report(report, POOL_KEYS)


def test_honest_server_never_seals_past_the_limit() -> None:
    # The check before sealing: the honest relay refuses instead of producing a seal a peer
    # would have to refuse (and, before this rule, blame).
    full = {**MSG, "route": [{"server": "a.example", "t": NOW}] * MAX_ROUTE_HOPS}
    with pytest.raises(TooLarge) as refused:
        check_can_append(full)
    assert refused.value.field == "route"
    with pytest.raises(TooLarge):
        append_hop(full, SERVER_POOL[0], next_hop=SERVER_POOL[1].name, now_ms=NOW)
    room = {**MSG, "route": [{"server": "a.example", "t": NOW}] * (MAX_ROUTE_HOPS - 1)}
    check_can_append(room)  # exactly the limit once this server's entry is added
    sent = append_hop(room, SERVER_POOL[0], next_hop=SERVER_POOL[1].name, now_ms=NOW)
    assert len(sent["route"]) == MAX_ROUTE_HOPS


def test_a_seal_over_a_route_past_the_limit_is_no_offense() -> None:
    # The exact case of the issue: A (as it sealed before the rule) hands B a message with
    # 33 route entries. B refuses it; the seal is A's, but it proves nothing against A.
    a, b = SERVER_POOL[:2]
    msg = {**MSG, "route": [{"server": "u.example", "t": NOW}] * MAX_ROUTE_HOPS}
    hop = make_hop(msg, a, next_hop=b.name, now_ms=NOW, cv=ChainVerdict.NONE)
    sealed = {
        **msg,
        "route": [*msg["route"], {"server": a.name, "t": NOW}],
        "integrity_chain": [hop],
    }
    assert find_offense(sealed, POOL_KEYS, receiver=b.name) is None


# -- positive controls: a real tamperer is still named ------------------------------------

TAMPER_MOVES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "content": lambda m: {**m, "content": "Pay 1000 EUR to Mallory"},
    "sender": lambda m: {**m, "pub": MALLORY.pub_b64()},
    "drop-previous": lambda m: {**m, "integrity_chain": m["integrity_chain"][:-1]},
    "rewrite-previous": lambda m: {
        **m, "integrity_chain": [*m["integrity_chain"][:-1], {**m["integrity_chain"][-1], "cv": "fail"}],
    },
}  # fmt: skip
TAMPER_KIND = {
    "content": OffenseKind.FORGED_BODY, "sender": OffenseKind.FORGED_BODY,
    "drop-previous": OffenseKind.BROKEN_CHAIN, "rewrite-previous": OffenseKind.BROKEN_CHAIN,
}  # fmt: skip
UNSIGNED_ONLY = ("route-add", "route-remove", "route-duplicate", "route-reorder", "retrieval")


@settings(max_examples=60, deadline=None)
@given(
    st.integers(3, 5),  # two honest hops before the tamperer: drop-previous leaves one
    st.sampled_from(sorted(TAMPER_MOVES)),
    st.lists(mutation().filter(lambda m: m.kind in UNSIGNED_ONLY), max_size=3),
)
def test_a_real_tamperer_is_still_named(hops: int, move: str, changes: list[Any]) -> None:
    *honest, x = SERVER_POOL[:hops]
    b = SERVER_POOL[hops]
    received = honest_chain(honest, x.name, 0)
    delivered = append_hop(TAMPER_MOVES[move](received), x, next_hop=b.name, now_ms=NOW + 9_000)
    for change in changes:  # what happens to the unsigned fields changes nothing either way
        change(delivered)
    offense = find_offense(delivered, POOL_KEYS, receiver=b.name)
    assert offense is not None and (offense.offender, offense.kind) == (x.name, TAMPER_KIND[move])
    report = build_report(offense, b, now_ms=NOW + 10_000)
    assert validate_report(report, POOL_KEYS).proof_id == offense.proof_id
