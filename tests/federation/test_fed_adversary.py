"""A purpose-built malicious relay X between real in-process servers (PROTOCOL.md §7.4-§7.6).

Mail alice@A -> bob@B goes A -> X -> B (A -> C -> X -> B when X needs two earlier hops to
drop or reorder). X is a real running server; the test holds its signer and acts as X:
it alters content, drops or reorders hops, lies about hashes, replays old mail, and seals
with a key its domain does not publish. B must refuse each one, strike X exactly when its
own seal proves the offense (never A or C), report it to the chain's other servers (never
to X), quarantine X at the third distinct proof, and refuse every forged or replayed
report that tries to earn honest A a strike.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from federation.fed_helpers import deliver as signed_delivery
from federation.fed_helpers import local_servers, name, signer
from federation.hostile_peer import HostilePeer
from flux.protocol import (
    ChainVerdict,
    Identity,
    Offense,
    OffenseKind,
    PublishedKey,
    ServerSigner,
    append_hop,
    build_report,
    compose,
    find_offense,
    servers_in_chain,
)
from flux.protocol.canonical import sha256_hex
from flux.protocol.chain import seal_payload
from flux.protocol.tamper import report_payload
from flux.server.app import PARTS
from flux.server.runner import RunningServer
from flux.store.base import Strike

ALICE, BOB = Identity.generate(), Identity.generate()
Servers = dict[str, RunningServer]
_last_ms = 0


def now_ms() -> int:
    """Wall-clock ms, strictly increasing, so no two seals made by the test coincide."""
    global _last_ms
    _last_ms = max(_last_ms + 1, int(time.time() * 1000))
    return _last_ms


@pytest.fixture
async def servers(tmp_path: Path):
    """Four servers that know each other as insecure (plain HTTP) peers: honest a and c,
    the relay x whose key the test abuses, and the honest receiver b."""
    async with local_servers(tmp_path, "acxb") as running:
        yield running


def published(s: Servers, server_name: str) -> list[PublishedKey]:
    return [
        PublishedKey(signer(v).identity.public_key) for v in s.values() if name(v) == server_name
    ]


async def strikes(server: RunningServer) -> list[Strike]:
    return await server.app[PARTS]["store"].strikes()


async def offenders(server: RunningServer) -> Counter[str]:
    return Counter(strike.offender for strike in await strikes(server))


async def deliver(frm: ServerSigner, to: RunningServer, messages: list[dict]) -> dict[str, Any]:
    """POST /federation/deliver to `to`, the request signed with `frm`'s key: its answer."""
    status, answer = await signed_delivery(frm, to, messages)
    assert status == 200, answer
    return answer


async def http_json(server: RunningServer, path: str, post: dict | None = None):
    """GET `path` on `server`, or POST `post` to it as JSON: (status, JSON answer)."""
    async with aiohttp.ClientSession() as http:
        call = http.get if post is None else functools.partial(http.post, json=post)
        async with call(server.url + path) as response:
            return response.status, await response.json()


async def reports_settled(server: RunningServer) -> None:
    """Wait, bounded, until the tamper reports `server` sends in the background are answered
    (each task ends after the receiver has re-proven and recorded the report)."""
    async with asyncio.timeout(10):
        await asyncio.gather(*list(server.app[PARTS]["reports"].pending))


# -- the honest part, and X's seal --------------------------------------------------------


def upstream(s: Servers, *labels: str, content: str = "lunch on friday?") -> dict[str, Any]:
    """alice's message as the honest servers `labels` hand it on, in turn, the last to X."""
    msg = compose(ALICE, BOB.address, content, subject="plans", now_ms=now_ms()).primary
    route = [*labels, "x"]
    for here, there in itertools.pairwise(route):
        msg = append_hop(msg, signer(s[here]), next_hop=name(s[there]), now_ms=now_ms())
    return msg


