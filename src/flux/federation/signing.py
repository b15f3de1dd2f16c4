"""Signed server-to-server requests, in the form of HTTP Message Signatures (RFC 9421).

Every request one FLUX server makes to another carries

    Content-Digest:  sha-256=:<base64 SHA-256 of the body>:                (RFC 9530)
    Signature-Input: flux=("@method" "@authority" "@path" "content-digest");created=<unix s>;keyid="<server>";alg="ed25519"
    Signature:       flux=:<base64 Ed25519 signature over the signature base>:

The signature base is RFC 9421 §2.5's: one line per covered component, `"name": value`,
then `"@signature-params": <the inner list and parameters>`, joined by LF with no trailing
newline. Covering the method, the receiver's authority, the path and the body's digest
binds the request to exactly what was sent *and to whom* (a request signed for one server
cannot be replayed to another); `created` bounds replay in time.

`keyid` is the sending server's *name*: the receiver checks the signature under the keys
that name publishes at its own domain (`/federation/info`), so no one can sign as a server
it does not hold the key of. This module is pure (no I/O, no clock): the caller passes the
time and a key lookup. Only this one fixed component set is accepted, which keeps the
parser small and the meaning unambiguous; anything else is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..protocol.chain import KeyLookup, ServerSigner, is_server_name
from ..protocol.errors import BadRequestSignature, FluxError
from ..protocol.identity import verify_signature

LABEL = "flux"
COMPONENTS = ("@method", "@authority", "@path", "content-digest")
MAX_SKEW_S = 300
_INNER = "(" + " ".join(f'"{c}"' for c in COMPONENTS) + ")"
#: `created`: 1-12 digits without a leading zero, RFC 8941's canonical integer (the
#: parameters are signed as written, so only one spelling of a time is taken)
_INPUT_RE = re.compile(
    rf'^{LABEL}={re.escape(_INNER)};created=(0|[1-9]\d{{0,11}});keyid="([^"\\]{{1,260}})";alg="ed25519"\Z'
)
_SIG_RE = re.compile(rf"^{LABEL}=:([A-Za-z0-9+/]+={{0,2}}):\Z")
_DIGEST_RE = re.compile(r"^sha-256=:([A-Za-z0-9+/]+={0,2}):\Z")


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What a verified request established."""

    server: str  #: the sending server (its keyid), whose published key signed
    created: int  #: unix seconds


