"""Whose keys are fetched for a chain (PROTOCOL.md §10.7 receiver step 6, §13.11; formerly
§16 item 7): the `server` of every sealed record, never a prototype record's label, even
one spelled like a server name. Fetching a label would send a request to a host the sender
chose, and an unsealed record's check uses no key anyway.

Real parts: two FLUX servers in this process (A hands alice's mail to B) and a recording
peer (tests/federation/hostile_peer.py), a real aiohttp server that publishes a key and
records every request reaching it. A prototype record in its name makes no request to it;
a sealed record in its name (the control) does, so the silence is not the peer's fault.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from federation.fed_helpers import deliver, local_servers, name, signer
from federation.hostile_peer import HostilePeer
from flux.client.client import FluxClient
from flux.protocol import Identity, ServerSigner, append_hop, compose, integrity_hash
from flux.protocol.chain import sealed_servers_in_chain, servers_in_chain

ALICE, BOB = Identity(b"\x21" * 32), Identity(b"\x22" * 32)


def letter() -> dict[str, Any]:
    now = int(time.time() * 1000)
    return compose(ALICE, BOB.address, "lunch on friday?", subject="plans", now_ms=now).primary


def prototype_record(msg: dict[str, Any], server: str) -> dict[str, Any]:
    """An unsealed hop record over `msg`, as the prototype makes it (PROTOCOL.md §7.1)."""
    key, t, digest = Identity.generate(), int(time.time() * 1000), integrity_hash(msg)
    return {"server": server, "t": t, "hash": digest,
            "sig": key.sign(f"{server}:{t}:{digest}"), "pub": key.pub_b64()}  # fmt: skip


def with_label(msg: dict[str, Any], label: str) -> dict[str, Any]:
    return {**msg, "integrity_chain": [prototype_record(msg, label)]}


def test_only_sealed_records_servers_need_keys() -> None:
    sealer = ServerSigner("a.example", Identity.generate())
    msg = append_hop(with_label(letter(), "b.example"), sealer, next_hop="c.example", now_ms=1)
    assert servers_in_chain(msg) == ["b.example", "a.example"]  # the mesh's reading
    assert sealed_servers_in_chain(msg) == ["a.example"]


def test_unvalidated_chains_name_no_one() -> None:
    for chain in (None, "x", {}, [1, "a.example", None, {"server": 5, "seal": "x"}]):
        assert sealed_servers_in_chain({"integrity_chain": chain}) == []
    assert sealed_servers_in_chain({}) == []


async def test_a_delivery_naming_a_host_in_a_prototype_record_makes_no_request_to_it(
    tmp_path: Path,
) -> None:
    peer = HostilePeer()
    async with peer, local_servers(tmp_path, "ab", extra_insecure={peer.name}) as s:
        a, b = s["a"], s["b"]
        msg = append_hop(with_label(letter(), peer.name), signer(a), next_hop=name(b),
                         now_ms=int(time.time() * 1000))  # fmt: skip
        status, answer = await deliver(signer(a), b, [msg])
        assert status == 200, answer
        assert answer["results"][0]["recipients"] == {BOB.address: "stored"}, answer
        assert peer.reached == []
        # the reader's client checks the chain under published keys: the label is not asked
        async with FluxClient(
            BOB, b.url, plain_http_domains=[name(a), name(b), peer.name]
        ) as client:
            verified = await client.verify_online(msg)
        assert verified.chain.verdict == "pass"
        assert peer.reached == []


async def test_a_sealed_record_in_the_peers_name_is_fetched(tmp_path: Path) -> None:
    """The control: the same peer, sealing a record under the key it publishes, is asked
    for its keys by the receiver and by the reader's client."""
    peer = HostilePeer()
    peer.signer = ServerSigner(peer.name, Identity.generate())
    async with peer, local_servers(tmp_path, "ab", extra_insecure={peer.name}) as s:
        a, b = s["a"], s["b"]
        now = int(time.time() * 1000)
        msg = append_hop(letter(), peer.signer, next_hop=name(a), now_ms=now)
        msg = append_hop(msg, signer(a), next_hop=name(b), now_ms=now + 1)
        status, answer = await deliver(signer(a), b, [msg])
        assert status == 200, answer
        assert answer["results"][0]["recipients"] == {BOB.address: "stored"}, answer
        assert "/federation/info" in peer.paths("GET")
        asked = len(peer.reached)
        async with FluxClient(
            BOB, b.url, plain_http_domains=[name(a), name(b), peer.name]
        ) as client:
            verified = await client.verify_online(msg)
        assert verified.chain.verdict == "pass"
        assert "/federation/info" in [r.path for r in peer.reached[asked:]]
