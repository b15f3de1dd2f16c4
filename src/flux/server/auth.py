"""Who is asking: signed challenges, session tokens, and the legacy token (docs/API.md).

Challenge. The server makes an opaque string `"{expires}.{nonce}.{mac}"`, where `mac` is an
HMAC (under a key derived from the server's signing key) over the domain, the address, the
expiry and the nonce. Checking it needs no storage until it is used: it is this server's
(the MAC), for this address, unexpired, and, recorded through `store.use_nonce`, unused.
The client signs `"flux-auth:1:{domain}:{challenge}"`, so a proof made for one server (or
for another address) is useless anywhere else.

Session. 32 random bytes, handed out once; the store keeps only their SHA-256, so a copy
of the database yields no usable token. Sessions expire and can be revoked.

Legacy token. The prototype's hex SHA-256("flux:" + address + ":" + FLUX_SECRET) lets the
holder of the secret read every mailbox; it is accepted only when the operator turns it on.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..protocol.encoding import b64d
from ..protocol.errors import AddressMismatch, BadSignature
from ..protocol.identity import address_from_pub, verify_signature
from ..protocol.tokens import legacy_token_matches
from ..store.base import Store
from . import wire
from .errors import AuthFailed, BadChallenge, Forbidden, Unauthorized

Clock = Callable[[], int]
MAX_TOKEN_CHARS = 256


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: the address it proved, and how."""

    address: str
    token_hash: str | None  #: None for a legacy token
    legacy: bool = False
    expires_at: int | None = None  #: unix ms when the session ends (None: a legacy token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def presented_token(request: web.Request, *, legacy: bool) -> str | None:
    """`Authorization: Bearer`, `X-Flux-Token`, or (legacy only) `?token=`."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    token = request.headers.get("X-Flux-Token") or (request.query.get("token") if legacy else None)
    return token or None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class Authenticator:
    def __init__(
        self,
        *,
        store: Store,
        domain: str,
        clock: Clock,
        mac_key: bytes,
        session_ttl_ms: int,
        challenge_ttl_ms: int,
        legacy_secret: str | None = None,
        randbytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.store = store
        self.domain = domain
        self.clock = clock
        self._mac_key = mac_key
        self.session_ttl_ms = session_ttl_ms
        self.challenge_ttl_ms = challenge_ttl_ms
        self.legacy_secret = legacy_secret
        self._randbytes = randbytes
        self._revocation_watchers: list[Callable[[str], None]] = []

    # -- challenges ---------------------------------------------------------------------

    def _mac(self, address: str, expires: int, nonce: str) -> str:
        text = f"{self.domain}|{address}|{expires}|{nonce}".encode()
        return _b64(hmac.new(self._mac_key, text, hashlib.sha256).digest()[:18])

    def challenge(self, address: str) -> tuple[str, int]:
        """A fresh challenge for `address` and when it expires (unix ms)."""
        expires = self.clock() + self.challenge_ttl_ms
        nonce = _b64(self._randbytes(18))
        return f"{expires}.{nonce}.{self._mac(address, expires, nonce)}", expires

    def _challenge_expiry(self, challenge: str, address: str) -> int:
        """Raise BadChallenge unless `challenge` is this server's, for `address`, unexpired."""
        parts = challenge.split(".")
        if len(parts) != 3 or not parts[0].isdigit() or len(parts[0]) > 16:
            raise BadChallenge("not a challenge made by this server", field="challenge")
        expires, nonce, mac = int(parts[0]), parts[1], parts[2]
        if not hmac.compare_digest(mac.encode(), self._mac(address, expires, nonce).encode()):
            raise BadChallenge("not a challenge this server made for this address", field="challenge")  # fmt: skip
        if expires < self.clock():
            raise BadChallenge("the challenge has expired; ask for a new one", field="challenge")
        return expires

    # -- sessions -----------------------------------------------------------------------

    async def open_session(self, body: Mapping[str, Any]) -> tuple[str, str, int]:
        """Check a signed challenge; return (address, token, expires). See module docstring.

        Raises InvalidInput (shape), AddressMismatch, BadChallenge, AuthFailed.
        """
        address = wire.address(body)
        pub = b64d(wire.string(body, "pub", max_len=64), field="pub", length=32)
        challenge = wire.string(body, "challenge", max_len=200)
        sig = b64d(wire.string(body, "sig", max_len=100), field="sig", length=64)
        if address_from_pub(pub) != address:
            raise AddressMismatch("pub does not hash to address", field="pub")
        expires = self._challenge_expiry(challenge, address)
        payload = f"flux-auth:1:{self.domain}:{challenge}".encode()
        try:
            verify_signature(pub, payload, sig)
        except BadSignature as exc:
            raise AuthFailed(
                f"sig does not verify over flux-auth:1:{self.domain}:<challenge>", field="sig"
            ) from exc
        if not await self.store.use_nonce(f"challenge:{challenge}", expires, self.clock()):
            raise BadChallenge("this challenge was already used", field="challenge")
        token = _b64(self._randbytes(32))
        session_expires = self.clock() + self.session_ttl_ms
        await self.store.create_session(token_hash(token), address, session_expires)
        return address, token, session_expires

    async def principal(self, token: str | None, claimed: str | None = None) -> Principal:
        """The caller behind `token` (a session, or a legacy token for `claimed`).

        Raises Unauthorized when there is no valid credential.
        """
        if not token:
            raise Unauthorized("authentication required: send a session token")
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized("invalid or expired token")
        digest = token_hash(token)
        session = await self.store.session(digest, self.clock())
        if session is not None:
            return Principal(session.address, digest, expires_at=session.expires_at)
        if (
            self.legacy_secret
            and claimed
            and legacy_token_matches(claimed, self.legacy_secret, token)
        ):
            return Principal(claimed, None, legacy=True)
        raise Unauthorized("invalid or expired token")

    async def require(self, request: web.Request, address: str) -> Principal:
        """The caller, who must be `address`'s owner: else 401 (no credential) or 403."""
        token = presented_token(request, legacy=self.legacy_secret is not None)
        principal = await self.principal(token, address)
        if principal.address != address:
            raise Forbidden("this token is not for that address", field="address")
        return principal

    async def optional(self, request: web.Request, address: str) -> Principal | None:
        """The caller if it presents a valid credential, else None (never raises)."""
        token = presented_token(request, legacy=self.legacy_secret is not None)
        if not token:
            return None
        try:
            return await self.principal(token, address)
        except Unauthorized:
            return None

    async def logout(self, request: web.Request) -> bool:
        """Revoke the presented session token. Raises Unauthorized without a valid one."""
        token = presented_token(request, legacy=False)
        principal = await self.principal(token)
        if principal.token_hash is None:
            return False
        revoked = await self.store.revoke_session(principal.token_hash)
        for callback in self._revocation_watchers:
            callback(principal.address)
        return revoked

    def watch_revocations(self, callback: Callable[[str], None]) -> None:
        """Call `callback(address)` when this process revokes a session of `address`, so its
        open WebSockets are checked at once (server/ws.py); a revocation made by another
        process is found by their periodic check instead."""
        self._revocation_watchers.append(callback)