def x_seals(
    s: Servers,
    received: dict[str, Any],
    *,
    to: str = "b",
    lie: dict[str, str] | None = None,
    key: Identity | None = None,
    cv: ChainVerdict = ChainVerdict.PASS,
) -> dict[str, Any]:
    """X's sealed hop on `received`, handed to `to`. `lie` overrides fields of X's own record
    (the hop `sig` is re-made over a lied `hash` unless `sig` is the lie, then re-sealed, so
    exactly the named fields are false); `key` seals in X's name under an unpublished key."""
    x = ServerSigner(name(s["x"]), key) if key else signer(s["x"])
    out = append_hop(received, x, next_hop=name(s[to]), now_ms=now_ms(), cv=cv)
    if lie:
        record = {k: v for k, v in out["integrity_chain"][-1].items() if k != "seal"} | lie
        if "sig" not in lie:
            record["sig"] = x.identity.sign(f"{record['server']}:{record['t']}:{record['hash']}")
        record["seal"] = x.identity.sign(seal_payload(record))
        out["integrity_chain"] = [*out["integrity_chain"][:-1], record]
    return out


def with_chain(msg: dict[str, Any], chain: list[dict[str, Any]]) -> dict[str, Any]:
    return {**msg, "integrity_chain": chain}


# -- the attacks --------------------------------------------------------------------------


def altered_content(s: Servers) -> dict[str, Any]:
    """X rewrites the content A handed it, then seals the forgery on to B."""
    return x_seals(s, {**upstream(s, "a"), "content": "pay mallory instead"})


def altered_subject(s: Servers) -> dict[str, Any]:
    """X rewrites the subject A handed it, then seals the forgery on to B."""
    return x_seals(s, {**upstream(s, "a"), "subject": "changed by x"})


def dropped_first_hop(s: Servers) -> dict[str, Any]:
    """A -> C -> X: X deletes A's record and seals `pass` over what is left."""
    got = upstream(s, "a", "c")
    return x_seals(s, with_chain(got, got["integrity_chain"][1:]))


def dropped_previous_hop(s: Servers) -> dict[str, Any]:
    """A -> C -> X: X deletes C's record (the one handing it the message), seals `pass`."""
    got = upstream(s, "a", "c")
    return x_seals(s, with_chain(got, got["integrity_chain"][:1]))


def reordered_hops(s: Servers) -> dict[str, Any]:
    """A -> C -> X: X swaps A's and C's records and seals `pass` over them."""
    got = upstream(s, "a", "c")
    first, second = got["integrity_chain"]
    return x_seals(s, with_chain(got, [second, first]))


def dropped_hop_declared_fail(s: Servers) -> dict[str, Any]:
    """X drops A's record but says so (`cv: fail`): refused, yet honest about it."""
    got = upstream(s, "a", "c")
    return x_seals(s, with_chain(got, got["integrity_chain"][1:]), cv=ChainVerdict.FAIL)


def false_hash(s: Servers) -> dict[str, Any]:
    """X's own record claims a `hash` the message does not have (hop sig made over it)."""
    return x_seals(s, upstream(s, "a"), lie={"hash": "0" * 64})


def false_hop_sig(s: Servers) -> dict[str, Any]:
    """X's own record carries a hop `sig` over something else than its hop."""
    return x_seals(s, upstream(s, "a"), lie={"sig": signer(s["x"]).identity.sign("not a hop")})


def false_body_hash(s: Servers) -> dict[str, Any]:
    """X's seal commits (`bh`) to another body: it never sealed what B got, so no proof."""
    return x_seals(s, upstream(s, "a"), lie={"bh": "0" * 64})


def rogue_key(s: Servers) -> dict[str, Any]:
    """An honest body sealed in X's name under a key X's domain does not publish."""
    return x_seals(s, upstream(s, "a"), key=Identity.generate())


def rogue_key_forgery(s: Servers) -> dict[str, Any]:
    """A forgery sealed in X's name under an unpublished key: whoever made it, not X's seal."""
    return x_seals(s, {**upstream(s, "a"), "content": "framed"}, key=Identity.generate())


ATTACKS = [
    (altered_content, "bad_signature", OffenseKind.FORGED_BODY),
    (altered_subject, "bad_signature", OffenseKind.FORGED_BODY),
    (dropped_first_hop, "chain_invalid", OffenseKind.BROKEN_CHAIN),
    (dropped_previous_hop, "chain_invalid", OffenseKind.BROKEN_CHAIN),
    (reordered_hops, "chain_invalid", OffenseKind.BROKEN_CHAIN),
    (false_hash, "chain_invalid", OffenseKind.FALSE_HOP),
    (false_hop_sig, "chain_invalid", OffenseKind.FALSE_HOP),
    (dropped_hop_declared_fail, "chain_invalid", None),
    (false_body_hash, "chain_invalid", None),
    (rogue_key, "chain_invalid", None),
    (rogue_key_forgery, "bad_signature", None),
]


