"""Mixed federation: a real prototype server and a real FLUX server exchange mail by name
both ways (issue 11, items 6 and 8; PROTOCOL.md §13).

The prototype runs from ../shared/seed-prototype (`ProtoServer`, `run_proto`); FLUX runs in
this process (`local_servers`: named `127.0.0.1:<port>`, the prototype's name listed as an
insecure peer, which is what lets FLUX reach it over plain HTTP on loopback). The prototype
reaches a domain written with a port over plain HTTP by itself.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cli.cli_helpers import flux as flux_cli
from cli.cli_helpers import make_key
from compat.proto import ProtoServer, require_seed, run_proto
from federation.fed_helpers import local_servers
from flux.client import FluxClient
from flux.compat.federation import (
    PeerDialect,
    Unsendable,
    binding_of,
    dialect_of,
    judge_send_answer,
    unsendable,
)
from flux.protocol import Identity
from flux.protocol.outgoing import compose

PASSWORD = "correct horse battery"


def proto_server(tmp: Path) -> ProtoServer:
    """A prototype server whose domain is its own `127.0.0.1:<port>`."""
    require_seed()
    server = ProtoServer(tmp / "proto")
    server.domain = f"127.0.0.1:{server.port}"
    return server


async def proto_call(method: str, url: str, **kw: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.request(method, url, **kw) as r:
        return r.status, await r.json(content_type=None)


async def proto_inbox(proto: ProtoServer, session: str, count: int) -> list[dict]:
    """The prototype account's `/mail/inbox` once it holds `count` messages (polled: the
    prototype pushes nothing an HTTP test can wait on), within 30 s."""
    async with asyncio.timeout(30):
        while True:
            status, body = await proto_call(
                "GET", f"{proto.url}/mail/inbox", headers={"X-Flux-Session": session}
            )
            assert status == 200, body
            if len(body["messages"]) >= count:
                return body["messages"]
            await asyncio.sleep(0.1)  # polling a condition, bounded by the timeout


async def register_proto(proto: ProtoServer, username: str) -> dict:
    status, body = await proto_call(
        "POST", f"{proto.url}/account/register", json={"username": username, "password": PASSWORD}
    )
    assert status == 200, body
    return body


async def flux_inbox(client: FluxClient, count: int) -> list[dict]:
    async with asyncio.timeout(30):
        while True:
            messages = await client.inbox()
            listed = messages if isinstance(messages, list) else messages.messages
            if len(listed) >= count:
                return listed
            await asyncio.sleep(0.1)  # polling a condition, bounded by the timeout


async def test_prototype_sends_by_name_to_flux(tmp_path: Path) -> None:
    """The prototype's own resolver reads FLUX's answer (`flux_address`), and its client
    posts the envelope to that domain's `/send`, as the prototype delivers."""
    with proto_server(tmp_path) as proto:
        async with local_servers(tmp_path, ["f"], extra_insecure=[proto.domain]) as servers:
            flux = servers["f"]
            domain = flux.url.removeprefix("http://")
            bob = FluxClient(Identity.generate(), flux.url)
            await bob.register()
            await bob.claim("bob")
            code = (
                "import asyncio, json, sys, aiohttp\n"
                "from flux.identity import FluxIdentity\n"
                "from flux.client import FluxClient\n"
                "from flux.federation import resolve_address\n"
                "async def main():\n"
                "    me = FluxIdentity.generate()\n"
                "    async with aiohttp.ClientSession() as s:\n"
                "        fx1 = await resolve_address(f'bob@{sys.argv[1]}', sys.argv[2], s)\n"
                "    c = FluxClient(me, f'http://{sys.argv[1]}')\n"
                "    answer = await c.send(fx1, 'hello from the prototype')\n"
                "    await c.close()\n"
                "    print(json.dumps({'fx1': fx1, 'from': me.address, 'answer': answer}))\n"
                "asyncio.run(main())\n"
            )
            done = await asyncio.to_thread(run_proto, code, domain, proto.domain)
            assert done.returncode == 0, done.stderr
            out = json.loads(done.stdout.strip().splitlines()[-1])
            assert out["fx1"] == bob.address
            assert out["answer"]["ok"] is True, out
            (msg,) = await flux_inbox(bob, 1)
            assert msg["from"] == out["from"] and msg["content"] == "hello from the prototype"
            await bob.close()


