"""Mesh relays (federation/mesh.py): the pure rules, then real servers over TLS relaying
bare fx1 mail in broadcast, chain and hybrid modes, past a dead peer, without loops."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from federation.fed_helpers import Inbox, Network, deliver, local_servers, name, signer
from flux.federation.mesh import (
    HEADER,
    Mesh,
    MeshConfigError,
    MeshMode,
    check_mesh_header,
    mesh_header,
    parse_meshes,
    relay_targets,
)
from flux.protocol import Identity, append_hop, compose
from flux.protocol.errors import BadRequestSignature
from flux.server.app import PARTS

RING = ("a:1", "x:1", "b:1", "c:1")


def mesh(mode: str) -> Mesh:
    return Mesh("m", "t" * 32, MeshMode(mode), RING)


@pytest.mark.parametrize(
    ("mode", "own", "seen", "first", "expected"),
    [
        ("broadcast", "a:1", [], True, ["x:1", "b:1", "c:1"]),
        ("broadcast", "x:1", ["a:1"], False, []),  # one hop: peers never pass it on
        ("chain", "a:1", [], True, ["x:1"]),
        ("chain", "x:1", ["a:1"], False, ["b:1"]),
        ("chain", "c:1", ["a:1", "x:1", "b:1"], False, []),  # the ring is done: no loop
        ("chain", "b:1", ["a:1", "x:1"], False, ["c:1"]),
        ("hybrid", "a:1", [], True, ["x:1", "b:1", "c:1"]),
        ("hybrid", "x:1", ["a:1"], False, []),  # the first server did not say what it lists
    ],
)
def test_relay_targets(mode, own, seen, first, expected) -> None:
    assert relay_targets(mesh(mode), own, seen, first=first) == expected


@pytest.mark.parametrize(
    ("own", "seen", "listed", "expected"),
    [
        ("x:1", ["a:1"], RING, []),  # a broadcast to every member: nothing to pass on
        ("x:1", ["a:1"], ["a:1", "x:1"], ["b:1", "c:1"]),  # a lists only x: x covers the rest
        ("x:1", ["a:1"], ["a:1", "x:1", "c:1"], ["b:1"]),  # c got it from a, and covers on
        ("c:1", ["a:1"], ["x:1", "c:1"], []),  # wraps to a (seen), then x (listed): stop
        ("b:1", ["a:1", "x:1"], ["a:1", "x:1"], []),  # passed on to b: b passes nothing on
    ],
)
def test_hybrid_receivers_pass_on_only_past_what_the_first_server_reached(
    own, seen, listed, expected
) -> None:
    targets = relay_targets(mesh("hybrid"), own, seen, first=False, sender_lists=listed)
    assert targets == expected


@pytest.mark.parametrize("mode", list(MeshMode))
@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_every_member_receives_a_message_at_most_once_per_mesh(mode, n) -> None:
    """Walk the relays of one message no member hosts, as the servers would (issue 10 §1:
    a five-server hybrid mesh made 10-12 relays where 4 do)."""
    ring = tuple(f"s{i}:1" for i in range(n))
    m = Mesh("m", "t" * 32, MeshMode(mode), ring)
    received: list[str] = []
    pending = [(ring[0], [], True, None)]  # (server, chain, first, sender's list)
    while pending:
        server, chain, first, listed = pending.pop()
        for peer in relay_targets(m, server, chain, first=first, sender_lists=listed):
            received.append(peer)
            pending.append((peer, [*chain, server], False, ring))
    assert sorted(received) == sorted(ring[1:])  # each other member once


def test_a_server_already_in_the_chain_is_never_a_target() -> None:
    for mode in MeshMode:
        for own in RING:
            for first in (True, False):
                targets = relay_targets(mesh(mode), own, ["b:1"], first=first)
                assert "b:1" not in targets and own not in targets


def test_the_membership_header_proves_the_token_without_sending_it() -> None:
    m = mesh("chain")
    headers = {"Signature": "flux=:c2lnbmF0dXJl:", **mesh_header(m, "flux=:c2lnbmF0dXJl:")}
    assert m.token not in headers[HEADER]
    assert check_mesh_header(headers, {"m": m}, "x:1") is m
    for bad in (
        {**headers, "Signature": "flux=:b3RoZXI=:"},  # the MAC is bound to this request
        {**headers, HEADER: headers[HEADER].replace("m;", "n;")},  # another mesh
        {"Signature": headers["Signature"]},  # no header
    ):
        with pytest.raises(BadRequestSignature):
            check_mesh_header(bad, {"m": m}, "x:1")
    with pytest.raises(BadRequestSignature):  # a server that is not a member
        check_mesh_header(headers, {"m": m}, "evil:1")
    wrong_token = Mesh("m", "u" * 32, MeshMode.CHAIN, RING)
    with pytest.raises(BadRequestSignature):
        check_mesh_header(headers, {"m": wrong_token}, "x:1")


@pytest.mark.parametrize(
    "doc",
    [
        {}, {"meshes": []}, {"meshes": {"m": {"token": "short", "peers": []}}},
        {"meshes": {"m": {"token": "t" * 32, "mode": "flood", "peers": []}}},
        {"meshes": {"m": {"token": "t" * 32, "peers": ["https://x/inbox"]}}},  # a path
        {"meshes": {"m": {"token": "t" * 32, "peers": ["ftp://x:1"]}}},
        {"meshes": {"m": {"token": "t" * 32, "kind": "smtp", "peers": []}}},
        {"meshes": {"bad name": {"token": "t" * 32, "peers": []}}},
    ],
)  # fmt: skip
def test_bad_mesh_config_is_refused_clearly(doc) -> None:
    with pytest.raises(MeshConfigError):
        parse_meshes(doc)


# -- real servers ---------------------------------------------------------------------------
@pytest.fixture
def net(tmp_path):
    network = Network(tmp_path)
    for label in ("a", "x", "b"):
        network.add(label)
    try:
        yield network
    finally:
        network.stop_all()


async def people(net: Network, http):
    alice, bob, xavier = Identity.generate(), Identity.generate(), Identity.generate()
    to_alice = await net.client(http, "a", alice)
    to_bob = await net.client(http, "b", bob)
    to_xavier = await net.client(http, "x", xavier)
    return to_alice, to_bob, to_xavier


@pytest.mark.parametrize("mode", ["broadcast", "chain"])
async def test_bare_addresses_reach_their_server_through_the_mesh(net: Network, mode) -> None:
    net.mesh("m", mode, ["a", "x", "b"])
    for label in ("a", "x", "b"):
        await net.start(label)
    async with net.session() as http:
        to_alice, to_bob, to_xavier = await people(net, http)
        bob_box, xavier_box = await Inbox(to_bob).connect(), await Inbox(to_xavier).connect()
        sent = await to_alice.send(to_bob.address, "through the mesh", cc=to_xavier.address)
        assert set(sent.recipients.values()) == {"queued"}
        (got,) = await bob_box.wait_for(1)
        (x_got,) = await xavier_box.wait_for(1)
        await net.queues_empty(http, "a", "x", "b")
        assert (await to_bob.verify_online(got)).chain.verdict == "pass"
        path = [h["server"] for h in got["integrity_chain"]]
        names = {k: n.name for k, n in net.nodes.items()}
        if mode == "chain":  # a -> x (not bob's) -> b
            assert path == [names["a"], names["x"], names["b"]]
        else:  # a -> b directly
            assert path == [names["a"], names["b"]]
        assert [h["server"] for h in x_got["integrity_chain"]] == [names["a"], names["x"]]
        assert len(bob_box.messages) == 1 and len(xavier_box.messages) == 1  # once each


async def test_hybrid_reaches_a_member_the_first_server_does_not_list(net: Network) -> None:
    net.mesh("m", "hybrid", ["a", "x"], only=["a"])  # a knows only x
    net.mesh("m", "hybrid", ["a", "x", "b"], only=["x", "b"])
    for label in ("a", "x", "b"):
        await net.start(label)
    async with net.session() as http:
        to_alice, to_bob, _ = await people(net, http)
        box = await Inbox(to_bob).connect()
        await to_alice.send(to_bob.address, "two hops")
        (got,) = await box.wait_for(1)
        names = [n.name for n in net.nodes.values()]
        assert [h["server"] for h in got["integrity_chain"]] == names  # a, x, b


async def test_mail_for_no_member_ends_without_a_loop(net: Network) -> None:
    net.mesh("m", "chain", ["a", "x", "b"])
    for label in ("a", "x", "b"):
        await net.start(label)
    async with net.session() as http:
        to_alice, *_ = await people(net, http)
        sent = await to_alice.send(Identity.generate().address, "for nobody")
        assert set(sent.recipients.values()) == {"queued"}
        await net.queues_empty(http, "a", "x", "b")  # walked a -> x -> b, then stopped
        for label, handed_on in (("a", 1), ("x", 1), ("b", 0)):
            assert (await net.get(http, label, "/stats"))["store"]["deliveries"] == 0
            assert await outbound_delivered(net, http, label) == handed_on


async def outbound_delivered(net: Network, http, label: str) -> int:
    async with http.get(net.nodes[label].url + "/metrics") as response:
        text = await response.text()
    line = 'flux_outbound_messages_total{result="delivered"}'
    values = [float(x.split()[-1]) for x in text.splitlines() if x.startswith(line)]
    return int(values[0]) if values else 0


async def test_a_dead_peer_neither_slows_a_send_nor_stops_the_others(net: Network) -> None:
    net.mesh("m", "broadcast", ["a", "x", "b"])
    await net.start("a")
    await net.start("b")  # x never starts
    async with net.session() as http:
        to_alice = await net.client(http, "a", Identity.generate())
        to_bob = await net.client(http, "b", Identity.generate())
        box = await Inbox(to_bob).connect()
        sent = await to_alice.send(to_bob.address, "x is down")
        assert set(sent.recipients.values()) == {"queued"}  # answered before any relay
        await box.wait_for(1)
        async with asyncio.timeout(30):  # b's answer settles a's row just after the push
            while (
                len(destinations := (await net.get(http, "a", "/stats"))["queue"]["destinations"])
                > 1
            ):
                await asyncio.sleep(0.05)  # polling a condition, bounded by the timeout
        assert [d["destination"] for d in destinations] == [net.nodes["x"].name]
        assert destinations[0]["attempts"] >= 1 and destinations[0]["last_error"]


async def test_a_proven_offense_is_also_reported_to_mesh_peers(tmp_path) -> None:
    """b strikes x for a forgery and tells its mesh peer c (which never saw the message),
    as well as a, which sealed a record of it; c re-proves it and counts it."""
    mesh = tmp_path / "mesh.json"

    def in_mesh(label: str, names: dict[str, str]) -> dict:  # b and c are peers; a, x not
        peers = [names["b"], names["c"]]
        mesh.write_text(json.dumps({"meshes": {"m": {"token": "t" * 32, "mode": "chain",
                                                     "peers": peers}}}))  # fmt: skip
        return {"mesh_config": mesh if label in ("b", "c") else None}

    async with local_servers(tmp_path, ("a", "x", "b", "c"), per_server=in_mesh) as servers:
        names = {label: name(server) for label, server in servers.items()}
        signers = {label: signer(server) for label, server in servers.items()}
        now = int(time.time() * 1000)
        msg = compose(Identity.generate(), Identity.generate().address, "pay 10", now_ms=now)
        via_a = append_hop(msg.primary, signers["a"], next_hop=names["x"], now_ms=now)
        forged = append_hop({**via_a, "content": "pay 1000"}, signers["x"],
                            next_hop=names["b"], now_ms=now + 1)  # fmt: skip
        _, answer = await deliver(signers["x"], servers["b"], [forged])
        assert answer["results"][0]["struck"] is True
        sent = list(servers["b"].app[PARTS]["reports"].pending)
        assert len(sent) == 2  # to a (in the chain) and c (mesh peer); never to x
        await asyncio.gather(*sent)
        for label in ("a", "c"):
            assert [s.offender for s in await servers[label].store.strikes()] == [names["x"]]
        assert await servers["x"].store.strikes() == []


@pytest.mark.parametrize("mode", ["hybrid", "broadcast", "chain"])
async def test_a_five_server_mesh_relays_mail_for_nobody_four_times(tmp_path, mode) -> None:
    """Issue 10 §1: mail no member hosts, in a five-server mesh, reaches each other member
    once: 4 relays (hybrid made 10-12, growing as (N - 1)²)."""
    net = Network(tmp_path)
    labels = [f"s{i}" for i in range(5)]
    for label in labels:
        net.add(label)
    net.mesh("m", mode, labels)
    try:
        await asyncio.gather(*(net.start(label) for label in labels))
        async with net.session() as http:
            sender = await net.client(http, "s0", Identity.generate())
            sent = await sender.send(Identity.generate().address, "for nobody")
            assert set(sent.recipients.values()) == {"queued"}
            for _ in range(2):  # a relay queued while an earlier queue was being looked at
                await net.queues_empty(http, *labels)
            relays = [await outbound_delivered(net, http, label) for label in labels]
    finally:
        net.stop_all()
    assert sum(relays) == 4, relays
