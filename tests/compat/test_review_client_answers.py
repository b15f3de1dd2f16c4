"""Review of issue 11: FluxClient against a server whose answers are `ok` and nothing
else, or carry every field with the wrong type (a real aiohttp server): every call fails
with a FluxClientError, never a raw KeyError/TypeError/AttributeError (issue 11, "What to
build": a missing field is a FluxClientError naming it)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from compat.test_review_attacks import hostile
from flux.client import FluxClient
from flux.client.errors import FluxClientError
from flux.protocol import Identity

BAD = {
    "id": 5, "recipients": "x", "messages": "x", "count": "x", "pending": "x", "online": "x",
    "inboxes": 5, "tags": 5, "inbox": 5, "updated": 5, "refs": 5, "state": "x",
    "created": 5, "has_more": "x", "message": 5, "next_cursor": 5, "domain": 5,
    "address": 5, "pub": 5, "hosted": "x", "total": "x", "keys": 5,
}  # fmt: skip

ID = "a" * 32


def calls(client: FluxClient, other: str) -> dict[str, Callable[[], Awaitable[Any]]]:
    return {
        "send": lambda: client.send(other, "hi"),
        "fetch": client.fetch,
        "peek": client.peek,
        "status": lambda: client.status(other),
        "status_bool": lambda: _as_bool(client.status(other)),
        "inbox": client.inbox,
        "inboxes": client.inboxes,
        "get": lambda: client.get(ID),
        "read": lambda: client.read([ID]),
        "delete": lambda: client.delete([ID]),
        "tag": lambda: client.tag(ID, add=["x"]),
        "move": lambda: client.move(ID, "archive"),
        "thread": lambda: client.thread(ID),
        "changes": client.changes,
        "health": client.health,
    }


async def _as_bool(status: Awaitable[Any]) -> bool:
    return bool(await status)


@pytest.mark.parametrize("shape", ["empty", "ill_typed"])
async def test_every_call_names_a_missing_or_ill_typed_field(shape: str) -> None:
    body = {"ok": True} if shape == "empty" else {"ok": True, **BAD}

    async def answer(request: web.Request) -> web.Response:
        return web.json_response(body)

    routes = [web.get("/{tail:.*}", answer), web.post("/{tail:.*}", answer)]
    async with hostile(routes) as (name, _):
        client = FluxClient(Identity.generate(), f"http://{name}", legacy_secret="s" * 20)
        other = Identity.generate().address
        raw: dict[str, str] = {}
        for label, call in calls(client, other).items():
            try:
                await call()
            except FluxClientError:
                pass
            except Exception as exc:
                raw[label] = f"{type(exc).__name__}: {exc}"
        await client.close()
    assert raw == {}
