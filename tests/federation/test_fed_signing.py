"""Signed server-to-server requests (docs/FEDERATION.md, RFC 9421 style)."""

from __future__ import annotations

import base64

import pytest
from multidict import CIMultiDict

from flux.federation.signing import sign_request, signature_base, verify_request
from flux.protocol import (
    BadRequestSignature,
    Identity,
    PublishedKey,
    ServerSigner,
    verify_signature,
)

A = ServerSigner("a.example", Identity(bytes(range(32))))
IMPOSTOR = Identity(bytes(range(1, 33)))
NOW = 1_767_225_600
BODY = b'{"txn":"1","messages":[]}'
PATH = "/federation/deliver"


def keys(name: str) -> list[PublishedKey]:
    return [PublishedKey(A.identity.public_key)] if name == A.name else []


def signed(body: bytes = BODY, signer: ServerSigner = A, **kw: object) -> CIMultiDict[str]:
    args = {"method": "POST", "authority": "b.example", "path": PATH, "now_s": NOW, **kw}
    return CIMultiDict(
        sign_request(
            signer, args["method"], args["authority"], args["path"], body, now_s=args["now_s"]
        )
    )


def verify(headers: CIMultiDict[str], body: bytes = BODY, **kw: object):
    args = {"method": "POST", "path": PATH, "authority": "b.example", "now_s": NOW, **kw}
    return verify_request(
        args["method"], args["path"], headers, body, keys=keys, now_s=args["now_s"],
        authority=args["authority"],
    )  # fmt: skip


def test_a_signed_request_verifies_as_its_server() -> None:
    result = verify(signed())
    assert (result.server, result.created) == (A.name, NOW)


def test_signature_base_is_rfc9421_shaped() -> None:
    headers = signed()
    params = headers["Signature-Input"].removeprefix("flux=")
    base = signature_base("post", "B.example", PATH, headers["Content-Digest"], params)
    assert base.decode().splitlines() == [
        '"@method": POST',
        '"@authority": b.example',
        f'"@path": {PATH}',
        f'"content-digest": {headers["Content-Digest"]}',
        f'"@signature-params": {params}',
    ]
    assert params.startswith('("@method" "@authority" "@path" "content-digest");created=')
    sig = base64.b64decode(headers["Signature"].removeprefix("flux=:").removesuffix(":"))
    # the signature is Ed25519 over exactly that base
    assert verify_signature(A.identity.public_key, base, sig) is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"body": b'{"txn":"2","messages":[]}'}, "Content-Digest"),
        ({"path": "/federation/other"}, "Signature"),
        ({"method": "PUT"}, "Signature"),
        ({"authority": "c.example"}, "Signature"),  # signed for b, replayed to c
        ({"now_s": NOW + 301}, "Signature-Input"),
        ({"now_s": NOW - 301}, "Signature-Input"),
    ],
)
def test_any_change_or_replay_is_refused(change: dict, field: str) -> None:
    # never pop from `change`: the parametrize dict is shared by every run of this test
    change = dict(change)
    body = change.pop("body", BODY)
    with pytest.raises(BadRequestSignature) as caught:
        verify(signed(), body=body, **change)
    assert caught.value.field == field


def test_a_key_the_server_does_not_publish_is_refused() -> None:
    impostor = ServerSigner(A.name, IMPOSTOR)  # claims a.example's name with its own key
    with pytest.raises(BadRequestSignature) as caught:
        verify(signed(signer=impostor))
    assert "a.example publishes" in caught.value.message


def test_an_unknown_server_is_refused() -> None:
    with pytest.raises(BadRequestSignature):
        verify(signed(signer=ServerSigner("nobody.example", A.identity)))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Signature", None),
        ("Signature-Input", None),
        ("Content-Digest", None),
        ("Signature", "flux=:not base64!:"),
        ("Signature", "other=:AAAA:"),
        ("Signature-Input", 'flux=("@method");created=1;keyid="a.example";alg="ed25519"'),
        (
            "Signature-Input",
            'flux=("@method" "@authority" "@path" "content-digest");created=1;keyid="a b";alg="ed25519"',
        ),
        ("Content-Digest", "sha-512=:AAAA:"),
    ],
)
def test_malformed_headers_are_refused_naming_the_header(name: str, value: str | None) -> None:
    headers = signed()
    if value is None:
        del headers[name]
    else:
        headers[name] = value
    with pytest.raises(BadRequestSignature) as caught:
        verify(headers)
    assert caught.value.field == name
