"""Short ids (docs/API.md, "Short ids"): every route and WebSocket action that names a
message of the caller's own mailbox takes a prefix of 8+ hex digits, resolved only inside
that mailbox. Real servers on the memory and SQLite stores (tests/store/test_short_ids.py
covers PostgreSQL's lookup)."""

from __future__ import annotations

from typing import Any

import pytest

from flux.protocol.tokens import legacy_token

A1 = "abcd1234" + "0" * 24  #: A1 and A2 share 8 digits: "abcd1234" is ambiguous
A2 = "abcd1234" + "1" * 24
B = "12345678" + "f" * 24
C = "cafe0000" + "2" * 24  #: only in carol's mailbox
X = "feedbeef" + "3" * 24  #: sent to bob by alice and by mallory


@pytest.fixture(params=["memory", "sqlite"])
async def box(request: Any, make_server: Any, alice: Any, bob: Any, carol: Any, mallory: Any):
    h = await make_server(sqlite=request.param == "sqlite", secret="s3cret", legacy_tokens=True)
    await h.register(alice, bob, carol, mallory)
    for who in (alice, bob, carol, mallory):
        await h.login(who)
    await h.send(h.message(alice, bob, "one", message_id=A1, subject="first"))
    await h.send(h.message(alice, bob, "two", message_id=A2))
    await h.send(h.message(alice, bob, "three", message_id=B))
    await h.send(h.message(alice, carol, "carol's", message_id=C))
    return h


def check_ambiguous(answer: dict[str, Any], field: str, alice: Any) -> None:
    assert answer["code"] == "ambiguous" and answer["field"] == field, answer
    assert answer["prefix"] == "abcd1234" and answer["count"] == 2
    assert answer["candidates"] == [
        {"id": A1, "from": alice.address, "subject": "first"},
        {"id": A2, "from": alice.address},
    ]
    assert answer["ambiguous"] == [
        {"id": A1, "senders": [alice.address]}, {"id": A2, "senders": [alice.address]}
    ]  # fmt: skip


async def test_message_and_thread_by_prefix(box: Any, alice: Any, bob: Any) -> None:
    a = bob.address
    assert (await box.get(f"/message/{a}/12345678", bob))["message"]["id"] == B
    assert (await box.get(f"/message/{a}/abcd12340", bob))["message"]["id"] == A1
    assert (await box.get(f"/message/{a}/{A2}", bob))["message"]["id"] == A2
    check_ambiguous(await box.get(f"/message/{a}/abcd1234", bob, expect=409), "id", alice)
    thread = await box.get("/thread/12345678", bob, address=a)
    assert [m["id"] for m in thread["messages"]] == [B]
    check_ambiguous(await box.get("/thread/abcd1234", bob, expect=409, address=a), "id", alice)


@pytest.mark.parametrize("bad", ["abcd123", "ABCD1234", "abcd123x", "a" * 33, "abcd-1234"])
async def test_short_or_non_hex_is_400_naming_the_field(box: Any, bob: Any, bad: str) -> None:
    a = bob.address
    answer = await box.get(f"/message/{a}/{bad}", bob, expect=400)
    assert answer["code"] == "invalid_value" and answer["field"] == "id"
    answer = await box.post("/read", {"address": a, "ids": [B, bad]}, bob, expect=400)
    assert answer["field"] == "ids[1]"
    answer = await box.post("/tag", {"address": a, "id": bad, "add": ["x"]}, bob, expect=400)
    assert answer["field"] == "id"
    assert (await box.get(f"/thread/{bad}", bob, expect=400, address=a))["field"] == "id"


async def test_unmatched_prefix_is_the_unknown_id_answer(box: Any, bob: Any) -> None:
    a = bob.address
    unknown = await box.get(f"/message/{a}/{'9' * 32}", bob, expect=404)
    assert await box.get(f"/message/{a}/99999999", bob, expect=404) == unknown
    assert await box.post("/move", {"address": a, "id": "99999999", "inbox": "x"}, bob,
                          expect=404) == unknown  # fmt: skip
    assert (await box.post("/read", {"address": a, "ids": ["99999999"]}, bob))["updated"] == []


