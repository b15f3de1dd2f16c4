"""The prototype's server-to-server dialect, translated at the edge (issue 11, items 6-8).

The prototype (levkris/flux-protocol 2.1.1) has no signed server requests, no
`/federation/deliver` and no `/mesh/relay` transaction. A prototype server

* hands mail to another server by POSTing the bare envelope to that server's `/send`
  (what its clients do), and relays mesh mail by POSTing the bare envelope to a peer's
  `/mesh/relay` with `X-Flux-Mesh-Token: hex(SHA-256("flux-mesh:" + token))`;
* answers `GET /federation/info` with `{ok, domain, version, protocol, federation: true}`
  (no `keys`: it publishes none) and `GET /health` with `{ok, protocol, version}` (no
  `domain`); FLUX publishes `keys` and names its `domain` in both.

This module is the whole of FLUX's side of that conversation; the delivery worker reaches
it through one seam (`PeerClient.dialect`, which returns a `ProtoRoute` or None); what a
prototype peer relays to FLUX is taken in compat/mesh.py. It keeps the core's rules:

* Outbound, every request goes through the peer client (netguard: the address policy, no
  redirects, capped answers, deadlines). Each message is still sealed by this server to the
  peer (`next` = its name), so the chain stays whole; the prototype checks those records
  as its own.
* Mail the prototype can never take is not sent and retried for five days: it is refused
  at once with a named code, and the worker bounces it (`Unsendable` below).
* Inbound (compat/mesh.py), a prototype peer authenticates nothing (its token header is a
  bearer secret sent in clear): what it relays is taken exactly as an unauthenticated
  `/send` of a signed envelope, never as a signed peer's batch. So it earns no strike for
  anyone and causes no tamper report: a prototype peer cannot frame a FLUX server,
  whatever chain it forges.

Pure helpers (`dialect_of`, `unsendable`, `judge_send_answer`, `mesh_token_header`,
`binding_of`, `prototype_binding`) do no I/O; `ProtoPeers` and `ProtoRoute` do theirs
through the peer client they are given (PEP 544 `_Peers`: its `post` and `get_json`).
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from ..federation.mesh import Mesh, MeshKind

log = logging.getLogger("flux.compat")

__all__ = [
    "PROTO_FRESHNESS_MS",
    "PROTO_MESH_HEADER",
    "PeerDialect",
    "ProtoPeers",
    "ProtoRoute",
    "binding_of",
    "dialect_of",
    "judge_send_answer",
    "mesh_token_header",
    "prototype_binding",
    "unsendable",
]

#: the prototype's mesh header: the token's SHA-256, the same on every request
PROTO_MESH_HEADER = "X-Flux-Mesh-Token"
#: the prototype refuses an envelope whose `t` is further than this from its clock
PROTO_FRESHNESS_MS = 300_000
#: sent only while this much of that window is left (the request's own time, clock skew)
FRESHNESS_MARGIN_MS = 30_000
#: how long a probe's verdict on a server is kept (as a /.well-known/flux answer is)
PROBE_TTL_MS = 3_600_000
#: after a failed probe, the server is taken as FLUX's for this long before asking again
PROBE_RETRY_MS = 60_000
PROBE_MAX_BYTES = 64 * 1024  #: /federation/info and /health are small JSON objects
#: a POST after the first is not started with less than this left of the batch's time
MIN_POST_S = 0.5
MAX_KNOWN = 10_000  #: servers whose dialect is remembered (as many as the key cache)


class PeerDialect(enum.StrEnum):
    """Which server-to-server protocol a peer speaks (PROTOCOL.md §13)."""

    FLUX = "flux"
    PROTOTYPE = "prototype"


class Unsendable(enum.StrEnum):
    """Why a message is not handed to a prototype peer at all; each is a final refusal,
    so the sender gets a bounce naming it (PROTOCOL.md §13)."""

    #: the prototype stores a `/send` for `to` alone; a copy for bcc recipients would reach
    #: `to` again and never them
    BCC = "prototype_bcc"
    #: a copy for cc recipients only: the prototype would store it for `to`
    TO_ONLY = "prototype_to_only"
    #: older than the prototype's 5-minute freshness window: it would refuse it forever
    STALE = "prototype_stale"


#: a prototype's refusal that a later attempt may overcome (its mailbox being full)
TRANSIENT = "quota_exceeded"
#: any other 4xx of a prototype: its error text is quoted in the bounce
REFUSED = "prototype_refused"


def dialect_of(info: Any, health: Any = None) -> PeerDialect | None:
    """The dialect a `/federation/info` answer (or, when it had none, a `/health` answer)
    shows. FLUX's info publishes `keys`; the prototype's says `federation: true` without
    them, its health has `protocol` and `version` but no `domain`. None: neither."""
    if isinstance(info, Mapping) and info.get("ok") is True:
        if isinstance(info.get("keys"), list):
            return PeerDialect.FLUX
        if info.get("federation") is True and info.get("protocol") == "1.0":
            return PeerDialect.PROTOTYPE
    if isinstance(health, Mapping) and health.get("ok") is True:
        if "domain" in health:
            return PeerDialect.FLUX
        if health.get("protocol") == "1.0" and isinstance(health.get("version"), str):
            return PeerDialect.PROTOTYPE
    return None


def unsendable(
    envelope: Mapping[str, Any], recipients: Sequence[str], now_ms: int
) -> tuple[Unsendable, str] | None:
    """Why `envelope` (a copy for `recipients`) cannot go to a prototype peer, in words, or
    None. The prototype delivers a `/send` to the envelope's `to` only (PROTOCOL.md §13)."""
    if envelope.get("bcc"):
        return Unsendable.BCC, "a prototype server cannot deliver a BCC copy to its recipient"
    if envelope.get("to") not in recipients:
        return Unsendable.TO_ONLY, "a prototype server delivers only to an envelope's `to`"
    t = envelope.get("t")
    if not isinstance(t, int) or now_ms - t > PROTO_FRESHNESS_MS - FRESHNESS_MARGIN_MS:
        return Unsendable.STALE, "a prototype server refuses mail older than 5 minutes"
    return None


