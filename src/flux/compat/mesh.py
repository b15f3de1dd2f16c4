"""A prototype peer's mesh relay, taken at FLUX's `/mesh/relay` (issue 11, item 7).

The prototype relays a bare envelope with `X-Flux-Mesh-Token: hex(SHA-256("flux-mesh:" +
token))` and nothing signed. FLUX takes it only for a mesh the operator marked
`"kind": "prototype"` (federation/mesh.py), and then as what it is: an unauthenticated
submission of a signed envelope.

* It goes through `Submitter.submit`, the pipeline of `POST /send`: the sender's signature,
  freshness, the chain as far as it can be checked offline, quarantine, dedupe, spam, the
  client address's budget. A failed chain is refused there and proves nothing against
  anyone: no strike, no tamper report (those come only from a signed peer's batch), so a
  prototype peer cannot frame a FLUX server by relaying a forgery of its records.
* A relay none of whose recipients this server hosts (hosted mode) is refused with 404
  `unknown_recipient` before anything is stored: a prototype receiver would keep it, but
  FLUX does not hold mail for strangers, and the refusal is what makes a prototype in
  chain mode try its next peer. A relay for some recipients hosted here is stored for
  them, and the others go on through this server's meshes exactly as they would after
  that `/send` (receivers dedupe by id and recipient; no server hands a message to one
  whose hop is already in its chain).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from ..federation.mesh import Mesh, MeshKind
from ..protocol.errors import BadRequestSignature, InvalidValue, TooLarge, WrongType
from ..protocol.limits import MAX_RECIPIENTS
from ..server import wire
from ..server.errors import UnknownRecipient
from ..server.submission import SubmitResult, Submitter
from .federation import PROTO_MESH_HEADER, mesh_token_header

__all__ = ["check_proto_relay", "is_proto_relay", "take_proto_relay"]


def is_proto_relay(headers: Mapping[str, str]) -> bool:
    """A `/mesh/relay` in the prototype's dialect: its token header, and no signature."""
    return PROTO_MESH_HEADER in headers and "Signature" not in headers


def check_proto_relay(headers: Mapping[str, str], meshes: Mapping[str, Mesh]) -> Mesh:
    """The prototype-kind mesh whose token the header carries; raise BadRequestSignature
    (401, naming the header) otherwise. A FLUX-kind mesh's token is never accepted this
    way: its members never send it, so a header carrying it proves only a leak."""
    given = headers.get(PROTO_MESH_HEADER, "").encode()
    found = None
    for mesh in meshes.values():  # every mesh compared, each in constant time
        expected = mesh_token_header(mesh.token)[PROTO_MESH_HEADER].encode()
        if mesh.kind is MeshKind.PROTOTYPE and hmac.compare_digest(given, expected):
            found = mesh
    if found is None:
        raise BadRequestSignature(
            "the mesh token is not that of a prototype-kind mesh here", field=PROTO_MESH_HEADER
        )
    return found


async def take_proto_relay(submitter: Submitter, raw: bytes, *, client: str | None) -> SubmitResult:
    """Store a prototype peer's relayed envelope for this server's recipients.

    Raises WrongType/InvalidValue (not a bare envelope), TooLarge (more recipients than an
    envelope may name: refused before the store is asked about each), UnknownRecipient
    (404: a recipient this server does not host, in hosted mode) and whatever
    `Submitter.submit` raises.
    """
    value = wire.parse_json(raw)
    if not isinstance(value, dict):
        raise WrongType("a relay is one JSON envelope", field="body")
    if "message" in value or "domains" in value:
        raise InvalidValue("a prototype relay is a bare envelope", field="message")
    if not submitter.open_mode:
        names = _recipients(value)
        if len(names) > MAX_RECIPIENTS:  # refused as the envelope's parser would, unasked
            raise TooLarge(f"more than {MAX_RECIPIENTS} recipients", field="cc")
        hosted = [r for r in names if await submitter.store.hosted(r)]
        if not hosted:
            raise UnknownRecipient("no recipient of this relay is hosted here", field="to")
    return await submitter.submit(value, client=client)


def _recipients(envelope: Mapping[str, Any]) -> list[str]:
    """Every address the envelope names, each once (unverified: `submit` refuses a
    malformed one). Linear in the body's size: a relay may name thousands."""
    found: dict[str, None] = {}
    for name in ("to", "cc", "bcc"):
        value = envelope.get(name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                found[item] = None
    return list(found)
