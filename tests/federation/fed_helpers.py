"""Real FLUX servers for the federation tests.

`Network` starts `flux server` processes on 127.0.0.1, each named `localhost:<port>`
(the name peers reach it by, and the name its certificate is issued for), with the CA as
the peers' trust root, so every server-to-server request is verified TLS.

`local_servers` starts servers in this process instead (memory stores, open mode, plain
HTTP between peers listed as insecure), for tests that act as one of them: `signer(s)`
is a running server's key and `deliver` POSTs a signed delivery as any signer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import trustme

from cli.cli_helpers import Running, free_port
from flux.client import FluxClient
from flux.federation.signing import sign_request
from flux.protocol import Identity, ServerSigner
from flux.server.app import PARTS
from flux.server.config import ServerConfig
from flux.server.runner import RunningServer, start_server

#: fast retries, so an outage test takes seconds, not the production minutes
FAST_QUEUE = {
    "FLUX_QUEUE_RETRY_BASE_S": "0.1", "FLUX_QUEUE_RETRY_CAP_S": "0.5", "FLUX_QUEUE_LEASE_S": "2",
}  # fmt: skip


@dataclass
class Node:
    """One server: its name, data directory and (while running) its process."""

    label: str
    port: int
    data_dir: Path
    env: dict[str, str]
    proc: Running | None = None

    @property
    def name(self) -> str:
        return f"localhost:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self.name}"


@dataclass
class Network:
    tmp: Path
    ca: trustme.CA = field(default_factory=trustme.CA)
    nodes: dict[str, Node] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ca_file = self.tmp / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        cert = self.ca.issue_cert("localhost", "127.0.0.1")
        self.cert, self.key = self.tmp / "cert.pem", self.tmp / "key.pem"
        self.cert.write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(str(self.key))
        self.ssl = ssl.create_default_context(cafile=str(self.ca_file))

    def add(self, label: str, **env: str) -> Node:
        # every server runs on 127.0.0.1: the operator setting that allows it, made explicit
        private = {"FLUX_ALLOW_PRIVATE_PEERS": "localhost"}
        node = Node(label, free_port(), self.tmp / label, {**FAST_QUEUE, **private, **env})
        self.nodes[label] = node
        return node

    def mesh(
        self,
        name: str,
        mode: str,
        members: Iterable[str],
        token: str = "m" * 32,
        *,
        only: Iterable[str] | None = None,
    ) -> None:
        """Write a mesh.config.json listing `members` (labels) into the data dir of each
        member (or of each label in `only`, so members can list different peers)."""
        labels = list(members)
        peers = [self.nodes[m].name for m in labels]
        for label in labels if only is None else only:
            node = self.nodes[label]
            node.data_dir.mkdir(parents=True, exist_ok=True)
            path = node.data_dir / "mesh.config.json"
            doc = json.loads(path.read_text()) if path.exists() else {"meshes": {}}
            doc["meshes"][name] = {"token": token, "mode": mode, "peers": peers}
            path.write_text(json.dumps(doc))

    async def start(self, label: str) -> Node:
        node = self.nodes[label]
        node.proc = Running(
            "server", "--host", "127.0.0.1", "--port", str(node.port),
            "--data-dir", str(node.data_dir), "--tls-cert", str(self.cert),
            "--tls-key", str(self.key),
            FLUX_DOMAIN=node.name, FLUX_PEER_CA=str(self.ca_file), **node.env,
        )  # fmt: skip
        await asyncio.to_thread(node.proc.wait_for, r"FLUX server for \S+ at https://")
        return node

    def kill(self, label: str) -> None:
        node = self.nodes[label]
        if node.proc is not None:
            node.proc.kill()
            node.proc = None

    def stop_all(self) -> None:
        for label in self.nodes:
            self.kill(label)

    def session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.ssl))

    async def client(
        self, http: aiohttp.ClientSession, label: str, who: Identity, *, register: bool = True
    ) -> FluxClient:
        """A client of `label`'s server for `who`, registered there (hosted mode) unless
        `register` is False (an address registered before)."""
        client = FluxClient(who, self.nodes[label].url, session=http, plain_http_domains=())
        if register:
            await client.register()
        return client

    async def queues_empty(self, http: aiohttp.ClientSession, *labels: str) -> None:
        """Until these servers' delivery queues are empty (a peer's answer, which settles
        the queue, arrives after the push it caused)."""
        async with asyncio.timeout(30):
            for label in labels:
                while (await self.get(http, label, "/stats"))["queue"]["queued"]:
                    await asyncio.sleep(0.05)  # polling a condition, bounded by the timeout

    async def get(self, http: aiohttp.ClientSession, label: str, path: str) -> Any:
        async with http.get(self.nodes[label].url + path) as response:
            return await response.json()


class Inbox:
    """Messages pushed to one client's WebSocket, awaited by count (no polling, no sleeps)."""

    def __init__(self, client: FluxClient) -> None:
        self.client = client
        self.messages: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        client.on_message(self._arrived)

    async def _arrived(self, msg: dict[str, Any]) -> None:
        async with self._changed:
            self.messages.append(msg)
            self._changed.notify_all()

    async def connect(self) -> Inbox:
        await self.client.start_ws(timeout=30)
        return self

    async def wait_for(self, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.messages) >= count)
        return self.messages


# -- servers in this process ----------------------------------------------------------------
@contextlib.asynccontextmanager
async def local_servers(
    tmp: Path, labels: Iterable[str], **overrides: Any
) -> AsyncIterator[dict[str, RunningServer]]:
    """Servers named `127.0.0.1:<port>` that know each other as insecure peers, with
    `overrides` for all; `per_server(label, names)` (optional) adds settings of one server,
    knowing every server's name before any starts; `extra_insecure` names more plain-HTTP
    peers (a hostile peer: listing it is also what allows its loopback address)."""
    extra_insecure = frozenset(overrides.pop("extra_insecure", ()))
    ports = {label: free_port() for label in labels}
    names = {label: f"127.0.0.1:{port}" for label, port in ports.items()}
    per_server = overrides.pop("per_server", lambda label, names: {})
    running: dict[str, RunningServer] = {}
    try:
        for label, port in ports.items():
            config = ServerConfig.from_env(
                {}, host="127.0.0.1", port=port, domain=names[label], data_dir=tmp / label,
                insecure_peers=frozenset(names.values()) | extra_insecure,
                **{"backend": "memory", "open_mode": True, **overrides, **per_server(label, names)},
            )  # fmt: skip
            running[label] = await start_server(config)
        yield running
    finally:
        for server in running.values():
            await server.stop()


def signer(server: RunningServer) -> ServerSigner:
    return server.app[PARTS]["key"].signer


def name(server: RunningServer) -> str:
    return signer(server).name


async def deliver(
    frm: ServerSigner, to: RunningServer, messages: list[dict], **headers: str
) -> tuple[int, Any]:
    """POST /federation/deliver to `to`, signed with `frm`'s key: (status, JSON answer)."""
    body = json.dumps(
        {"txn": uuid.uuid4().hex, "from_server": frm.name, "messages": messages}
    ).encode()
    signed = sign_request(frm, "POST", name(to), "/federation/deliver", body,
                          now_s=int(time.time()))  # fmt: skip
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{to.url}/federation/deliver", data=body, headers={**signed, **headers}) as r,
    ):
        return r.status, await r.json()
