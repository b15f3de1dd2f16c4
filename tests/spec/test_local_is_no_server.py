"""`local` is never a server name (PROTOCOL.md §2.4) wherever FLUX reads one from outside:
no key is fetched for it, no mesh lists it; and a Flux-Mesh header sent on two lines is
refused like the signature headers (§10.6, §10.8). The request-level cases (keyid, reports,
`/web/keys`) are in test_review14.py."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from flux.federation.keys import KeyCache, KeyFetcher
from flux.federation.mesh import (
    HEADER,
    Mesh,
    MeshConfigError,
    MeshMode,
    check_mesh_header,
    mesh_mac,
    parse_meshes,
)
from flux.protocol.errors import BadRequestSignature, InvalidValue

TOKEN = "a-mesh-token-of-16+chars"


def test_no_key_is_fetched_for_local() -> None:
    fetcher = KeyFetcher(None, KeyCache(), lambda: 0)  # type: ignore[arg-type]
    with pytest.raises(InvalidValue) as info:
        fetcher.info_url("local")
    assert info.value.field == "server"
    assert fetcher.info_url("localhost:8080") == "https://localhost:8080/federation/info"


@pytest.mark.parametrize("peer", ["local", "http://local", "https://LOCAL"])
def test_no_mesh_lists_local(peer: str) -> None:
    doc = {"meshes": {"m": {"token": TOKEN, "mode": "broadcast", "peers": ["a.example", peer]}}}
    with pytest.raises(MeshConfigError, match="not a host"):
        parse_meshes(doc)


def test_a_mesh_header_on_two_lines_is_refused() -> None:
    mesh = Mesh("m", TOKEN, MeshMode.BROADCAST, ("a.example", "b.example"))
    header = f"m;mac={mesh_mac(TOKEN, 'sig')}"
    one = CIMultiDict({"Signature": "sig", HEADER: header})
    assert check_mesh_header(one, {"m": mesh}, "a.example") is mesh
    two = CIMultiDict([("Signature", "sig"), (HEADER, header), (HEADER, header)])
    with pytest.raises(BadRequestSignature) as info:
        check_mesh_header(two, {"m": mesh}, "a.example")
    assert info.value.field == HEADER
