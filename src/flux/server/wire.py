"""Reading requests and writing answers: strict JSON in, `{"ok": true, ...}` out.

Every value a client sends is checked here, once, with the same error classes the protocol
uses (`MissingField`, `WrongType`, `InvalidValue`, `TooLarge`), each naming its field, so
routes and WebSocket actions stay thin and answer alike.

Outside strings (`check_text`). Every string from outside that reaches the store (query and
path parameters, tags, folder names, cursors, names) passes `check_text` before anything
else sees it, with one rule on every backend: a string, at most `max_len` characters, no
control characters (C0, DEL, C1) and no lone surrogates. Why here and not in each store:
PostgreSQL refuses a NUL in text (a 500) where SQLite stores it, and a lone surrogate
cannot be encoded at all, so the same request would answer differently per backend; and
an invisible control character in a folder or tag name is never what a person meant.
Free text (message content, passwords: `multiline=True`, the default for `string`)
follows the envelope's rule for content instead: any character but a lone surrogate (it is
stored JSON-escaped, never as a bare NUL).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiohttp import web

from ..protocol.canonical import loads_strict
from ..protocol.chain import is_server_name
from ..protocol.envelope import CONTROL_RE, require_address, require_id
from ..protocol.errors import InvalidValue, MalformedJSON, MissingField, TooLarge, WrongType
from ..protocol.limits import MAX_RECIPIENTS, MAX_TAG_CHARS, MAX_TAGS
from ..store.base import MIN_PREFIX
from .errors import PayloadTooLarge, dumps

MAX_IDS = 500  #: ids in one read/delete request
MAX_QUERY_CHARS = 1024  #: one query parameter
MAX_NAME_CHARS = 320  #: a path name (an account name, an address with its domain)
INBOX_RE = re.compile(r"^[^\x00-\x1f\x7f/]{1,64}\Z")
#: control characters (C0, DEL, C1) and lone surrogates: never in a name, tag or parameter
LINE_FORBIDDEN_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
#: free text (the envelope's rule for content): only lone surrogates
TEXT_FORBIDDEN_RE = re.compile(r"[\ud800-\udfff]")


def ok(**fields: Any) -> web.Response:
    return web.Response(text=dumps({"ok": True, **fields}), content_type="application/json")


def parse_json(data: bytes | str) -> Any:
    """Strict JSON (loads_strict), with nesting too deep to parse refused as malformed."""
    if not data:
        raise MalformedJSON("the body is empty; a JSON object is required", field="body")
    try:
        return loads_strict(data)
    except RecursionError:  # loads_strict lets the C parser's RecursionError through
        raise MalformedJSON("not valid JSON: nested too deeply") from None


def json_object(data: bytes | str, what: str = "body") -> dict[str, Any]:
    """Parse `data` as one JSON object (FLUX's strict data model); raise naming the problem."""
    value = parse_json(data)
    if not isinstance(value, dict):
        raise WrongType(f"the {what} must be a JSON object", field=what)
    return value


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The body, up to `limit` bytes whatever the app's own limit (server-to-server
    transactions carry up to 100 messages); PayloadTooLarge (413) beyond it."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the body is larger than {limit} bytes", field="body")
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes", field="body")
        chunks.append(chunk)
    return b"".join(chunks)


#: where the edge (flux.compat.http) leaves a body it rewrote from another dialect's form
EDGE_BODY = web.RequestKey("flux_edge_body", dict)


