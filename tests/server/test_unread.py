"""Marking mail unread (issue 12): `POST /unread`, the WebSocket `unread` action, and what
they leave alone (store/base.py, "Unread"). Real servers on the memory and SQLite stores
(tests/store/test_sender_list.py runs the store part on PostgreSQL too); the account
route `/mail/unread` is in tests/accounts/test_account_mail_routes.py."""

from __future__ import annotations

from typing import Any

import pytest

M1 = "abcd1234" + "0" * 24
M2 = "abcd1234" + "1" * 24
M3 = "12345678" + "f" * 24
ONCE = "0bce0bce" + "2" * 24  #: expires 0: deleted by its reading


@pytest.fixture(params=["memory", "sqlite"])
async def box(request: Any, make_server: Any, alice: Any, bob: Any):
    h = await make_server(sqlite=request.param == "sqlite")
    await h.register(alice, bob)
    for who in (alice, bob):
        await h.login(who)
    await h.send(h.message(alice, bob, "one", message_id=M1, subject="first"))
    await h.send(h.message(alice, bob, "two", message_id=M2))
    await h.send(h.message(alice, bob, "three", message_id=M3))
    await h.send(h.message(alice, bob, "gone after reading", message_id=ONCE, expires=0))
    return h


async def status(box: Any, who: Any, msg_id: str) -> str:
    return (await box.get(f"/message/{who.address}/{msg_id}", who))["message"]["_status"]


async def test_read_then_unread_then_read_again(box: Any, bob: Any) -> None:
    a = bob.address
    await box.post("/read", {"address": a, "ids": [M1, M3]}, bob)
    state = (await box.get("/changes", bob, address=a, since=0))["state"]
    answer = await box.post("/unread", {"address": a, "ids": ["abcd12340", M2]}, bob)
    assert answer["updated"] == [M1] and answer["deleted"] == []  # M2 was unread already
    assert answer["refs"] == [{"id": M1, "from": answer["refs"][0]["from"]}]
    assert await status(box, bob, M1) == "delivered" and await status(box, bob, M3) == "read"
    changes = await box.get("/changes", bob, address=a, since=state)
    assert [m["id"] for m in changes["updated"]] == [M1]
    assert changes["updated"][0]["_status"] == "delivered"
    assert (await box.post("/read", {"address": a, "id": M1}, bob))["updated"] == [M1]


async def test_deleted_and_read_once_mail_stays_deleted_and_is_named(box: Any, bob: Any) -> None:
    a = bob.address
    await box.post("/read", {"address": a, "ids": [ONCE]}, bob)  # expires 0: now deleted
    await box.post("/delete", {"address": a, "ids": [M3]}, bob)
    answer = await box.post("/unread", {"address": a, "ids": [ONCE, M3, "99999999"]}, bob)
    assert answer["updated"] == []
    assert sorted(r["id"] for r in answer["deleted"]) == sorted([ONCE, M3])
    assert await status(box, bob, ONCE) == "deleted" and await status(box, bob, M3) == "deleted"


async def test_errors_are_named(box: Any, alice: Any, bob: Any) -> None:
    a = bob.address
    ambiguous = await box.post("/unread", {"address": a, "ids": ["abcd1234"]}, bob, expect=409)
    assert ambiguous["code"] == "ambiguous" and ambiguous["field"] == "id"
    unknown = await box.post("/unread", {"address": a, "ids": [M1], "also": 1}, bob, expect=400)
    assert unknown["field"] == "also"
    bad = await box.post("/unread", {"address": a, "ids": ["abc"]}, bob, expect=400)
    assert bad["field"] == "ids[0]"
    missing = await box.post("/unread", {"address": a}, bob, expect=400)
    assert missing["field"] == "ids"
    await box.post("/unread", {"address": a, "ids": [M1]}, alice, expect=403)
    await box.post("/unread", {"address": a, "ids": [M1]}, None, expect=401)


async def test_websocket_unread_and_the_changed_push(box: Any, bob: Any) -> None:
    a = bob.address
    await box.post("/read", {"address": a, "ids": [M1]}, bob)
    acting, watching = await box.ws(bob), await box.ws(bob)

    async def answer_to(ws: Any, rid: int) -> dict[str, Any]:
        while (frame := await ws.receive_json(timeout=5)).get("rid") != rid:
            pass
        return frame

    await acting.send_json({"action": "unread", "ids": ["abcd12340"], "rid": 1})
    done = await answer_to(acting, 1)
    assert done["ok"] and done["action"] == "unread" and done["updated"] == [M1]
    while (pushed := await watching.receive_json(timeout=5)).get("action") != "changed":
        pass
    assert pushed["ids"] == [M1] and pushed["state"] > 0
    await acting.send_json({"action": "unread", "ids": [M1], "extra": True, "rid": 2})
    refused = await answer_to(acting, 2)
    assert refused["ok"] is False and refused["field"] == "extra"
    await acting.close()
    await watching.close()
    assert await status(box, bob, M1) == "delivered"


async def test_the_prototype_dialect_has_no_unread(box: Any, bob: Any) -> None:
    """A socket in the prototype's dialect keeps the prototype's actions: `unread` is an
    unknown action there, as its server answered, and nothing changes."""
    a = bob.address
    await box.post("/read", {"address": a, "ids": [M1]}, bob)
    ws = await box.ws(bob, dialect="prototype")
    await ws.send_json({"action": "unread", "ids": [M1], "rid": 9})
    while (answer := await ws.receive_json(timeout=5)).get("rid") != 9:
        pass
    assert answer["ok"] is False and answer["code"] == "unknown_action"
    await ws.close()
    assert await status(box, bob, M1) == "read"
