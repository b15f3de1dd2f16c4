"""Mesh relays: groups of servers that carry bare `fx1…` mail for each other.

A bare address names no domain, so a server that does not host it hands it to its mesh.
`mesh.config.json` (the prototype's format) lists each mesh a server belongs to:

    {"meshes": {"<name>": {"token": "<shared secret>", "mode": "broadcast|chain|hybrid",
                           "peers": ["host:port", ...]}}}

Modes (which peers a server hands a message to; `relay_targets`):

* broadcast: the server that took the submission sends it to every peer at once; a peer
  delivers what it hosts and passes nothing on (one hop, fastest, most copies);
* chain: the message walks the ring of `peers` in order: each server that does not host
  every recipient passes the rest to the next peer after itself (one copy at a time);
* hybrid: the first server broadcasts; a peer that does not host a recipient passes it
  on along the ring, so members the first server does not list are still reached.

A mesh marked `"kind": "prototype"` speaks the prototype's relay (compat/): its members
pass nothing on, so the first server hands the message to every member in every mode.

Each member receives a message at most once per mesh (relays grow as N - 1, not
(N - 1)²). Broadcast and chain give that by construction. In hybrid, passing on along the
ring from every broadcast receiver would hand each member the message again from its
ring predecessor; so the first server's relay transaction says which peers it lists
(`mesh_peers`, in the signed body), and only a peer it handed the message to directly
passes it on: to the members after itself on its own ring up to the next one the first
server lists (that one got the broadcast and covers the stretch after it). Members that
agree on the ring split it into disjoint stretches; a member the first server does not
list is reached by the broadcast receiver before it. A peer the message was passed on to
passes nothing on.

Loops are impossible: a server never hands a message to a server whose sealed hop is
already in its chain (nor to itself), and every hop adds one, so each server sees a
message at most once per path; receivers also dedupe by (id, recipient).

Authentication. Mesh relays are ordinary signed server requests (signing.py) plus one
header proving membership without sending the token:

    Flux-Mesh: <mesh name>;mac=<base64 HMAC-SHA256(token, "flux-mesh:1:" + Signature)>

The MAC covers the request's own signature, which covers method, receiver, path, body
digest and time, so a captured header is useless for any other request. This module is
pure (no I/O).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..protocol.chain import is_server_name
from ..protocol.errors import BadRequestSignature

HEADER = "Flux-Mesh"
MAX_MESH_PEERS = 256  #: the most peers a relay transaction's `mesh_peers` may list
MAC_CONTEXT = b"flux-mesh:1:"
_HEADER_RE = re.compile(r"^([A-Za-z0-9._-]{1,64});mac=([A-Za-z0-9+/]{43}=)\Z")


class MeshKind(enum.StrEnum):
    """Which protocol a mesh's members speak (`"kind"` in its entry; FLUX by default)."""

    FLUX = "flux"  #: signed transactions and the Flux-Mesh MAC (the token never sent)
    #: the prototype's relay (compat/mesh.py): one bare envelope per POST, with the token's
    #: SHA-256 in a header; nothing signed, so the token travels in clear (OPERATING.md)
    PROTOTYPE = "prototype"


class MeshMode(enum.StrEnum):
    BROADCAST = "broadcast"
    CHAIN = "chain"
    HYBRID = "hybrid"


@dataclass(frozen=True, slots=True)
class Mesh:
    name: str
    token: str
    mode: MeshMode
    peers: tuple[str, ...]  #: ring order, the same on every member
    kind: MeshKind = MeshKind.FLUX
    #: peers written as URLs (the prototype's form): server name -> base URL, whose scheme
    #: says how a prototype-kind member is reached (FLUX members: insecure_peers decides)
    urls: tuple[tuple[str, str], ...] = ()

    def url(self, peer: str) -> str | None:
        """The base URL the config gave for `peer`, or None (it gave a server name)."""
        return dict(self.urls).get(peer)


class MeshConfigError(ValueError):
    pass


def parse_meshes(data: Any, where: str = "mesh config") -> dict[str, Mesh]:
    """Read the `{"meshes": {...}}` document; raise MeshConfigError naming the problem."""
    meshes = data.get("meshes") if isinstance(data, dict) else None
    if not isinstance(meshes, dict):
        raise MeshConfigError(f'{where}: expected {{"meshes": {{name: {{...}}}}}}')
    out: dict[str, Mesh] = {}
    for name, entry in meshes.items():
        at = f"{where}: mesh {name!r}"
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", name) or not isinstance(entry, dict):
            raise MeshConfigError(f"{at}: a name of 1-64 letters, digits, '.', '_', '-'")
        token, mode, peers = entry.get("token"), entry.get("mode", "broadcast"), entry.get("peers")
        kind = entry.get("kind", "flux")
        if not isinstance(token, str) or len(token) < 16:
            raise MeshConfigError(f"{at}: token must be a string of at least 16 characters")
        if mode not in set(MeshMode):
            raise MeshConfigError(f"{at}: mode must be broadcast, chain or hybrid")
        if kind not in set(MeshKind):
            raise MeshConfigError(f"{at}: kind must be flux or prototype")
        if not isinstance(peers, list):
            raise MeshConfigError(f"{at}: peers must be a list of host[:port] names or URLs")
        names: list[str] = []
        urls: dict[str, str] = {}
        for peer in peers:
            server, url = _peer_name(peer, at)
            names.append(server)
            if url is not None:
                urls[server] = url
        out[name] = Mesh(
            name, token, MeshMode(mode), tuple(dict.fromkeys(names)), MeshKind(kind),
            tuple(urls.items()),
        )  # fmt: skip
    return out


