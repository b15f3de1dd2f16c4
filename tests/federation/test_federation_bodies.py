"""Inbound federation bodies of the wrong shape (PROTOCOL.md §10.7-§10.9): every body or
member that is not what the text says gets a 4xx naming the field (or, for one message of
a batch, a refused result), never a 500. Real requests to a real server (B), signed with
another real server's key (A) and, for mesh relays, with the mesh's MAC.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from federation.fed_helpers import local_servers, signer
from flux.compat.federation import mesh_token_header
from flux.federation.mesh import Mesh, load_meshes, mesh_header
from flux.federation.signing import sign_request
from flux.server.app import PARTS
from flux.server.runner import RunningServer

TOKEN = "t" * 32
PROTO_TOKEN = "p" * 32


@pytest.fixture
async def ab(tmp_path: Path) -> AsyncIterator[dict[str, RunningServer]]:
    """A and B, both in mesh `m` (FLUX kind); B also in a prototype-kind mesh `old`."""

    def per_server(label: str, names: dict[str, str]) -> dict[str, Any]:
        meshes: dict[str, Any] = {"m": {"token": TOKEN, "mode": "broadcast", "peers": sorted(names.values())}}  # fmt: skip
        if label == "b":
            meshes["old"] = {"token": PROTO_TOKEN, "kind": "prototype", "peers": [names["a"]]}
        path = tmp_path / f"{label}.mesh.json"
        path.write_text(json.dumps({"meshes": meshes}))
        return {"mesh_config": path}

    async with local_servers(tmp_path, "ab", per_server=per_server) as s:
        yield s


async def _post(
    a: RunningServer, b: RunningServer, path: str, body: bytes, *, mesh: bool = False
) -> tuple[int, Any]:
    """`body` POSTed to B's `path`, signed by A (and with A's Flux-Mesh proof for mesh `m`)."""
    headers = sign_request(signer(a), "POST", signer(b).name, path, body, now_s=int(time.time()))
    if mesh:
        headers.update(mesh_header(_mesh_m(a), headers["Signature"]))
    async with (
        aiohttp.ClientSession() as http,
        http.post(b.url + path, data=body, headers=headers) as response,
    ):
        return response.status, json.loads(await response.text())


def _mesh_m(a: RunningServer) -> Mesh:
    """Mesh `m` as A's configuration names it."""
    return load_meshes(a.app[PARTS]["config"].mesh_path)["m"]


def _txn(a: RunningServer, **members: Any) -> bytes:
    doc = {"txn": uuid.uuid4().hex, "from_server": signer(a).name, "messages": [{}], **members}
    return json.dumps(doc).encode()


NOT_OBJECTS = [b"[]", b'"x"', b"5", b"null", b"true", b"[{}]"]
PATHS = {"/federation/deliver": False, "/mesh/relay": True}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("body", NOT_OBJECTS, ids=[b.decode() for b in NOT_OBJECTS])
async def test_a_transaction_that_is_not_an_object_is_400_body(
    ab: dict[str, RunningServer], path: str, body: bytes
) -> None:
    status, answer = await _post(ab["a"], ab["b"], path, body, mesh=PATHS[path])
    assert (status, answer["code"], answer.get("field")) == (400, "wrong_type", "body"), answer


MEMBERS = {
    "txn a number": ({"txn": 5}, "txn"),
    "txn empty": ({"txn": ""}, "txn"),
    "txn an object": ({"txn": {}}, "txn"),
    "from_server a list": ({"from_server": [1]}, "from_server"),
    "messages an object": ({"messages": {}}, "messages"),
    "messages a string": ({"messages": "x"}, "messages"),
    "messages empty": ({"messages": []}, "messages"),
    "messages too many": ({"messages": [{}] * 101}, "messages"),
    "mesh_peers a string": ({"mesh_peers": "x"}, "mesh_peers"),
    "mesh_peers an object": ({"mesh_peers": {"a": 1}}, "mesh_peers"),
    "mesh_peers of numbers": ({"mesh_peers": [5]}, "mesh_peers"),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("members", "field"), MEMBERS.values(), ids=MEMBERS.keys())
async def test_a_member_of_the_wrong_shape_is_400_naming_it(
    ab: dict[str, RunningServer], path: str, members: dict[str, Any], field: str
) -> None:
    a, b = ab["a"], ab["b"]
    status, answer = await _post(a, b, path, _txn(a, **members), mesh=PATHS[path])
    assert (status, answer["code"], answer.get("field")) == (400, "invalid_value", field), answer


