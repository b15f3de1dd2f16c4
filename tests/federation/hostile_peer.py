"""A hostile FLUX peer for the tests: a real aiohttp server on 127.0.0.1, not a mock.

It answers every path the way `mode` says and records every request that reaches it (method,
path, headers), so a test can assert what a FLUX server sent it, and that nothing reached
it at all when the server should have refused to connect:

* `keys`: a well-formed `/federation/info` publishing `signer`'s key (or a random key when
  there is no signer: "wrong keys"); `/.well-known/flux` names `delegate` if set; a POST
  gets a 200 `{"ok": true}` (no results: a delivery answer that does not fit);
* `slow`: waits `delay_s` before answering as `keys`;
* `huge`: streams `huge_bytes` (100 MB) of JSON-looking bytes, chunk by chunk, never
  holding them in memory; `sent_bytes` says how much actually left before the reader hung up;
* `malformed`: a 200 with bytes that are not JSON;
* `redirect`: 307 to `redirect_to` + the same path (another host, plain HTTP, an internal
  port): a peer that follows it would re-send the request, Signature header included.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from aiohttp import web

from cli.cli_helpers import free_port
from flux.protocol import Identity, ServerSigner
from flux.protocol.encoding import b64e

HUGE = 100 * 1024 * 1024


@dataclass(frozen=True)
class Reached:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class HostilePeer:
    mode: str = "keys"
    signer: ServerSigner | None = None
    delegate: str | None = None
    redirect_to: str = ""
    delay_s: float = 10.0
    huge_bytes: int = HUGE
    reached: list[Reached] = field(default_factory=list)
    sent_bytes: int = 0
    port: int = field(default_factory=free_port)
    _runner: web.AppRunner | None = None

    @property
    def name(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.name}"

    def paths(self, method: str | None = None) -> list[str]:
        return [r.path for r in self.reached if method is None or r.method == method]

    async def __aenter__(self) -> HostilePeer:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._answer)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.reached.append(Reached(request.method, request.path, dict(request.headers)))
        if self.mode == "slow":
            await asyncio.sleep(self.delay_s)  # the hostile behaviour itself
        if self.mode == "huge":
            return await self._huge(request)
        if self.mode == "malformed":
            return web.Response(body=b"{not json" * 10, content_type="application/json")
        if self.mode == "redirect":
            raise web.HTTPTemporaryRedirect(self.redirect_to + request.path_qs)
        return web.json_response(self._document(request.path))

    def _document(self, path: str) -> dict:
        if path == "/federation/info":
            pub = (self.signer.identity if self.signer else Identity.generate()).public_key
            key = {"pub": b64e(pub), "valid_from": 0, "valid_until": None}
            return {"ok": True, "domain": self.name, "keys": [key], "retired_keys": []}
        if path == "/.well-known/flux":
            return {"ok": True, "server": self.delegate or self.name}
        return {"ok": True}

    async def _huge(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        chunk = json.dumps({"pad": "x" * 65_000}).encode()
        try:
            while self.sent_bytes < self.huge_bytes:
                await response.write(chunk)
                self.sent_bytes += len(chunk)
        except (ConnectionError, RuntimeError):
            pass  # the reader hung up: what a capped reader should do
        return response
