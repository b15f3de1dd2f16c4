"""The OpenAPI document describes every route; schemathesis finds no 5xx against a live server.

The live server runs in its own thread and event loop (started with `start_server`, the way
`flux server` starts), because schemathesis makes blocking `requests` calls.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from flux.protocol import Identity
from flux.server import ServerConfig, start_server


class ThreadedServer:
    def __init__(self, config: ServerConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = self._run(start_server(config))
        self.url = self.server.url

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def stop(self) -> None:
        self._run(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    data: Path = tmp_path_factory.mktemp("live")
    # the fuzzer registers and submits far more than one client address may (fair.py)
    config = ServerConfig(domain="live.test", port=0, data_dir=data, backend="memory",
                          open_mode=True, register_per_ip_per_hour=100_000,
                          submit_per_ip_per_minute=100_000)  # fmt: skip
    server = ThreadedServer(config)
    yield server
    server.stop()


def test_every_route_is_described(live: ThreadedServer) -> None:
    spec = requests.get(live.url + "/openapi.json", timeout=10).json()
    app = live.server.app
    routes = {
        (r.method.lower(), r.resource.canonical)
        for r in app.router.routes()
        if r.method != "HEAD" and r.resource is not None
    }
    described = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    assert routes - described == {("get", "/ws")}  # WebSockets are in docs/API.md
    assert described <= routes
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert "400" in op["responses"] and "200" in op["responses"], (method, path)


def _login(url: str, who: Identity) -> str:
    """Register `who` and open a session over plain HTTP (the live server's clock is real)."""
    domain = requests.get(url + "/health", timeout=10).json()["domain"]
    t = int(time.time() * 1000)
    reg = {"address": who.address, "pub": who.pub_b64(), "t": t,
           "sig": who.sign(f"flux-register:1:{domain}:{who.address}:{t}")}  # fmt: skip
    assert requests.post(url + "/register", json=reg, timeout=10).status_code == 200
    challenge = requests.get(url + "/auth/challenge", params={"address": who.address}, timeout=10)
    c = challenge.json()["challenge"]
    body = {"address": who.address, "pub": who.pub_b64(), "challenge": c,
            "sig": who.sign(f"flux-auth:1:{domain}:{c}")}  # fmt: skip
    return requests.post(url + "/auth/session", json=body, timeout=10).json()["token"]


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]  # fmt: skip


def test_schemathesis_finds_no_server_errors(live: ThreadedServer) -> None:
    schema = schemathesis.openapi.from_url(live.url + "/openapi.json")
    who = Identity.generate()
    token = _login(live.url, who)
    authed = {"headers": {"Authorization": f"Bearer {token}"},
              "path_parameters": {"address": who.address}}  # fmt: skip
    strategy = (
        schema.as_strategy(GenerationMode.POSITIVE)
        | schema.as_strategy(GenerationMode.NEGATIVE)
        | schema.as_strategy(GenerationMode.POSITIVE, **authed)
        | schema.as_strategy(GenerationMode.NEGATIVE, **authed)
    )
    session = requests.Session()
    failures: list[str] = []

    @settings(max_examples=400, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(session=session, timeout=10)
        try:
            case.validate_response(response, checks=CHECKS)
        except BaseException as exc:  # schemathesis raises an exception group
            failures.append(f"{case.method} {case.formatted_path}: {exc}"[:500])
        if response.status_code >= 400:
            body = response.json()
            assert body["ok"] is False and isinstance(body.get("code"), str), body

    run()
    assert failures == []


IDENTITY_OPS = {  # every operation that names a message by id (PROTOCOL.md §4.5)
    ("get", "/message/{address}/{id}"), ("get", "/thread/{id}"), ("post", "/read"),
    ("post", "/delete"), ("post", "/tag"), ("post", "/move"), ("post", "/mail/read"),
    ("post", "/mail/delete"), ("post", "/mail/tag"), ("post", "/mail/move"),
    ("post", "/unread"), ("post", "/mail/unread"), ("get", "/mail/message/{id}"),
    ("get", "/mail/thread/{id}"),
}  # fmt: skip


def test_message_identity_is_described(live: ThreadedServer) -> None:
    """`from` on every call naming a message, `ids` items as an id or {id, from}, `refs` in
    read/delete answers, 409 `ambiguous` where an id may be shared, 409 `conflict` on send."""
    spec = requests.get(live.url + "/openapi.json", timeout=10).json()
    schemas = spec["components"]["schemas"]
    for method, path in sorted(IDENTITY_OPS):
        op = spec["paths"][path][method]
        conflict = op["responses"]["409"]
        assert conflict["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Ambiguous"}, path  # fmt: skip
        assert "ambiguous" in conflict["description"], path
        if method == "get":
            assert "from" in {p["name"] for p in op["parameters"] if p["in"] == "query"}, path
            continue
        body = op["requestBody"]["content"]["application/json"]["schema"]
        assert "from" in body["properties"], path
        if path.endswith(("/read", "/delete")):
            items = body["properties"]["ids"]["items"]["oneOf"]
            assert [i.get("type") for i in items] == ["string", "object"], path
            assert set(items[1]["properties"]) == {"id", "from"}, path
            answer = op["responses"]["200"]["content"]["application/json"]["schema"]
            assert set(answer["properties"]["refs"]["items"]["required"]) == {"id", "from"}
    ambiguous = schemas["Ambiguous"]["allOf"][1]
    assert set(ambiguous["required"]) == {"code", "field", "ambiguous"}
    assert "ambiguous" in schemas["Error"]["properties"]
    for path in ("/send", "/mail/send"):
        assert "`conflict`" in spec["paths"][path]["post"]["responses"]["409"]["description"]


def test_a_real_ambiguous_answer_matches_its_description(live: ThreadedServer) -> None:
    from flux.protocol import compose

    bob = Identity.generate()
    token = _login(live.url, bob)
    x = "7a" * 16
    for sender in (Identity.generate(), Identity.generate()):
        msg = compose(sender, bob.address, "hi", now_ms=int(time.time() * 1000), message_id=x)
        assert requests.post(live.url + "/send", json=msg.primary, timeout=10).status_code == 200
    spec = requests.get(live.url + "/openapi.json", timeout=10).json()
    described = spec["components"]["schemas"]["Ambiguous"]["allOf"][1]
    headers = {"Authorization": f"Bearer {token}"}
    for answer in (
        requests.get(f"{live.url}/message/{bob.address}/{x}", headers=headers, timeout=10),
        requests.post(
            f"{live.url}/read",
            json={"address": bob.address, "ids": [x]},
            headers=headers,
            timeout=10,
        ),
    ):
        body = answer.json()
        assert answer.status_code == 409 and set(described["required"]) <= set(body), body
        assert (body["code"], body["field"]) == ("ambiguous", "from")
        assert [set(e) for e in body["ambiguous"]] == [{"id", "senders"}]
