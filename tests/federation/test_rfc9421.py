"""FLUX's signed requests (PROTOCOL.md §10.6) against an independent RFC 9421 implementation,
`http-message-signatures` (pinned in pyproject.toml's dev extras), both ways:

* what a real FLUX server sends to a peer (a delivery, a mesh relay), captured on the wire,
  verifies with the library under the key the sender publishes at /federation/info;
* a transaction the library signs (FLUX's profile: label `flux`, the four components,
  `created`, `keyid`, `alg`) is accepted by a real FLUX server, and the headers are
  byte-for-byte the ones FLUX makes for the same request;
* where the two differ, each difference is pinned here, as §10.6 states it: a server name
  that spells out the default port (`:443`), a query string, and the RFC 9421 freedoms a
  FLUX receiver does not take (other labels, parameters, components, digest algorithms).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from http_message_signatures import (
    ContentDigest,
    HTTPMessageSigner,
    HTTPMessageVerifier,
    InvalidSignature,
    MappingKeyResolver,
    algorithms,
)

from cli.cli_helpers import free_port
from federation.fed_helpers import local_servers, name, signer
from flux.client import FluxClient
from flux.federation.signing import COMPONENTS, LABEL, sign_request, verify_request
from flux.protocol import Identity, ServerSigner, compose
from flux.protocol.chain import ChainVerdict, PublishedKey, append_hop
from flux.protocol.encoding import b64d, b64e
from flux.protocol.errors import BadRequestSignature
from flux.server.config import ServerConfig
from flux.server.runner import RunningServer, start_server
from flux.store.base import ListQuery

SEED = b"\x41" * 32
SENDER = ServerSigner("a.example:8443", Identity(SEED))
BODY = b'{"txn":"t","from_server":"a.example:8443","messages":[{}]}'


@dataclass
class Request:
    """The request view the library signs and verifies: method, absolute URL, headers."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)


def _private(seed: bytes) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(seed)


def library_signer(keyid: str, seed: bytes) -> HTTPMessageSigner:
    keys = MappingKeyResolver(public_keys={}, private_keys={keyid: _private(seed)})
    return HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=keys)


def library_verify(
    request: Request, body: bytes, keyid: str, pub: bytes, *, require: Sequence[str] = COMPONENTS
) -> Sequence[Any]:
    """The library's verdict on `request` under `pub`, its body digest checked and the
    `require`d components covered. Raises InvalidSignature."""
    keys = MappingKeyResolver(
        public_keys={keyid: Ed25519PublicKey.from_public_bytes(pub)}, private_keys={}
    )
    verifier = HTTPMessageVerifier(signature_algorithm=algorithms.ED25519, key_resolver=keys)
    return verifier.verify(request, body=body, require_components=require)


def sign_as_flux_profile(
    request: Request, body: bytes, keyid: str, seed: bytes, *, created: int, **options: Any
) -> None:
    """The library signs `request` with FLUX's profile (PROTOCOL.md §10.6), `options`
    changing it."""
    library_signer(keyid, seed).sign(
        request,
        **{
            "key_id": keyid, "label": LABEL, "covered_component_ids": COMPONENTS, "body": body,
            "created": datetime.datetime.fromtimestamp(created, datetime.UTC), **options,
        },
    )  # fmt: skip


def flux_verify(request: Request, body: bytes, authority: str, pub: bytes, now_s: int) -> str:
    """FLUX's receiver's verdict (`verify_request`) on a request that reached `authority`:
    the signing server's name. Raises BadRequestSignature."""
    path = request.url.split("://", 1)[1]
    path = path[path.index("/") :]
    signed = verify_request(
        request.method, path, request.headers, body,
        keys=lambda server: [PublishedKey(pub)], now_s=now_s, authority=authority,
    )  # fmt: skip
    return signed.server


