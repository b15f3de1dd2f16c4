"""Authentication and registration routes (docs/API.md, "Authentication", "Hosted addresses")."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from ...accounts.admission import Admission
from ...protocol.encoding import b64d
from ...protocol.envelope import check_freshness
from ...protocol.errors import AddressMismatch, BadSignature
from ...protocol.identity import address_from_pub, verify_signature
from ...store.base import Store
from .. import wire
from ..auth import Authenticator
from ..config import Registration

SESSION_FIELDS = frozenset({"address", "pub", "challenge", "sig"})
REGISTER_FIELDS = frozenset({"address", "pub", "t", "sig", "invite"})


class AuthRoutes:
    def __init__(
        self,
        *,
        auth: Authenticator,
        store: Store,
        clock: Callable[[], int],
        registration: Registration,
        invites: frozenset[str],
    ) -> None:
        self.auth = auth
        self.store = store
        self.clock = clock
        self.registration = registration
        self.invites = invites
        #: static FLUX_INVITES codes and the operator's stored invites (`flux admin invite`)
        self.admission = Admission(str(registration), invites, store)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/auth/challenge", self.challenge),
            web.post("/auth/session", self.session),
            web.post("/auth/logout", self.logout),
            web.post("/register", self.register),
        ]

    async def challenge(self, request: web.Request) -> web.Response:
        wire.only_query(request, frozenset({"address"}))
        address = wire.check_address(wire.query_str(request, "address", required=True))
        challenge, expires = self.auth.challenge(address)
        return wire.ok(challenge=challenge, domain=self.auth.domain, expires=expires)

    async def session(self, request: web.Request) -> web.Response:
        body = await wire.read_object(request)
        wire.only(body, SESSION_FIELDS)
        address, token, expires = await self.auth.open_session(body)
        return wire.ok(address=address, token=token, expires=expires)

    async def logout(self, request: web.Request) -> web.Response:
        wire.only_query(request, frozenset())
        return wire.ok(revoked=await self.auth.logout(request))

    async def register(self, request: web.Request) -> web.Response:
        """A key registers itself by signing flux-register:1:{domain}:{address}:{t}.

        Raises InvalidInput, AddressMismatch, BadSignature, Stale/FutureMessage,
        RegistrationClosed, BadInvite.
        """
        body = await wire.read_object(request)
        wire.only(body, REGISTER_FIELDS)
        address = wire.address(body)
        pub_b64 = wire.string(body, "pub", max_len=64)
        pub = b64d(pub_b64, field="pub", length=32)
        t = wire.integer(body, "t")
        sig = b64d(wire.string(body, "sig", max_len=100), field="sig", length=64)
        invite = body.get("invite")
        if invite is not None and not isinstance(invite, str):
            wire.string(body, "invite")  # raises WrongType naming the field
        if address_from_pub(pub) != address:
            raise AddressMismatch("pub does not hash to address", field="pub")
        now = self.clock()
        check_freshness(t, now)
        payload = f"flux-register:1:{self.auth.domain}:{address}:{t}".encode()
        try:
            verify_signature(pub, payload, sig)
        except BadSignature as exc:
            raise BadSignature(
                f"sig does not verify over flux-register:1:{self.auth.domain}:{address}:{t}",
                field="sig",
            ) from exc
        if await self.store.hosted(address) is not None:
            return wire.ok(address=address, registered=False)
        await self._admit(invite, now, address)
        created = await self.store.register_address(address, pub_b64, now)
        return wire.ok(address=address, registered=created)

    async def _admit(self, invite: str | None, now: int, address: str) -> None:
        # the same policy, codes and stored invites as account registration
        await self.admission.admit(invite, now, used_by=address)
