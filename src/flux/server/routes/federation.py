"""Inbound federation: POST /federation/deliver (docs/FEDERATION.md).

A peer hands this server a batch of messages, each sealed to it. The request is signed by
the peer's key (RFC 9421 style), checked under the keys the peer publishes. Each message
then goes through `Submitter.accept_relayed` (signature without freshness, the peer's seal
to this server, the whole chain under published keys, then the usual route, recipient,
dedupe, spam and storage steps). A message that fails is refused in the answer; if the
failure is *provable* against the peer (its own seal over a forgery, §7.4), the peer gets
a strike, counted once per proof. Delivery is idempotent: a retried batch is answered with
`duplicate` for what is already stored.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from aiohttp import web

from ...federation.delivery import MAX_BATCH, MAX_BATCH_BYTES
from ...federation.keys import KeyFetcher
from ...federation.mesh import Mesh, check_mesh_header
from ...federation.peers import ReportSender
from ...federation.signing import claimed_server, verify_request
from ...protocol.chain import PublishedKey, servers_in_chain
from ...protocol.errors import BadRequestSignature, FluxError, InvalidValue, WrongType
from ...protocol.tamper import Offense, build_report, find_offense, validate_report_flow
from ...store.base import Store, Strike
from .. import wire
from ..keys import ServerKey
from ..submission import SubmitResult, Submitter

log = logging.getLogger("flux.federation")


class FederationRoutes:
    def __init__(
        self,
        *,
        key: ServerKey,
        submitter: Submitter,
        fetcher: Callable[[], KeyFetcher],
        store: Store,
        clock: Callable[[], int],
        reports: ReportSender,
        peer_heard: Callable[[str], Awaitable[None]],
        meshes: Mapping[str, Mesh],
    ) -> None:
        self.key = key
        self.name = key.signer.name
        self.submitter = submitter
        self.fetcher = fetcher  # made when the app starts (it needs the running loop)
        self.store = store
        self.clock = clock
        self.reports = reports
        self.peer_heard = peer_heard  #: a peer that reaches us is up: retry its queue now
        self.meshes = meshes

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/federation/deliver", self.deliver),
            web.post("/mesh/relay", self.relay),
            web.get("/mesh/info", self.mesh_info),
            web.post("/integrity/tamper_report", self.tamper_report),
        ]

    def keys(self, server: str) -> Iterable[PublishedKey]:
        if server == self.name:
            return self.key.all_published()
        return self.fetcher().cache.lookup(server)

    async def deliver(self, request: web.Request) -> web.Response:
        return await self._receive(request, mesh=False)

    async def relay(self, request: web.Request) -> web.Response:
        """A mesh peer's batch: as /federation/deliver, plus the Flux-Mesh membership proof;
        what is not hosted here goes on through the mesh (federation/mesh.py)."""
        return await self._receive(request, mesh=True)

    async def mesh_info(self, request: web.Request) -> web.Response:
        meshes = [
            {"name": m.name, "mode": str(m.mode), "peers": list(m.peers)}
            for m in self.meshes.values()
        ]
        return wire.ok(server=self.name, meshes=meshes)

    async def _receive(self, request: web.Request, *, mesh: bool) -> web.Response:
        body = await wire.read_limited(request, MAX_BATCH_BYTES)  # beyond the app's limit
        peer = await self._authenticate(request, body)
        through = check_mesh_header(request.headers, self.meshes, peer) if mesh else None
        batch = wire.parse_json(body)
        messages = self._messages(batch, peer)
        fetcher = self.fetcher()
        await fetcher.prefetch(
            s
            for m in messages
            if isinstance(m, dict)
            for s in servers_in_chain(m)
            if s != self.name
        )
        accepted = await self.submitter.accept_batch(
            messages, peer=peer, keys=self.keys, mesh=through
        )
        results = [await self._result(m, r, peer) for m, r in zip(messages, accepted, strict=True)]
        return wire.ok(txn=batch["txn"], results=results)

    async def _authenticate(self, request: web.Request, body: bytes) -> str:
        server = claimed_server(request.headers)
        if server is None:
            raise BadRequestSignature("Signature-Input names no server", field="Signature-Input")
        fetcher = self.fetcher()
        for after_miss in (False, True):  # a rotated key: refresh once, within the rules
            await fetcher.keys(server, after_miss=after_miss)
            try:
                signed = verify_request(
                    request.method, request.path_qs, request.headers, body,
                    keys=self.keys, now_s=self.clock() // 1000, authority=self.name,
                )  # fmt: skip
                await self.peer_heard(signed.server)
                return signed.server
            except BadRequestSignature:
                if after_miss:
                    raise
        raise AssertionError("unreachable")

    def _messages(self, batch: Any, peer: str) -> list[Any]:
        if not isinstance(batch, dict):
            raise WrongType("a delivery is a JSON object", field="body")
        if not isinstance(batch.get("txn"), str) or not 1 <= len(batch["txn"]) <= 64:
            raise InvalidValue("txn must be a string of 1-64 characters", field="txn")
        if batch.get("from_server") != peer:
            raise InvalidValue("from_server is not the server that signed", field="from_server")
        messages = batch.get("messages")
        if not isinstance(messages, list) or not 1 <= len(messages) <= MAX_BATCH:
            raise InvalidValue(f"messages must list 1-{MAX_BATCH} envelopes", field="messages")
        return messages

    async def _result(
        self, msg: Any, result: SubmitResult | FluxError, peer: str
    ) -> dict[str, Any]:
        if not isinstance(result, FluxError):
            return {"id": result.id, "recipients": result.recipients}
        struck = await self._strike(msg, peer) if isinstance(msg, dict) else False
        msg_id = msg.get("id") if isinstance(msg, dict) else None
        return {"id": msg_id, "refused": result.code, "error": result.message, "struck": struck}

    async def _strike(self, msg: dict[str, Any], peer: str) -> bool:
        offense = find_offense(msg, self.keys, receiver=self.name)
        if offense is None or offense.offender != peer:
            return False
        if await self._record(offense, self.name):
            # Tell the other servers that sealed it and this server's mesh peers (both
            # from signed records or the operator's config, never from unsigned fields);
            # they re-prove it before counting. The offender is left out (ReportSender).
            report = build_report(offense, self.key.signer, now_ms=self.clock())
            peers = [p for mesh in self.meshes.values() for p in mesh.peers]
            self.reports.send(report, [*servers_in_chain(msg), *peers])
        return True

    async def _record(self, offense: Offense, reporter: str) -> bool:
        """Count a proven offense once per proof; True when it was new."""
        strike = Strike(
            offense.offender, offense.proof_id, str(offense.kind), reporter, offense.msg_id,
            self.clock(),
        )  # fmt: skip
        if not await self.store.add_strike(strike):
            return False
        log.warning(
            "event=strike offender=%s kind=%s reporter=%s msg_id=%s proof=%s",
            offense.offender, offense.kind, reporter, offense.msg_id, offense.proof_id[:16],
        )  # fmt: skip
        return True

    async def tamper_report(self, request: web.Request) -> web.Response:
        """A report from another server: re-proven here, with keys fetched from each named
        server's own domain, before it counts (PROTOCOL.md §7.6). Raises InvalidProof."""
        report = await wire.read_object(request)
        flow = validate_report_flow(report)
        try:
            server = next(flow)
            while True:
                if server != self.name:
                    await self.fetcher().keys(server)
                server = flow.send(tuple(self.keys(server)))
        except StopIteration as done:
            offense: Offense = done.value
        counted = await self._record(offense, report["reporter"])
        return wire.ok(
            offender=offense.offender, kind=str(offense.kind), proof_id=offense.proof_id,
            counted=counted,
        )  # fmt: skip
