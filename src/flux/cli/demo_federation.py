"""The federation part of `flux demo`: two more real servers in this process.

north (alice's server) and south (carol's) deliver to each other through north's durable
queue; then a relay, west, turns bad: it alters a message north sealed to it and hands it
to south, which refuses it, proves the offense against west (west's own seal over the
forgery), strikes it, reports it to north, and at the third proof quarantines it.

The servers talk plain HTTP on 127.0.0.1 (each lists the others as insecure peers), which
a real deployment would never do: there, peers use verified HTTPS (docs/FEDERATION.md).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from ..client import FluxClient
from ..federation.signing import sign_request
from ..identity import FluxIdentity
from ..protocol import append_hop
from ..protocol.chain import ServerSigner
from ..server.app import PARTS
from ..server.config import ServerConfig
from ..server.runner import RunningServer, start_server
from ._common import ok, out, short

WAIT_S = 10.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def federation_demo(workdir: Path) -> None:
    names = {label: f"127.0.0.1:{_free_port()}" for label in ("north", "south", "west")}
    servers: dict[str, RunningServer] = {}
    try:
        for label, name in names.items():
            host, port = name.split(":")
            config = ServerConfig.from_env(
                {}, host=host, port=int(port), domain=name, backend="sqlite",
                data_dir=workdir / label, insecure_peers=frozenset(names.values()),
            )  # fmt: skip
            servers[label] = await start_server(config)
        out.rule("[bold]federation: servers delivering to each other")
        for label, name in names.items():
            ok(f"{label} server is {name} (its own key, its own SQLite database)")
        await _deliver_across(servers, names)
        await _catch_a_tampering_relay(servers, names)
    finally:
        for server in servers.values():
            await server.stop()


async def _deliver_across(servers: dict[str, RunningServer], names: dict[str, str]) -> None:
    alice_id, carol_id = FluxIdentity.generate(), FluxIdentity.generate()
    north, south = servers["north"].url, servers["south"].url
    async with FluxClient(alice_id, north) as alice, FluxClient(carol_id, south) as carol:
        await alice.register()
        await carol.register()
        ok(f"alice registered at north, carol at south ({short(carol.address, 12)}…)")
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        carol.on_message(inbox.put)
        await carol.start_ws(timeout=WAIT_S)
        to = f"{carol.address}@{names['south']}"
        sent = await alice.send(
            to, "Lunch on Friday? This is end-to-end encrypted across two servers.",
            subject="Friday", encrypt=True, keys={carol.address: carol.identity.pub_b64()},
        )  # fmt: skip
        ok(f"alice sent {short(sent.id, 8)} to {short(to, 12)}…: north answered "
           f"{sent.recipients[carol.address]!r} (in its durable delivery queue)")  # fmt: skip
        msg = await asyncio.wait_for(inbox.get(), WAIT_S)
        ok("north sealed it to south and delivered it in one signed request; "
           "carol got it by push")  # fmt: skip
        verified = await carol.verify_online(msg)
        hops = " → ".join(h["server"] for h in msg["integrity_chain"])
        ok(f"carol verified it: alice's signature, and {verified.hops} sealed hops ({hops}) "
           "under the keys each server publishes")  # fmt: skip
        ok(f"carol decrypted it: {carol.decrypt(msg)!r}")


async def _catch_a_tampering_relay(
    servers: dict[str, RunningServer], names: dict[str, str]
) -> None:
    out.rule("[bold]a tampering relay is caught")
    north, south, west = (_signer(servers[k]) for k in ("north", "south", "west"))
    dave, erin = FluxIdentity.generate(), FluxIdentity.generate()
    await servers["south"].store.register_address(erin.address, erin.pub_b64(), _now())
    for n in range(1, 4):
        original = _message(dave, erin.address, f"Invoice {n}: pay account 1234")
        via_north = append_hop(original, north, next_hop=west.name, now_ms=_now())
        forged = {**via_north, "content": f"Invoice {n}: pay account 6666 (mallory)"}
        sealed = append_hop(forged, west, next_hop=south.name, now_ms=_now())
        result = await _deliver(west, servers["south"], sealed)
        ok(f"west changed invoice {n} and sealed it on; south refused it "
           f"({result['refused']}), struck={result['struck']}")  # fmt: skip
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{servers['south'].url}/integrity/reputation") as response,
    ):
        body = await response.json()
    ok(f"south's reputation table: strikes {body['strikes']}, "
       f"quarantined {body['quarantined']}")  # fmt: skip
    honest = append_hop(
        append_hop(_message(dave, erin.address, "an honest note"), north, next_hop=west.name,
                   now_ms=_now()),
        west, next_hop=south.name, now_ms=_now(),
    )  # fmt: skip
    result = await _deliver(west, servers["south"], honest)
    ok(f"now even west's honest relaying is refused: {result['refused']} "
       f"({result['error']})")  # fmt: skip
    await _reports_settled(servers["south"])
    offenders = [s.offender for s in await servers["north"].store.strikes()]
    others = sorted(set(offenders) - {west.name}) or "nobody else"
    ok(f"south reported each proof to north, which re-proved them: north counts "
       f"{offenders.count(west.name)} strikes against west, and against {others}")  # fmt: skip


def _signer(server: RunningServer) -> ServerSigner:
    return server.app[PARTS]["key"].signer


def _now() -> int:
    return int(time.time() * 1000)


def _message(sender: FluxIdentity, to: str, content: str) -> dict[str, Any]:
    from ..protocol import compose

    return compose(sender, to, content, now_ms=_now()).primary


async def _deliver(frm: ServerSigner, to: RunningServer, msg: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps({"txn": uuid.uuid4().hex, "from_server": frm.name, "messages": [msg]})
    target = _signer(to).name
    headers = sign_request(frm, "POST", target, "/federation/deliver", body.encode(),
                           now_s=_now() // 1000)  # fmt: skip
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{to.url}/federation/deliver", data=body, headers=headers) as response,
    ):
        return (await response.json())["results"][0]


async def _reports_settled(server: RunningServer) -> None:
    pending = list(server.app[PARTS]["reports"].pending)
    await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), WAIT_S)
