"""Where this server may connect: the outbound address policy (issue 9, section 2).

Every name this server reaches out to comes, in the end, from someone else: a delivery's
`keyid`, a submission's `domains` map, a `/.well-known/flux` delegation, a tamper report.
Left alone, such a name could point the server at its own database (`127.0.0.1:5432`), the
cloud metadata service (`169.254.169.254`) or anything else on the inside network. So an
outbound connection goes only to a *globally routable* address, unless the operator lists
the peer (`allow_private_peers`, development and private federations).

Refused: loopback, private (RFC 1918, ULA), shared (100.64/10), link-local, multicast,
unspecified, reserved and documentation ranges; an IPv4-mapped IPv6 address is judged as
the IPv4 address it carries. In short: anything `ipaddress` does not call global.

Where it is enforced. `GuardedResolver` sits on every aiohttp connector the server (and the
client library's resolver) opens: it resolves the name, drops the addresses the policy
refuses and hands aiohttp only the checked ones, so the connection is pinned to an address
that was checked (no second lookup that a DNS rebinding could answer differently). aiohttp
does not ask the resolver about IP literals, so `PeerPolicy.check_host` is also called on
the URL's host before each request (`guard_url`); with redirects never followed, that host
is the only one connected to.

Allowances (`allow_private_peers`, comma-separated): a CIDR or single address (`10.0.0.0/8`,
`127.0.0.1`) allows those addresses for any name; a host name (`localhost`) allows that
name at any port to resolve anywhere; `host:port` allows exactly that server. Names the
operator lists in `insecure_peers` are allowed too, exactly as listed (host:port): naming a
server as a development peer is already the operator saying where it lives.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import re
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

__all__ = [
    "AnswerTooLarge", "GuardedResolver", "PeerPolicy", "RedirectRefused", "RefusedAddress",
    "forbidden_address", "guarded_session", "read_capped",
]  # fmt: skip


class RefusedAddress(OSError):
    """The policy refused every address of a peer. An OSError, so aiohttp reports it as a
    connection failure (ClientConnectorError) like any unreachable host; the reason is the
    OSError's strerror, which aiohttp keeps in its message (the queue's last error)."""

    def __init__(self, reason: str) -> None:
        super().__init__(errno.EACCES, reason)


def forbidden_address(ip: IPAddress) -> bool:
    """True for an address no peer should have on the public Internet (module doc)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        not ip.is_global
        or ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_unspecified
        or ip.is_reserved
    )


_NUMERIC_HOST = re.compile(r"^[0-9a-fx.]+\Z", re.IGNORECASE)


def ip_literal(host: str) -> IPAddress | None:
    """The address `host` spells (`[::1]` brackets allowed), or None for a name.

    The legacy IPv4 forms that C's `inet_aton` (and so `getaddrinfo`) reads as addresses
    count too: `127.1`, `0`, `2130706433`, `0x7f.1`, `0177.0.0.1`. `ipaddress` refuses them,
    so without this they would pass as names and skip the literal check.
    """
    bare = host.strip("[]")
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    if _NUMERIC_HOST.match(bare):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(bare))
        except OSError:
            return None
    return None


def split_server(server: str) -> tuple[str, int | None]:
    """`host[:port]` (or `[v6]:port`) -> (host without brackets, port or None)."""
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    host, colon, port = server.rpartition(":")
    if colon and port.isdigit() and ":" not in host:
        return host, int(port)
    return server, None


@dataclass(frozen=True, slots=True)
class PeerPolicy:
    """Which private addresses the operator allows (module doc). The default allows none."""

    networks: tuple[IPNetwork, ...] = ()
    names: frozenset[str] = frozenset()  #: `host` (any port) or `host:port`, lower-case

    @classmethod
    def from_settings(
        cls, allow: Iterable[str] = (), insecure_peers: Iterable[str] = ()
    ) -> PeerPolicy:
        """Raises ValueError for an entry that is neither a CIDR, an address nor a name."""
        networks: list[IPNetwork] = []
        names: set[str] = {p.lower() for p in insecure_peers}
        for entry in (e.strip().lower() for e in allow):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                if not entry.replace(".", "").replace("-", "").replace(":", "").isalnum():
                    raise ValueError(
                        f"allow_private_peers: {entry!r} is not a CIDR or name"
                    ) from None
                names.add(entry)
        return cls(tuple(networks), frozenset(names))

    def name_allowed(self, host: str, port: int | None) -> bool:
        host = host.lower()
        return host in self.names or (port is not None and f"{host}:{port}" in self.names)

    def permits(self, host: str, port: int | None, ip: IPAddress) -> bool:
        """May a connection for `host:port` go to `ip`?"""
        if not forbidden_address(ip) or self.name_allowed(host, port):
            return True
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        return any(a in net for net in self.networks for a in (ip, mapped) if a is not None
                   and a.version == net.version)  # fmt: skip

    def check_host(self, host: str, port: int | None) -> None:
        """Raise RefusedAddress when `host` is an IP literal the policy refuses (names are
        checked when they resolve, by GuardedResolver)."""
        ip = ip_literal(host)
        if ip is not None and not self.permits(host, port, ip):
            raise RefusedAddress(f"{host} is a private or reserved address (not allowed)")

    def literal_refused(self, server: str) -> bool:
        """For early checks (a submission's `domains`): is `server` an IP literal that no
        connection would be allowed to?"""
        host, port = split_server(server)
        try:
            self.check_host(host, port)
        except RefusedAddress:
            return True
        return False

    def guard_url(self, url: str) -> str:
        """`url`, after checking its host (IP literals; names are checked on resolution)."""
        parts = urlsplit(url)
        self.check_host(parts.hostname or "", parts.port)
        return url