async def test_flux_sends_by_name_to_the_prototype(tmp_path: Path) -> None:
    """FLUX's client resolves `carol@<prototype>` (the prototype's `flux_address` answer);
    FLUX's queue finds a prototype at `/federation/info` and delivers to its `/send`,
    sealed as any hop; the prototype checks and stores it for carol."""
    with proto_server(tmp_path) as proto:
        carol = await register_proto(proto, "carol")
        async with local_servers(tmp_path, ["f"], extra_insecure=[proto.domain]) as servers:
            alice = FluxClient(Identity.generate(), servers["f"].url)
            await alice.register()
            result = await alice.send(f"carol@{proto.domain}", "hello from FLUX")
            assert result  # queued for the prototype's domain
            (msg,) = await proto_inbox(proto, carol["session"], 1)
            assert msg["from"] == alice.address and msg["content"] == "hello from FLUX"
            assert msg["to"] == carol["flux_address"]
            sealed = msg["integrity_chain"][0]
            assert sealed["server"] == servers["f"].url.removeprefix("http://")
            assert sealed["next"] == proto.domain  # sealed to the prototype, which kept it
            await alice.close()


async def test_a_bcc_copy_for_the_prototype_bounces_named(tmp_path: Path) -> None:
    """The primary reaches carol; the BCC copy for dave is never sent (the prototype would
    store it for carol again, and dave would get nothing): it bounces as `prototype_bcc`."""
    with proto_server(tmp_path) as proto:
        carol = await register_proto(proto, "carol")
        dave = await register_proto(proto, "dave")
        async with local_servers(tmp_path, ["f"], extra_insecure=[proto.domain]) as servers:
            alice = FluxClient(Identity.generate(), servers["f"].url)
            await alice.register()
            await alice.send(f"carol@{proto.domain}", "seen by carol", bcc=f"dave@{proto.domain}")
            (got,) = await proto_inbox(proto, carol["session"], 1)
            assert got["content"] == "seen by carol" and "bcc" not in got
            (bounce,) = await flux_inbox(alice, 1)
            assert "bounce" in bounce.get("tags", [])
            assert str(Unsendable.BCC) in bounce["content"]
            assert dave["flux_address"] in bounce["content"]
            await alice.close()
        status, body = await proto_call(
            "GET", f"{proto.url}/mail/inbox", headers={"X-Flux-Session": carol["session"]}
        )
        assert status == 200 and len(body["messages"]) == 1  # not the BCC copy as well


async def test_the_flux_cli_sends_by_name_to_the_prototype(tmp_path: Path) -> None:
    """`flux send dave@<prototype>` (a real CLI process) through a FLUX server."""
    with proto_server(tmp_path) as proto:
        dave = await register_proto(proto, "dave")
        async with local_servers(tmp_path, ["f"], extra_insecure=[proto.domain]) as servers:
            key = tmp_path / "erin.json"
            erin = make_key(key)
            url = servers["f"].url
            registered = await asyncio.to_thread(
                flux_cli, "register", "--key", str(key), "--server", url
            )
            assert registered.returncode == 0, registered.stderr
            sent = await asyncio.to_thread(
                flux_cli, "send", f"dave@{proto.domain}", "hello from the FLUX CLI",
                "--key", str(key), "--server", url,
            )  # fmt: skip
            assert sent.returncode == 0, sent.stderr
            (msg,) = await proto_inbox(proto, dave["session"], 1)
            assert msg["from"] == erin and msg["content"] == "hello from the FLUX CLI"


async def test_the_prototype_server_resolves_a_flux_name(tmp_path: Path) -> None:
    """The prototype's own `/mail/send` resolves `bob@<flux>` through FLUX's answer
    (`fx1_to`). It then stores the mail on the prototype itself: that is how the
    prototype's account route works (it never forwards), not something FLUX can change."""
    with proto_server(tmp_path) as proto:
        frank = await register_proto(proto, "frank")
        async with local_servers(tmp_path, ["f"], extra_insecure=[proto.domain]) as servers:
            bob = FluxClient(Identity.generate(), servers["f"].url)
            await bob.register()
            await bob.claim("bob")
            domain = servers["f"].url.removeprefix("http://")
            status, body = await proto_call(
                "POST", f"{proto.url}/mail/send", headers={"X-Flux-Session": frank["session"]},
                json={"to": f"bob@{domain}", "content": "resolved by the prototype"},
            )  # fmt: skip
            assert status == 200, body
            assert body["fx1_to"] == bob.address
            await bob.close()


