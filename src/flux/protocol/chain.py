"""Hop records and the sealed integrity chain (docs/PROTOCOL.md §7).

Every server that handles a message appends a hop record. The prototype's record is
`{server, t, hash, sig, pub}`: `hash` is SHA-256 of the message core (without `bcc`) and
`sig` is the server's signature over "{server}:{t}:{hash}". Those records are independent,
so a relay could drop or reorder earlier ones unseen, and whoever changed the message could
not be told apart from whoever noticed. FLUX keeps those five fields (the prototype still
verifies them) and *seals* each record to the chain, as ARC (RFC 8617) does:

    i     position of this record in the chain, from 1
    prev  SHA-256 of the previous record's canonical form ("" for the first)
    cv    this server's verdict on the chain as it received it: none | pass | fail
    next  where this server sends the message: the next server's name, or "local"
    bh    SHA-256 of the whole body the sender sent (every field but route and chain),
          so the sender's `sig` and `pub` are covered too
    seal  the server's signature over "flux-seal:1:" + the canonical record without `seal`

A valid seal is therefore the server's own signature over exactly what it handed on (body
via `bh`, earlier chain via `prev`) and to whom (`next`): a sealed message cannot be
replayed to another server, and a record cannot be dropped, inserted or moved without
breaking the `prev` links or the `next` → `server` hand-offs.

A seal only counts under a key the named server publishes (valid at the record's `t`), so a
name cannot be signed for by anyone else. Records without a seal (from the prototype) are
checked as the prototype checks them and reported as `unsealed`: they prove nothing either
way.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .canonical import MAX_SAFE_INTEGER, canonical_bytes, sha256_hex, without
from .encoding import b64d
from .envelope import SERVER_RE, Digests, check_shape, message_digests
from .errors import BadSignature, ChainError, FluxError, TooLarge
from .identity import Identity, verify_signature
from .limits import MAX_ROUTE_HOPS

SEAL_CONTEXT = b"flux-seal:1:"
LOCAL_DELIVERY = "local"
HEX64 = re.compile(r"^[0-9a-f]{64}\Z")  # \Z: "$" would accept a trailing newline
#: what the prototype may write as an unsealed record's `server` (§13.x): whatever its
#: operator passed as `--domain` or its `Host` header was, e.g. `Mail.Example.com` or
#: `[::1]:8765`. Printable ASCII without spaces, 1-255 characters. Such a name is a label,
#: not a server name: it is never fetched, normalised, blamed or reported to.
PROTOTYPE_SERVER_RE = re.compile(r"^[\x21-\x7e]{1,255}\Z")
PROTOTYPE_FIELDS = frozenset({"server", "t", "hash", "sig", "pub"})
SEALED_FIELDS = PROTOTYPE_FIELDS | {"i", "prev", "cv", "next", "bh", "seal"}


def is_server_name(value: object) -> bool:
    """Is `value` a server name (PROTOCOL.md §2.4): a string matching SERVER_RE that is
    not `local`, which the pattern admits but which means local delivery in `next` and
    names no server (so no key is ever fetched for it, and no report is sent to it)."""
    return isinstance(value, str) and SERVER_RE.match(value) is not None and value != LOCAL_DELIVERY


class ChainVerdict(enum.StrEnum):
    """A server's verdict on the chain it received (the `cv` field, PROTOCOL.md §7.2)."""

    NONE = "none"  #: there was no earlier hop
    PASS = "pass"  #: every earlier hop verified (sealed, or unsealed but consistent)
    FAIL = "fail"  #: some earlier hop did not verify


class HopStatus(enum.StrEnum):
    """What verifying one record established (PROTOCOL.md §7.3)."""

    SEALED = "sealed"  #: sealed, linked, and signed under a key its server publishes
    UNSEALED = "unsealed"  #: a prototype record whose own signature and hash hold
    FAILED = "failed"  #: does not verify; `reason` says why


@dataclass(frozen=True, slots=True)
class PublishedKey:
    """A server signing key as its server publishes it; times in unix ms."""

    pub: bytes
    valid_from: int = 0
    valid_until: int | None = None

    def covers(self, t: int) -> bool:
        return self.valid_from <= t and (self.valid_until is None or t <= self.valid_until)


