"""A message is named by (sender, id) everywhere (issue 9 §3, "No oracles, no squatting";
PROTOCOL.md §4.5, docs/API.md "Message identity"). Real servers on a real SQLite store
and on the memory store; the store contract (tests/store/test_contract.py) covers
PostgreSQL too."""

from __future__ import annotations

from typing import Any

import pytest

from flux.protocol.outgoing import compose

X = "ab" * 16  #: the id everyone fights over


@pytest.fixture(params=["memory", "sqlite"])
async def box(request: Any, make_server: Any, alice: Any, bob: Any, carol: Any, mallory: Any):
    h = await make_server(sqlite=request.param == "sqlite")
    await h.register(alice, bob, carol, mallory)
    for who in (alice, bob, carol, mallory):
        await h.login(who)
    return h


def msg(h: Any, sender: Any, to: Any, content: str = "hello", **kw: Any) -> dict[str, Any]:
    return h.message(sender, to, content, message_id=kw.pop("message_id", X), **kw)


async def test_bcc_oracle_answer_is_the_same_whether_or_not_bcc_was_used(
    make_server: Any, alice: Any, bob: Any, carol: Any
) -> None:
    answers = []
    for bcc_carol in (True, False):
        h = await make_server(sqlite=True)
        await h.register(alice, bob, carol)
        out = compose(alice, bob.address, "secret plan", bcc=[carol.address] if bcc_carol else None,
                      now_ms=h.clock.now, message_id=X)  # fmt: skip
        for copy in out.all:
            await h.send(copy)
        # bob (a `to` recipient) reuses the id toward the address he suspects was BCC'd
        probe = h.message(bob, carol, "probe", message_id=X)
        resp = await h.client.post("/send", json=probe)
        answers.append((resp.status, await resp.json()))
    assert answers[0] == answers[1]
    assert answers[0][0] == 200 and answers[0][1]["recipients"] == {carol.address: "stored"}


async def test_squatted_id_does_not_block_the_real_sender_http(box: Any, alice: Any, bob: Any, mallory: Any) -> None:  # fmt: skip
    await box.send(msg(box, mallory, bob, "planted"))
    answer = await box.send(msg(box, alice, bob, "the real one"))
    assert answer["recipients"] == {bob.address: "stored"} and not answer["duplicate"]
    # the real sender's replay is still a duplicate, and her other body still a conflict
    assert (await box.send(msg(box, alice, bob, "the real one")))["duplicate"] is True
    conflict = await box.send(msg(box, alice, bob, "changed"), expect=409)
    assert conflict["code"] == "conflict" and "you already sent" in conflict["error"]


async def test_squatted_id_does_not_block_the_real_sender_ws(box: Any, alice: Any, bob: Any, mallory: Any) -> None:  # fmt: skip
    bob_ws = await box.ws(bob)
    await box.send(msg(box, mallory, bob, "planted"))
    pushed = await bob_ws.receive_json(timeout=5)
    assert pushed["message"]["from"] == mallory.address
    ws = await box.ws(alice)
    await ws.send_json({"action": "send", "message": msg(box, alice, bob, "real"), "rid": 1})
    answer = await ws.receive_json(timeout=5)
    assert answer["ok"] and answer["recipients"] == {bob.address: "stored"}
    pushed = await bob_ws.receive_json(timeout=5)  # the real one is pushed, as itself
    assert pushed["message"]["from"] == alice.address and pushed["message"]["content"] == "real"
    await ws.close()
    await bob_ws.close()