def mac_key_for(seed: bytes) -> bytes:
    """The challenge MAC key, derived from the server's signing seed (stable across restarts
    and shared by every process that holds the same server key)."""
    return hashlib.sha256(b"flux-challenge-mac:1:" + seed).digest()


#: headers a reverse proxy sets to name the client it forwards (any one makes a request
#: "forwarded": the peer address is then the proxy's, not the client's)
FORWARDING_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP", "X-Client-IP", "True-Client-IP")


class OperatorAuth:
    """Who may see operator detail (/metrics, the per-destination part of /stats).

    With `operator_token` set: a request carrying `Authorization: Bearer <token>` (compared
    in constant time). Without it: only a client connecting from a loopback address with no
    forwarding header, i.e. someone on the machine itself; a reverse proxy on the same
    machine forwards strangers from 127.0.0.1, which is why a forwarded request (or one from
    a trusted proxy) never counts as local. Behind a proxy, set a token.
    """

    def __init__(self, token: str | None, trusted_proxies: frozenset[str] = frozenset()) -> None:
        self._token = token.encode() if token else None
        self.trusted_proxies = wire.TrustedProxies(trusted_proxies)

    def allows(self, request: web.Request) -> bool:
        if self._token is not None:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            return scheme.lower() == "bearer" and hmac.compare_digest(
                given.strip().encode(), self._token
            )
        forwarded = any(h in request.headers for h in FORWARDING_HEADERS)
        remote = request.remote or ""
        return not forwarded and remote not in self.trusted_proxies and _is_loopback(remote)

    def require(self, request: web.Request) -> None:
        """Raise Unauthorized (401) unless the request is the operator's."""
        if not self.allows(request):
            raise Unauthorized(
                "operator only: send Authorization: Bearer <FLUX_OPERATOR_TOKEN>"
                if self._token is not None
                else "operator only: from this machine, or set FLUX_OPERATOR_TOKEN",
                field="Authorization",
            )


def _is_loopback(remote: str) -> bool:
    try:
        return ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False
