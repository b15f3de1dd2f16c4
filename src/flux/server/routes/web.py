"""The web client: `GET /` (its page) and `GET /web/...` (its files), and the two lookups
the browser cannot make itself because its page may talk to this origin only.

Files. Everything under static/web/ with a known type is served, named by its path there:
the list is made once, from the directory, so a request can only ever name one of those
files (no path is joined from request text: `..`, `%2e%2e` or an absolute path simply is
not in the list, 404). Each file is read on first use and kept with its gzip form and ETag
(static/docs.py `StaticFile`). Every answer is `no-cache`: the modules import each other by
plain relative names, so a browser must never mix an old module with a new one after an
upgrade; revalidation costs a 304 per file.

Content-Security-Policy (the same on every answer): scripts and styles from this origin
only, no inline script or style, nothing from other origins, no plugins, no framing, no
<base>, forms only to this origin; `require-trusted-types-for 'script'` makes any
assignment of a string to innerHTML (and friends) throw, so message text cannot become
markup even by a later mistake in the app. `connect-src 'self'` covers this origin's
WebSocket too (CSP 3 matches ws:/wss: of the page's host under 'self').

Lookups (session required: a key session's bearer token or an account's X-Flux-Session):
- `GET /web/keys/{server}`: the keys this server publishes, or those it has already
  fetched for a peer (federation/keys.py `KeyCache`), to check hop seals in the browser.
  It never fetches: a name it has not heard of is 404, so no one can make it a fetcher.
- `GET /web/resolve/{name@domain}`: a name at another domain, resolved by this server as
  the CLI does (client/resolve.py: the key must hash to the address), through the
  federation's guarded connections (netguard.py: no private addresses unless allowed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from ...accounts import Accounts
from ...client.errors import FluxClientError
from ...client.resolve import TIMEOUT_S as RESOLVE_TIMEOUT_S
from ...client.resolve import (
    Recipient,
    delegated_server,
    domain_url,
    parse_recipient,
    resolve_name,
    resolve_url,
)
from ...federation.keys import KeyFetcher
from ...protocol.chain import PublishedKey, is_server_name
from ...protocol.encoding import b64e
from ...protocol.errors import FluxError, InvalidValue
from .. import wire
from ..auth import Authenticator, presented_token
from ..errors import NotFound
from ..fair import RateLimited
from ..keys import ServerKey
from ..static.docs import StaticFile
from .accounts import SESSION_HEADER

__all__ = ["CSP", "WEB_DIR", "WebFiles", "WebRoutes", "static_answer"]

WEB_DIR = Path(__file__).parent.parent / "static" / "web"

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'; "
    "require-trusted-types-for 'script'; trusted-types 'none'"
)

#: name lookups (`GET /web/resolve`) one signed-in caller, and all callers together, may
#: have under way at once; more are refused at once (429), never queued
RESOLVES_PER_CALLER = 4
RESOLVES_IN_FLIGHT = 16

#: file suffix -> content type; files of any other type are not served
TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
    ".txt": "text/plain",
    ".woff2": "font/woff2",
}
#: folders under static/web that hold sources of vendored code, not files for the browser
NOT_SERVED = frozenset({"vendor-src", "node_modules"})


@dataclass(frozen=True)
class _Entry:
    path: Path
    content_type: str


class WebFiles:
    """The files under `root` the browser may load, listed once, each read on first use.
    One per app: no module-level cache."""

    def __init__(self, root: Path = WEB_DIR) -> None:
        self.root = root
        self._list: dict[str, _Entry] | None = None
        self._files: dict[str, StaticFile] = {}

    def names(self) -> dict[str, _Entry]:
        if self._list is None:
            found: dict[str, _Entry] = {}
            for path in sorted(self.root.rglob("*")) if self.root.is_dir() else []:
                rel = path.relative_to(self.root)
                kind = TYPES.get(path.suffix.lower())
                hidden = any(part.startswith(".") for part in rel.parts)  # .eslintrc.json...
                if path.is_file() and kind and not hidden and not NOT_SERVED & set(rel.parts):
                    found[rel.as_posix()] = _Entry(path, kind)
            self._list = found
        return self._list

    def get(self, name: str) -> StaticFile | None:
        """The file served as /web/{name}, or None for any name not in the list."""
        entry = self.names().get(name)
        if entry is None:
            return None
        if name not in self._files:  # small files: read on the loop, once
            self._files[name] = StaticFile.read(entry.path, entry.content_type)
        return self._files[name]


def _key_entry(key: PublishedKey) -> dict[str, Any]:
    return {"pub": b64e(key.pub), "valid_from": key.valid_from, "valid_until": key.valid_until}


class WebRoutes:
    def __init__(
        self,
        *,
        key: ServerKey,
        auth: Authenticator,
        accounts: Accounts,
        fetcher: Callable[[], KeyFetcher],
        files: WebFiles | None = None,
    ) -> None:
        self.key = key
        self.auth = auth
        self.accounts = accounts
        #: the federation's key fetcher (its cache, its guarded session), once running
        self.fetcher = fetcher
        self.files = files or WebFiles()
        #: caller address -> name lookups it has under way (`_lookup_turn`)
        self._lookups: dict[str, int] = {}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self.page),
            web.get("/web/keys/{server}", self.keys),
            web.get("/web/resolve/{name}", self.resolve),
            web.get("/web/{path:.+}", self.asset),
        ]

    async def page(self, request: web.Request) -> web.Response:
        """The web client's page (static/web/index.html). Takes no query parameter."""
        wire.only_query(request, frozenset())
        page = self.files.get("index.html")
        if page is None:
            raise NotFound("the web client is not installed", field="path")
        return static_answer(request, page)

    async def asset(self, request: web.Request) -> web.Response:
        """A file of the web client: 404 `not_found` (field `path`) for any other name."""
        wire.only_query(request, frozenset())
        found = self.files.get(request.match_info["path"])
        if found is None:
            raise NotFound("no such file of the web client", field="path")
        return static_answer(request, found)

    async def _signed_in(self, request: web.Request) -> str:
        """The caller's address. Raises Unauthorized unless the request carries a live key
        or account session."""
        account_token = request.headers.get(SESSION_HEADER)
        if account_token:
            return (await self.accounts.authenticate(account_token)).account.address
        return (await self.auth.principal(presented_token(request, legacy=False))).address

    async def keys(self, request: web.Request) -> web.Response:
        """`{ok, server, keys: [{pub, valid_from, valid_until}]}`: this server's published
        keys (current and retired), or a peer's as already cached here. 404 `not_found`
        (field `server`) for a peer whose keys are not known here; 400 for a name that is
        not a server name; 401 without a session."""
        await self._signed_in(request)
        wire.only_query(request, frozenset())
        server = wire.path_str(request, "server")
        if not is_server_name(server):
            raise InvalidValue("not a server name (host or host:port)", field="server")
        if server == self.key.signer.name:
            known = tuple(self.key.all_published())
        else:
            known = self.fetcher().cache.lookup(server)
        if not known:
            raise NotFound(f"no keys known here for {server}", field="server")
        return wire.ok(server=server, keys=[_key_entry(k) for k in known])

    async def resolve(self, request: web.Request) -> web.Response:
        """`{ok, address, pub, name, domain}` for `name@domain` or `fx1…@domain` at another
        domain (or this one), the key checked to hash to the address (`name` null for an
        address). 400 naming `name` for anything else; 404 `not_found` (field `name`) when
        the domain gives no binding or may not be reached; 401 without a session; 429
        `rate_limited` (field `name`, Retry-After) while the caller has RESOLVES_PER_CALLER
        lookups under way, or all callers RESOLVES_IN_FLIGHT."""
        caller = await self._signed_in(request)
        wire.only_query(request, frozenset())
        written = wire.path_str(request, "name")
        recipient = parse_recipient(written, field="name")
        if recipient.domain is None:
            raise InvalidValue("give name@domain or fx1…@domain", field="name")
        with self._lookup_turn(caller):
            return await self._resolve(written, recipient)

    @contextmanager
    def _lookup_turn(self, caller: str) -> Iterator[None]:
        """A turn for one name lookup of `caller`, or 429 `rate_limited` (field `name`,
        Retry-After) when it or everyone together already has as many under way as allowed:
        each lookup may hold outbound connections for up to three GETs of TIMEOUT_S, and a
        page is a client like any other, so it gets a share, not the whole federation pool."""
        mine = self._lookups.get(caller, 0)
        if mine >= RESOLVES_PER_CALLER or sum(self._lookups.values()) >= RESOLVES_IN_FLIGHT:
            raise RateLimited(
                "too many name lookups under way; try again when they have answered",
                field="name", retry_after_s=math.ceil(RESOLVE_TIMEOUT_S),
            )  # fmt: skip
        self._lookups[caller] = mine + 1
        try:
            yield
        finally:
            left = self._lookups[caller] - 1
            if left:
                self._lookups[caller] = left
            else:
                del self._lookups[caller]

    async def _resolve(self, written: str, recipient: Recipient) -> web.Response:
        """Resolves `recipient` (which has a domain) for `resolve`."""
        lookup = recipient.name or str(recipient.address)
        fetcher = self.fetcher()
        insecure = fetcher.insecure_peers

        def plain(domain: str) -> bool:
            return domain in insecure

        try:
            # Each URL is checked against the outbound policy before it is asked: the
            # domain's, then the server it delegates to in /.well-known/flux (as the CLI
            # follows it: client/resolve.py), whose answer is still checked against the key.
            fetcher.policy.guard_url(domain_url(recipient.domain, plain_http=plain))
            server = await delegated_server(fetcher.session, recipient.domain, plain_http=plain)
            url = fetcher.policy.guard_url(resolve_url(server, lookup, plain_http=plain))
            # (resolve_name asks the delegated server's own /.well-known/flux again, then
            # uses `url` as given: one small request more, bounded like the others)
            address, pub = await resolve_name(
                fetcher.session, server, lookup, url=url, plain_http=plain
            )
        except (FluxClientError, FluxError, OSError) as exc:
            message = getattr(exc, "message", None) or str(exc)
            message = message.split(" did not resolve: ", 1)[-1]  # said once, below
            raise NotFound(
                f"{written[:80]} did not resolve: {message[:200]}", field="name"
            ) from None
        if recipient.address is not None and address != recipient.address:
            raise InvalidValue(f"{recipient.domain} answered for another address", field="name")
        return wire.ok(address=address, pub=pub, name=recipient.name, domain=recipient.domain)


def static_answer(request: web.Request, file: StaticFile) -> web.Response:
    """`file` with its caching and safety headers: 304 when the client holds this ETag, gzip
    when the client accepts it, and the client's Content-Security-Policy on every answer."""
    headers = {
        "Cache-Control": "no-cache",
        "ETag": file.etag,
        "Vary": "Accept-Encoding",
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        # no Cross-Origin-Opener-Policy: over plain HTTP (a page that must still say why a
        # key cannot be used there) Chromium logs it as an error and ignores it
        "Cross-Origin-Resource-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    }
    if file.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    text = file.content_type.startswith("text/") or file.content_type.endswith(("json", "xml"))
    response = web.Response(body=file.body, content_type=file.content_type,
                            charset="utf-8" if text else None, headers=headers)  # fmt: skip
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        response.body = file.gzipped
        response.headers["Content-Encoding"] = "gzip"
    return response