#: Returns the keys a server publishes at its own domain (PROTOCOL.md §10.1).
KeyLookup = Callable[[str], Iterable[PublishedKey]]


@dataclass(frozen=True, slots=True)
class ServerSigner:
    """A server's name and its persistent signing identity."""

    name: str
    identity: Identity

    def __post_init__(self) -> None:
        if not SERVER_RE.match(self.name) or self.name == LOCAL_DELIVERY:
            raise ValueError(f"{self.name!r} is not a server name (host or host:port)")


def record_hash(record: Mapping[str, Any]) -> str:
    return sha256_hex(canonical_bytes(record))


def seal_payload(record: Mapping[str, Any]) -> bytes:
    return SEAL_CONTEXT + canonical_bytes(without(record, frozenset({"seal"})))


def published_key_covers(keys: KeyLookup, server: str, pub: bytes, t: int) -> bool:
    return any(k.pub == pub and k.covers(t) for k in keys(server))


def make_hop(
    msg: Mapping[str, Any],
    signer: ServerSigner,
    *,
    next_hop: str,
    now_ms: int,
    cv: ChainVerdict,
    digests: Digests | None = None,
) -> dict[str, Any]:
    """The sealed record `signer` appends to `msg` before handing it to `next_hop`.
    `digests`: `msg`'s, when the caller has them (`Envelope.digests`)."""
    chain = msg.get("integrity_chain") or []
    digests = digests or message_digests(msg)
    digest = digests.integrity_hash
    record: dict[str, Any] = {
        "server": signer.name,
        "t": now_ms,
        "hash": digest,
        "sig": signer.identity.sign(f"{signer.name}:{now_ms}:{digest}"),
        "pub": signer.identity.pub_b64(),
        "i": len(chain) + 1,
        "prev": record_hash(chain[-1]) if chain else "",
        "cv": str(ChainVerdict.NONE if not chain else cv),
        "next": next_hop,
        "bh": digests.body_hash,
    }
    record["seal"] = signer.identity.sign(seal_payload(record))
    return record


# A server never seals and hands on what it would itself refuse from a peer (§7.4): its
# seal is its signature over exactly that message, so an over-long route or chain it
# sealed would be refused by the next server, and it alone would have made it so. The
# check is made on the message *as it will leave*, with this server's entry and hop
# counted, so an honest server cannot produce a message that a peer must refuse for a
# limit of §8. (Such a refusal is never blamed either, §7.5: it is defence in depth.)


def check_room_for_hop(msg: Mapping[str, Any]) -> None:
    """Raise TooLarge (field `route` or `integrity_chain`) when `msg`, with one more route
    entry and one more hop, would exceed MAX_ROUTE_HOPS (PROTOCOL.md §7.4, §8).

    For a message that already passed `check_shape`; see `check_can_append` otherwise.
    """
    for name, what in (("route", "route entries"), ("integrity_chain", "hops")):
        held = msg.get(name) or ()
        if len(held) + 1 > MAX_ROUTE_HOPS:
            raise TooLarge(
                f"{name} already has {len(held)} {what}; with this server's own the message "
                f"would exceed the limit of {MAX_ROUTE_HOPS} that every server applies",
                field=name,
            )


def check_can_append(msg: Any) -> None:
    """Raise the error a peer would refuse `msg` with once this server's route entry and
    sealed hop are appended: `check_shape` of the result (InvalidInput subclasses; TooLarge
    naming `route` or `integrity_chain` when there is no room for the hop). PROTOCOL.md §7.4.
    """
    check_shape(msg)
    check_room_for_hop(msg)


def append_hop(
    msg: Mapping[str, Any],
    signer: ServerSigner,
    *,
    next_hop: str,
    now_ms: int,
    cv: ChainVerdict = ChainVerdict.PASS,
    digests: Digests | None = None,
) -> dict[str, Any]:
    """A new message: `msg` with this server's route entry and sealed hop appended.
    `digests`: `msg`'s, when the caller has them (`Envelope.digests`).

    Raises TooLarge when there is no room for them (`check_room_for_hop`): the caller is
    expected to have refused or bounced such a message already (`check_can_append`).
    """
    check_room_for_hop(msg)
    out = dict(msg)
    out["route"] = [*(msg.get("route") or []), {"server": signer.name, "t": now_ms}]
    hop = make_hop(msg, signer, next_hop=next_hop, now_ms=now_ms, cv=cv, digests=digests)
    out["integrity_chain"] = [*(msg.get("integrity_chain") or []), hop]
    return out