async def test_read_delete_tag_move_by_prefix(box: Any, alice: Any, bob: Any) -> None:
    a = bob.address
    read = await box.post("/read", {"address": a, "ids": ["12345678", "abcd12341"]}, bob)
    assert read["updated"] == [B, A2]
    assert read["refs"] == [{"id": B, "from": alice.address}, {"id": A2, "from": alice.address}]
    check_ambiguous(await box.post("/read", {"address": a, "id": "abcd1234"}, bob, expect=409),
                    "id", alice)  # fmt: skip
    answer = await box.post("/delete", {"address": a, "ids": [B, "abcd1234"]}, bob, expect=409)
    check_ambiguous(answer, "ids", alice)
    assert (await box.get(f"/message/{a}/{B}", bob))["message"]["_status"] == "read"  # unchanged
    tags = await box.post("/tag", {"address": a, "id": "abcd12340", "add": ["work"]}, bob)
    assert tags["tags"] == ["work"]
    check_ambiguous(await box.post("/tag", {"address": a, "id": "abcd1234", "add": ["x"]}, bob,
                                   expect=409), "id", alice)  # fmt: skip
    moved = await box.post("/move", {"address": a, "id": "12345678", "inbox": "archive"}, bob)
    assert moved["inbox"] == "archive"
    gone = await box.post("/delete", {"address": a, "ids": [{"id": "abcd12340", "from": alice.address}]}, bob)  # fmt: skip
    assert gone["updated"] == [A1]


async def test_one_id_from_two_senders_is_still_the_sender_409(box: Any, alice: Any, bob: Any, mallory: Any) -> None:  # fmt: skip
    await box.send(box.message(alice, bob, "real", message_id=X))
    await box.send(box.message(mallory, bob, "planted", message_id=X))
    a = bob.address
    answer = await box.get(f"/message/{a}/feedbeef", bob, expect=409)
    assert answer["field"] == "from" and "candidates" not in answer
    assert answer["ambiguous"] == [{"id": X, "senders": sorted([alice.address, mallory.address])}]
    chosen = await box.get(f"/message/{a}/feedbeef", bob, **{"from": mallory.address})
    assert chosen["message"]["content"] == "planted"


async def test_a_prefix_never_reaches_another_mailbox(box: Any, bob: Any, carol: Any) -> None:
    """Carol holds C; Bob's prefix of it answers exactly as a prefix nobody holds."""
    a = bob.address
    nothing = await box.get(f"/message/{a}/00000000", bob, expect=404)
    assert await box.get(f"/message/{a}/cafe0000", bob, expect=404) == nothing
    assert await box.get("/thread/cafe0000", bob, expect=404, address=a) == nothing
    for path in ("/tag", "/move"):
        body = {"address": a, "id": "cafe0000", "add": ["x"]} if path == "/tag" else \
            {"address": a, "id": "cafe0000", "inbox": "x"}  # fmt: skip
        assert await box.post(path, body, bob, expect=404) == nothing
    assert (await box.post("/delete", {"address": a, "ids": ["cafe0000"]}, bob))["updated"] == []
    await box.get(f"/message/{carol.address}/cafe0000", bob, expect=403)
    assert (await box.get(f"/message/{carol.address}/cafe0000", carol))["message"]["id"] == C
    assert (await box.get(f"/message/{carol.address}/{C}", carol))["message"][
        "_status"
    ] != "deleted"


