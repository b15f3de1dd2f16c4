"""Inbound federation: POST /federation/deliver (docs/FEDERATION.md).

A peer hands this server a batch of messages, each sealed to it. The request is signed by
the peer's key (RFC 9421, the profile of PROTOCOL.md §10.6, which also says where it
differs), checked under the keys the peer publishes. Each message
then goes through `Submitter.accept_batch` (signature without freshness, the peer's seal
to this server, the whole chain under published keys, then the usual route, recipient,
dedupe, spam and storage steps). A message that fails is refused in the answer; if the
failure is *provable* against the peer (its own seal over a forgery, §7.4), the peer gets
a strike, counted once per proof. Delivery is idempotent: a retried batch is answered with
`duplicate` for what is already stored.

Unauthenticated input never drives the network (issue 9 §2). Every request is checked
locally first, in this order, and refused before any fetch: body size, JSON shape, the
signature parameters (Content-Digest, `created` within ±5 min, the Host being this server:
signing.check_request) and, for a mesh relay, the Flux-Mesh MAC. Only then are the claimed
server's keys fetched (one fetch per server in flight, keys.py). Keys of the other servers
a batch's chains name are fetched only once the peer is authenticated, concurrently, at most
MAX_CHAIN_FETCHES new ones per transaction.

Tamper reports: shape, names, time window and "not from or about this server" first; then
only the reporter's keys, the reporter's signature over the report, and only then the keys
the proof needs, at most MAX_REPORT_FETCHES servers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from aiohttp import web

from ...compat.mesh import check_proto_relay, is_proto_relay, take_proto_relay
from ...federation.delivery import MAX_BATCH, MAX_BATCH_BYTES
from ...federation.keys import KeyFetcher
from ...federation.mesh import MAX_MESH_PEERS, Mesh, check_mesh_header
from ...federation.peers import ReportSender
from ...federation.signing import CheckedRequest, check_request, verify_checked
from ...protocol.chain import (
    PublishedKey,
    is_server_name,
    published_key_covers,
    sealed_servers_in_chain,
    witnesses,
)
from ...protocol.encoding import b64d
from ...protocol.errors import (
    BadRequestSignature,
    FluxError,
    InvalidProof,
    InvalidValue,
    UnknownServerKey,
    WrongType,
)
from ...protocol.identity import verify_signature
from ...protocol.tamper import (
    Offense,
    build_report,
    check_report_offline,
    report_payload,
    validate_report_flow,
)
from ...store.base import Store, Strike
from .. import wire
from ..errors import SpamRefused, Unavailable
from ..fair import PeerTurns, request_client
from ..keys import ServerKey
from ..submission import Refused, SubmitResult, Submitter

log = logging.getLogger("flux.federation")

#: keys of servers not yet cached that one delivery's chains may make this server fetch;
#: past it the peer is told to come back (503) and the next attempt finds these cached
MAX_CHAIN_FETCHES = 32
#: servers whose keys one tamper report may make this server fetch (reporter included)
MAX_REPORT_FETCHES = 4
#: a report is sent right after the offense is found: older (or from the future) is junk
REPORT_MAX_AGE_MS = 86_400_000
REPORT_MAX_AHEAD_MS = 300_000


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
        self.turns = PeerTurns()

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
        what is not hosted here goes on through the mesh (federation/mesh.py).

        A prototype peer's relay (its token header, no signature) is taken only for a
        prototype-kind mesh, and then exactly as an unauthenticated `/send` of the bare
        envelope: the same pipeline and budgets, no strike, no report (compat/mesh.py).
        401 `bad_request_signature` naming the header when the token is not such a mesh's."""
        if is_proto_relay(request.headers):
            check_proto_relay(request.headers, self.meshes)
            raw = await request.read()
            result = await take_proto_relay(self.submitter, raw, client=request_client(request))
            return wire.ok(**result.to_wire())
        return await self._receive(request, mesh=True)

    async def mesh_info(self, request: web.Request) -> web.Response:
        meshes = [
            {"name": m.name, "mode": str(m.mode), "peers": list(m.peers)}
            for m in self.meshes.values()
        ]
        return wire.ok(server=self.name, meshes=meshes)

    async def _receive(self, request: web.Request, *, mesh: bool) -> web.Response:
        body = await wire.read_limited(request, MAX_BATCH_BYTES)  # beyond the app's limit
        checked = check_request(
            request.headers, body, now_s=self.clock() // 1000, authority=self.name,
            host=request.host,
        )  # fmt: skip
        through = check_mesh_header(request.headers, self.meshes, checked.server) if mesh else None
        batch = wire.parse_json(body)
        messages = self._messages(batch, checked.server)
        peer = await self._authenticate(request, checked)
        if self.submitter.limits is not None:  # each peer's budget of messages (fair.py)
            await self.submitter.limits.peer_messages(peer, len(messages))
        async with self.turns.turn(peer, len(messages)):  # one peer's batches take turns (fair.py)
            await self._fetch_chain_keys(messages)
            accepted = await self.submitter.accept_batch(
                messages, peer=peer, keys=self.keys, mesh=through,
                sender_lists=_mesh_peers(batch) if through else None,
            )  # fmt: skip
            results = [await self._result(m, r) for m, r in zip(messages, accepted, strict=True)]
        return wire.ok(txn=batch["txn"], results=results)

    async def _authenticate(self, request: web.Request, checked: CheckedRequest) -> str:
        """The claimed server's keys (fetched now: every local check has passed) verify the
        signature; a miss may refresh them once, within the cache's rules."""
        fetcher = self.fetcher()
        for after_miss in (False, True):  # a rotated key: refresh once, within the rules
            if checked.server != self.name:
                await fetcher.keys(checked.server, after_miss=after_miss)
            try:
                signed = verify_checked(
                    request.method, request.path_qs, checked, keys=self.keys, authority=self.name
                )
                await self.peer_heard(signed.server)
                return signed.server
            except BadRequestSignature:
                if after_miss:
                    raise
        raise AssertionError("unreachable")

    async def _fetch_chain_keys(self, messages: list[Any]) -> None:
        """Keys of the servers whose seals the chains hold, for an authenticated peer:
        deduplicated, fetched concurrently in the key pool, at most MAX_CHAIN_FETCHES not
        yet cached (PROTOCOL.md §10.7 receiver step 6). A prototype record's label is never
        fetched (§13.11): its check uses no key, and the host is the sender's choice."""
        fetcher = self.fetcher()
        named = dict.fromkeys(
            s for m in messages if isinstance(m, dict) for s in sealed_servers_in_chain(m)
            if s != self.name
        )  # fmt: skip
        now = self.clock()
        missing = [s for s in named if fetcher.cache.wants_fetch(s, now)]
        await fetcher.prefetch(missing[:MAX_CHAIN_FETCHES])
        if len(missing) > MAX_CHAIN_FETCHES:
            raise Unavailable(
                f"the chains name {len(missing)} servers whose keys are not known here yet "
                f"(at most {MAX_CHAIN_FETCHES} fetched per transaction); retry",
                field="messages",
            )

    def _messages(self, batch: Any, peer: str) -> list[Any]:
        """The batch's messages, once its shape is checked (PROTOCOL.md §10.7, receiver
        step 3, in that order). Raises WrongType (`body`), InvalidValue naming the member."""
        if not isinstance(batch, dict):  # first: everything below reads members
            raise WrongType("a delivery is a JSON object", field="body")
        _mesh_peers(batch)  # refused here, before any work, if present and malformed
        if not isinstance(batch.get("txn"), str) or not 1 <= len(batch["txn"]) <= 64:
            raise InvalidValue("txn must be a string of 1-64 characters", field="txn")
        if batch.get("from_server") != peer:
            raise InvalidValue("from_server is not the server that signed", field="from_server")
        messages = batch.get("messages")
        if not isinstance(messages, list) or not 1 <= len(messages) <= MAX_BATCH:
            raise InvalidValue(f"messages must list 1-{MAX_BATCH} envelopes", field="messages")
        return messages

    async def _result(self, msg: Any, result: SubmitResult | Refused) -> dict[str, Any]:
        """One result of the answer (PROTOCOL.md §10.7): `{id, recipients}` when accepted;
        `{id, refused, error, struck}` when refused, plus `field` (str) when the refusal
        names one field and `reasons` (list of str, §8.2) when it is spam, as an error
        answer carries them (§9): for the sender's logs and bounce, never its decision."""
        if isinstance(result, SubmitResult):
            return {"id": result.id, "recipients": result.recipients}
        struck = result.offense is not None and await self._strike(result.offense, msg)
        # the id as the sender wrote it when it is one (a string), else null (§10.7): an
        # answer echoes no other value a peer sent
        msg_id = msg.get("id") if isinstance(msg, dict) else None
        msg_id = msg_id if isinstance(msg_id, str) else None
        error = result.error
        out: dict[str, Any] = {
            "id": msg_id, "refused": error.code, "error": error.message, "struck": struck,
        }  # fmt: skip
        if error.field is not None:
            out["field"] = error.field
        if isinstance(error, SpamRefused):
            out["reasons"] = list(error.reasons)
        return out

    async def _strike(self, offense: Offense, msg: dict[str, Any]) -> bool:
        """Count `offense` (found by the submitter's checks against the peer that handed
        `msg` on) and, when it is new, report it."""
        if await self._record(offense, self.name):
            # Tell the chain's witnesses (records before the offender's sealed under keys
            # their servers publish: never a name it merely wrote into its chain) and this
            # server's mesh peers (the operator's config); they re-prove it before
            # counting. The offender is left out (ReportSender).
            report = build_report(offense, self.key.signer, now_ms=self.clock())
            peers = [p for mesh in self.meshes.values() for p in mesh.peers]
            self.reports.send(report, [*witnesses(msg, self.keys), *peers])
        return True

    async def _record(self, offense: Offense, reporter: str) -> bool:
        """Count a proven offense once per proof; True when it was new and stored (past
        the per-offender cap a proof is not stored, and not reported on: reputation.py)."""
        strike = Strike(
            offense.offender, offense.proof_id, str(offense.kind), reporter, offense.msg_id,
            self.clock(),
        )  # fmt: skip
        if not await self.submitter.reputation.record(strike):
            return False
        log.warning(
            "event=strike offender=%s kind=%s reporter=%s msg_id=%s proof=%s",
            offense.offender, offense.kind, reporter, offense.msg_id, offense.proof_id[:16],
        )  # fmt: skip
        return True

    async def tamper_report(self, request: web.Request) -> web.Response:
        """A report from another server: re-proven here, with keys fetched from each named
        server's own domain, before it counts (PROTOCOL.md §7.6). Checked locally first,
        then under the reporter's keys alone, before any other fetch (module doc).
        Raises InvalidProof, UnknownServerKey, InvalidValue (too many servers named)."""
        report = await wire.read_object(request)
        reporter = self._check_report_locally(report)
        await self._check_reporter_signature(report, reporter)
        flow = validate_report_flow(report)
        fetched = {reporter}
        try:
            server = next(flow)
            while True:
                if server != self.name and server not in fetched:
                    if len(fetched) >= MAX_REPORT_FETCHES:
                        raise InvalidValue(
                            f"the proof needs the keys of more than {MAX_REPORT_FETCHES} "
                            "servers", field="integrity_chain",
                        )  # fmt: skip
                    fetched.add(server)
                    await self.fetcher().keys(server)
                server = flow.send(tuple(self.keys(server)))
        except StopIteration as done:
            offense: Offense = done.value
        counted = await self._record(offense, reporter)
        return wire.ok(
            offender=offense.offender, kind=str(offense.kind), proof_id=offense.proof_id,
            counted=counted,
        )  # fmt: skip

    def _check_report_locally(self, report: dict[str, Any]) -> str:
        """What needs no key: the names, the time, and that it is not about this server
        (we do not strike ourselves). A report *from* this server (a replay of one we sent)
        is checked under our own keys, with no fetch, and counts at most once like any.
        Returns the reporter; raises InvalidProof naming the field."""
        for name in ("reporter", "offender"):
            value = report.get(name)
            if not is_server_name(value):  # `local` is none either (§2.4)
                raise InvalidProof(f"{name} is not a server name", field=name)
        if report["offender"] == self.name:
            raise InvalidProof("the accused is this server", field="offender")
        if report["reporter"] == report["offender"]:
            raise InvalidProof("a server does not report itself", field="offender")
        t, now = report.get("t"), self.clock()
        if not isinstance(t, int) or isinstance(t, bool):
            raise InvalidProof("t must be an integer (ms)", field="t")
        if not now - REPORT_MAX_AGE_MS <= t <= now + REPORT_MAX_AHEAD_MS:
            raise InvalidProof("t is outside the window reports are taken in", field="t")
        for name in ("msg_id", "sig", "pub"):
            if not isinstance(report.get(name), str):
                raise InvalidProof(f"{name} must be a string", field=name)
        if not isinstance(report.get("envelope"), dict):
            raise InvalidProof("envelope must be an object", field="envelope")
        # The rest of the proof that needs no key (its shape, the last record naming the
        # accused, sealed to the reporter, over this body): a report that cannot hold, or a
        # genuine one replayed with another envelope, costs no fetch at all.
        check_report_offline(report)
        return report["reporter"]

    async def _check_reporter_signature(self, report: dict[str, Any], reporter: str) -> None:
        """The reporter's own signature over the report, under a key it publishes: the one
        fetch an unproven report may cause. Raises InvalidProof."""
        try:  # §7.6 step 2, then step 3: the key, then the signature
            pub = b64d(report["pub"], field="pub", length=32)
        except InvalidValue as exc:
            raise InvalidProof(exc.message, field=exc.field) from exc
        if reporter != self.name:
            await self.fetcher().keys(reporter)
        if not published_key_covers(self.keys, reporter, pub, report["t"]):
            raise UnknownServerKey(
                "the report is not signed with a key its reporter publishes", field="pub"
            )
        try:
            sig = b64d(report["sig"], field="sig", length=64)
        except InvalidValue as exc:
            raise InvalidProof(exc.message, field=exc.field) from exc
        payload = report_payload(report["msg_id"], report["offender"], reporter, report["t"])
        try:
            verify_signature(pub, payload, sig)
        except FluxError as exc:
            raise InvalidProof("the report's signature does not verify", field="sig") from exc


def _mesh_peers(batch: Mapping[str, Any]) -> list[str] | None:
    """The relaying server's peers for the mesh (`mesh_peers`, optional: it bounds where a
    hybrid relay goes on to, federation/mesh.py); raise InvalidValue when malformed."""
    listed = batch.get("mesh_peers")
    if listed is None:
        return None
    if not (
        isinstance(listed, list) and len(listed) <= MAX_MESH_PEERS
        and all(is_server_name(p) for p in listed)
    ):  # fmt: skip
        where = "mesh_peers"
        raise InvalidValue(f"mesh_peers must list at most {MAX_MESH_PEERS} server names", field=where)  # fmt: skip
    return listed