# -- verification -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HopCheck:
    index: int  # 0-based position in the chain
    server: str
    status: HopStatus
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ChainCheck:
    hops: tuple[HopCheck, ...]

    @property
    def verdict(self) -> ChainVerdict:
        if not self.hops:
            return ChainVerdict.NONE
        if self.first_failure is None:
            return ChainVerdict.PASS
        return ChainVerdict.FAIL

    @property
    def first_failure(self) -> HopCheck | None:
        return next((h for h in self.hops if h.status is HopStatus.FAILED), None)

    @property
    def sealed(self) -> bool:
        """True when every hop is sealed and verified."""
        return all(h.status is HopStatus.SEALED for h in self.hops)

    def raise_for_failure(self) -> None:
        """Return None when the chain verifies; raise ChainError naming hop and reason."""
        bad = self.first_failure
        if bad is not None:
            raise ChainError(
                f"integrity_chain[{bad.index}] ({bad.server}): {bad.reason}",
                field=f"integrity_chain[{bad.index}]",
            )


class _HopFailure(FluxError):
    code = "chain_invalid"


def _fail(reason: str) -> _HopFailure:
    return _HopFailure(reason)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_SAFE_INTEGER


def _check_record_shape(record: Any) -> bool:
    """Raise for a malformed record; return True when it is sealed."""
    if not isinstance(record, dict):
        raise _fail("record is not an object")
    sealed = "seal" in record
    allowed = SEALED_FIELDS if sealed else PROTOTYPE_FIELDS
    if set(record) != allowed:
        raise _fail("record fields are not those of a sealed or a prototype hop")
    # A sealed record's server must be a FLUX server name: its seal counts only under keys
    # fetched from that name. An unsealed (prototype) record proves nothing either way, so
    # its `server` is only the label its signature covers; normalising it (lower-casing,
    # dropping brackets) would break that signature (PROTOCOL.md §13, hop record names).
    name_re = SERVER_RE if sealed else PROTOTYPE_SERVER_RE
    if not isinstance(record["server"], str) or not name_re.match(record["server"]):
        raise _fail("server is not a server name")
    if record["server"] == LOCAL_DELIVERY:
        raise _fail("'local' is reserved for next and names no server")
    if not _is_int(record["t"]):
        raise _fail("t is not an integer")
    if not isinstance(record["hash"], str) or not HEX64.match(record["hash"]):
        raise _fail("hash is not 64 hex digits")
    if sealed:
        if not _is_int(record["i"]) or not isinstance(record["next"], str):
            raise _fail("i or next has the wrong type")
        if record["cv"] not in ChainVerdict.__members__.values():
            raise _fail("cv is not none, pass or fail")
        for name in ("prev", "bh"):
            value = record[name]
            if not isinstance(value, str) or (value and not HEX64.match(value)):
                raise _fail(f"{name} is not a SHA-256 hex digest")
    return sealed


def _verify_prototype_sig(record: Mapping[str, Any]) -> bytes:
    try:
        pub = b64d(record["pub"], field="pub", length=32)
        sig = b64d(record["sig"], field="sig", length=64)
        verify_signature(pub, f"{record['server']}:{record['t']}:{record['hash']}".encode(), sig)
    except (BadSignature, FluxError) as exc:
        raise _fail("hop signature does not verify") from exc
    return pub


def verify_seal(record: Mapping[str, Any], keys: KeyLookup | None) -> None:
    """The record's seal verifies under its `pub`, which its server publishes at `t`."""
    try:
        pub = b64d(record["pub"], field="pub", length=32)
        seal = b64d(record["seal"], field="seal", length=64)
        verify_signature(pub, seal_payload(record), seal)
    except FluxError as exc:
        raise _fail("seal does not verify") from exc
    if keys is not None and not published_key_covers(keys, record["server"], pub, record["t"]):
        raise _fail(f"key is not one {record['server']} publishes for that time")