async def test_two_senders_one_id_ambiguous_then_chosen_with_from(box: Any, alice: Any, bob: Any, mallory: Any) -> None:  # fmt: skip
    await box.send(msg(box, mallory, bob, "planted"))
    await box.send(msg(box, alice, bob, "real"))
    senders = sorted([alice.address, mallory.address])
    want = [{"id": X, "senders": senders}]
    a = bob.address
    r = await box.get(f"/message/{a}/{X}", bob, expect=409)
    assert (r["code"], r["ambiguous"]) == ("ambiguous", want)
    r = await box.get(f"/message/{a}/{X}", bob, **{"from": alice.address})
    assert r["message"]["content"] == "real"
    r = await box.get(f"/thread/{X}", bob, expect=409, address=a)
    assert r["ambiguous"] == want
    r = await box.get(f"/thread/{X}", bob, address=a, **{"from": mallory.address})
    assert [m["content"] for m in r["messages"]] == ["planted"]
    for path, extra in (("/read", {}), ("/delete", {}), ("/tag", {"add": ["x"]}),
                        ("/move", {"inbox": "later"})):  # fmt: skip
        body = {"address": a, "id": X, **extra}
        assert (await box.post(path, body, bob, expect=409))["ambiguous"] == want
    # nothing changed by the refused requests
    for who in (alice, mallory):
        m = (await box.get(f"/message/{a}/{X}", bob, **{"from": who.address}))["message"]
        assert (m["_status"], m["_tags"], m["_inbox"]) == ("pending", [], "inbox")
    r = await box.post("/tag", {"address": a, "id": X, "from": alice.address, "add": ["x"]}, bob)
    assert r["tags"] == ["x"]
    r = await box.post("/move", {"address": a, "id": X, "from": alice.address, "inbox": "l"}, bob)
    assert r["inbox"] == "l"
    r = await box.post("/read", {"address": a, "ids": [{"id": X, "from": alice.address}]}, bob)
    assert r["refs"] == [{"id": X, "from": alice.address}]
    r = await box.post("/delete", {"address": a, "ids": [X], "from": mallory.address}, bob)
    assert r["refs"] == [{"id": X, "from": mallory.address}]
    real = (await box.get(f"/message/{a}/{X}", bob, **{"from": alice.address}))["message"]
    fake = (await box.get(f"/message/{a}/{X}", bob, **{"from": mallory.address}))["message"]
    assert (real["_status"], real["_tags"], real["_inbox"]) == ("read", ["x"], "l")
    assert fake["_status"] == "deleted" and fake["_tags"] == []
    # /changes names each change by id and sender
    changes = await box.get("/changes", bob, address=a)
    assert {(m["id"], m["from"]) for m in changes["created"]} == {(X, alice.address), (X, mallory.address)}  # fmt: skip


async def test_ws_actions_take_from_and_answer_ambiguous(box: Any, alice: Any, bob: Any, mallory: Any) -> None:  # fmt: skip
    await box.send(msg(box, mallory, bob, "planted"))
    await box.send(msg(box, alice, bob, "real"))
    ws = await box.ws(bob)
    await ws.send_json({"action": "tag", "id": X, "add": ["y"], "rid": 1})
    r = await ws.receive_json(timeout=5)
    assert r["code"] == "ambiguous" and r["ambiguous"][0]["id"] == X
    await ws.send_json({"action": "tag", "id": X, "from": alice.address, "add": ["y"], "rid": 2})
    assert (await ws.receive_json(timeout=5))["tags"] == ["y"]
    await ws.send_json({"action": "read", "ids": [X], "from": mallory.address, "rid": 3})
    assert (await ws.receive_json(timeout=5))["refs"] == [{"id": X, "from": mallory.address}]
    await ws.close()


async def test_threads_refuse_strangers_replies_and_squatted_parents(box: Any, alice: Any, bob: Any, carol: Any, mallory: Any) -> None:  # fmt: skip
    await box.send(msg(box, mallory, bob, "planted first"))  # squats X at bob
    await box.send(msg(box, alice, bob, "real", cc=[carol.address]))
    box.clock.advance(1)
    reply = box.message(carol, bob, "carol's reply", reply_to=X)  # carol is a participant
    await box.send(reply)
    box.clock.advance(1)
    fake = box.message(mallory, bob, "mallory's 'reply'", reply_to=X)  # she is no participant
    await box.send(fake)
    a = bob.address
    real = await box.get(f"/thread/{X}", bob, address=a, **{"from": alice.address})
    assert [m["content"] for m in real["messages"]] == ["real", "carol's reply"]
    planted = await box.get(f"/thread/{X}", bob, address=a, **{"from": mallory.address})
    assert [m["content"] for m in planted["messages"]] == ["planted first", "mallory's 'reply'"]
