"""Mesh relays from the submit pipeline (server/submission.py `_mesh_relays`, mesh.py):
bare `fx1…` mail for an address this server does not host goes to its mesh peers, by the
mesh's mode, and reaches the member that hosts it once.

Hosted-mode FLUX servers run in this process on 127.0.0.1 (memory stores, plain HTTP
between peers listed as insecure), each with its own mesh.config.json, so the relays are
the real signed /mesh/relay requests between real servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cli.cli_helpers import free_port
from flux.protocol import Identity, compose
from flux.server.config import ServerConfig
from flux.server.runner import RunningServer, start_server

TOKEN = "m" * 32


@contextlib.asynccontextmanager
async def hosted_mesh(
    tmp: Path, mode: str, labels: list[str], lists: dict[str, list[str]] | None = None
) -> AsyncIterator[dict[str, RunningServer]]:
    """Servers `labels` in one mesh `m`; `lists[label]` is the members that one lists
    (default: all of them, in order)."""
    meshes = {label: {"m": (mode, (lists or {}).get(label, labels))} for label in labels}
    async with hosted_meshes(tmp, meshes) as running:
        yield running


@contextlib.asynccontextmanager
async def hosted_meshes(
    tmp: Path, meshes: dict[str, dict[str, tuple[str, list[str]]]]
) -> AsyncIterator[dict[str, RunningServer]]:
    """Servers `meshes` names; `meshes[label]` is {mesh name: (mode, members it lists)}."""
    labels = list(meshes)
    ports = {label: free_port() for label in labels}
    names = {label: f"127.0.0.1:{port}" for label, port in ports.items()}
    running: dict[str, RunningServer] = {}
    try:
        for label in labels:
            path = tmp / f"{label}-mesh.json"
            doc = {mesh: {"token": TOKEN, "mode": mode, "peers": [names[m] for m in members]}
                   for mesh, (mode, members) in meshes[label].items()}  # fmt: skip
            path.write_text(json.dumps({"meshes": doc}))
            config = ServerConfig.from_env(
                {}, host="127.0.0.1", port=ports[label], domain=names[label],
                data_dir=tmp / label, backend="memory", open_mode=False,
                insecure_peers=frozenset(names.values()), mesh_config=path,
            )  # fmt: skip
            running[label] = await start_server(config)
        yield running
    finally:
        for server in running.values():
            await server.stop()


async def register(server: RunningServer, who: Identity) -> None:
    t = int(time.time() * 1000)
    payload = f"flux-register:1:{_domain(server)}:{who.address}:{t}"
    body = {"address": who.address, "pub": who.pub_b64(), "t": t, "sig": who.sign(payload)}
    async with aiohttp.ClientSession() as http, http.post(server.url + "/register", json=body) as r:
        assert r.status == 200, await r.text()


def _domain(server: RunningServer) -> str:
    return server.url.removeprefix("http://")


async def send(server: RunningServer, msg: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.post(server.url + "/send", json=msg) as r:
        body = await r.json()
        assert r.status == 200, body
        return body


async def arrival(server: RunningServer, who: Identity, msg_id: str) -> Any:
    """The stored row once the mesh has carried the message there (bounded wait)."""
    async with asyncio.timeout(15):
        while (row := await server.store.get(who.address, msg_id)) is None:
            await asyncio.sleep(0.02)  # relays run in the delivery workers' tasks: poll
    return row


async def settled(*servers: RunningServer) -> None:
    """Until no server has anything left in its delivery queue (bounded wait)."""
    async with asyncio.timeout(15):
        for server in servers:
            while await server.store.queue_state():
                await asyncio.sleep(0.02)


def chain_of(row: Any) -> list[str]:
    return [hop["server"] for hop in row.envelope["integrity_chain"]]


@pytest.mark.parametrize(
    ("mode", "path"),
    [("broadcast", ["a", "c"]), ("chain", ["a", "b", "c"]), ("hybrid", ["a", "c"])],
)
async def test_bare_mail_reaches_the_member_hosting_it_by_the_meshs_mode(
    tmp_path, alice, bob, mode, path
):
    async with hosted_mesh(tmp_path, mode, ["a", "b", "c"]) as servers:
        await register(servers["a"], alice)
        await register(servers["c"], bob)
        msg = compose(alice, bob.address, "through the mesh", now_ms=int(time.time() * 1000))
        answer = await send(servers["a"], msg.primary)
        assert answer["recipients"] == {bob.address: "queued"}
        row = await arrival(servers["c"], bob, msg.primary["id"])
        assert chain_of(row) == [_domain(servers[label]) for label in path]
        await settled(*servers.values())
        # nobody else stored it, and the member hosting it got it once
        assert await servers["b"].store.get(bob.address, msg.primary["id"]) is None


async def test_hybrid_reaches_a_member_the_first_server_does_not_list(tmp_path, alice, bob):
    """a lists only b; b, a direct receiver, passes it on along its ring to c."""
    lists = {"a": ["a", "b"]}
    async with hosted_mesh(tmp_path, "hybrid", ["a", "b", "c"], lists) as servers:
        await register(servers["a"], alice)
        await register(servers["c"], bob)
        msg = compose(alice, bob.address, "past the first list", now_ms=int(time.time() * 1000))
        await send(servers["a"], msg.primary)
        row = await arrival(servers["c"], bob, msg.primary["id"])
        assert chain_of(row) == [_domain(servers[label]) for label in ("a", "b", "c")]


async def test_mail_for_a_stranger_to_the_mesh_is_refused_without_a_mesh(tmp_path, alice, bob):
    """A server in no mesh refuses bare mail for an address it does not host (404)."""
    ports = free_port()
    config = ServerConfig.from_env({}, host="127.0.0.1", port=ports, domain=f"127.0.0.1:{ports}",
                                   data_dir=tmp_path / "solo", backend="memory",
                                   open_mode=False)  # fmt: skip
    server = await start_server(config)
    try:
        await register(server, alice)
        msg = compose(alice, bob.address, "nobody here", now_ms=int(time.time() * 1000))
        async with (
            aiohttp.ClientSession() as http,
            http.post(server.url + "/send", json=msg.primary) as r,
        ):
            body = await r.json()
        assert (r.status, body["code"]) == (404, "unknown_recipient")
    finally:
        await server.stop()


async def test_mail_for_a_user_hosted_here_stays_here(tmp_path, alice, bob):
    """Only recipients this server does not host go to the mesh: nothing is queued for
    mail it stores itself."""
    async with hosted_mesh(tmp_path, "broadcast", ["a", "b"]) as servers:
        await register(servers["a"], alice)
        await register(servers["a"], bob)
        msg = compose(alice, bob.address, "next door", now_ms=int(time.time() * 1000))
        answer = await send(servers["a"], msg.primary)
        assert answer["recipients"] == {bob.address: "stored"}
        assert await servers["a"].store.queue_state() == []


async def test_relayed_mail_goes_on_only_through_the_mesh_it_came_through(tmp_path, alice, bob):
    """b is in meshes m1 (with a) and m2 (with d): mail a hands b through m1 is passed on
    in m1 only, so d, which hosts bob, never gets it that way."""
    meshes = {
        "a": {"m1": ("chain", ["a", "b"])},
        "b": {"m1": ("chain", ["a", "b"]), "m2": ("chain", ["b", "d"])},
        "d": {"m2": ("chain", ["b", "d"])},
    }
    async with hosted_meshes(tmp_path, meshes) as servers:
        await register(servers["a"], alice)
        await register(servers["d"], bob)
        msg = compose(alice, bob.address, "stays in m1", now_ms=int(time.time() * 1000))
        answer = await send(servers["a"], msg.primary)
        assert answer["recipients"] == {bob.address: "queued"}
        await settled(servers["a"])
        await settled(servers["b"])
        assert await servers["d"].store.get(bob.address, msg.primary["id"]) is None