# -- both ways, on the wire -----------------------------------------------------------------
@dataclass
class CapturingPeer:
    """A peer that keeps every signed request it gets, as received, and answers each message
    `stored` (so its sender is done with it)."""

    port: int = field(default_factory=free_port)
    seen: list[tuple[Request, bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    @property
    def name(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> CapturingPeer:
        key = Identity(b"\x42" * 32)
        info = {"ok": True, "domain": self.name, "version": "test", "protocol": "1.0",
                "keys": [{"pub": b64e(key.public_key), "valid_from": 0, "valid_until": None}],
                "retired_keys": []}  # fmt: skip
        app = web.Application()

        async def federation_info(_: web.Request) -> web.Response:
            return web.json_response(info)

        async def well_known(_: web.Request) -> web.Response:
            return web.json_response({"ok": True, "server": self.name})

        app.router.add_get("/federation/info", federation_info)
        app.router.add_get("/.well-known/flux", well_known)
        app.router.add_post("/federation/deliver", self._take)
        app.router.add_post("/mesh/relay", self._take)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _take(self, request: web.Request) -> web.Response:
        body = await request.read()
        url = f"http://{request.host}{request.path_qs}"
        self.seen.append((Request(request.method, url, dict(request.headers)), body))
        self.arrived.set()
        doc = json.loads(body)
        results = [
            {"id": m["id"], "recipients": dict.fromkeys([m["to"], *m.get("cc", [])], "stored")}
            for m in doc["messages"]
        ]
        return web.json_response({"ok": True, "txn": doc["txn"], "results": results})


async def _published_key(server: RunningServer) -> bytes:
    async with aiohttp.ClientSession() as http, http.get(server.url + "/federation/info") as r:
        info = await r.json()
    return b64d(info["keys"][0]["pub"])


@pytest.fixture
async def flux_to_capture(tmp_path: Path) -> AsyncIterator[tuple[RunningServer, CapturingPeer]]:
    """A real FLUX server (A) that reaches the capturing peer over plain HTTP, directly
    and as a member of a broadcast mesh."""
    async with CapturingPeer() as peer:
        port = free_port()
        mesh = tmp_path / "mesh.json"
        mesh.write_text(json.dumps({"meshes": {"m": {
            "token": "t" * 32, "mode": "broadcast", "peers": [f"127.0.0.1:{port}", peer.name],
        }}}))  # fmt: skip
        config = ServerConfig.from_env(
            {}, host="127.0.0.1", port=port, domain=f"127.0.0.1:{port}",
            data_dir=tmp_path / "a", backend="memory",
            insecure_peers=frozenset({peer.name}), mesh_config=mesh,
        )  # fmt: skip
        a = await start_server(config)
        try:
            yield a, peer
        finally:
            await a.stop()


@pytest.mark.parametrize("route", ["delivery", "mesh relay"])
async def test_what_a_flux_server_sends_verifies_with_the_library(
    flux_to_capture: tuple[RunningServer, CapturingPeer], route: str
) -> None:
    a, peer = flux_to_capture
    alice, bob = Identity(b"\x43" * 32), Identity(b"\x44" * 32)
    # a recipient at a named domain goes as a delivery; a bare one not hosted, to the mesh
    to = f"{bob.address}@{peer.name}" if route == "delivery" else bob.address
    async with aiohttp.ClientSession() as http:
        client = FluxClient(alice, a.url, session=http)
        await client.register()
        await client.send(to, "hi")
    async with asyncio.timeout(30):
        await peer.arrived.wait()
    [(request, raw)] = peer.seen
    assert request.url.endswith("/federation/deliver" if route == "delivery" else "/mesh/relay")
    [result] = library_verify(request, raw, name(a), await _published_key(a))
    assert result.label == LABEL and result.body == raw
    assert list(result.covered_components) == [
        *(f'"{c}"' for c in COMPONENTS),
        '"@signature-params"',
    ]
    assert list(result.parameters) == ["created", "keyid", "alg"]
    assert result.parameters["keyid"] == name(a) and result.parameters["alg"] == "ed25519"
    # and tampering with what is covered is caught by the library too
    forged = Request(request.method, request.url.replace("/federation/", "/federatiom/").replace("/mesh/", "/mash/"), request.headers)  # fmt: skip
    with pytest.raises(InvalidSignature):
        library_verify(forged, raw, name(a), await _published_key(a))
    with pytest.raises(InvalidSignature):
        library_verify(request, raw + b" ", name(a), await _published_key(a))


async def test_a_transaction_the_library_signs_is_taken_by_a_flux_server(tmp_path: Path) -> None:
    """A's key, held by the library: the library signs A's sealed delivery to B, and B
    (a real FLUX server that fetches A's published keys) stores the message."""
    async with local_servers(tmp_path, "ab") as s:
        a, b = s["a"], s["b"]
        alice, bob = Identity(b"\x45" * 32), Identity(b"\x46" * 32)
        now = int(time.time() * 1000)
        message = compose(alice, bob.address, "signed by the library", now_ms=now).primary
        sealed = append_hop(message, signer(a), next_hop=name(b), now_ms=now, cv=ChainVerdict.NONE)  # fmt: skip
        body = json.dumps({"txn": "rfc9421", "from_server": name(a), "messages": [sealed]}).encode()
        request = Request("POST", f"{b.url}/federation/deliver")
        seed = b64d(signer(a).identity.private_b64())
        sign_as_flux_profile(request, body, name(a), seed, created=now // 1000)
        # exactly the headers FLUX itself makes for this request
        assert request.headers == sign_request(signer(a), "POST", name(b), "/federation/deliver", body, now_s=now // 1000)  # fmt: skip
        async with (
            aiohttp.ClientSession() as http,
            http.post(request.url, data=body, headers=request.headers) as r,
        ):
            answer = await r.json()
        assert r.status == 200, answer
        assert answer["results"] == [{"id": message["id"], "recipients": {bob.address: "stored"}}]
        stored = (await b.store.list(bob.address, ListQuery())).items
    assert [m.envelope["content"] for m in stored] == ["signed by the library"]


# -- the profile, request by request ---------------------------------------------------------
NOW = int(time.time())  #: the library checks `created` against the wall clock
#: (the receiver's server name, the URL a sender reaches it at)
RECEIVERS = {
    "name with a port": ("b.example:8443", "https://b.example:8443"),
    "name without a port": ("b.example", "https://b.example"),
    "insecure peer, plain HTTP": ("127.0.0.1:9000", "http://127.0.0.1:9000"),
    "a default port not spelt out": ("b.example", "https://b.example:443"),
}


@pytest.mark.parametrize(("receiver", "base"), RECEIVERS.values(), ids=RECEIVERS.keys())
def test_flux_and_the_library_make_the_same_headers_and_accept_each_other(
    receiver: str, base: str
) -> None:
    url = base + "/federation/deliver"
    ours = Request("POST", url, sign_request(SENDER, "POST", receiver, "/federation/deliver", BODY, now_s=NOW))  # fmt: skip
    theirs = Request("POST", url)
    sign_as_flux_profile(theirs, BODY, SENDER.name, SEED, created=NOW)
    assert theirs.headers == ours.headers
    pub = SENDER.identity.public_key
    for request in (ours, theirs):
        assert flux_verify(request, BODY, receiver, pub, NOW) == SENDER.name
        _verify_at(request, BODY, pub, NOW)


def _verify_at(
    request: Request, body: bytes, pub: bytes, now_s: int, *, require: Sequence[str] = COMPONENTS
) -> None:
    """The library's verification (its clock is the wall clock, which NOW is)."""
    assert abs(time.time() - now_s) < 3600
    library_verify(request, body, SENDER.name, pub, require=require)


def test_a_server_name_that_spells_out_the_default_port_is_where_they_differ() -> None:
    """PROTOCOL.md §10.6: `@authority` is the receiver's name as written; RFC 9421 §2.2.3
    leaves a default port out. A server named `b.example:443` (reached at
    https://b.example:443) is the one case where the two bases differ: neither side
    verifies the other's signature."""
    receiver, url = "b.example:443", "https://b.example:443/federation/deliver"
    pub = SENDER.identity.public_key
    ours = Request("POST", url, sign_request(SENDER, "POST", receiver, "/federation/deliver", BODY, now_s=NOW))  # fmt: skip
    with pytest.raises(InvalidSignature):
        _verify_at(ours, BODY, pub, NOW)
    theirs = Request("POST", url)
    sign_as_flux_profile(theirs, BODY, SENDER.name, SEED, created=NOW)
    with pytest.raises(BadRequestSignature) as refused:
        flux_verify(theirs, BODY, receiver, pub, NOW)
    assert refused.value.field == "Signature"
    # named without the port, the same server is reached the same way and both agree
    assert flux_verify(theirs, BODY, "b.example", pub, NOW) == SENDER.name


def test_a_query_string_is_signed_by_neither_and_refused_by_flux() -> None:
    """RFC 9421's `@path` leaves the query out (it would be `@query`); a FLUX receiver
    verifies over the path it received, query included, so a request with a query that
    the library accepts is refused by FLUX. FLUX never sends one."""
    url = "https://b.example/federation/deliver?x=1"
    theirs = Request("POST", url)
    sign_as_flux_profile(theirs, BODY, SENDER.name, SEED, created=NOW)
    pub = SENDER.identity.public_key
    _verify_at(theirs, BODY, pub, NOW)  # valid RFC 9421: the query is not covered
    with pytest.raises(BadRequestSignature) as refused:
        flux_verify(theirs, BODY, "b.example", pub, NOW)
    assert refused.value.field == "Signature"


class Sha512Digest(ContentDigest):
    algorithm = "sha-512"


#: valid RFC 9421 signatures (the library verifies each) that a FLUX receiver refuses: the
#: profile is exactly one label, four components, three parameters, one digest (§10.6)
FREEDOMS: dict[str, tuple[dict[str, Any], str]] = {
    "another label": ({"label": "sig1"}, "Signature-Input"),
    "no alg": ({"include_alg": False}, "Signature-Input"),
    "expires": (
        # far enough ahead of NOW (taken at import) to outlast the whole suite's run
        {"expires": datetime.datetime.fromtimestamp(NOW + 7200, datetime.UTC)},
        "Signature-Input",
    ),
    "nonce": ({"nonce": "n1"}, "Signature-Input"),
    "tag": ({"tag": "flux"}, "Signature-Input"),
    "one more component": (
        {"covered_component_ids": (*COMPONENTS, "content-type")},
        "Signature-Input",
    ),
    "components in another order": (
        {"covered_component_ids": ("@authority", "@method", "@path", "content-digest")},
        "Signature-Input",
    ),
    "@target-uri for @authority and @path": (
        {"covered_component_ids": ("@method", "@target-uri", "content-digest")},
        "Signature-Input",
    ),
}


@pytest.mark.parametrize(("options", "field_name"), FREEDOMS.values(), ids=FREEDOMS.keys())
def test_rfc9421_freedoms_flux_does_not_take(options: Mapping[str, Any], field_name: str) -> None:
    request = Request("POST", "https://b.example/federation/deliver", {"Content-Type": "application/json"})  # fmt: skip
    sign_as_flux_profile(request, BODY, SENDER.name, SEED, created=NOW, **options)
    pub = SENDER.identity.public_key
    _verify_at(request, BODY, pub, NOW, require=())
    with pytest.raises(BadRequestSignature) as refused:
        flux_verify(request, BODY, "b.example", pub, NOW)
    assert refused.value.field == field_name


def test_a_sha512_content_digest_is_refused_by_flux() -> None:
    """RFC 9530 allows other digest algorithms (and several at once); FLUX takes sha-256."""
    signer_ = library_signer(SENDER.name, SEED)
    signer_.content_digest_class = Sha512Digest
    request = Request("POST", "https://b.example/federation/deliver")
    signer_.sign(
        request, key_id=SENDER.name, label=LABEL, covered_component_ids=COMPONENTS, body=BODY,
        created=datetime.datetime.fromtimestamp(NOW, datetime.UTC),
    )  # fmt: skip
    assert request.headers["Content-Digest"].startswith("sha-512=:")
    pub = SENDER.identity.public_key
    _verify_at(request, BODY, pub, NOW)
    with pytest.raises(BadRequestSignature) as refused:
        flux_verify(request, BODY, "b.example", pub, NOW)
    assert refused.value.field == "Content-Digest"


def test_a_second_signature_is_refused_by_flux() -> None:
    """RFC 9421 lets a request carry several signatures (Signature-Input is a dictionary);
    a FLUX receiver takes exactly one, labelled `flux`."""
    request = Request("POST", "https://b.example/federation/deliver")
    sign_as_flux_profile(request, BODY, SENDER.name, SEED, created=NOW)
    library_signer(SENDER.name, SEED).sign(
        request, key_id=SENDER.name, label="other", covered_component_ids=("@method",),
        created=datetime.datetime.fromtimestamp(NOW, datetime.UTC),
        append_if_signature_exists=True, use_existing_digest=True,
    )  # fmt: skip
    assert request.headers["Signature-Input"].startswith('flux=("@method"')
    assert ", other=" in request.headers["Signature-Input"]
    with pytest.raises(BadRequestSignature) as refused:
        flux_verify(request, BODY, "b.example", SENDER.identity.public_key, NOW)
    assert refused.value.field == "Signature-Input"