async def test_websocket_actions_take_prefixes(box: Any, alice: Any, bob: Any, carol: Any) -> None:
    ws = await box.ws(bob)

    async def ask(frame: dict[str, Any]) -> dict[str, Any]:
        await ws.send_json({**frame, "rid": 1})
        while True:
            answer = await ws.receive_json(timeout=5)
            if answer.get("rid") == 1:
                return answer

    read = await ask({"action": "read", "ids": ["12345678"]})
    assert read["ok"] and read["updated"] == [B]
    check_ambiguous(await ask({"action": "delete", "ids": ["abcd1234"]}), "id", alice)
    tag = await ask({"action": "tag", "id": "abcd12341", "add": ["t"]})
    assert tag["ok"] and tag["tags"] == ["t"]
    move = await ask({"action": "move", "id": "abcd12340", "inbox": "later"})
    assert move["ok"] and move["inbox"] == "later"
    bad = await ask({"action": "tag", "id": "abcd", "add": ["t"]})
    assert bad["code"] == "invalid_value" and bad["field"] == "id"
    theirs = await ask({"action": "move", "id": "cafe0000", "inbox": "x"})
    assert theirs["code"] == "not_found"
    assert (await ask({"action": "read", "ids": ["cafe0000"]}))["updated"] == []
    await ws.close()


async def test_account_mail_routes_take_prefixes(box: Any, alice: Any) -> None:
    made = await box.post("/account/register", {"username": "dora", "password": "p" * 12})
    me = made["flux_address"]
    headers = {"X-Flux-Session": made["session"]}
    for mid, text in ((A1, "one"), (A2, "two"), (B, "three")):
        await box.send(box.message(alice, me, text, message_id=mid, subject="first" if mid == A1 else None))  # fmt: skip

    async def post(path: str, body: dict[str, Any], expect: int = 200) -> dict[str, Any]:
        resp = await box.client.post(path, json=body, headers=headers)
        answer = await resp.json()
        assert resp.status == expect, answer
        return answer

    assert (await post("/mail/read", {"ids": ["12345678"]}))["updated"] == [B]
    check_ambiguous(await post("/mail/delete", {"id": "abcd1234"}, 409), "id", alice)
    assert (await post("/mail/tag", {"id": "abcd12340", "add": ["a"]}))["tags"] == ["a"]
    assert (await post("/mail/move", {"id": "abcd12341", "inbox": "b"}))["inbox"] == "b"
    assert (await post("/mail/move", {"id": "cafe0000", "inbox": "b"}, 404))["code"] == "not_found"
    assert (await post("/mail/tag", {"id": "cafe", "add": ["a"]}, 400))["field"] == "id"


async def test_prototype_dialect_takes_prefixes_and_leaks_nothing(box: Any, alice: Any, bob: Any) -> None:  # fmt: skip
    """The prototype's client: a legacy token, its tag form, its dialect's answers."""
    a = bob.address
    old = {"X-Flux-Token": legacy_token(a, "s3cret")}

    async def call(method: str, path: str, expect: int, **kw: Any) -> dict[str, Any]:
        resp = await box.client.request(method, path, headers=old, **kw)
        answer = await resp.json()
        assert resp.status == expect, answer
        return answer

    tagged = await call("POST", "/tag", 200, json={"address": a, "id": "12345678", "tag": "x", "action": "add"})  # fmt: skip
    assert tagged["tags"] == ["x"] and tagged["applied"] is True
    got = await call("GET", f"/message/{a}/abcd12341", 200)
    assert got["message"]["id"] == A2
    check_ambiguous(await call("GET", f"/message/{a}/abcd1234", 409), "id", alice)
    nothing = await call("GET", f"/message/{a}/00000000", 404)
    assert await call("GET", f"/message/{a}/cafe0000", 404) == nothing
    assert (await call("POST", "/read", 200, json={"address": a, "id": "cafe0000"}))[
        "updated"
    ] == []
    ws = await box.client.ws_connect("/ws")
    await ws.send_json({"action": "auth", "address": a, "token": old["X-Flux-Token"]})
    assert (await ws.receive_json(timeout=5))["action"] == "authed"
    await ws.send_json(
        {"action": "tag", "id": "cafe0000", "tag": "x", "tag_action": "add", "rid": 7}
    )
    while (answer := await ws.receive_json(timeout=5)).get("rid") != 7:
        pass
    assert answer["ok"] is False and answer["code"] == "not_found"
    await ws.close()