async def test_mail_the_prototype_would_refuse_bounces_at_once_named(tmp_path: Path) -> None:
    """A copy the prototype can never take (older than its 5-minute window) is not retried
    for days: it is bounced at once, the bounce naming `prototype_stale`."""
    with proto_server(tmp_path) as proto:
        carol = await register_proto(proto, "carol")
        async with local_servers(tmp_path, ["f"], extra_insecure=[proto.domain]) as servers:
            me = Identity.generate()
            alice = FluxClient(me, servers["f"].url)
            await alice.register()
            old = int(time.time() * 1000) - 280_000  # FLUX takes it; the prototype would not
            msg = compose(me, carol["flux_address"], "late", now_ms=old).primary
            status, body = await proto_call(
                "POST", f"{servers['f'].url}/send",
                json={"message": msg, "domains": {carol["flux_address"]: proto.domain}},
            )  # fmt: skip
            assert status == 200, body
            (bounce,) = await flux_inbox(alice, 1)
            assert "bounce" in bounce.get("tags", [])
            assert str(Unsendable.STALE) in bounce["content"]
            await alice.close()
        status, body = await proto_call(
            "GET", f"{proto.url}/mail/peek", headers={"X-Flux-Session": carol["session"]}
        )
        assert body.get("count", 0) == 0  # never sent


# -- the pure translation --------------------------------------------------------------------


def test_the_dialect_is_read_from_info_or_health() -> None:
    proto_info = {"ok": True, "domain": "p", "version": "2.1.1", "protocol": "1.0",
                  "federation": True}  # fmt: skip
    assert dialect_of(proto_info) is PeerDialect.PROTOTYPE
    assert dialect_of({"ok": True, "keys": [], "protocol": "1.0"}) is PeerDialect.FLUX
    assert dialect_of(None, {"ok": True, "protocol": "1.0", "version": "2.1.1"}) is (
        PeerDialect.PROTOTYPE
    )
    assert dialect_of(None, {"ok": True, "version": "1", "domain": "d"}) is PeerDialect.FLUX
    assert dialect_of({"ok": False}, {"error": "x"}) is None


@pytest.mark.parametrize(
    ("status", "answer", "expected"),
    [
        (200, {"ok": True, "delivery": "queued"}, {"recipients": {"a": "stored", "c": "not_hosted"}}),
        (200, {"ok": True, "delivery": "dropped"}, "quota_exceeded"),
        (429, {"ok": False, "error": "mailbox full"}, "quota_exceeded"),
        (400, {"ok": False, "error": "message too old"}, "prototype_refused"),
        (403, {"ok": False, "error": "invalid signature"}, "prototype_refused"),
    ],
)  # fmt: skip
def test_prototype_answers_become_flux_results(status, answer, expected) -> None:
    result = judge_send_answer(status, answer, ["a", "c"], "a")
    if isinstance(expected, dict):
        assert result == expected
    else:
        assert result["refused"] == expected and result["error"]


def test_a_flux_member_hosting_nobody_is_not_hosted() -> None:
    answer = {"ok": False, "error": "nobody here", "code": "unknown_recipient", "field": "to"}
    assert judge_send_answer(404, answer, ["a", "c"], "a") == {
        "recipients": {"a": "not_hosted", "c": "not_hosted"}
    }


@pytest.mark.parametrize("status", [404, 405, 500, 502])
def test_an_answer_that_says_nothing_is_retried(status) -> None:
    with pytest.raises(ValueError, match=str(status)):
        judge_send_answer(status, None, ["a"], "a")


def test_what_a_prototype_can_never_take_is_named() -> None:
    now = 10_000_000
    fresh = {"to": "a", "t": now}
    assert unsendable(fresh, ["a"], now) is None
    assert unsendable({**fresh, "bcc": ["b"]}, ["b"], now)[0] is Unsendable.BCC
    assert unsendable(fresh, ["c"], now)[0] is Unsendable.TO_ONLY
    assert unsendable({**fresh, "t": now - 290_000}, ["a"], now)[0] is Unsendable.STALE


def test_a_binding_is_read_in_either_dialect() -> None:
    assert binding_of({"address": "x", "pub": "p", "flux_address": "y"}) == ("x", "p")
    assert binding_of({"flux_address": "y", "flux_pub_b64": "q"}) == ("y", "q")


# -- item 12: prototype hop records whose `server` is not a lower-case host:port ----------

#: what prototype operators write as --domain (or what a Host header gives it)
ODD_NAMES = ("Mail.Example.com", "[::1]:8765")