class NameNotFound(OSError):
    """The name does not exist (DNS NXDOMAIN; getaddrinfo EAI_NONAME): a permanent answer,
    unlike a resolver that did not answer (EAI_AGAIN, a timeout), which may later."""

    def __init__(self, host: str) -> None:
        super().__init__(f"{host} does not exist (no such domain)")
        self.host = host


#: getaddrinfo's "no such name" answers; EAI_NODATA (a name without addresses) where the
#: platform has it. EAI_AGAIN (try again) is left out on purpose: it is transient.
_NO_SUCH_NAME = frozenset(
    code for code in (getattr(socket, "EAI_NONAME", None), getattr(socket, "EAI_NODATA", None))
    if code is not None
)  # fmt: skip


def no_such_name(host: str) -> bool:
    """True for a name no resolver can answer: under `.invalid` (RFC 6761 §6.4: name
    resolution APIs SHOULD return a negative answer at once), so no query leaves the host."""
    return host.rstrip(".").lower().rsplit(".", 1)[-1] == "invalid"


class GuardedResolver(AbstractResolver):
    """Resolves with `inner` (aiohttp's default) and keeps only the addresses the policy
    permits; aiohttp connects to what this returns, so the connection is pinned to a
    checked address. Raises RefusedAddress when none is left, NameNotFound when the name
    does not exist (a permanent answer: delivery bounces at once rather than retrying)."""

    def __init__(self, policy: PeerPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self.inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if no_such_name(host):
            raise NameNotFound(host)
        try:
            results = await self.inner.resolve(host, port, family)
        except socket.gaierror as exc:
            if exc.errno in _NO_SUCH_NAME:
                raise NameNotFound(host) from exc
            raise
        except OSError as exc:  # aiodns/threaded resolvers wrap gaierror in an OSError
            cause = exc.__cause__
            if isinstance(cause, socket.gaierror) and cause.errno in _NO_SUCH_NAME:
                raise NameNotFound(host) from exc
            if type(cause).__name__ == "DNSError" and cause.args[:1] == (4,):
                raise NameNotFound(host) from exc  # aiodns: ARES_ENOTFOUND (NXDOMAIN)
            raise
        kept = [r for r in results if self._permitted(host, port, r["host"])]
        if not kept:
            raise RefusedAddress(f"{host} resolves only to private or reserved addresses")
        return kept

    def _permitted(self, host: str, port: int, address: str) -> bool:
        ip = ip_literal(address.split("%", 1)[0])  # drop an IPv6 zone id
        return ip is not None and self.policy.permits(host, port or None, ip)

    async def close(self) -> None:
        await self.inner.close()


# -- what comes back ------------------------------------------------------------------------
#: the largest answer read from a peer, by kind (a key set is a few hundred bytes; a delivery
#: answer lists ≤ 100 short results)
INFO_MAX_BYTES = 64 * 1024
ANSWER_MAX_BYTES = 256 * 1024


class AnswerTooLarge(ValueError):
    """A peer's answer exceeded its cap; the connection is dropped, not drained."""


class RedirectRefused(ValueError):
    """A peer answered 3xx: redirects are never followed (module doc of peers.py)."""


async def read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, read in chunks and abandoned past `limit` bytes (the caller's total
    deadline bounds the time). Raises AnswerTooLarge, RedirectRefused (a 3xx answer)."""
    if 300 <= response.status < 400:
        where = response.headers.get("Location", "")[:100]
        raise RedirectRefused(f"HTTP {response.status} redirect to {where!r} not followed")
    if response.content_length is not None and response.content_length > limit:
        raise AnswerTooLarge(f"answer of {response.content_length} bytes (cap {limit})")
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(16 * 1024):
        size += len(chunk)
        if size > limit:
            response.close()  # drop the connection: draining 100 MB would defeat the cap
            raise AnswerTooLarge(f"answer larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def json_or_none(data: bytes) -> Any:
    try:
        return json.loads(data) if data else None
    except (ValueError, RecursionError):
        return None


def guarded_session(
    policy: PeerPolicy,
    *,
    limit: int,
    limit_per_host: int,
    ssl_context: ssl.SSLContext | None = None,
) -> aiohttp.ClientSession:
    """A session whose connector resolves through the policy and holds at most `limit`
    connections (`limit_per_host` to one peer); never reads proxy settings from the
    environment, never follows redirects, keeps no cookies."""
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(policy), limit=limit, limit_per_host=limit_per_host,
        ssl=ssl_context if ssl_context is not None else True,
    )  # fmt: skip
    return aiohttp.ClientSession(
        connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar()
    )
