"""Integrity routes: verify a message as received, and the servers' reputation.

/integrity/verify answers what a message *is*, it does not refuse it: a bad signature or a
broken chain is a 200 answer that says so (with the reason). Only a body that is not a JSON
object at all is a 400. Seals are checked under the keys servers publish; this server knows
only its own key so far (federation will fetch the others), so when the chain names any other
server the seals are checked against the keys in the records (`keys: "unchecked"`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiohttp import web

from ...protocol.chain import KeyLookup, PublishedKey, servers_in_chain, verify_chain
from ...protocol.envelope import verify_envelope
from ...protocol.errors import FluxError
from .. import wire
from ..keys import ServerKey
from ..reputation import Reputation


class IntegrityRoutes:
    def __init__(self, *, key: ServerKey, reputation: Reputation) -> None:
        self.key = key
        self.reputation = reputation

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/integrity/verify", self.verify),
            web.get("/integrity/reputation", self.standing),
        ]

    def _own_keys(self, server: str) -> Iterable[PublishedKey]:
        return self.key.all_published() if server == self.key.signer.name else []

    def _lookup(self, msg: dict[str, Any]) -> KeyLookup | None:
        known = all(s == self.key.signer.name for s in servers_in_chain(msg))
        return self._own_keys if known else None

    async def verify(self, request: web.Request) -> web.Response:
        msg = await wire.read_object(request)
        try:
            verify_envelope(msg)
            signature: dict[str, Any] = {"valid": True, "reason": None, "code": None}
        except FluxError as exc:
            signature = {"valid": False, "reason": exc.message, "code": exc.code,
                         "field": exc.field}  # fmt: skip
        return wire.ok(signature=signature, chain=self._chain(msg))

    def _chain(self, msg: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(msg.get("integrity_chain", []), list):
            return {"verdict": "fail", "keys": "unchecked", "hops": [],
                    "reason": "integrity_chain is not a list"}  # fmt: skip
        lookup = self._lookup(msg)
        check = verify_chain(msg, lookup)
        hops = [
            {"index": h.index, "server": h.server, "status": str(h.status), "reason": h.reason}
            for h in check.hops
        ]
        keys = "published" if lookup is not None else "unchecked"
        return {"verdict": str(check.verdict), "keys": keys, "hops": hops}

    async def standing(self, request: web.Request) -> web.Response:
        standing = await self.reputation.standing()
        return wire.ok(strikes=standing.strikes, quarantined=standing.quarantined)