def judge_send_answer(status: int, answer: Any, recipients: Sequence[str], to: str) -> dict:
    """One prototype answer (to `/send` or `/mesh/relay`) as a FLUX delivery result
    (`{recipients: {...}}` or `{refused, error}`, FEDERATION.md "Delivery"). Raises
    ValueError for an answer that says nothing (5xx, not JSON, a 404 page: retried). A
    JSON 404 is a FLUX member of a prototype-kind mesh hosting none of the recipients."""
    error = answer.get("error") if isinstance(answer, Mapping) else None
    if status == 200 and isinstance(answer, Mapping) and answer.get("ok") is True:
        if answer.get("delivery") == "dropped":  # its store was full
            return {"refused": TRANSIENT, "error": "the prototype server dropped it (full)"}
        return {"recipients": {r: "stored" if r == to else "not_hosted" for r in recipients}}
    if status == 404 and isinstance(error, str):  # a FLUX member: none of them is hosted
        return {"recipients": dict.fromkeys(recipients, "not_hosted")}
    if status == 429:
        return {"refused": TRANSIENT, "error": str(error or "mailbox full")}
    if 400 <= status < 500 and status not in (404, 405) and isinstance(error, str):
        return {"refused": REFUSED, "error": error}
    raise ValueError(f"the prototype server answered HTTP {status}")


def prototype_binding(address: str, pub: str) -> dict[str, str]:
    """A name binding under the prototype's field names, added beside FLUX's own in a
    `/federation/resolve` answer: its `resolve_address` reads `flux_address`."""
    return {"flux_address": address, "flux_pub_b64": pub}


def binding_of(answer: Mapping[str, Any]) -> tuple[Any, Any]:
    """(address, pub) from a resolve answer: FLUX's `address`/`pub`, else the prototype's
    `flux_address`/`flux_pub_b64`. Unchecked: the caller checks that pub hashes to it."""
    if "address" in answer or "pub" in answer:
        return answer.get("address"), answer.get("pub")
    return answer.get("flux_address"), answer.get("flux_pub_b64")


def mesh_token_header(token: str) -> dict[str, str]:
    """The prototype's mesh header for `token` (sent in clear on every relay)."""
    return {PROTO_MESH_HEADER: _derived(token)}


def _derived(token: str) -> str:
    return hashlib.sha256(f"flux-mesh:{token}".encode()).hexdigest()


# -- the transport ------------------------------------------------------------------------


class _Peers(Protocol):
    """What the transport needs of the peer client (federation/peers.py)."""

    async def post(
        self, server: str, path: str, body: bytes, headers: dict[str, str], *,
        timeout_s: float, base: str | None = None,
    ) -> tuple[int, Any]: ...  # fmt: skip

    async def get_json(
        self, server: str, path: str, *, timeout_s: float, max_bytes: int
    ) -> tuple[int, Any]: ...


