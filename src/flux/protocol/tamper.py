"""Blame and tamper reports (docs/PROTOCOL.md §7.4-§7.6).

Blame is local to one link. A server checks what its direct peer hands it and blames that
peer only on a *self-contained proof*: the peer's own seal, as the last record of the chain,
addressed to this server (`next`), committing to exactly the body (`bh`) and chain (`prev`)
received, over which

* the sender's signature or key binding over the signed core fails (``forged_body``; a
  missing or malformed `from`, `pub` or `sig` inside the sealed body is a failed
  signature): the peer sealed a forgery;
* the peer's own `hash` or hop signature is false (``false_hop``); or
* a record the peer's seal commits to fails while the peer declared the chain `pass`
  (``broken_chain``): it dropped, reordered or rewrote records, or vouched for someone who
  did.

The rule behind all three: **a proof judges only what the accused's seal commits to**.
Anything outside it (`route`, the retrieval fields, chain records the `prev` links do not
reach) can be changed by whoever holds the message, the accuser included, so it is never
evidence; nor is any limit the receiver applies to the message as a whole (route or chain
length, sizes, counts, unknown fields, version). Such a message is refused without blame,
and an honest server never seals one (`chain.check_can_append`), so an honest server
cannot produce a proof against itself, and nobody can build one from its genuine seals.

If the delivery does not meet the first conditions (no seal by the peer, seal for someone
else, body or chain not the ones sealed, a chain longer than MAX_ROUTE_HOPS), nothing can
be proven to a third party: the receiver refuses the delivery and blames no one. Hence
what cannot frame anyone:

* a receiver swapping the body or chain (the peer's seal no longer matches);
* a receiver changing the unsigned `route`, retrieval fields, or records before the part
  of the chain the seal commits to (never judged);
* a sender signing two bodies with one id (each body verifies under its own signature);
* a made-up baseline hash or a proof replayed under another message id (both recomputed);
* a record signed with a key the named server does not publish (its seal does not count).

A tamper report carries the prototype's fields (`sig` over
"tamper:{msg_id}:{offender}:{reporter}:{t}") and, new, the `envelope` exactly as received,
which *is* the proof. Any server re-runs `find_offense` on it with keys fetched from the
reporter's and the offender's own domains (no other keys are needed, so a long chain of
made-up names costs a validator nothing) before it counts a strike; strikes count distinct
proofs (`proof_id` = SHA-256 of the offender's seal).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .canonical import sha256_hex
from .chain import (
    ChainCheck,
    ChainVerdict,
    HopStatus,
    KeyLookup,
    PublishedKey,
    ServerSigner,
    _check_record_shape,
    _HopFailure,
    _verify_prototype_sig,
    first_committed_failure,
    is_server_name,
    published_key_covers,
    record_hash,
    verify_seal,
)
from .encoding import b64d
from .envelope import body_hash, check_signature, integrity_hash
from .errors import FluxError, InvalidProof, InvalidValue, UnknownServerKey
from .identity import verify_signature
from .limits import MAX_ROUTE_HOPS


class OffenseKind(enum.StrEnum):
    """What a proof shows its offender did (PROTOCOL.md §7.5)."""

    FORGED_BODY = "forged_body"
    FALSE_HOP = "false_hop"
    BROKEN_CHAIN = "broken_chain"


@dataclass(frozen=True, slots=True)
class Offense:
    kind: OffenseKind
    offender: str
    msg_id: str
    proof_id: str
    envelope: Mapping[str, Any]
    detail: str


def judgeable_chain(msg: Any) -> list[Any] | None:
    """`msg`'s chain when a proof can be judged on it at all: a list of 1 to MAX_ROUTE_HOPS
    records, else None. Checked before any key is looked up: a chain over the limit is
    refused by every receiver, without blame and without fetching keys for it."""
    chain = msg.get("integrity_chain") if isinstance(msg, dict) else None
    if not isinstance(chain, list) or not 1 <= len(chain) <= MAX_ROUTE_HOPS:
        return None
    return chain


def bound_seal(msg: Mapping[str, Any], keys: KeyLookup, receiver: str) -> dict[str, Any] | None:
    """The last record if it is a valid seal handing exactly `msg` to `receiver`, else None.

    Looks up the keys of the last record's server only (PROTOCOL.md §7.4 step 1).
    """
    chain = msg.get("integrity_chain")
    if not isinstance(chain, list) or not chain:
        return None
    last = chain[-1]
    try:
        if not _check_record_shape(last):
            return None
        verify_seal(last, keys)
    except _HopFailure:
        return None
    expected_prev = record_hash(chain[-2]) if len(chain) > 1 else ""
    bound = (
        last["next"] == receiver
        and last["i"] == len(chain)
        and last["prev"] == expected_prev
        and last["bh"] == body_hash(msg)
    )
    return last if bound else None


def handed_over(msg: Mapping[str, Any], check: ChainCheck, receiver: str) -> dict[str, Any] | None:
    """The last record of `msg` when `check` (`verify_chain(msg, keys)` with the keys
    `bound_seal` would use) passed with that record sealed and handing the message to
    `receiver`; else None, and `bound_seal` says what is wrong (PROTOCOL.md §7.4 step 1).

    A passing chain has verified the last seal under a published key with its `i`, `prev`
    and `bh` (§7.3): only `next` is left of `bound_seal`'s conditions, so a delivery
    checked this way costs one Ed25519 verification and one body hash fewer.
    """
    if check.verdict is not ChainVerdict.PASS or check.hops[-1].status is not HopStatus.SEALED:
        return None
    last = msg["integrity_chain"][-1]
    return last if last["next"] == receiver else None


def find_offense(msg: Any, keys: KeyLookup, *, receiver: str) -> Offense | None:
    """The offense the last hop's server provably committed in handing `msg` to `receiver`
    (PROTOCOL.md §7.4), judged only on what its seal commits to.

    None when the delivery is innocent *or* when nothing can be proven (see module doc).
    `keys` is asked for the last record's server only. Never raises for a bad message.
    """
    if judgeable_chain(msg) is None:
        return None
    last = bound_seal(msg, keys, receiver)
    if last is None:
        return None
    offense = _signature_offense(msg) or _hop_offense(msg, last) or _chain_offense(msg, last)
    if offense is None:
        return None
    kind, detail = offense
    return Offense(
        kind, last["server"], str(msg.get("id")), sha256_hex(last["seal"].encode()), msg, detail
    )


def _signature_offense(msg: Mapping[str, Any]) -> tuple[OffenseKind, str] | None:
    # Only the sender's signature over the signed core, and the key that signed it: all of
    # it inside `bh`, so exactly what the seal vouches for. The shape rules (sizes, counts,
    # unknown fields, version, route and chain limits) are the receiver's to refuse by.
    if not all(isinstance(msg.get(name), str) for name in ("from", "pub", "sig")):
        return OffenseKind.FORGED_BODY, "sealed a message without a sender signature"
    try:
        check_signature(msg)
    except FluxError as exc:
        return OffenseKind.FORGED_BODY, f"sealed a message whose {exc.message}"
    return None


def _hop_offense(msg: Mapping[str, Any], last: Mapping[str, Any]) -> tuple[OffenseKind, str] | None:
    if last["hash"] != integrity_hash(msg):
        return OffenseKind.FALSE_HOP, "its hop hash does not match the message it sealed"
    try:
        _verify_prototype_sig(last)
    except _HopFailure:
        return OffenseKind.FALSE_HOP, "its hop signature does not verify"
    return None


def _chain_offense(
    msg: Mapping[str, Any], last: Mapping[str, Any]
) -> tuple[OffenseKind, str] | None:
    if last["cv"] == ChainVerdict.FAIL:
        return None  # it declared the chain broken: honest, if unhelpful
    # Only the records the seal reaches through `prev` links (chain.committed_start),
    # the seal's own record included: its link (the previous hop's `next` naming this
    # server) is part of what it vouched for, so a server that drops the record just
    # before its own is caught too. Records before the committed part could have been
    # swapped by the accuser after the fact, so they prove nothing.
    #
    # Judged without the key lookup: only on what the proof itself shows (each seal under
    # its record's own `pub`, the links, the hashes). Whether an upstream server publishes
    # a key is a fact of *now*, not of the proof: an upstream server that later withdraws
    # or shortens its key, or simply cannot be reached, must not turn an honest downstream
    # seal into a strike. The offender's own seal was already checked under the keys it
    # publishes (`bound_seal`).
    bad = first_committed_failure(msg)
    if bad is None:
        return None
    return (
        OffenseKind.BROKEN_CHAIN,
        f"sealed '{last['cv']}' over a chain whose hop {bad.index} {bad.reason}",
    )


# -- reports ------------------------------------------------------------------------------


def report_payload(msg_id: str, offender: str, reporter: str, t: int) -> bytes:
    return f"tamper:{msg_id}:{offender}:{reporter}:{t}".encode()


def build_report(offense: Offense, signer: ServerSigner, *, now_ms: int) -> dict[str, Any]:
    """The signed tamper report `signer` sends to peers (never to the offender)."""
    envelope = dict(offense.envelope)
    return {
        "type": "tamper_report",
        "msg_id": offense.msg_id,
        "offender": offense.offender,
        "reporter": signer.name,
        "t": now_ms,
        "sig": signer.identity.sign(
            report_payload(offense.msg_id, offense.offender, signer.name, now_ms)
        ),
        "pub": signer.identity.pub_b64(),
        "integrity_chain": envelope.get("integrity_chain", []),
        "msg_hash_baseline": integrity_hash(envelope),
        "kind": str(offense.kind),
        "envelope": envelope,
    }


REPORT_FIELDS = {
    "type": str, "msg_id": str, "offender": str, "reporter": str, "t": int, "sig": str,
    "pub": str, "integrity_chain": list, "msg_hash_baseline": str, "kind": str, "envelope": dict,
}  # fmt: skip


def _check_report_shape(report: Any) -> None:
    if not isinstance(report, dict):
        raise InvalidProof("a report must be a JSON object", field="report")
    for name, kind in REPORT_FIELDS.items():
        value = report.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise InvalidProof(
                f"report field {name} is missing or not a {kind.__name__}", field=name
            )
    if report["type"] != "tamper_report":
        raise InvalidProof("type must be tamper_report", field="type")
    for name in ("offender", "reporter"):
        if not is_server_name(report[name]):
            raise InvalidProof(f"{name} is not a server name", field=name)


def servers_named(report: Mapping[str, Any]) -> list[str]:
    """The servers whose published keys validating `report` needs: the reporter and the
    server of the envelope's last record (the accused), nobody else. Earlier records are
    judged offline (§7.4 step 5), so a chain naming many servers costs no fetches."""
    names: list[Any] = [report.get("reporter")]
    chain = judgeable_chain(report.get("envelope"))
    if chain is not None and isinstance(chain[-1], dict):
        names.append(chain[-1].get("server"))
    return [n for n in dict.fromkeys(names) if is_server_name(n)]


def check_report_offline(report: Any) -> None:
    """The checks of a report that need no key (PROTOCOL.md §7.6 steps 1 and 4-6, the
    chain length, and the last record's bindings): done before any key is fetched for it.
    Raises InvalidProof naming the field."""
    _check_report_shape(report)
    if report["kind"] not in OffenseKind.__members__.values():
        raise InvalidProof("kind is not a known offense", field="kind")
    envelope = report["envelope"]
    if envelope.get("id") != report["msg_id"]:
        raise InvalidProof("the proof is for another message", field="msg_id")
    if envelope.get("integrity_chain") != report["integrity_chain"]:
        raise InvalidProof("integrity_chain differs from the proof's", field="integrity_chain")
    if judgeable_chain(envelope) is None:
        raise InvalidProof(
            f"a proof's chain holds 1 to {MAX_ROUTE_HOPS} records", field="integrity_chain"
        )
    if report["msg_hash_baseline"] != integrity_hash(envelope):
        raise InvalidProof("msg_hash_baseline is not the message's hash", field="msg_hash_baseline")
    # What binds the last record to this report and this body needs no key either: checked
    # here so that a report whose last record names some other server (or a body it never
    # sealed) costs no fetch of that server's keys. The report's `sig` covers only its
    # prototype fields, so a genuine report can be replayed with another envelope: these
    # checks are what keep such a replay from steering this server's key fetches.
    last = report["integrity_chain"][-1]
    if not isinstance(last, dict) or last.get("server") != report["offender"]:
        raise InvalidProof("the last record is not the accused's", field="offender")
    if last.get("next") != report["reporter"]:
        raise InvalidProof(
            "the accused did not hand this message to the reporter", field="reporter"
        )
    if last.get("bh") != body_hash(envelope):
        raise InvalidProof("the accused's record does not commit to this body", field="envelope")


def validate_report(report: Any, keys: KeyLookup) -> Offense:
    """Re-check a received report from first principles; return the proven Offense
    (PROTOCOL.md §7.6). `keys` is asked for the reporter's and the accused's keys only.

    Raises InvalidProof (or UnknownServerKey) with the reason it does not hold.
    """
    check_report_offline(report)
    reporter_pub = _proof_b64(report["pub"], "pub", 32)
    if not published_key_covers(keys, report["reporter"], reporter_pub, report["t"]):
        raise UnknownServerKey(
            "report is not signed with a key its reporter publishes", field="pub"
        )
    sig = _proof_b64(report["sig"], "sig", 64)
    payload = report_payload(report["msg_id"], report["offender"], report["reporter"], report["t"])
    try:
        verify_signature(reporter_pub, payload, sig)
    except FluxError as exc:
        raise InvalidProof("report signature does not verify", field="sig") from exc
    offense = find_offense(report["envelope"], keys, receiver=report["reporter"])
    if offense is None:
        raise InvalidProof("the proof does not show tampering", field="envelope")
    if offense.offender != report["offender"]:
        raise InvalidProof(f"the proof shows {offense.offender}, not the accused", field="offender")
    if offense.kind != report["kind"]:
        raise InvalidProof(f"the proof shows {offense.kind}, not {report['kind']}", field="kind")
    return offense


def _proof_b64(value: str, name: str, length: int) -> bytes:
    try:
        return b64d(value, field=name, length=length)
    except InvalidValue as exc:  # a report is refused as a proof, whatever is wrong with it
        raise InvalidProof(exc.message, field=name) from exc


# -- the same validation as a key-discovery flow (sans-I/O) -------------------------------

KeyFlow = Generator[str, Sequence[PublishedKey], Offense]


def validate_report_flow(report: Any) -> KeyFlow:
    """`validate_report` as a generator: it yields each server name whose keys it needs and
    is sent back that server's published keys; it returns the Offense or raises.

        flow = validate_report_flow(report)
        name = next(flow)
        while True:
            try:
                name = flow.send(await fetch_keys(name))
            except StopIteration as done:
                offense = done.value; break
    """
    check_report_offline(report)  # a report that cannot hold costs no fetch
    fetched: dict[str, tuple[PublishedKey, ...]] = {}
    for name in servers_named(report):
        fetched[name] = tuple((yield name))
    return validate_report(report, lambda server: fetched.get(server, ()))


def run_key_flow(flow: KeyFlow, lookup: Callable[[str], Iterable[PublishedKey]]) -> Offense:
    """Drive a key flow with a synchronous lookup (tests, or keys already cached)."""
    try:
        name = next(flow)
        while True:
            name = flow.send(tuple(lookup(name)))
    except StopIteration as done:
        return done.value