def content_digest(body: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"


def signature_params(created: int, keyid: str) -> str:
    return f'{_INNER};created={created};keyid="{keyid}";alg="ed25519"'


def signature_base(method: str, authority: str, path: str, digest: str, params: str) -> bytes:
    """RFC 9421 §2.5 signature base for FLUX's fixed component set."""
    lines = [
        f'"@method": {method.upper()}',
        f'"@authority": {authority.lower()}',
        f'"@path": {path}',
        f'"content-digest": {digest}',
        f'"@signature-params": {params}',
    ]
    return "\n".join(lines).encode("ascii")


def sign_request(
    signer: ServerSigner, method: str, authority: str, path: str, body: bytes, *, now_s: int
) -> dict[str, str]:
    """The three headers that sign this request as `signer` for the server `authority`."""
    digest = content_digest(body)
    params = signature_params(now_s, signer.name)
    base = signature_base(method, authority, path, digest, params)
    signature = base64.b64encode(signer.identity.sign_bytes(base)).decode()
    return {
        "Content-Digest": digest,
        "Signature-Input": f"{LABEL}={params}",
        "Signature": f"{LABEL}=:{signature}:",
    }


@dataclass(frozen=True, slots=True)
class CheckedRequest:
    """A request that passed every check that needs no key (`check_request`): who it
    claims signed it, when, and the parts the signature check needs."""

    server: str  #: the claimed signer (keyid), not yet proven
    created: int
    params: str
    digest: str
    signature: bytes


def check_request(
    headers: Mapping[str, str],
    body: bytes,
    *,
    now_s: int,
    authority: str,
    host: str | None = None,
    max_skew_s: int = MAX_SKEW_S,
) -> CheckedRequest:
    """Everything about a received request that can be checked without the signer's keys:
    the body's digest, the signature parameters, `created` within ±`max_skew_s`, and, when
    `host` (the request's Host header) is given, that the request was aimed at this
    server's `authority`. The receiver runs this *before* fetching any key, so a request
    that could never verify never makes it reach out (issue 9). Raises BadRequestSignature.
    """
    digest = _header(headers, "Content-Digest")
    match = _DIGEST_RE.match(digest)
    if not match or _b64(match.group(1), "Content-Digest") != hashlib.sha256(body).digest():
        raise BadRequestSignature("Content-Digest does not match the body", field="Content-Digest")
    sig_input = _header(headers, "Signature-Input")
    match = _INPUT_RE.match(sig_input)
    if not match:
        raise BadRequestSignature(
            "Signature-Input must cover exactly " + _INNER, field="Signature-Input"
        )
    created, server = int(match.group(1)), match.group(2)
    if not is_server_name(server):  # `local` too: it names no server (§2.4)
        raise BadRequestSignature("keyid is not a server name", field="Signature-Input")
    if abs(now_s - created) > max_skew_s:
        raise BadRequestSignature("created is too far from now", field="Signature-Input")
    if host is not None and not authority_matches(host, authority):
        raise BadRequestSignature(f"the request is for {host[:100]!r}, not this server",
                                  field="@authority")  # fmt: skip
    sig_match = _SIG_RE.match(_header(headers, "Signature"))
    if not sig_match:
        raise BadRequestSignature("Signature is not flux=:<base64>:", field="Signature")
    signature = _b64(sig_match.group(1), "Signature")
    return CheckedRequest(server, created, sig_input[len(LABEL) + 1 :], digest, signature)


def authority_matches(host: str, authority: str) -> bool:
    """Is the Host header `host` this server's name (a default port may be left out)?"""
    host, authority = host.strip().lower(), authority.lower()
    return (
        host == authority
        or host in (f"{authority}:443", f"{authority}:80")
        or (authority.endswith((":443", ":80")) and host == authority.rsplit(":", 1)[0])
    )


def verify_checked(
    method: str, path: str, checked: CheckedRequest, *, keys: KeyLookup, authority: str
) -> SignedRequest:
    """The signature of a `check_request`-ed request under the keys its server publishes.
    Raises BadRequestSignature."""
    base = signature_base(method, authority, path, checked.digest, checked.params)
    created, server = checked.created, checked.server
    # Any key the server publishes for that moment will do (rotation overlaps keys).
    for key in keys(server):
        # `created` has whole seconds: the key counts if valid at any moment of that second
        # (a key made 300 ms into the second signs requests "created" at its start), i.e.
        # when its validity and [created·1000, created·1000 + 999] overlap (§10.6 check 8),
        # also when the key is valid only inside the second, at neither of its ends.
        first, last = created * 1000, created * 1000 + 999
        if key.valid_from > last or (key.valid_until is not None and key.valid_until < first):
            continue
        try:
            verify_signature(key.pub, base, checked.signature)
        except FluxError:
            continue
        return SignedRequest(server, created)
    raise BadRequestSignature(
        f"the signature does not verify under a key {server} publishes", field="Signature"
    )


def verify_request(
    method: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    keys: KeyLookup,
    now_s: int,
    authority: str,
    max_skew_s: int = MAX_SKEW_S,
) -> SignedRequest:
    """Check a received request signed for this server (`authority`, its own name):
    `check_request` then `verify_checked`.

    `headers` must be looked up case-insensitively (aiohttp's request.headers is).
    Returns who signed it; raises BadRequestSignature naming the header at fault.
    """
    checked = check_request(headers, body, now_s=now_s, authority=authority, max_skew_s=max_skew_s)
    return verify_checked(method, path, checked, keys=keys, authority=authority)


def claimed_server(headers: Mapping[str, str]) -> str | None:
    """The server a request says signed it (unverified), so its keys can be fetched first."""
    match = _INPUT_RE.match((headers.get("Signature-Input") or "").strip())
    server = match.group(2) if match else None
    return server if is_server_name(server) else None


def _header(headers: Mapping[str, str], name: str) -> str:
    """The one value of header `name`. Two field lines of one name are one field, their
    values joined by a comma (RFC 9110 §5.3): a second line is a second member, which this
    profile refuses (PROTOCOL.md §10.6, difference 3) rather than reading the first line
    and letting the other pass unjudged. Raises BadRequestSignature naming the header."""
    getall = getattr(headers, "getall", None)  # a multidict (aiohttp's) keeps every line
    if getall is not None and len(getall(name, ())) > 1:
        raise BadRequestSignature(f"{name} is sent more than once", field=name)
    value = headers.get(name)
    if not isinstance(value, str) or not value:
        raise BadRequestSignature(f"{name} header is missing", field=name)
    return value.strip()


def _b64(text: str, name: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequestSignature(f"{name} is not base64", field=name) from exc