@pytest.mark.parametrize(("attack", "code", "kind"), ATTACKS, ids=[a.__name__ for a, *_ in ATTACKS])
async def test_each_attack_is_refused_and_only_x_is_struck_when_provable(
    servers: Servers, attack: Callable[[Servers], dict], code: str, kind: OffenseKind | None
) -> None:
    x, b = servers["x"], servers["b"]
    forged = attack(servers)
    result = (await deliver(signer(x), b, [forged]))["results"][0]
    assert (result["id"], result["refused"], result["struck"]) == (forged["id"], code, bool(kind))
    assert await b.store.get(BOB.address, forged["id"]) is None
    expected = [(name(x), str(kind), name(b))] if kind else []
    assert [(st.offender, st.kind, st.reporter) for st in await strikes(b)] == expected
    # A proven offense is reported to the other servers that sealed the chain (A, and C
    # when it relayed), which re-prove it and count it; never to X. Nothing else is sent.
    await reports_settled(b)
    sealers = [servers[k] for k in "ac" if name(servers[k]) in servers_in_chain(forged)]
    assert sealers
    for honest in sealers:
        assert [(st.offender, st.kind) for st in await strikes(honest)] == [e[:2] for e in expected]
    assert await strikes(x) == []


async def test_replayed_mail_is_a_duplicate_and_earns_no_strike(servers: Servers) -> None:
    x, b = servers["x"], servers["b"]
    received = upstream(servers, "a")
    honest = x_seals(servers, received)
    first = (await deliver(signer(x), b, [honest]))["results"][0]
    assert first["recipients"] == {BOB.address: "stored"}
    resealed = x_seals(servers, received)  # the same mail, sealed to B again later
    assert resealed["integrity_chain"][-1]["seal"] != honest["integrity_chain"][-1]["seal"]
    for replay in (honest, resealed):
        result = (await deliver(signer(x), b, [replay]))["results"][0]
        assert result == {"id": honest["id"], "recipients": {BOB.address: "duplicate"}}
    assert await b.store.pending_count(BOB.address) == 1  # stored once
    assert await strikes(b) == []


@pytest.mark.parametrize("forge", [False, True], ids=["honest", "forged"])
@pytest.mark.parametrize("courier", ["x", "c"])
async def test_mail_x_sealed_for_another_server_is_refused_without_blame(
    servers: Servers, courier: str, forge: bool
) -> None:
    b = servers["b"]
    received = upstream(servers, "a")
    body = {**received, "content": "altered for c"} if forge else received
    for_c = x_seals(servers, body, to="c")  # X's seal names C, not B: no proof to B
    result = (await deliver(signer(servers[courier]), b, [for_c]))["results"][0]
    assert result["refused"] == ("bad_signature" if forge else "chain_invalid")
    assert result["struck"] is False
    assert await b.store.get(BOB.address, for_c["id"]) is None
    assert await strikes(b) == []
    assert not b.app[PARTS]["reports"].pending


async def test_three_distinct_proofs_quarantine_x_and_only_x(servers: Servers) -> None:
    a, x, b = servers["a"], servers["x"], servers["b"]
    first = altered_content(servers)
    for _ in range(2):  # the same proof twice counts once
        assert (await deliver(signer(x), b, [first]))["results"][0]["struck"] is True
    assert (await deliver(signer(x), b, [false_hash(servers)]))["results"][0]["struck"] is True
    _, standing = await http_json(b, "/integrity/reputation")
    assert (standing["strikes"], standing["quarantined"]) == ({name(x): 2}, [])
    still_ok = x_seals(servers, upstream(servers, "a"))  # two strikes: not yet quarantined
    result = (await deliver(signer(x), b, [still_ok]))["results"][0]
    assert result["recipients"] == {BOB.address: "stored"}

    assert (await deliver(signer(x), b, [reordered_hops(servers)]))["results"][0]["struck"]
    _, standing = await http_json(b, "/integrity/reputation")
    assert (standing["strikes"], standing["quarantined"]) == ({name(x): 3}, [name(x)])
    assert len({st.proof_id for st in await strikes(b)}) == 3

    honest = x_seals(servers, upstream(servers, "a"))  # perfectly honest, but relayed by X
    result = (await deliver(signer(x), b, [honest]))["results"][0]
    assert (result["refused"], result["struck"]) == ("quarantined", False)
    assert await b.store.get(BOB.address, honest["id"]) is None
    direct = compose(ALICE, BOB.address, "straight from a", now_ms=now_ms()).primary
    direct = append_hop(direct, signer(a), next_hop=name(b), now_ms=now_ms())
    result = (await deliver(signer(a), b, [direct]))["results"][0]
    assert result["recipients"] == {BOB.address: "stored"}  # A is not quarantined
    await reports_settled(b)
    assert await offenders(a) == {name(x): 3}


