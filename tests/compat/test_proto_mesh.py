"""A mesh of one prototype server and two FLUX servers relays in each mode (issue 11,
item 7): FLUX to the prototype, the prototype to FLUX, FLUX to FLUX through the
prototype-kind mesh. One mesh file serves all three (the prototype ignores `kind`).

The prototype runs for real from ../shared/seed-prototype; the FLUX servers run in this
process on 127.0.0.1 (hosted mode: a bare address not registered here goes to the mesh).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from compat.proto import SEED, ProtoServer, require_seed, run_proto
from compat.test_proto_federation import flux_inbox, proto_call, proto_inbox, register_proto
from federation.fed_helpers import local_servers
from flux.client import FluxClient
from flux.compat.federation import PROTO_MESH_HEADER, mesh_token_header
from flux.federation.mesh import MeshKind, parse_meshes
from flux.protocol import Identity
from flux.protocol.outgoing import compose
from flux.server.runner import RunningServer

TOKEN = "a-prototype-mesh-token-in-clear"


@dataclass
class Mixed:
    proto: ProtoServer
    flux: dict[str, RunningServer]


@contextlib.asynccontextmanager
async def mixed_mesh(tmp: Path, mode: str) -> AsyncIterator[Mixed]:
    """Ring [prototype, f1, f2], one mesh `m` of `mode`, marked as the prototype's kind."""
    require_seed()
    proto = ProtoServer(tmp / "proto")
    proto.domain = f"127.0.0.1:{proto.port}"
    docs: dict[str, Any] = {}

    def mesh_doc(names: dict[str, str]) -> dict[str, Any]:
        peers = [proto.url, *(f"http://{names[label]}" for label in ("f1", "f2"))]
        entry = {"token": TOKEN, "mode": mode, "kind": "prototype", "peers": peers}
        return {"meshes": {"m": entry}}

    def per_server(label: str, names: dict[str, str]) -> dict[str, Any]:
        docs["doc"] = mesh_doc(names)
        path = tmp / f"{label}-mesh.json"
        path.write_text(json.dumps(docs["doc"]))
        return {"mesh_config": path}

    async with local_servers(
        tmp, ["f1", "f2"], open_mode=False, extra_insecure=[proto.domain], per_server=per_server
    ) as servers:
        (proto.workdir / "mesh.config.json").write_text(json.dumps(docs["doc"]))
        with proto:
            yield Mixed(proto, servers)


async def flux_user(server: RunningServer) -> FluxClient:
    client = FluxClient(Identity.generate(), server.url)
    await client.register()
    return client


@pytest.mark.parametrize("mode", ["broadcast", "chain", "hybrid"])
async def test_a_mixed_mesh_relays_every_way(tmp_path: Path, mode: str) -> None:
    async with mixed_mesh(tmp_path, mode) as net:
        alice, bob = await flux_user(net.flux["f1"]), await flux_user(net.flux["f2"])
        carol = await register_proto(net.proto, "carol")

        # FLUX -> prototype: carol's bare address is not hosted at f1
        await alice.send(carol["flux_address"], f"to the prototype ({mode})")
        (got,) = await proto_inbox(net.proto, carol["session"], 1)
        assert got["from"] == alice.address and got["content"] == f"to the prototype ({mode})"

        # prototype -> FLUX: its client's /send at the prototype, relayed by its mesh
        code = (
            "import asyncio, json, sys\n"
            "from flux.identity import FluxIdentity\n"
            "from flux.client import FluxClient\n"
            "async def main():\n"
            "    me = FluxIdentity.generate()\n"
            "    c = FluxClient(me, sys.argv[1])\n"
            "    answer = await c.send(sys.argv[2], 'from the prototype')\n"
            "    await c.close()\n"
            "    print(json.dumps({'from': me.address, 'answer': answer}))\n"
            "asyncio.run(main())\n"
        )
        done = await asyncio.to_thread(run_proto, code, net.proto.url, bob.address)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout.strip().splitlines()[-1])
        assert "ok" in out["answer"]["mesh"].values(), out  # some member took it
        (first,) = await flux_inbox(bob, 1)
        assert first["from"] == out["from"] and first["content"] == "from the prototype"
        assert first["integrity_chain"][0]["server"] == net.proto.domain  # its unsealed hop

        # FLUX -> FLUX through the prototype-kind mesh (sealed by f1 to f2)
        await alice.send(bob.address, f"flux to flux ({mode})")
        listed = await flux_inbox(bob, 2)
        relayed = next(m for m in listed if m["from"] == alice.address)
        assert relayed["content"] == f"flux to flux ({mode})"
        await alice.close()
        await bob.close()