PROTO_HOPS = r"""
import json, sys
from flux.identity import FluxIdentity
from flux.integrity import append_integrity_hop
from flux.message import build_message
msg = build_message(FluxIdentity.generate(), sys.argv[1], "through odd names")
for name in sys.argv[2:]:
    msg = append_integrity_hop(msg, name)
print(json.dumps(msg))
"""


async def test_prototype_hops_with_odd_server_names_are_accepted(tmp_path: Path) -> None:
    """The prototype's own records (its `append_integrity_hop`), named `Mail.Example.com`
    and `[::1]:8765`, pass FLUX's chain check as unsealed records, unchanged: a FLUX
    server takes the message and seals after them."""
    require_seed()
    rcpt = Identity.generate().address
    done = await asyncio.to_thread(run_proto, PROTO_HOPS, rcpt, *ODD_NAMES)
    assert done.returncode == 0, done.stderr
    msg = json.loads(done.stdout)
    assert [h["server"] for h in msg["integrity_chain"]] == list(ODD_NAMES)
    async with local_servers(tmp_path, ["f"]) as servers:
        status, body = await proto_call("POST", f"{servers['f'].url}/send", json=msg)
        assert status == 200, body


def test_odd_names_are_labels_never_servers() -> None:
    """An unsealed record's odd name verifies (its signature covers it as written, so it
    is not normalised), is never a server to fetch keys from or report to, and cannot be
    blamed; a sealed record must still name a server (§13, hop record names)."""
    from flux.protocol import ServerSigner
    from flux.protocol.chain import (
        HopStatus,
        append_hop,
        first_committed_failure,
        servers_in_chain,
        verify_chain,
    )
    from flux.protocol.envelope import integrity_hash

    me, hop_key = Identity.generate(), Identity.generate()
    msg = compose(me, Identity.generate().address, "hi", now_ms=1_000).primary
    for name in ODD_NAMES:
        digest = integrity_hash(msg)
        record = {"server": name, "t": 2_000, "hash": digest,
                  "sig": hop_key.sign(f"{name}:2000:{digest}"), "pub": hop_key.pub_b64()}  # fmt: skip
        msg = {**msg, "integrity_chain": [*msg["integrity_chain"], record]}
    check = verify_chain(msg, None)
    assert [h.status for h in check.hops] == [HopStatus.UNSEALED] * 2
    relay = ServerSigner("relay.example", Identity.generate())
    sealed = append_hop(msg, relay, next_hop="next.example", now_ms=3_000)
    assert [h.status for h in verify_chain(sealed, None).hops][-1] is HopStatus.SEALED
    assert first_committed_failure(sealed) is None
    assert servers_in_chain(sealed) == ["relay.example"]
    lowered = {**msg["integrity_chain"][0], "server": ODD_NAMES[0].lower()}
    renamed = {**msg, "integrity_chain": [lowered, msg["integrity_chain"][1]]}
    assert verify_chain(renamed, None).first_failure is not None  # its signature breaks
    odd_seal = {**sealed["integrity_chain"][-1], "server": "Relay.Example"}
    forged = {**sealed, "integrity_chain": [*sealed["integrity_chain"][:-1], odd_seal]}
    bad = verify_chain(forged, None).first_failure
    assert bad is not None and bad.reason == "server is not a server name"
    spaced = {**msg["integrity_chain"][0], "server": "mail example"}
    assert verify_chain({**msg, "integrity_chain": [spaced]}, None).first_failure is not None


def test_only_a_prototype_kind_mesh_takes_the_header() -> None:
    from flux.compat.federation import PROTO_MESH_HEADER, mesh_token_header
    from flux.compat.mesh import check_proto_relay, is_proto_relay
    from flux.federation.mesh import Mesh, MeshKind, MeshMode
    from flux.protocol.errors import BadRequestSignature

    flux_kind = Mesh("f", "f" * 32, MeshMode.BROADCAST, ("a:1",))
    proto_kind = Mesh("p", "p" * 32, MeshMode.CHAIN, ("a:1",), MeshKind.PROTOTYPE)
    meshes = {"f": flux_kind, "p": proto_kind}
    assert check_proto_relay(mesh_token_header("p" * 32), meshes) is proto_kind
    for headers in (mesh_token_header("f" * 32), {PROTO_MESH_HEADER: "p" * 32}, {}):
        with pytest.raises(BadRequestSignature):
            check_proto_relay(headers, meshes)
    assert is_proto_relay(mesh_token_header("x"))
    assert not is_proto_relay({**mesh_token_header("x"), "Signature": "flux=:x:"})