# -- forged and replayed reports against honest A -----------------------------------------


def signed_report(report: dict[str, Any], by: ServerSigner, **changes: Any) -> dict[str, Any]:
    """`report` with `changes`, signed as reporter `by`."""
    out = {**report, **changes, "reporter": by.name, "pub": by.identity.pub_b64()}
    out["sig"] = by.identity.sign(report_payload(out["msg_id"], out["offender"], by.name, out["t"]))
    return out


def accuse_a(s: Servers, envelope: dict[str, Any], by: ServerSigner) -> dict[str, Any]:
    """A report by `by` naming A the forger of `envelope` (a hand-made Offense)."""
    seal = envelope["integrity_chain"][-1]["seal"]
    offense = Offense(OffenseKind.FORGED_BODY, name(s["a"]), envelope["id"],
                      sha256_hex(seal.encode()), envelope, "made up")  # fmt: skip
    return build_report(offense, by, now_ms=now_ms())


def frame_honest_seal(s: Servers, genuine: dict) -> dict:
    """X reports A for a message A honestly sealed to X."""
    return accuse_a(s, upstream(s, "a"), signer(s["x"]))


def frame_altered_body(s: Servers, genuine: dict) -> dict:
    """X alters the body A honestly sealed to it and reports A for the forgery."""
    return accuse_a(s, {**upstream(s, "a"), "content": "framed"}, signer(s["x"]))


def frame_impostor_seal(s: Servers, genuine: dict) -> dict:
    """X seals a forgery in A's name under a key A does not publish, and reports A."""
    msg = compose(ALICE, BOB.address, "framed", now_ms=now_ms()).primary
    impostor = ServerSigner(name(s["a"]), Identity.generate())
    forged = append_hop({**msg, "content": "x"}, impostor, next_hop=name(s["x"]), now_ms=now_ms())
    return accuse_a(s, forged, signer(s["x"]))


def changed_offender(s: Servers, genuine: dict) -> dict:
    """B's genuine report against X replayed with A as offender (B's signature now fails)."""
    return {**genuine, "offender": name(s["a"])}


def changed_offender_resigned(s: Servers, genuine: dict) -> dict:
    """B's genuine report replayed by X as its own report, naming A."""
    return signed_report(genuine, signer(s["x"]), offender=name(s["a"]))


def rogue_reporter_key(s: Servers, genuine: dict) -> dict:
    """A report naming A, signed in B's name under a key B does not publish."""
    return signed_report(genuine, ServerSigner(name(s["b"]), Identity.generate()),
                         offender=name(s["a"]))  # fmt: skip


def wrong_key_signature(s: Servers, genuine: dict) -> dict:
    """A report naming A whose `pub` is B's but whose `sig` X made."""
    forged = signed_report(genuine, signer(s["x"]), offender=name(s["a"]))
    return {**forged, "reporter": name(s["b"]), "pub": genuine["pub"]}


FORGED_REPORTS = [
    (frame_honest_seal, "invalid_proof", "envelope"),
    (frame_altered_body, "invalid_proof", "envelope"),
    (frame_impostor_seal, "invalid_proof", "envelope"),
    # Naming A while the last record is X's: refused before any key is fetched.
    (changed_offender, "invalid_proof", "offender"),
    (changed_offender_resigned, "invalid_proof", "offender"),
    (rogue_reporter_key, "invalid_proof", "offender"),
    (wrong_key_signature, "invalid_proof", "offender"),
]


