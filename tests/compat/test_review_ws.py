"""Review of issue 11: the WebSocket's dialects, attacked and checked against the
prototype's own frames (flux/ws.py of 2.1.1 answers read/delete/move with
`read`/`deleted`/`moved`)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp

from federation.fed_helpers import local_servers
from flux.client import FluxClient
from flux.protocol import Identity
from flux.protocol.outgoing import compose
from flux.protocol.tokens import legacy_token

SECRET = "review-legacy-secret-0123456789"


def _now() -> int:
    return int(time.time() * 1000)


async def _next(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    return json.loads((await ws.receive(timeout=10)).data)


async def test_a_prototype_sockets_marks_answer_its_fields(tmp_path: Path) -> None:
    async with local_servers(tmp_path, ["f"], legacy_tokens=True, secret=SECRET) as servers:
        f = servers["f"]
        bob = Identity.generate()
        msg = compose(Identity.generate(), bob.address, "hello", now_ms=_now()).primary
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{f.url}/send", json=msg) as r:
                assert r.status == 200
            ws_url = f.url.replace("http://", "ws://") + "/ws"
            async with http.ws_connect(ws_url) as ws:
                token = legacy_token(bob.address, SECRET)
                await ws.send_str(json.dumps({"action": "auth", "address": bob.address, "token": token}))  # fmt: skip
                authed = await _next(ws)
                assert [m["id"] for m in authed["queued"]] == [msg["id"]]
                answers = []
                for frame in (
                    {"action": "read", "id": msg["id"]},
                    {"action": "tag", "id": msg["id"], "tag": "Work ", "tag_action": "add"},
                    {"action": "move", "id": msg["id"], "inbox": "archive"},
                    {"action": "delete", "id": msg["id"]},
                    {"action": "read", "id": "f" * 32},
                ):
                    await ws.send_str(json.dumps(frame))
                    answers.append(await _next(ws))
        # answers in frame order: keying them by id would collide when the id starts with "f"
        read, tag, move, delete, read_unknown = answers
        assert read["read"] is True
        assert tag["applied"] is True and tag["tag"] == "work"
        assert move["moved"] is True
        assert delete["deleted"] is True
        assert read_unknown["ok"] is True and read_unknown["read"] is False


async def test_a_stranger_cannot_put_a_flux_client_into_the_prototypes_dialect(
    tmp_path: Path,
) -> None:
    """FLUX's own client, even holding the legacy token, asks for FLUX's dialect; a push
    to it arrives as FLUX's `message` frame whatever a stranger sent on another socket
    with `dialect: "prototype"` for the same address (it has no token, so it is closed)."""
    async with local_servers(tmp_path, ["f"], legacy_tokens=True, secret=SECRET) as servers:
        f = servers["f"]
        bob = Identity.generate()
        got: list[dict] = []
        client = FluxClient(bob, f.url, legacy_secret=SECRET)

        @client.on_message
        def on(msg: dict) -> None:
            got.append(msg)

        task = asyncio.create_task(client.connect_ws())
        async with aiohttp.ClientSession() as http:
            ws_url = f.url.replace("http://", "ws://") + "/ws"
            async with http.ws_connect(ws_url) as ws:
                frame = {"action": "auth", "address": bob.address, "token": "0" * 64,
                         "dialect": "prototype"}  # fmt: skip
                await ws.send_str(json.dumps(frame))
                refused = await _next(ws)
                assert refused["ok"] is False
            msg = compose(Identity.generate(), bob.address, "live", now_ms=_now()).primary
            await asyncio.sleep(1.0)  # the client's socket is up and authenticated
            async with http.post(f"{f.url}/send", json=msg) as r:
                assert r.status == 200
            for _ in range(50):
                if got:
                    break
                await asyncio.sleep(0.1)
        await client.close()
        task.cancel()
        assert [m["id"] for m in got] == [msg["id"]]


async def test_the_dialect_field_takes_only_its_two_names(tmp_path: Path) -> None:
    async with local_servers(tmp_path, ["f"], legacy_tokens=True, secret=SECRET) as servers:
        f = servers["f"]
        bob = Identity.generate()
        token = legacy_token(bob.address, SECRET)
        async with aiohttp.ClientSession() as http:
            ws_url = f.url.replace("http://", "ws://") + "/ws"
            for bad in (["prototype"], "Prototype", {"x": 1}, None):
                async with http.ws_connect(ws_url) as ws:
                    frame = {"action": "auth", "token": token, "address": bob.address, "dialect": bad}  # fmt: skip
                    await ws.send_str(json.dumps(frame))
                    answer = await _next(ws)
                    if bad is None:  # absent and null are alike: the token decides
                        assert answer["ok"] is True and "queued" in answer
                    else:
                        assert answer["ok"] is False and answer["field"] == "dialect", answer
            for value in ("prototype", "Prototype", "flux, prototype"):
                headers = {"X-Flux-Token": token, "X-Flux-Dialect": value}
                async with http.get(f"{f.url}/inboxes/{bob.address}", headers=headers) as r:
                    body = await r.json()
                    if value == "prototype":
                        assert r.status == 200 and isinstance(body["inboxes"], list)
                    else:
                        assert r.status == 400 and body["field"] == "X-Flux-Dialect"