#: messages of a batch that are not envelopes, or whose members are of the wrong type
ODD_MESSAGES: list[Any] = [
    [], "x", 5, None, True, {}, {"id": 7}, {"id": ["x"]}, {"id": "i" * 32, "to": {}},
    {"id": "i" * 32, "integrity_chain": "x"}, {"integrity_chain": [5, None, "x", []]},
    {"integrity_chain": [{"server": 5, "next": [], "i": "0"}]}, {"route": {"a": 1}},
    {"route": [5, {}]}, {"from": 5, "to": [], "cc": "x", "bcc": {}}, {"tags": {}},
    {"enc_recipients": [], "encrypted": "yes"}, {"v": 1, "t": "now", "expires": []},
]  # fmt: skip


@pytest.mark.parametrize("path", PATHS)
async def test_messages_of_the_wrong_shape_are_each_refused(
    ab: dict[str, RunningServer], path: str
) -> None:
    """A batch of odd messages: 200, one refused result per message, in order, each with
    the id when it is a string and null otherwise (PROTOCOL.md §10.7)."""
    a, b = ab["a"], ab["b"]
    status, answer = await _post(a, b, path, _txn(a, messages=ODD_MESSAGES), mesh=PATHS[path])
    assert status == 200, answer
    results = answer["results"]
    assert len(results) == len(ODD_MESSAGES)
    for msg, result in zip(ODD_MESSAGES, results, strict=True):
        assert isinstance(result.get("refused"), str) and "recipients" not in result, result
        want = msg.get("id") if isinstance(msg, dict) and isinstance(msg.get("id"), str) else None
        assert result["id"] == want, (msg, result)


async def test_a_prototype_relay_that_is_not_an_object_is_400_body(
    ab: dict[str, RunningServer],
) -> None:
    """The prototype's dialect of /mesh/relay (its token header, no signature) too."""
    headers = mesh_token_header(PROTO_TOKEN)
    async with aiohttp.ClientSession() as http:
        for body in NOT_OBJECTS:
            async with http.post(ab["b"].url + "/mesh/relay", data=body, headers=headers) as r:
                answer = json.loads(await r.text())
            assert (r.status, answer["code"], answer.get("field")) == (400, "wrong_type", "body")


def _report(a: RunningServer, b: RunningServer, **members: Any) -> dict[str, Any]:
    return {
        "reporter": signer(a).name, "offender": "x.example", "t": int(time.time() * 1000),
        "msg_id": "i" * 32, "sig": "AAAA", "pub": "AAAA", "envelope": {}, **members,
    }  # fmt: skip


REPORTS: dict[str, dict[str, Any]] = {
    "reporter a number": {"reporter": 5},
    "offender a list": {"offender": ["x"]},
    "t a string": {"t": "now"},
    "t a float": {"t": 1.5},  # not FLUX JSON at all (§3.1): malformed_json
    "msg_id an object": {"msg_id": {}},
    "envelope a list": {"envelope": []},
    "envelope's chain a string": {"envelope": {"integrity_chain": "x"}},
    "envelope's chain of numbers": {"envelope": {"integrity_chain": [5, None]}},
    "envelope's record with odd members": {
        "envelope": {"integrity_chain": [{"server": 5, "next": {}, "i": "0", "seal": []}]}
    },
    "envelope's route an object": {"envelope": {"route": {}, "integrity_chain": [{}]}},
}


@pytest.mark.parametrize("members", REPORTS.values(), ids=REPORTS.keys())
async def test_a_tamper_report_of_the_wrong_shape_is_400(
    ab: dict[str, RunningServer], members: dict[str, Any]
) -> None:
    a, b = ab["a"], ab["b"]
    async with (
        aiohttp.ClientSession() as http,
        http.post(b.url + "/integrity/tamper_report", json=_report(a, b, **members)) as r,
    ):
        answer = json.loads(await r.text())
    # a field named, or (a float) a body that is not FLUX JSON at all (§3.1)
    assert r.status == 400 and (answer.get("field") or answer["code"] == "malformed_json"), answer


@pytest.mark.parametrize("body", NOT_OBJECTS, ids=[b.decode() for b in NOT_OBJECTS])
async def test_a_tamper_report_that_is_not_an_object_is_400_body(
    ab: dict[str, RunningServer], body: bytes
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(ab["b"].url + "/integrity/tamper_report", data=body) as r,
    ):
        answer = json.loads(await r.text())
    assert (r.status, answer["code"], answer.get("field")) == (400, "wrong_type", "body")
