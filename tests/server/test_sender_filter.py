"""`GET /inbox/{address}?from=` (issue 12): only one sender's mail, paged by cursor, the
sender a whole fx1 address; and `_from_name` wherever mail is shown to a key session
(listing, one message, thread, /fetch, /changes, the `authed` frame and pushed mail).
Real servers on the memory and SQLite stores (tests/store/test_sender_list.py covers
PostgreSQL and the index plans)."""

from __future__ import annotations

from typing import Any

import pytest

from flux.accounts import claim_payload
from flux.server.names import FROM_NAME


@pytest.fixture(params=["memory", "sqlite"])
async def box(request: Any, make_server: Any, alice: Any, bob: Any, carol: Any):
    h = await make_server(sqlite=request.param == "sqlite")
    await h.register(alice, bob, carol)
    for who in (alice, bob, carol):
        await h.login(who)
    t = h.clock.now
    claim = {"username": "alice", "address": alice.address, "pub": alice.pub_b64(), "t": t,
             "sig": alice.sign(claim_payload(h.config.domain, "alice", alice.address, t))}  # fmt: skip
    await h.post("/account/claim", claim)
    return h


async def test_one_senders_mail_page_by_page(box: Any, alice: Any, bob: Any, carol: Any) -> None:
    mine = []
    for n in range(5):
        mine.append((await box.send(box.message(alice, bob, f"alice {n}")))["id"])
        await box.send(box.message(carol, bob, f"carol {n}"))
        box.clock.advance(1)
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"from": alice.address, "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = await box.get(f"/inbox/{bob.address}", bob, **params)
        seen += page["messages"]
        if not (cursor := page["next_cursor"]):
            break
    assert [m["id"] for m in seen] == list(reversed(mine))
    assert {m[FROM_NAME] for m in seen} == {f"alice@{box.config.domain}"}
    carols = await box.get(f"/inbox/{bob.address}", bob, **{"from": carol.address})
    assert len(carols["messages"]) == 5 and FROM_NAME not in carols["messages"][0]
    both = await box.get(f"/inbox/{bob.address}", bob, **{"from": carol.address, "status": "read"})
    assert both["messages"] == []


@pytest.mark.parametrize("bad", ["fx1abc", "alice@flux.test", "", "x" * 600])
async def test_a_sender_that_is_not_a_whole_address_is_refused(
    box: Any, bob: Any, bad: str
) -> None:
    answer = await box.get(f"/inbox/{bob.address}", bob, expect=400, **{"from": bad})
    assert answer["field"] == "from", answer


async def test_from_name_on_every_way_mail_is_shown(box: Any, alice: Any, bob: Any) -> None:
    named = f"alice@{box.config.domain}"
    first = await box.send(box.message(alice, bob, "first"))
    ws = await box.ws(bob)
    assert [m[FROM_NAME] for m in ws.authed["messages"]] == [named]
    reply = box.message(alice, bob, "second", reply_to=first["id"])
    await box.send(reply)
    while (frame := await ws.receive_json(timeout=5)).get("action") != "message":
        pass
    assert frame["message"]["id"] == reply["id"] and frame["message"][FROM_NAME] == named
    await ws.close()
    one = await box.get(f"/message/{bob.address}/{first['id']}", bob)
    assert one["message"][FROM_NAME] == named
    thread = await box.get(f"/thread/{first['id']}", bob, address=bob.address)
    assert [m[FROM_NAME] for m in thread["messages"]] == [named, named]
    changes = await box.get("/changes", bob, address=bob.address, since=0)
    assert {m[FROM_NAME] for m in changes["created"] + changes["updated"]} == {named}
    third = await box.send(box.message(alice, bob, "third"))
    fetched = await box.get(f"/fetch/{bob.address}", bob)
    # (the pushed reply may still be pending: the socket closed before its pong acked it)
    assert third["id"] in [m["id"] for m in fetched["messages"]]
    assert {m[FROM_NAME] for m in fetched["messages"]} == {named}
