"""The password account's mail routes added for issue 12: `GET /mail/message/{id}`,
`GET /mail/thread/{id}` (the same answers as the key session's `/message` and `/thread`,
short ids included), `POST /mail/unread`, and `?from=` on `/mail/inbox`; with
`_from_name` wherever mail is shown (listing, one message, thread, /changes)."""

from __future__ import annotations

from typing import Any

from accounts_helpers import DOMAIN


async def exchange(srv: Any) -> tuple[Any, Any, Any, dict[str, Any], dict[str, Any]]:
    """alice writes to bob, bob answers, carol writes to bob: (alice, bob, carol, first,
    reply), first and reply being bob's copies."""
    alice, bob, carol = [await srv.account(n) for n in ("alice", "bob", "carol")]
    sent = await srv.send(alice, to=bob.address, content="hello bob", subject="hi")
    answer = await srv.send(bob, to=alice.address, content="hello alice", re=sent["id"])
    await srv.send(alice, to=bob.address, content="again", re=sent["id"])  # a follow-up
    await srv.send(carol, to=bob.address, content="from carol")
    first = (await srv.call("GET", f"/mail/message/{sent['id']}", headers=bob.headers))["message"]
    return alice, bob, carol, first, answer


async def test_message_by_id_and_short_id_as_the_key_route_answers(srv: Any) -> None:
    alice, bob, _, first, _ = await exchange(srv)
    assert first["from"] == alice.address and first["_from_name"] == f"alice@{DOMAIN}"
    short = await srv.call("GET", f"/mail/message/{first['id'][:8]}", headers=bob.headers)
    assert short["message"] == first
    named = await srv.call("GET", f"/mail/message/{first['id']}", headers=bob.headers,
                           params={"from": alice.address, "address": bob.address})  # fmt: skip
    assert named["message"] == first


async def test_message_errors(srv: Any) -> None:
    alice, bob, _, first, _ = await exchange(srv)
    h = bob.headers
    await srv.call("GET", f"/mail/message/{'9' * 32}", headers=h, expect=404)
    await srv.call("GET", "/mail/message/99999999", headers=h, expect=404)
    bad = await srv.call("GET", "/mail/message/abc", headers=h, expect=400)
    assert bad["field"] == "id"
    other = await srv.call("GET", f"/mail/message/{first['id']}", headers=h,
                           params={"address": alice.address}, expect=403)  # fmt: skip
    assert other["field"] == "address"
    extra = await srv.call("GET", f"/mail/message/{first['id']}", headers=h,
                           params={"limit": "3"}, expect=400)  # fmt: skip
    assert extra["field"] == "limit"
    await srv.call("GET", f"/mail/message/{first['id']}", expect=401)
    # alice's own mailbox does not hold bob's copy of the reply to her
    await srv.call("GET", f"/mail/message/{first['id']}", headers=alice.headers, expect=404)


async def test_thread_as_the_key_route_answers(srv: Any) -> None:
    alice, bob, _, first, reply = await exchange(srv)
    thread = await srv.call("GET", f"/mail/thread/{first['id'][:10]}", headers=bob.headers)
    messages = thread["messages"]
    # bob's mailbox, and his own answer from his sent mail (`_folder: "sent"`)
    assert [m["content"] for m in messages] == ["hello bob", "hello alice", "again"]
    assert [m.get("_folder") for m in messages] == [None, "sent", None]
    assert [m["_from_name"] for m in messages] == [
        f"alice@{DOMAIN}", f"bob@{DOMAIN}", f"alice@{DOMAIN}"]  # fmt: skip
    await srv.call("GET", "/mail/thread/99999999", headers=bob.headers, expect=404)
    theirs = await srv.call("GET", f"/mail/thread/{reply['id']}", headers=alice.headers)
    # alice's own two messages too; all three were sent in one millisecond of the test's
    # clock, so after "hello bob" the order of the two answers to it is not defined
    got = {m["content"]: m for m in theirs["messages"]}
    assert theirs["messages"][0]["content"] == "hello bob" and len(theirs["messages"]) == 3
    assert {c: m.get("_folder") for c, m in got.items()} == {
        "hello bob": "sent", "hello alice": None, "again": "sent"}  # fmt: skip
    assert got["hello alice"]["_from_name"] == f"bob@{DOMAIN}"
    await srv.call("GET", f"/mail/thread/{first['id']}", expect=401)


async def test_unread_for_an_account(srv: Any) -> None:
    _, bob, _, first, _ = await exchange(srv)
    h = bob.headers
    read = await srv.call("POST", "/mail/read", json_body={"ids": [first["id"]]}, headers=h)
    assert read["updated"] == [first["id"]]
    done = await srv.call("POST", "/mail/unread", json_body={"id": first["id"][:8]}, headers=h)
    assert done["updated"] == [first["id"]] and done["deleted"] == []
    again = await srv.call("GET", f"/mail/message/{first['id']}", headers=h)
    assert again["message"]["_status"] == "delivered"
    await srv.call("POST", "/mail/delete", json_body={"ids": [first["id"]]}, headers=h)
    stays = await srv.call("POST", "/mail/unread", json_body={"ids": [first["id"]]}, headers=h)
    assert stays["updated"] == [] and [r["id"] for r in stays["deleted"]] == [first["id"]]
    bad = await srv.call("POST", "/mail/unread", json_body={"ids": [first["id"]], "x": 1},
                         headers=h, expect=400)  # fmt: skip
    assert bad["field"] == "x"
    await srv.call("POST", "/mail/unread", json_body={"ids": [first["id"]]}, expect=401)


async def test_inbox_from_one_sender_with_paging(srv: Any) -> None:
    alice, bob, carol, _, _ = await exchange(srv)
    for n in range(4):
        await srv.send(alice, to=bob.address, content=f"more {n}")
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"from": alice.address, "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = await srv.call("GET", "/mail/inbox", headers=bob.headers, params=params)
        seen += page["messages"]
        if not (cursor := page["next_cursor"]):
            break
    assert len(seen) == 6 and {m["from"] for m in seen} == {alice.address}
    assert len({m["id"] for m in seen}) == 6
    assert {m["_from_name"] for m in seen} == {f"alice@{DOMAIN}"}
    only_carol = await srv.inbox(bob, **{"from": carol.address})
    assert [m["content"] for m in only_carol] == ["from carol"]
    for bad in (alice.address[:12], f"alice@{DOMAIN}", ""):
        refused = await srv.call("GET", "/mail/inbox", headers=bob.headers,
                                 params={"from": bad}, expect=400)  # fmt: skip
        assert refused["field"] == "from", refused