def _check_hop(
    msg: Mapping[str, Any],
    chain: Sequence[Any],
    index: int,
    keys: KeyLookup | None,
    hashes: dict[str, str],
) -> HopStatus:
    status = _check_own(chain[index], index, keys, hashes)
    if status is HopStatus.SEALED:
        _check_link(chain, index)
    return status


def _check_own(
    record: Any, index: int, keys: KeyLookup | None, hashes: dict[str, str]
) -> HopStatus:
    """The checks of one record that read nothing but the record, its position and the
    message body (§7.3 steps 1-8 and 10, without step 7's link)."""
    sealed = _check_record_shape(record)
    _verify_prototype_sig(record)
    if record["hash"] != hashes["hash"]:
        raise _fail("hash does not match the message")
    if not sealed:
        return HopStatus.UNSEALED
    verify_seal(record, keys)
    if record["i"] != index + 1:
        raise _fail(f"i is {record['i']}, but the record is number {index + 1}")
    if record["bh"] != hashes["bh"]:
        raise _fail("bh does not match the message body")
    # cv describes the chain the server received: "none" exactly when there was none.
    if (record["cv"] == ChainVerdict.NONE) != (index == 0):
        raise _fail(f"cv is {record['cv']!r} for record number {index + 1}")
    return HopStatus.SEALED


def _check_link(chain: Sequence[Any], index: int) -> None:
    """The checks of a sealed record that read the record before it (§7.3 steps 7, 9)."""
    record = chain[index]
    expected_prev = record_hash(chain[index - 1]) if index else ""
    if record["prev"] != expected_prev:
        raise _fail("prev does not match the previous record")
    previous = chain[index - 1] if index else None
    if isinstance(previous, dict) and "seal" in previous and previous["next"] != record["server"]:
        raise _fail(f"the previous hop sent the message to {previous['next']}, not here")


def _reported_server(record: Any) -> str:
    """The `server` a result names for `record` (PROTOCOL.md §7.3, informative): the
    record's `server` member when the record is an object and that member is a string,
    else "?" (a number's or a list's text would read like a name it never gave)."""
    server = record.get("server") if isinstance(record, dict) else None
    return server if isinstance(server, str) else "?"


def verify_chain(
    msg: Mapping[str, Any], keys: KeyLookup | None, *, digests: Digests | None = None
) -> ChainCheck:
    """Check every record of `msg`'s chain against the message and each other.

    With `keys=None` seals are checked only against the key in the record (useful offline;
    it cannot tell a genuine server from an impostor). Never raises for a bad chain: the
    result names each hop's status; use `ChainCheck.raise_for_failure` to raise.
    `digests`: `msg`'s, when the caller has them (`Envelope.digests`).
    """
    # Absent is an empty chain; anything else that is not an array fails as a whole, even
    # when empty ("", {}, false, null: PROTOCOL.md §7.3 step 1). Unvalidated input gives a
    # failed chain, never a TypeError.
    chain = msg.get("integrity_chain", [])
    if not isinstance(chain, list):
        return ChainCheck((HopCheck(0, "?", HopStatus.FAILED, "integrity_chain is not a list"),))
    if not chain:  # nothing to compare the body with (a client's submission)
        return ChainCheck(())
    digests = digests or message_digests(msg)
    hashes = {"hash": digests.integrity_hash, "bh": digests.body_hash}
    results: list[HopCheck] = []
    broken = False
    for index, record in enumerate(chain):
        server = _reported_server(record)
        if broken:
            # After a failure the links that follow cannot be trusted either.
            results.append(HopCheck(index, server, HopStatus.FAILED, "follows a failed hop"))
            continue
        try:
            status = _check_hop(msg, chain, index, keys, hashes)
            results.append(HopCheck(index, server, status))
        except _HopFailure as exc:
            broken = True
            results.append(HopCheck(index, server, HopStatus.FAILED, exc.message))
    return ChainCheck(tuple(results))


# -- what a seal commits to (blame, §7.4) -------------------------------------------------
#
# The last record's seal commits to the body (`bh`) and to the record before it (`prev`,
# a hash of that whole record). That record, if sealed, commits to the one before it in
# turn, and so on: the seal reaches back exactly as far as the `prev` links hold. Where a
# link does not hold, or a prototype record (which has no `prev`) stands, everything
# before is *not* what the last server sealed: anyone holding the message could have
# swapped it afterwards, so a failure there is evidence against no one. Blame is therefore
# judged on the committed suffix alone, with each record's own checks and, past its first
# record, the links between them.