async def test_the_prototypes_own_mesh_file_loads(tmp_path: Path) -> None:
    """mesh.config.example.json, unchanged: peers as URLs; the meshes are FLUX's kind
    until the operator marks them (`"kind": "prototype"`). A FLUX server starts with it."""
    example = (SEED if SEED.exists() else require_seed()) / "mesh.config.example.json"
    meshes = parse_meshes(json.loads(example.read_text()))
    assert set(meshes) == {"main", "eu-chain", "hybrid-us"}
    assert meshes["eu-chain"].peers[0] == "eu-1.example.com:8765"
    assert meshes["main"].url("server-a.example.com:8765") == "http://server-a.example.com:8765"
    assert {m.kind for m in meshes.values()} == {MeshKind.FLUX}
    async with local_servers(tmp_path, ["f"], mesh_config=example) as servers:
        _, info = await proto_call("GET", f"{servers['f'].url}/mesh/info")
        assert {m["name"] for m in info["meshes"]} == set(meshes)


async def _relay(server: RunningServer, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
    return await proto_call("POST", f"{server.url}/mesh/relay", json=body, headers=headers)


async def test_a_prototype_relay_is_bounded_like_any_send(tmp_path: Path) -> None:
    """The token must be a prototype-kind mesh's; what it carries is judged as a /send:
    a forged chain is refused, and no server is struck for it (nothing signed it)."""
    async with mixed_mesh(tmp_path, "broadcast") as net:
        f2 = net.flux["f2"]
        bob = await flux_user(f2)
        sender = Identity.generate()
        msg = compose(sender, bob.address, "relayed", now_ms=_now()).primary
        good = mesh_token_header(TOKEN)

        status, body = await _relay(f2, msg, {PROTO_MESH_HEADER: "0" * 64})
        assert status == 401 and body["field"] == PROTO_MESH_HEADER
        status, body = await _relay(f2, {"message": msg, "domains": {}}, good)
        assert status == 400 and body["field"] == "message"
        stranger = compose(sender, Identity.generate().address, "nobody", now_ms=_now()).primary
        status, body = await _relay(f2, stranger, good)
        assert status == 404 and body["code"] == "unknown_recipient"

        # a hop record "sealed" by f1 over another body: refused, and f1 is not struck
        f1_name = net.flux["f1"].url.removeprefix("http://")
        forged = _forged_hop(msg, f1_name)
        status, body = await _relay(f2, forged, good)
        assert status in (400, 403) and body["code"] == "chain_invalid", body
        _, standing = await proto_call("GET", f"{f2.url}/integrity/reputation")
        assert f1_name not in json.dumps(standing)

        status, body = await _relay(f2, msg, good)
        assert status == 200, body
        (got,) = await flux_inbox(bob, 1)
        assert got["content"] == "relayed"
        await bob.close()


def _now() -> int:
    import time

    return int(time.time() * 1000)


def _forged_hop(msg: dict[str, Any], server: str) -> dict[str, Any]:
    """`msg` with a sealed record naming `server`, made by someone else over another body."""
    from flux.protocol import ServerSigner
    from flux.protocol.chain import append_hop

    impostor = ServerSigner(server, Identity.generate())
    other = {**msg, "content": "the original words"}
    sealed = append_hop(other, impostor, next_hop="elsewhere.test", now_ms=_now())
    return {**msg, "route": sealed["route"], "integrity_chain": sealed["integrity_chain"]}