@dataclass(frozen=True, slots=True)
class ProtoRoute:
    """How to hand messages to one prototype peer: its `/send`, or its `/mesh/relay` with
    the mesh's token header (and the base URL the mesh config gave, if any)."""

    peers: _Peers
    server: str
    mesh: Mesh | None = None

    async def deliver(
        self,
        envelopes: Sequence[Mapping[str, Any]],
        recipients: Sequence[Sequence[str]],
        *,
        now_ms: int,
        timeout_s: float,
        lost: Callable[[], bool] = lambda: False,
    ) -> list[dict]:
        """POST each sealed envelope on its own, in order; one FLUX result per envelope.

        The whole batch gets `timeout_s`, as one FLUX transaction does: a peer that answers
        each POST just before its deadline must not hold a delivery slot for a hundred of
        them. Messages not sent in time are answered `unavailable` (kept and retried).

        Raises what the peer client raises (aiohttp.ClientError, TimeoutError, OSError,
        ValueError) when the first message gets no answer; after that, the rest are
        answered `unavailable` (kept and retried) so what the peer stored is not sent again.
        """
        results: list[dict] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        for envelope, rcpts in zip(envelopes, recipients, strict=True):
            if results and lost():  # another worker has the destination now
                results.append({"refused": "unavailable", "error": "lease lost"})
                continue
            why = unsendable(envelope, rcpts, now_ms)
            if why is not None:
                results.append({"refused": str(why[0]), "error": why[1]})
                continue
            left = deadline - loop.time()
            if results and left < MIN_POST_S:  # the batch's time is spent: the rest later
                results.append({"refused": "unavailable", "error": "the batch's time ran out"})
                continue
            try:
                results.append(await self._one(envelope, rcpts, timeout_s if not results else left))
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                if not results:
                    raise
                log.warning("event=proto_delivery_cut server=%s reason=%s", self.server, exc)
                results.append({"refused": "unavailable", "error": type(exc).__name__})
        return results

    async def _one(
        self, envelope: Mapping[str, Any], recipients: Sequence[str], timeout_s: float
    ) -> dict:
        body = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()
        if self.mesh is None:
            path, headers, base = "/send", {}, None
        else:
            path, headers = "/mesh/relay", mesh_token_header(self.mesh.token)
            base = self.mesh.url(self.server)
        status, answer = await self.peers.post(
            self.server, path, body, headers, timeout_s=timeout_s, base=base
        )
        return judge_send_answer(status, answer, recipients, str(envelope.get("to")))


class ProtoPeers:
    """Which peers speak the prototype's dialect: a prototype-kind mesh's members (the
    operator says so), and servers whose `/federation/info` (or `/health`) shows it,
    probed once per PROBE_TTL_MS per server (a failed probe: again after PROBE_RETRY_MS)."""

    def __init__(self, meshes: Mapping[str, Mesh], clock: Callable[[], int]) -> None:
        self.meshes = meshes
        self.clock = clock
        self._known: dict[str, tuple[PeerDialect, int]] = {}

    async def route(self, peers: _Peers, server: str, via: str) -> ProtoRoute | None:
        """A ProtoRoute when `server` (reached through mesh `via`, or directly for "")
        speaks the prototype's dialect; None for FLUX's own transaction."""
        if via:
            mesh = self.meshes[via]
            return ProtoRoute(peers, server, mesh) if mesh.kind is MeshKind.PROTOTYPE else None
        if await self._dialect(peers, server) is PeerDialect.PROTOTYPE:
            return ProtoRoute(peers, server)
        return None

    async def _dialect(self, peers: _Peers, server: str) -> PeerDialect:
        now = self.clock()
        known = self._known.get(server)
        if known is not None and now < known[1]:
            return known[0]
        found = await self._probe(peers, server)
        until = now + (PROBE_RETRY_MS if found is None else PROBE_TTL_MS)
        self._known.pop(server, None)
        if len(self._known) >= MAX_KNOWN:  # the oldest verdict goes: it is asked again
            del self._known[next(iter(self._known))]
        self._known[server] = (found or PeerDialect.FLUX, until)
        if found is PeerDialect.PROTOTYPE:
            log.info("event=prototype_peer server=%s", server)
        return found or PeerDialect.FLUX

    async def _probe(self, peers: _Peers, server: str) -> PeerDialect | None:
        answers: list[Any] = []
        for path in ("/federation/info", "/health"):
            try:
                status, answer = await peers.get_json(
                    server, path, timeout_s=5.0, max_bytes=PROBE_MAX_BYTES
                )
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                # unreachable or refused: FLUX's own path reports the failure
                log.info("event=probe_failed server=%s path=%s reason=%s", server, path, exc)
                return None
            answers.append(answer if status == 200 else None)
            found = dialect_of(*answers)
            if found is not None:
                return found
        return None