def committed_start(chain: Sequence[Any]) -> int:
    """Index of the first record the last record's seal commits to through `prev` links
    (len(chain) - 1 when it commits to no earlier record; 0 for an empty chain)."""
    index = len(chain) - 1
    while index > 0:
        record = chain[index]
        if not (isinstance(record, dict) and "seal" in record):
            break
        try:
            linked = record.get("prev") == record_hash(chain[index - 1])
        except (TypeError, ValueError, RecursionError):  # not JSON: nothing to commit to
            linked = False
        if not linked:
            break
        index -= 1
    return max(index, 0)


def first_committed_failure(msg: Mapping[str, Any]) -> HopCheck | None:
    """The first failing record among those the last record's seal commits to
    (`committed_start`), checked offline (each seal under its record's own `pub`): what a
    proof may show against the last server (PROTOCOL.md §7.4 step 5). None when they hold.
    """
    chain = msg.get("integrity_chain")
    if not isinstance(chain, list) or not chain:
        return None
    start = committed_start(chain)
    digests = message_digests(msg)
    hashes = {"hash": digests.integrity_hash, "bh": digests.body_hash}
    for index in range(start, len(chain)):
        record = chain[index]
        try:
            status = _check_own(record, index, None, hashes)
            # The link back from the first committed record reads an uncommitted one; the
            # first record of the whole chain has no such link (its `prev` must be "").
            if status is HopStatus.SEALED and (index > start or index == 0):
                _check_link(chain, index)
        except _HopFailure as exc:
            return HopCheck(index, _reported_server(record), HopStatus.FAILED, exc.message)
    return None


def witnesses(msg: Mapping[str, Any], keys: KeyLookup) -> list[str]:
    """The servers of `msg`'s records before the last whose seal verifies under a key
    their server publishes (whatever else is wrong with the chain): who a tamper report
    goes to (§7.6). A name the offender merely wrote into its chain is not one, so a
    forger cannot aim this server's reports at hosts of its choosing; it can only copy a
    real server's genuine record (whose body need not be this one: an honest upstream
    record never matches a forged body), which costs that server one validation per
    proof, bounded by the strike cap.
    """
    chain = msg.get("integrity_chain")
    if not isinstance(chain, list):
        return []
    names: list[str] = []
    for record in chain[:-1]:
        try:
            if not _check_record_shape(record):
                continue  # a prototype record proves nothing about who handled the message
            verify_seal(record, keys)
        except _HopFailure:
            continue
        if record["server"] not in names:
            names.append(record["server"])
    return names


def servers_in_chain(msg: Mapping[str, Any]) -> list[str]:
    """Names of every server the chain's records name, prototype labels included
    (well-formed names only, each once, in chain order): who has handled the message, as
    the mesh reads it. For the servers whose keys verifying the chain needs, use
    `sealed_servers_in_chain`."""
    return _chain_servers(msg, sealed_only=False)


def sealed_servers_in_chain(msg: Mapping[str, Any]) -> list[str]:
    """Names of the servers whose published keys verifying `msg`'s chain needs: the
    `server` of every sealed record (an object with a `seal` member, as §7.3 step 9 reads
    it), well-formed names only, each once, in chain order. A prototype record's `server`
    is a label whose check uses no key, so it is never fetched (PROTOCOL.md §10.7 receiver
    step 6, §13.11): fetching it would send a request to a host the sender chose.
    Never raises: unvalidated input names no one."""
    return _chain_servers(msg, sealed_only=True)


def _chain_servers(msg: Mapping[str, Any], *, sealed_only: bool) -> list[str]:
    chain = msg.get("integrity_chain")
    if not isinstance(chain, list):  # unvalidated input: no servers, never a TypeError
        return []
    names: list[str] = []
    for record in chain:
        if not isinstance(record, dict) or (sealed_only and "seal" not in record):
            continue
        server = record.get("server")
        if is_server_name(server) and server not in names:
            names.append(server)
    return names