async def read_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object (aiohttp refuses a body over the limit: 413), as
    the edge rewrote it if it did (flux.compat.http)."""
    rewritten = request.get(EDGE_BODY)
    if rewritten is not None:
        return dict(rewritten)
    return json_object(await request.read())


def only(obj: Mapping[str, Any], allowed: frozenset[str], what: str = "body") -> None:
    """Refuse a field the endpoint would otherwise ignore: a request answered `ok` while a
    field it carried did nothing is a bug (docs/API.md). Raises InvalidValue naming the
    first unknown field."""
    unknown = sorted(k for k in obj if k not in allowed)
    if unknown:
        name = str(unknown[0])[:64]
        raise InvalidValue(f"unknown field {name!r}: this {what} does not take it", field=name)


def only_query(request: web.Request, allowed: frozenset[str]) -> None:
    """Refuse a query parameter the route would ignore (as `only`). `token` (the legacy
    token, docs/API.md "Authentication") is always allowed."""
    only(request.query, allowed | {"token"}, "query")


def without_port(address: str) -> str:
    """`address` without a port some proxies write after it (Azure's Application Gateway
    forwards `203.0.113.7:51234`, RFC 7239 `[2001:db8::1]:443`): counted with its port,
    every connection of one client would be a new client with a budget of its own."""
    address = address.strip()
    if address.startswith("["):
        return address[1:].split("]", 1)[0]
    host, colon, port = address.rpartition(":")
    if colon and "." in host and ":" not in host and port.isdigit():
        return host
    return address


class TrustedProxies(frozenset[str]):
    """`FLUX_TRUSTED_PROXIES`: exact addresses, CIDRs (`10.0.0.0/8`) or names, as one rule
    for every per-address decision (client addresses, connection caps, request budgets,
    the operator check). `address in proxies` matches an entry exactly, or an address
    inside one of its networks (an IPv4-mapped IPv6 address as its IPv4 address)."""

    _networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    def __new__(cls, entries: Iterable[str] = ()) -> TrustedProxies:
        self = super().__new__(cls, entries)
        networks = []
        for entry in self:
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                continue  # a host name: matched as an exact string only
        self._networks = tuple(networks)
        return self

    def __contains__(self, address: object) -> bool:
        if super().__contains__(address) or (
            isinstance(address, str) and super().__contains__(without_port(address))
        ):
            return True
        if not self._networks or not isinstance(address, str):
            return False
        try:
            ip = ipaddress.ip_address(without_port(address).split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self._networks)


def client_address(request: web.Request, trusted_proxies: frozenset[str]) -> str | None:
    """The client's IP address: the connection's, or, when that is a trusted proxy, the
    nearest address in X-Forwarded-For that is not one (proxies append the address they
    received from, so anything further left is the client's own claim). Pass a
    TrustedProxies so that CIDRs match; a plain set matches exact addresses only.

    Every X-Forwarded-For line counts, in order, as one list (RFC 9110 §5.3): a proxy
    such as HAProxy adds a line of its own rather than extending the client's, and
    reading only the first line would take the client's own claim for its address."""
    remote = request.remote
    if remote not in trusted_proxies:
        return remote
    lines = request.headers.getall("X-Forwarded-For", [])
    hops = [h.strip() for line in lines for h in line.split(",")]
    for hop in reversed([h for h in hops if h]):
        if hop not in trusted_proxies:
            return hop
    return remote


# -- fields --------------------------------------------------------------------------------


def field(obj: Mapping[str, Any], name: str) -> Any:
    if name not in obj:
        raise MissingField(f"{name} is required", field=name)
    return obj[name]


def check_text(value: Any, name: str, *, max_len: int = 1024, multiline: bool = False) -> str:
    """The one rule for a string from outside (module docstring): WrongType, TooLarge,
    or InvalidValue for a control character (allowed in `multiline` free text) or a lone
    surrogate, each naming `name`."""
    if not isinstance(value, str):
        raise WrongType(f"{name} must be a string", field=name)
    if len(value) > max_len:
        raise TooLarge(f"{name} is longer than {max_len} characters", field=name)
    bad = (TEXT_FORBIDDEN_RE if multiline else LINE_FORBIDDEN_RE).search(value)
    if bad is not None:
        what = "a lone surrogate" if "\ud800" <= bad.group() <= "\udfff" else "a control character"
        raise InvalidValue(
            f"{name} holds {what} (U+{ord(bad.group()):04X} at {bad.start()})", field=name
        )
    return value


def string(
    obj: Mapping[str, Any], name: str, *, max_len: int = 1024, multiline: bool = True
) -> str:
    """A required string field, checked by `check_text` (free text by default: callers
    that take a name or a token pass `multiline=False`)."""
    return check_text(field(obj, name), name, max_len=max_len, multiline=multiline)


def integer(obj: Mapping[str, Any], name: str) -> int:
    value = field(obj, name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise WrongType(f"{name} must be an integer", field=name)
    return value


def check_address(value: Any, name: str = "address") -> str:
    require_address(name, value)  # the envelope's own rule and error, not a copy of it
    return value


def address(obj: Mapping[str, Any], name: str = "address") -> str:
    return check_address(field(obj, name), name)


def check_id(value: Any, name: str = "id") -> str:
    require_id(name, value)
    return value


def message_id(obj: Mapping[str, Any], name: str = "id") -> str:
    return check_id(field(obj, name), name)


#: A message id (32 lower-case hex digits) or a short id: a prefix of one, at least
#: MIN_PREFIX digits (docs/API.md, "Short ids").
_ID_OR_PREFIX = re.compile(rf"[0-9a-f]{{{MIN_PREFIX},32}}")


def check_id_or_prefix(value: Any, name: str = "id") -> str:
    """A message id or a prefix of one (8-32 lower-case hex digits), as given: the mailbox
    resolves a prefix inside the caller's own mailbox (server/mailbox.py). Raises
    WrongType (not a string) or InvalidValue (anything else), naming `name`."""
    if isinstance(value, str) and _ID_OR_PREFIX.fullmatch(value):
        return value
    if not isinstance(value, str):
        raise WrongType(f"{name} must be a string", field=name)
    raise InvalidValue(
        f"{name} must be a message id or a prefix of at least {MIN_PREFIX} of its"
        " lower-case hex digits",
        field=name,
    )


def id_list(obj: Mapping[str, Any]) -> list[str]:
    """`ids: [..]`, or a single `id` (the prototype's form)."""
    if "ids" not in obj:
        if "id" in obj:
            return [message_id(obj)]
        raise MissingField("ids (or id) is required", field="ids")
    ids = obj["ids"]
    if not isinstance(ids, list):
        raise WrongType("ids must be a list of message ids", field="ids")
    if len(ids) > MAX_IDS:
        raise TooLarge(f"at most {MAX_IDS} ids at once", field="ids")
    return list(dict.fromkeys(check_id(i, f"ids[{n}]") for n, i in enumerate(ids)))


def tag_list(obj: Mapping[str, Any], name: str) -> list[str]:
    """An optional list of tags: lower-case, 1-64 characters, no surrounding spaces."""
    tags = obj.get(name, [])
    if not isinstance(tags, list):
        raise WrongType(f"{name} must be a list of tags", field=name)
    if len(tags) > MAX_TAGS:
        raise TooLarge(f"at most {MAX_TAGS} tags at once", field=name)
    for n, tag in enumerate(tags):
        check_tag(tag, f"{name}[{n}]")
    return list(dict.fromkeys(tags))


def check_tag(value: Any, name: str = "tag") -> str:
    """One tag: 1-64 lower-case characters, no surrounding spaces, nothing `check_text`
    refuses."""
    tag = check_text(value, name, max_len=MAX_TAG_CHARS)
    if not tag or tag != tag.lower() or tag != tag.strip() or CONTROL_RE.search(tag):
        raise InvalidValue(
            f"{name} must be 1-{MAX_TAG_CHARS} lower-case characters, no control characters",
            field=name,
        )
    return tag


def check_inbox(value: Any, name: str = "inbox") -> str:
    inbox = check_text(value, name, max_len=MAX_QUERY_CHARS)  # 65-1024: invalid_value, as before
    if not INBOX_RE.match(inbox) or inbox != inbox.strip():
        raise InvalidValue(f"{name} must be 1-64 printable characters without '/'", field=name)
    return inbox


def inbox(obj: Mapping[str, Any], name: str = "inbox") -> str:
    return check_inbox(field(obj, name), name)


SUBMISSION_FIELDS = frozenset({"message", "domains"})


def submission(
    value: Any, *, refused: Callable[[str], bool] | None = None
) -> tuple[Any, dict[str, str]]:
    """A `/send` body: a bare envelope, or `{"message": envelope, "domains": {fx1: domain}}`
    where `domains` says which recipients live at another domain (the SMTP envelope's
    role). Returns (message, domains); the message itself is checked by the pipeline.

    `refused(domain)` (the outbound policy's `PeerPolicy.literal_refused`) turns away, at
    once and naming `domains.<addr>`, a domain that is an IP literal no connection would
    be allowed to (`127.0.0.1:5432`, `169.254.169.254`), rather than queueing mail that
    can only bounce. Names are judged when the delivery worker resolves them."""
    if not isinstance(value, dict) or "message" not in value or "id" in value:
        return value, {}
    only(value, SUBMISSION_FIELDS)
    domains = value.get("domains", {})
    if not isinstance(domains, dict):
        raise WrongType("domains must map recipient addresses to domains", field="domains")
    if len(domains) > MAX_RECIPIENTS:
        raise TooLarge(f"domains names more than {MAX_RECIPIENTS} recipients", field="domains")
    for rcpt, domain in domains.items():
        check_address(rcpt, "domains")
        where = f"domains.{rcpt}"
        if not isinstance(domain, str):
            raise WrongType(f"{where} must be a domain name", field=where)
        if not is_server_name(domain):
            raise InvalidValue(f"{where} must be a lower-case host or host:port", field=where)
        if refused is not None and refused(domain):
            raise InvalidValue(
                f"{where} is a private, loopback or reserved address this server does not "
                "deliver to",
                field=where,
            )
    return value["message"], domains


# -- query strings ---------------------------------------------------------------------------


def query_int(
    request: web.Request, name: str, default: int, *, low: int = 0, high: int = 2**53 - 1
) -> int:
    text = query_str(request, name)
    if text is None or text == "":
        return default
    if not re.fullmatch(r"-?[0-9]{1,16}", text):
        raise WrongType(f"{name} must be an integer", field=name)
    value = int(text)
    if not low <= value <= high:
        raise InvalidValue(f"{name} must be between {low} and {high}", field=name)
    return value


def query_str(request: web.Request, name: str, *, required: bool = False) -> str | None:
    """A query parameter, checked by `check_text` (None when absent and not required).
    A parameter given twice is refused: which one a layer reads is not something a
    request should get to choose."""
    values = request.query.getall(name, [])
    if not values:
        if required:
            raise MissingField(f"{name} is required", field=name)
        return None
    if len(values) > 1:
        raise InvalidValue(f"{name} is given more than once", field=name)
    return check_text(values[0], name, max_len=MAX_QUERY_CHARS)


def path_str(request: web.Request, name: str, *, max_len: int = MAX_NAME_CHARS) -> str:
    """A path parameter (`/resolve/{name}`), checked by `check_text`."""
    return check_text(request.match_info[name], name, max_len=max_len)
