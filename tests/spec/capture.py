"""A capturing HTTP proxy for the schema tests: a real aiohttp server on 127.0.0.1.

It stands in front of one real FLUX server and forwards every request to it unchanged
(method, path, headers including `Host`, body), then hands back the real answer, recording
both. The FLUX server behind it is configured with the proxy's name as its own, so a
signed request aimed at the proxy's `@authority` verifies at the server: what is recorded
is exactly what one real server sent another and what the other answered.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from cli.cli_helpers import free_port

#: headers the proxy's own HTTP layers set again (RFC 9110 §7.6.1 and framing)
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "te",
               "trailer", "upgrade", "proxy-connection", "accept-encoding"}  # fmt: skip


@dataclass(frozen=True)
class Exchange:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  #: parsed JSON, or None
    status: int
    answer: Any  #: parsed JSON, or None


@dataclass
class CapturingProxy:
    port: int = field(default_factory=free_port)
    target_port: int = 0  #: where the real server listens (set before it is used)
    exchanges: list[Exchange] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _http: aiohttp.ClientSession | None = None
    _seen: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def name(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.name}"

    def where(self, method: str, path: str) -> list[Exchange]:
        return [e for e in self.exchanges if e.method == method and e.path == path]

    async def wait_for(self, method: str, path: str, count: int = 1) -> list[Exchange]:
        """Until `count` such exchanges were recorded (bounded: 30 s)."""
        async with asyncio.timeout(30), self._seen:
            await self._seen.wait_for(lambda: len(self.where(method, path)) >= count)
        return self.where(method, path)

    async def __aenter__(self) -> CapturingProxy:
        self._http = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._http is not None and self.target_port
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        url = f"http://127.0.0.1:{self.target_port}{request.path_qs}"
        async with self._http.request(
            request.method, url, data=body, headers=headers, allow_redirects=False
        ) as answer:
            data = await answer.read()
            status, content_type = answer.status, answer.content_type
        async with self._seen:
            self.exchanges.append(
                Exchange(
                    request.method,
                    request.path,
                    dict(request.headers),
                    _json(body),
                    status,
                    _json(data),
                )
            )
            self._seen.notify_all()
        return web.Response(body=data, status=status, content_type=content_type)


def _json(data: bytes) -> Any:
    try:
        return json.loads(data) if data else None
    except ValueError:
        return None
