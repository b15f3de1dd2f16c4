"""Review of issue 11, as an adversary: what the prototype's dialect added, attacked with
real servers on 127.0.0.1 (a hostile peer is a real aiohttp server written here)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from cli.cli_helpers import free_port
from federation.fed_helpers import local_servers
from flux.protocol import Identity
from flux.protocol.envelope import integrity_hash
from flux.protocol.limits import WS_MAX_FRAME_BYTES
from flux.protocol.outgoing import compose
from flux.protocol.tokens import legacy_token

SECRET = "review-legacy-secret-0123456789"


def _now() -> int:
    return int(time.time() * 1000)


@contextlib.asynccontextmanager
async def hostile(routes: list[web.RouteDef]) -> AsyncIterator[tuple[str, list[str]]]:
    """A real aiohttp server on 127.0.0.1: (its name host:port, every path it was asked)."""
    seen: list[str] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        seen.append(f"{request.method} {request.path}")
        return await handler(request)

    app = web.Application(middlewares=[record])
    app.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def _anything(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def _odd_hop(msg: dict[str, Any], name: str, *, tampered: bool) -> dict[str, Any]:
    """`msg` with the prototype's unsealed record named `name` (its hash over another body
    when `tampered`: the record says this server changed the message)."""
    key = Identity.generate()
    digest = integrity_hash({**msg, "content": "other"} if tampered else msg)
    t = _now()
    record = {"server": name, "t": t, "hash": digest,
              "sig": key.sign(f"{name}:{t}:{digest}"), "pub": key.pub_b64()}  # fmt: skip
    return {**msg, "integrity_chain": [*msg.get("integrity_chain", []), record]}


async def test_an_unsealed_hop_name_steers_no_request(tmp_path: Path) -> None:
    """A prototype's unsealed record naming a real (hostile) server, intact or claiming a
    change, makes the FLUX server contact that server for nothing: no key fetch, no tamper
    report, no probe (PROTOCOL.md §13 item 11: a label, never a server)."""
    routes = [web.get("/{tail:.*}", _anything), web.post("/{tail:.*}", _anything)]
    async with contextlib.AsyncExitStack() as stack:
        name, seen = await stack.enter_async_context(hostile(routes))
        servers = await stack.enter_async_context(local_servers(tmp_path, ["f"], extra_insecure=[name]))  # fmt: skip
        if True:
            f = servers["f"]
            rcpt = Identity.generate().address
            async with aiohttp.ClientSession() as http:
                for tampered in (False, True):
                    msg = compose(Identity.generate(), rcpt, f"t={tampered}", now_ms=_now()).primary
                    async with http.post(f"{f.url}/send", json=_odd_hop(msg, name, tampered=tampered)) as r:  # fmt: skip
                        await r.read()
                    async with http.post(f"{f.url}/integrity/verify", json=_odd_hop(msg, name, tampered=tampered)) as r:  # fmt: skip
                        assert r.status == 200
            await asyncio.sleep(1.5)  # any report or fetch would be on its way by now
    assert seen == []


async def test_a_prototype_sockets_authed_frame_stays_under_the_frame_limit(tmp_path: Path) -> None:
    """A prototype socket's `authed` carries the pending mail twice (`messages` and
    `queued`): its batch must still fit WS_MAX_FRAME_BYTES, as a FLUX socket's does."""
    async with local_servers(tmp_path, ["f"], legacy_tokens=True, secret=SECRET) as servers:
        f = servers["f"]
        rcpt = Identity.generate()
        async with aiohttp.ClientSession() as http:
            for i in range(20):  # ~1.2 MB pending: more than one FLUX frame holds
                content = " ".join(_sha(f"{i}:{j}") for j in range(900))  # not repetitive
                msg = compose(Identity.generate(), rcpt.address, content, now_ms=_now()).primary
                async with http.post(f"{f.url}/send", json=msg) as r:
                    assert r.status == 200, await r.text()
            ws_url = f.url.replace("http://", "ws://") + "/ws"
            token = legacy_token(rcpt.address, SECRET)
            async with http.ws_connect(ws_url, max_msg_size=0) as ws:
                await ws.send_str(json.dumps({"action": "auth", "address": rcpt.address, "token": token}))  # fmt: skip
                raw = await ws.receive(timeout=10)
        frame = json.loads(raw.data)
        assert frame["action"] == "authed" and frame["queued"], frame.keys()
        assert len(raw.data.encode()) <= WS_MAX_FRAME_BYTES


def _proto_info(domain: str) -> list[web.RouteDef]:
    async def info(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "domain": domain, "version": "2.1.1",
                                  "protocol": "1.0", "federation": True})  # fmt: skip

    return [web.get("/federation/info", info)]


async def test_a_fake_prototype_peers_refusal_text_is_bounded_in_the_bounce(tmp_path: Path) -> None:
    """A server that says it is the prototype and refuses with 100 kB of text full of
    control characters: the sender's bounce quotes at most a few hundred characters of it,
    none of them control characters, and the message is not retried."""
    hits: list[int] = []

    async def send(request: web.Request) -> web.Response:
        hits.append(1)
        return web.json_response({"ok": False, "error": "\x1b[31mPWNED\x00" * 10_000}, status=400)

    async with contextlib.AsyncExitStack() as stack:
        name, _ = await stack.enter_async_context(hostile([*_proto_info("x"), web.post("/send", send)]))  # fmt: skip
        servers = await stack.enter_async_context(
            local_servers(tmp_path, ["f"], open_mode=False, extra_insecure=[name])
        )
        if True:
            f = servers["f"]
            from flux.client import FluxClient

            alice = FluxClient(Identity.generate(), f.url)
            await alice.register()
            await alice.send(f"{Identity.generate().address}@{name}", "to a fake prototype")
            bounce = None
            for _ in range(100):
                page = await alice.inbox()
                bounce = next((m for m in page.messages if "PWNED" in json.dumps(m)), None)
                if bounce:
                    break
                await asyncio.sleep(0.1)
            await alice.close()
    assert bounce is not None, "no bounce"
    text = json.dumps(bounce, ensure_ascii=False)
    assert "\x1b" not in text and "\x00" not in text
    assert text.count("PWNED") < 100
    assert len(hits) == 1


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
