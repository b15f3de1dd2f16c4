"""Every string from outside is checked once, at the edge, alike on every backend.

Issue 10 §3: `GET /inbox?tag=%00` answered 500 on PostgreSQL and 200 on SQLite. Each
parameter a client can put into a query, a path, a body or a WebSocket frame that reaches
the store is tried here with a NUL, another C0 control, a C1 control (U+0085) and an
over-long value, on MemoryStore, SQLiteStore and PostgresStore: each is a 400 naming the
field, never a 500 and never a silent 200. Lone surrogates cannot arrive in a query (they
are not UTF-8) and JSON bodies refuse them when parsed; `check_text` refuses them too.
"""

from __future__ import annotations

from typing import Any

import pytest

from flux.protocol.errors import InvalidValue
from flux.server import wire
from postgres_env import postgres_dsn

BACKENDS = ["memory", "sqlite", "postgres"]
BAD = {"nul": "a\x00b", "c0": "a\x01b", "c1": "a\x85b", "long": "a" * 1100}
PEER = "x" * 32  # any id


async def _server(make_server: Any, backend: str, clock: Any) -> Any:
    if backend == "postgres":
        from flux.store import PostgresStore

        store = PostgresStore(postgres_dsn(), fresh_schema=True, clock=clock)
        await store.open()
        srv = await make_server(store=store)
        srv.own_pg = store  # type: ignore[attr-defined]
        return srv
    return await make_server(sqlite=backend == "sqlite")


@pytest.fixture(params=BACKENDS)
async def srv3(request: Any, make_server: Any, clock: Any, alice: Any) -> Any:
    srv = await _server(make_server, request.param, clock)
    await srv.register(alice)
    await srv.login(alice)
    yield srv
    store = getattr(srv, "own_pg", None)
    if store is not None:
        await srv.client.close()
        await store.close()


def _query_cases(address: str, msg_id: str) -> list[tuple[str, str, str]]:
    """(path, parameter, field named in the answer)"""
    return [
        (f"/inbox/{address}", "tag", "tag"),
        (f"/inbox/{address}", "inbox", "inbox"),
        (f"/inbox/{address}", "cursor", "cursor"),
        (f"/inbox/{address}", "status", "status"),
        (f"/inbox/{address}", "limit", "limit"),
        (f"/message/{address}/{msg_id}", "from", "from"),
        (f"/thread/{msg_id}?address={address}", "from", "from"),
        (f"/changes?address={address}", "limit", "limit"),
        (f"/fetch/{address}", "limit", "limit"),
        (f"/peek/{address}", "limit", "limit"),
    ]


@pytest.mark.parametrize("bad", list(BAD))
async def test_every_query_parameter_refuses_control_characters_and_long_values(
    srv3: Any, alice: Any, bad: str
) -> None:
    sent = srv3.message(alice, alice, "to myself")
    await srv3.send(sent)
    for path, param, field in _query_cases(alice.address, sent["id"]):
        resp = await srv3.client.get(path, params={param: BAD[bad]}, headers=srv3.auth(alice))
        body = await resp.json()
        assert resp.status == 400, (path, param, body)
        assert body["field"] == field, (path, param, body)
        assert body["code"] in ("invalid_value", "too_large", "wrong_type"), body


@pytest.mark.parametrize("bad", list(BAD))
async def test_since_that_is_not_a_state_is_cannot_calculate_changes(
    srv3: Any, alice: Any, bad: str
) -> None:
    resp = await srv3.client.get(
        "/changes", params={"address": alice.address, "since": BAD[bad]}, headers=srv3.auth(alice)
    )
    body = await resp.json()
    assert resp.status == 400 and body["field"] == "since", body
    assert body["code"] in ("cannot_calculate_changes", "invalid_value", "too_large"), body


@pytest.mark.parametrize("bad", list(BAD))
async def test_unauthenticated_strings_are_refused_before_the_store(srv3: Any, bad: str) -> None:
    """Strings a stranger sends (no token) reach lookups too: the challenge's address, the
    name resolved, the status address."""
    for path, params, field in [
        ("/auth/challenge", {"address": BAD[bad]}, "address"),
        ("/federation/resolve/" + _path(BAD[bad]), {}, "name"),
    ]:
        resp = await srv3.client.get(path, params=params)
        body = await resp.json()
        assert resp.status in (400, 404), (path, body)  # an over-long path may be 404
        if resp.status == 400:
            assert body["field"] == field, body


def _path(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


@pytest.mark.parametrize("bad", list(BAD))
async def test_body_and_frame_names_are_refused_alike(srv3: Any, alice: Any, bad: str) -> None:
    sent = srv3.message(alice, alice, "to myself")
    await srv3.send(sent)
    value = BAD[bad]
    bodies = [
        ("/tag", {"address": alice.address, "id": sent["id"], "add": [value]}, "add[0]"),
        ("/tag", {"address": alice.address, "id": sent["id"], "remove": [value]}, "remove[0]"),
        ("/move", {"address": alice.address, "id": sent["id"], "inbox": value}, "inbox"),
    ]
    for path, body, field in bodies:
        answer = await srv3.post(path, body, alice, expect=400)
        assert answer["field"] == field, answer
    ws = await srv3.ws(alice)
    try:
        for _path_, body, field in bodies:
            action = _path_.strip("/")
            await ws.send_json({"action": action, "rid": field, **body})
            answer = await ws.receive_json(timeout=5)
            assert answer["ok"] is False and answer["field"] == field, answer
    finally:
        await ws.close()
    # Nothing changed: the message is where it was, untagged.
    got = await srv3.get(f"/message/{alice.address}/{sent['id']}", alice)
    assert got["message"]["_inbox"] == "inbox" and got["message"]["_tags"] == []


@pytest.mark.parametrize("bad", ["nul", "c1"])
async def test_websocket_auth_frame_inbox_is_checked(srv3: Any, alice: Any, bad: str) -> None:
    ws = await srv3.client.ws_connect("/ws")
    try:
        token = srv3.tokens[alice.address]
        await ws.send_json({"action": "auth", "token": token, "inbox": BAD[bad]})
        answer = await ws.receive_json(timeout=5)
        assert answer["ok"] is False and answer["field"] == "inbox", answer
    finally:
        await ws.close()


async def test_a_good_tag_filter_still_works(srv3: Any, alice: Any) -> None:
    sent = srv3.message(alice, alice, "to myself")
    await srv3.send(sent)
    await srv3.post("/tag", {"address": alice.address, "id": sent["id"], "add": ["work"]}, alice)
    listed = await srv3.get(f"/inbox/{alice.address}", alice, tag="work")
    assert [m["id"] for m in listed["messages"]] == [sent["id"]]
    assert (await srv3.get(f"/inbox/{alice.address}", alice, tag="play"))["messages"] == []


def test_check_text_refuses_lone_surrogates_and_names_the_field() -> None:
    with pytest.raises(InvalidValue) as caught:
        wire.check_text("a\ud800", "name")
    assert caught.value.field == "name" and "surrogate" in str(caught.value)
    assert wire.check_text("tab\tand\nnewline\x00", "content", multiline=True)
    with pytest.raises(InvalidValue):
        wire.check_text("a\ud800", "content", multiline=True)
