"""What a FLUX sender does with each answer to a delivery (PROTOCOL.md §10.7), including
the answers it cannot be sure of (kept and retried), and the receiver's answer to a
transaction that is not an object. (These were PROTOCOL.md §16 items 1-3, strict xfails
until the code did what the text says.)

A real FLUX server (A, memory store, fast retries) delivers alice's mail to a scripted
peer: a real aiohttp server on 127.0.0.1 that publishes a key, names itself in
`/.well-known/flux` and answers each `POST /federation/deliver` with the answer the test
gives for that message. The outcome is read from A's sent mail (PROTOCOL.md §10.3,
"Delivery state"): delivered, bounced, or still queued after an attempt (a retry).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from cli.cli_helpers import free_port
from federation.fed_helpers import local_servers, signer
from flux.federation.signing import sign_request
from flux.protocol import Identity, compose
from flux.protocol.encoding import b64e
from flux.server.config import ServerConfig
from flux.server.runner import RunningServer, start_server
from spec.schema_check import check

ALICE = Identity(b"\x11" * 32)
BOB = Identity(b"\x12" * 32)
Answer = Callable[[str, str], Any]  #: (txn, message id) -> the whole JSON answer


@dataclass
class ScriptedPeer:
    """A peer that answers each delivery as `answer` says (a stand-in for a receiver that
    answers in shapes FLUX's own receiver never would)."""

    answer: Answer
    port: int = field(default_factory=free_port)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    @property
    def name(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> ScriptedPeer:
        app = web.Application()
        key = Identity(b"\x13" * 32)
        info = {"ok": True, "domain": self.name, "version": "test", "protocol": "1.0",
                "keys": [{"pub": b64e(key.public_key), "valid_from": 0, "valid_until": None}],
                "retired_keys": []}  # fmt: skip

        async def federation_info(_: web.Request) -> web.Response:
            return web.json_response(info)

        async def well_known(_: web.Request) -> web.Response:
            return web.json_response({"ok": True, "server": self.name})

        app.router.add_get("/federation/info", federation_info)
        app.router.add_get("/.well-known/flux", well_known)
        app.router.add_post("/federation/deliver", self._deliver)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _deliver(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.deliveries.append(body)
        answer = self.answer(body["txn"], body["messages"][0]["id"])
        return web.json_response(answer)


@pytest.fixture
async def run(tmp_path: Path) -> AsyncIterator[Callable[[Answer], Any]]:
    """`await run(answer)`: alice's message to bob at the scripted peer, answered by
    `answer`; returns bob's delivery state at A once A has settled the first attempt."""
    servers: list[RunningServer] = []

    async def go(answer: Answer) -> dict[str, Any]:
        async with ScriptedPeer(answer) as peer:
            port = free_port()
            env = {"FLUX_QUEUE_RETRY_BASE_S": "30", "FLUX_QUEUE_RETRY_CAP_S": "60"}
            config = ServerConfig.from_env(
                env, host="127.0.0.1", port=port, domain=f"127.0.0.1:{port}",
                data_dir=tmp_path / str(port), backend="memory",
                insecure_peers=frozenset({peer.name}), open_mode=True,
            )  # fmt: skip
            a = await start_server(config)
            servers.append(a)
            message = compose(ALICE, BOB.address, "hello", now_ms=_now()).primary
            async with aiohttp.ClientSession() as http:
                body = {"message": message, "domains": {BOB.address: peer.name}}
                async with http.post(a.url + "/send", json=body) as response:
                    assert response.status == 200, await response.text()
            return await _settled(a, message["id"])

    yield go
    for server in servers:
        await server.stop()


def _now() -> int:
    return int(time.time() * 1000)


async def _settled(a: RunningServer, msg_id: str) -> dict[str, Any]:
    """Bob's delivery state once the first attempt is settled (bounded: 30 s)."""
    async with asyncio.timeout(30):
        while True:
            sent = await a.store.sent_message(ALICE.address, msg_id)
            state = sent.delivery.get(BOB.address, {}) if sent else {}
            if state.get("state") in ("delivered", "bounced") or state.get("attempts", 0) >= 1:
                return state
            await asyncio.sleep(0.05)  # polling a condition, bounded by the timeout


def accepted(outcome: Any) -> Answer:
    return lambda txn, msg_id: {"ok": True, "txn": txn, "results": [{"id": msg_id, "recipients": {BOB.address: outcome}}]}  # fmt: skip


def refusal(code: str) -> Answer:
    return lambda txn, msg_id: {"ok": True, "txn": txn, "results": [{"id": msg_id, "refused": code, "error": "because", "struck": False}]}  # fmt: skip


# -- what the text says and FLUX does ------------------------------------------------------
SETTLED = {
    "stored": (accepted("stored"), "delivered"),
    "duplicate": (accepted("duplicate"), "delivered"),
    "not_hosted": (accepted("not_hosted"), "bounced"),
    "refused spam": (refusal("spam"), "bounced"),
    "refused unknown_recipient": (refusal("unknown_recipient"), "bounced"),
    "refused quota_exceeded": (refusal("quota_exceeded"), "queued"),
    "refused unavailable": (refusal("unavailable"), "queued"),
    "refused internal_error": (refusal("internal_error"), "queued"),
    "ok without txn": (lambda txn, msg_id: {"ok": True}, "queued"),
    "another txn": (lambda txn, msg_id: {"ok": True, "txn": "x" + txn, "results": []}, "queued"),
    "no result for the message": (
        lambda txn, msg_id: {"ok": True, "txn": txn, "results": []},
        "queued",
    ),
}


@pytest.mark.parametrize(("answer", "state"), SETTLED.values(), ids=SETTLED.keys())
async def test_each_answer_settles_as_the_text_says(run: Any, answer: Answer, state: str) -> None:
    got = await run(answer)
    assert got["state"] == state, got
    if state == "bounced":
        assert got.get("reason"), got


def test_the_scripted_answers_are_answers_of_the_schema() -> None:
    for name, (answer, _) in SETTLED.items():
        if name.startswith(("stored", "duplicate", "not_hosted", "refused")):
            check("federation-answer", answer("t", "a" * 32))


# -- answers a sender cannot be sure of: kept and retried (§10.7) -------------------------
UNSURE = {
    "over_quota beside nothing": (accepted("over_quota"), "the recipient's mailbox is full"),
    "over_stranger_share": (
        accepted("over_stranger_share"),
        "the recipient has not written to you and its mail from strangers is full",
    ),
    "an outcome not in v1.0": (
        accepted("filed"),
        "the receiving server answered 'filed' for this recipient (not understood)",
    ),
    "an outcome that is not a string": (
        accepted({"state": "stored"}),
        "the receiving server answered '<dict>' for this recipient (not understood)",
    ),
    "a recipient missing from recipients": (
        lambda txn, msg_id: {"ok": True, "txn": txn, "results": [{"id": msg_id, "recipients": {}}]},
        "the receiving server's answer did not mention this recipient",
    ),
    "a result of another shape": (
        lambda txn, msg_id: {
            "ok": True,
            "txn": txn,
            "results": [{"id": msg_id, "status": "stored"}],
        },
        "the receiving server's answer about this message was not understood",
    ),
    "a result that is not an object": (
        lambda txn, msg_id: {"ok": True, "txn": txn, "results": ["stored"]},
        "the receiving server's answer about this message was not understood",
    ),
    "refused, but not with a string": (
        lambda txn, msg_id: {"ok": True, "txn": txn, "results": [{"id": msg_id, "refused": 5}]},
        "the receiving server's answer about this message was not understood",
    ),
}


@pytest.mark.parametrize(("answer", "words"), UNSURE.values(), ids=UNSURE.keys())
async def test_unsure_answers_are_retried(run: Any, answer: Answer, words: str) -> None:
    """Formerly PROTOCOL.md §16 items 1-2 (counted delivered, or bounced): the peer may not
    have the message for this recipient, or may have it; resending is safe (it dedupes),
    so the message stays queued and the sender is told why in words."""
    got = await run(answer)
    assert got["state"] == "queued", got
    assert got["error"].startswith(words + "; next try at "), got


# -- the receiver -------------------------------------------------------------------------
async def test_a_transaction_that_is_not_an_object_is_400(tmp_path: Path) -> None:
    """Formerly PROTOCOL.md §16 item 3 (answered 500: `mesh_peers` was read first); every
    other non-object body and member: tests/federation/test_federation_bodies.py."""
    async with local_servers(tmp_path, "ab") as s:
        a, b = s["a"], s["b"]
        body = b"[]"
        headers = sign_request(signer(a), "POST", signer(b).name, "/federation/deliver", body, now_s=_now() // 1000)  # fmt: skip
        async with aiohttp.ClientSession() as http, http.post(b.url + "/federation/deliver", data=body, headers=headers) as r:  # fmt: skip
            answer = json.loads(await r.text())
            assert (r.status, answer["code"], answer.get("field")) == (400, "wrong_type", "body")
