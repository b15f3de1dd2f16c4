"""Turning what a person writes into an fx1 address (BRIEF §Routing).

A recipient is written three ways:

    fx1…             a bare address: local to the server, or reached through its mesh
    fx1…@domain      an address at a named domain (the domain is where to deliver)
    name@domain      a name that `domain` resolves at GET /federation/resolve/{name}

Parsing is pure (`parse_recipient`); resolving a name is one GET (`resolve_name`), done over
HTTPS except for localhost. A key fetched for an fx1 address proves itself (the address is
its hash); a name binding is only as good as the domain, which is why the client keeps
`KnownBindings`. `Recipient.domain` is kept so that federated delivery can route on it.

Answers are read the way a server reads its peers' (issue 9 §2): no redirect is followed
(a 3xx is a failure naming where it pointed, so a domain cannot send the lookup to another
host or down to plain HTTP), at most ANSWER_MAX_BYTES are read, and each GET has a total
deadline of TIMEOUT_S. The client does not apply the server's private-address policy to the
domains its person writes (localhost in development), but a delegation from a domain out on
the network into loopback, private or link-local space (or localhost) is ignored.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp

from ..compat.federation import binding_of
from ..federation.netguard import (
    forbidden_address,
    ip_literal,
    json_or_none,
    read_capped,
    split_server,
)
from ..protocol import address_from_pub, b64d, is_address
from ..protocol.errors import AddressMismatch, InvalidValue
from .errors import FluxClientError

__all__ = ["Recipient", "domain_url", "parse_recipient", "resolve_name", "resolve_url"]

_NAME_RE = re.compile(r"^[A-Za-z0-9._+-]{1,64}\Z")
_DOMAIN_RE = re.compile(r"^[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?\Z|^\[[0-9a-fA-F:]+\](:[0-9]{1,5})?\Z")
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "[::1]"}
ANSWER_MAX_BYTES = 64 * 1024  #: a binding or a delegation is a small JSON object
TIMEOUT_S = 10.0  #: the whole GET: connect, headers and body


async def get_json_capped(session: aiohttp.ClientSession, url: str) -> tuple[int, object]:
    """GET `url` without following redirects; (status, parsed JSON or None). Raises
    aiohttp.ClientError, TimeoutError, ValueError (a redirect, or an answer over the cap)."""
    async with asyncio.timeout(TIMEOUT_S), session.get(
        url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)
    ) as resp:  # fmt: skip
        # the servers' own reader of peer answers: a 3xx refused, the body capped
        return resp.status, json_or_none(await read_capped(resp, ANSWER_MAX_BYTES))


@dataclass(frozen=True, slots=True)
class Recipient:
    """A parsed recipient. `address` is None until a name has been resolved."""

    written: str
    address: str | None
    domain: str | None = None
    name: str | None = None
    pub: str | None = None  #: base64url Ed25519 key, when resolution returned it

    @property
    def needs_resolution(self) -> bool:
        return self.address is None

    @property
    def handle(self) -> str | None:
        """`name@domain`, the key under which a name binding is remembered."""
        return f"{self.name}@{self.domain}".lower() if self.name else None


def parse_recipient(text: str, *, field: str = "to") -> Recipient:
    """Parse one recipient; raise InvalidValue naming `field` when it is none of the forms."""
    value = text.strip()
    if is_address(value):
        return Recipient(value, value)
    local, at, domain = value.rpartition("@")
    if not at or not _DOMAIN_RE.match(domain):
        raise InvalidValue(f"{text!r} is not fx1…, fx1…@domain or name@domain", field=field)
    domain = domain.lower()
    if is_address(local):
        return Recipient(value, local, domain=domain)
    if not _NAME_RE.match(local):
        raise InvalidValue(f"{local!r} is not a valid name", field=field)
    return Recipient(value, None, domain=domain, name=local)


def is_local(domain: str) -> bool:
    """localhost names (any port): reached over plain HTTP by default (development)."""
    host = domain.rsplit(":", 1)[0] if not domain.endswith("]") else domain
    return host in _LOCAL_HOSTS or host.endswith(".localhost")


def domain_url(domain: str, *, plain_http: Callable[[str], bool] = is_local) -> str:
    """A domain's base URL: HTTPS, except plain HTTP where `plain_http(domain)` says so
    (by default for localhost)."""
    return f"{'http' if plain_http(domain) else 'https'}://{domain}"


def resolve_url(domain: str, name: str, *, plain_http: Callable[[str], bool] = is_local) -> str:
    """Where `domain` answers for `name`."""
    return f"{domain_url(domain, plain_http=plain_http)}/federation/resolve/{quote(name, safe='')}"


async def resolve_name(
    session: aiohttp.ClientSession,
    domain: str,
    name: str,
    *,
    url: str | None = None,
    plain_http: Callable[[str], bool] = is_local,
) -> tuple[str, str]:
    """GET the resolve endpoint; return (address, pub) after checking pub hashes to address.

    Raises FluxClientError (`resolve_failed`, with the status) when the domain does not
    answer with a binding, and AddressMismatch when the key it gives is not the address's.
    """
    server = await delegated_server(session, domain, plain_http=plain_http)
    target = url or resolve_url(server, name, plain_http=plain_http)
    try:
        status, body = await get_json_capped(session, target)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise FluxClientError(
            f"cannot resolve {name}@{domain}: {exc}", code="resolve_failed", field="to"
        ) from exc
    if status != 200 or not isinstance(body, dict) or body.get("ok") is False:
        err = FluxClientError.from_answer(status, body)
        raise FluxClientError(
            f"{name}@{domain} did not resolve: {err.message}",
            status=status,
            code="resolve_failed",
            field="to",
            body=err.body,
        )
    return _checked_binding(body, f"{name}@{domain}")


async def delegated_server(
    session: aiohttp.ClientSession, domain: str, *, plain_http: Callable[[str], bool] = is_local
) -> str:
    """The server `domain` delegates to in /.well-known/flux, or the domain itself.

    The answer only says where to ask: the binding fetched there is still checked (the key
    must hash to the address), so a wrong delegation cannot substitute a key unseen.
    """
    try:
        url = f"{domain_url(domain, plain_http=plain_http)}/.well-known/flux"
        status, body = await get_json_capped(session, url)
        body = body if status == 200 else None
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return domain
    server = body.get("server") if isinstance(body, dict) else None
    if not isinstance(server, str) or not _DOMAIN_RE.match(server):
        return domain
    server = server.lower()
    # A domain out on the network must not point this client into the person's own
    # machine or network (a loopback, private or link-local address, or localhost): the
    # person chose the domain, the domain does not get to choose such a target.
    if _private_target(server) and not _private_target(domain):
        return domain
    return server


def _private_target(server: str) -> bool:
    """localhost, or an IP literal the servers' outbound policy would refuse."""
    if is_local(server):
        return True
    ip = ip_literal(split_server(server)[0])
    return ip is not None and forbidden_address(ip)


def _checked_binding(body: dict, who: str) -> tuple[str, str]:
    # FLUX's fields, or the prototype's (`flux_address`, `flux_pub_b64`): a binding is
    # checked the same way whoever wrote it (PROTOCOL.md §13)
    address, pub = binding_of(body)
    if not is_address(address) or not isinstance(pub, str):
        raise FluxClientError(
            f"{who}: answer has no valid address and pub", code="bad_answer", field="to"
        )
    if address_from_pub(b64d(pub, field="pub", length=32)) != address:
        raise AddressMismatch(f"{who}: the key given does not hash to {address}", field="pub")
    return address, pub