#: a peer as the prototype writes it: `http(s)://host[:port]` with an optional final "/"
_PEER_URL_RE = re.compile(r"^(https?)://([^/?#@\s]+)/?\Z", re.IGNORECASE)


def _peer_name(peer: Any, at: str) -> tuple[str, str | None]:
    """(server name, base URL or None) for one `peers` entry: a `host[:port]` name, or a
    URL of the prototype's form, whose host is lower-cased into the name (DNS names are
    case-insensitive); its scheme is kept. Raise MeshConfigError naming the entry."""
    if is_server_name(peer):
        return peer, None
    match = _PEER_URL_RE.match(peer) if isinstance(peer, str) else None
    if match is None or not is_server_name(match.group(2).lower()):
        shown = repr(peer)[:80]
        raise MeshConfigError(f"{at}: peer {shown} is not a host[:port] name or http(s) URL")
    server = match.group(2).lower()
    return server, f"{match.group(1).lower()}://{server}"


def load_meshes(path: Path | None) -> dict[str, Mesh]:
    """The meshes of `path` (none when there is no file)."""
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MeshConfigError(f"{path}: {exc}") from exc
    return parse_meshes(data, str(path))


def relay_targets(
    mesh: Mesh,
    own: str,
    seen: Sequence[str],
    *,
    first: bool,
    sender_lists: Iterable[str] | None = None,
) -> list[str]:
    """The peers to hand a message to. `first`: this server took the submission (it did
    not receive the message through the mesh). `seen`: servers already in its chain.
    `sender_lists`: the peers the server that handed it here lists for this mesh (its
    relay transaction's `mesh_peers`), None if it did not say."""
    skip = {own, *seen}
    if mesh.kind is MeshKind.PROTOTYPE:
        # A prototype receiver passes nothing on (and takes anything, so its own chain walk
        # stops at the first member it reaches): the server that took the message hands it
        # to every member itself, in ring order, whatever the mode (PROTOCOL.md §13).
        return [p for p in mesh.peers if p not in skip] if first else []
    if first:
        if mesh.mode is MeshMode.CHAIN:
            return _ring_after(mesh, own, skip)[:1]
        return [p for p in mesh.peers if p not in skip]
    if mesh.mode is MeshMode.BROADCAST:
        return []
    if mesh.mode is MeshMode.CHAIN:
        return _ring_after(mesh, own, skip)[:1]
    # hybrid: only a direct receiver of the first server's broadcast passes it on, up to
    # the next member the first server reached itself (see the module docstring)
    if sender_lists is None or len(set(seen)) != 1:
        return []
    return _ring_after(mesh, own, skip, stop=set(sender_lists))


def _ring_after(mesh: Mesh, own: str, skip: set[str], stop: Iterable[str] = ()) -> list[str]:
    """The ring's members after `own` (wrapping), leaving out `skip`, until one in `stop`."""
    ring, stop = list(mesh.peers), set(stop)
    start = ring.index(own) + 1 if own in ring else 0
    out = []
    for peer in ring[start:] + ring[:start]:
        if peer in stop:
            break
        if peer not in skip:
            out.append(peer)
    return out


def mesh_mac(token: str, signature_header: str) -> str:
    mac = hmac.new(token.encode(), MAC_CONTEXT + signature_header.encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def mesh_header(mesh: Mesh, signature_header: str) -> dict[str, str]:
    return {HEADER: f"{mesh.name};mac={mesh_mac(mesh.token, signature_header)}"}


def check_mesh_header(headers: Mapping[str, str], meshes: Mapping[str, Mesh], peer: str) -> Mesh:
    """The mesh a signed request from `peer` relays through; raise BadRequestSignature
    unless the header names a mesh this server is in, `peer` is in it, and the MAC holds."""
    getall = getattr(headers, "getall", None)  # a second line would be a second member
    if getall is not None and len(getall(HEADER, ())) > 1:
        raise BadRequestSignature(f"{HEADER} is sent more than once", field=HEADER)
    match = _HEADER_RE.match(headers.get(HEADER, ""))
    if match is None:
        raise BadRequestSignature(f"{HEADER} is missing or malformed", field=HEADER)
    mesh = meshes.get(match.group(1))
    if mesh is None or peer not in mesh.peers:
        raise BadRequestSignature(f"{peer} is not a peer of this mesh", field=HEADER)
    expected = mesh_mac(mesh.token, headers.get("Signature", ""))
    if not hmac.compare_digest(expected, match.group(2)):
        raise BadRequestSignature("the mesh MAC does not verify", field=HEADER)
    return mesh