@pytest.mark.parametrize(
    ("forge", "code", "field"), FORGED_REPORTS, ids=[f.__name__ for f, *_ in FORGED_REPORTS]
)
async def test_forged_or_replayed_reports_never_strike_honest_a(
    servers: Servers, forge: Callable[[Servers, dict], dict], code: str, field: str
) -> None:
    a, x, b = servers["a"], servers["x"], servers["b"]
    forgery = altered_content(servers)
    offense = find_offense(forgery, lambda n: published(servers, n), receiver=name(b))
    assert offense is not None and offense.offender == name(x)
    genuine = build_report(offense, signer(b), now_ms=now_ms())
    assert (await deliver(signer(x), b, [forgery]))["results"][0]["struck"] is True
    status, replay = await http_json(b, "/integrity/tamper_report", genuine)
    assert status == 200 and (replay["offender"], replay["counted"]) == (name(x), False)

    status, answer = await http_json(b, "/integrity/tamper_report", forge(servers, genuine))
    assert status == 400 and answer["ok"] is False, answer
    assert (answer["code"], answer["field"]) == (code, field)
    assert await offenders(b) == {name(x): 1}  # X's one proof; never a strike against A
    await reports_settled(b)
    assert name(a) not in await offenders(a)


async def test_reports_go_only_to_servers_that_provably_sealed(tmp_path: Path) -> None:
    """X's forgery carries a record it made up in the name of a host it wants B to contact:
    B strikes X and reports to A (whose seal is genuine), never to the made-up name."""
    lure = HostilePeer()  # publishes a random key: the made-up record's is not it
    async with lure, local_servers(tmp_path, "axb", extra_insecure={lure.name}) as s:
        got = upstream(s, "a")
        fake = append_hop(
            got, ServerSigner(lure.name, Identity.generate()), next_hop=name(s["x"]),
            now_ms=now_ms(),
        )  # fmt: skip
        forged = x_seals(s, {**fake, "content": "pay mallory instead"})
        result = (await deliver(signer(s["x"]), s["b"], [forged]))["results"][0]
        assert (result["refused"], result["struck"]) == ("bad_signature", True)
        await reports_settled(s["b"])
        assert [st.reporter for st in await strikes(s["a"])] == [name(s["b"])]
        assert "/integrity/tamper_report" not in lure.paths()


async def test_a_genuine_report_replayed_with_another_envelope_steers_no_fetch(
    tmp_path: Path,
) -> None:
    """A report's `sig` covers only its prototype fields, so whoever holds B's genuine
    report can swap its envelope. An envelope whose last record names a host of the
    replayer's choosing is refused before any key is fetched: the host is never asked."""
    lure = HostilePeer()
    async with lure, local_servers(tmp_path, "axbc", extra_insecure={lure.name}) as s:
        b, c = s["b"], s["c"]
        forgery = altered_content(s)
        offense = find_offense(forgery, lambda n: published(s, n), receiver=name(b))
        assert offense is not None
        genuine = build_report(offense, signer(b), now_ms=now_ms())
        lured = append_hop(
            upstream(s, "a"), ServerSigner(lure.name, Identity.generate()), next_hop=name(b),
            now_ms=now_ms(),
        )  # fmt: skip
        swapped = {**genuine, "envelope": lured, "integrity_chain": lured["integrity_chain"]}
        status, answer = await http_json(c, "/integrity/tamper_report", swapped)
        assert (status, answer["code"]) == (400, "invalid_proof"), answer
        assert lure.reached == [] and await strikes(c) == []


async def test_a_report_is_judged_on_its_key_before_its_signature(servers: Servers) -> None:
    """PROTOCOL.md §7.6 step 2 before step 3, over HTTP as in the library: a key the
    reporter does not publish is `unknown_server_key`, whatever the signature holds."""
    b, c = servers["b"], servers["c"]
    forgery = altered_content(servers)
    offense = find_offense(forgery, lambda n: published(servers, n), receiver=name(b))
    assert offense is not None
    genuine = build_report(offense, signer(b), now_ms=now_ms())
    forged = {**genuine, "pub": Identity.generate().pub_b64(), "sig": "not base64!"}
    status, answer = await http_json(c, "/integrity/tamper_report", forged)
    assert (status, answer["code"], answer["field"]) == (400, "unknown_server_key", "pub"), answer
