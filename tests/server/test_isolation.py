"""ISOLATION: with alice's session, nothing of bob's mailbox can be read or changed."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
async def bobs_mail(pair: Any, alice: Any, bob: Any) -> dict[str, Any]:
    msg = pair.message(alice, bob, "For Bob's eyes only")
    await pair.send(msg)
    return msg


def attempts(bob: str, mid: str) -> list[tuple[str, str, dict[str, Any] | None, dict[str, Any]]]:
    """(method, path, json body, query) for every mailbox endpoint, aimed at bob's mailbox."""
    return [
        ("GET", f"/fetch/{bob}", None, {}),
        ("GET", f"/inbox/{bob}", None, {}),
        ("GET", f"/inbox/{bob}", None, {"status": "deleted"}),
        ("GET", f"/inboxes/{bob}", None, {}),
        ("GET", f"/peek/{bob}", None, {}),
        ("GET", f"/message/{bob}/{mid}", None, {}),
        ("GET", f"/thread/{mid}", None, {"address": bob}),
        ("GET", "/changes", None, {"address": bob, "since": 0}),
        ("POST", "/read", {"address": bob, "ids": [mid]}, {}),
        ("POST", "/delete", {"address": bob, "ids": [mid]}, {}),
        ("POST", "/tag", {"address": bob, "id": mid, "add": ["mine"]}, {}),
        ("POST", "/move", {"address": bob, "id": mid, "inbox": "stolen"}, {}),
    ]


@pytest.mark.parametrize("credential", ["alice", "none", "garbage", "bob-as-x-header-for-alice"])
async def test_every_mailbox_endpoint_refuses_others(
    pair: Any, alice: Any, bob: Any, bobs_mail: dict, credential: str
) -> None:
    headers = {
        "alice": pair.auth(alice),
        "none": {},
        "garbage": {"Authorization": "Bearer " + "A" * 43},
        "bob-as-x-header-for-alice": {"X-Flux-Token": pair.tokens[alice.address]},
    }[credential]
    expected = (401, "unauthorized") if credential in ("none", "garbage") else (403, "forbidden")
    before = await pair.store.stats()
    state = await pair.store.state(bob.address)
    for method, path, body, query in attempts(bob.address, bobs_mail["id"]):
        resp = await pair.client.request(method, path, json=body, params=query, headers=headers)
        answer = await resp.json()
        assert (resp.status, answer["code"]) == expected, (method, path, answer)
        assert bobs_mail["content"] not in await resp.text()
    assert await pair.store.stats() == before
    assert await pair.store.state(bob.address) == state
    row = await pair.store.get(bob.address, bobs_mail["id"])
    assert row.status == "pending" and row.tags == () and row.inbox == "inbox"


async def test_own_session_cannot_reach_bobs_ids(pair: Any, alice: Any, bob: Any, bobs_mail: dict) -> None:  # fmt: skip
    mid = bobs_mail["id"]
    a = alice.address
    assert (await pair.get(f"/message/{a}/{mid}", alice, expect=404))["code"] == "not_found"
    # alice's thread of that id is her own sent message, never bob's copy of it
    mine = (await pair.get(f"/thread/{mid}", alice, address=a))["messages"]
    assert [(m["id"], m["_folder"], "_status" in m) for m in mine] == [(mid, "sent", False)]
    assert (await pair.post("/read", {"address": a, "ids": [mid]}, alice))["updated"] == []
    assert (await pair.post("/delete", {"address": a, "ids": [mid]}, alice))["updated"] == []
    tag = {"address": a, "id": mid, "add": ["x"]}
    assert (await pair.post("/tag", tag, alice, expect=404))["code"] == "not_found"
    move = {"address": a, "id": mid, "inbox": "x"}
    assert (await pair.post("/move", move, alice, expect=404))["code"] == "not_found"
    status = await pair.get(f"/status/{bob.address}", alice)
    assert status == {"ok": True, "hosted": True}
    row = await pair.store.get(bob.address, mid)
    assert row.status == "pending" and row.tags == ()


async def test_websocket_refuses_others(pair: Any, alice: Any, bob: Any, bobs_mail: dict) -> None:
    mid = bobs_mail["id"]
    ws = await pair.ws(alice)
    assert ws.authed["messages"] == []  # bob's pending mail is not handed to alice
    frames = [
        ({"action": "read", "ids": [mid], "address": bob.address}, "forbidden"),
        ({"action": "delete", "ids": [mid], "address": bob.address}, "forbidden"),
        ({"action": "tag", "id": mid, "add": ["x"], "address": bob.address}, "forbidden"),
        ({"action": "move", "id": mid, "inbox": "x", "address": bob.address}, "forbidden"),
        ({"action": "ping", "address": bob.address}, "forbidden"),
        ({"action": "tag", "id": mid, "add": ["x"]}, "not_found"),
        ({"action": "move", "id": mid, "inbox": "x"}, "not_found"),
    ]
    for n, (frame, code) in enumerate(frames):
        await ws.send_json({**frame, "rid": n})
        answer = await ws.receive_json(timeout=5)
        assert (answer["ok"], answer["code"], answer["rid"]) == (False, code, n), answer
    for action in ("read", "delete"):
        await ws.send_json({"action": action, "ids": [mid]})
        assert (await ws.receive_json(timeout=5))["updated"] == []
    await ws.close()
    row = await pair.store.get(bob.address, mid)
    assert row.status == "pending" and row.tags == () and row.inbox == "inbox"


async def test_bobs_token_cannot_open_alices_socket(pair: Any, alice: Any, bob: Any) -> None:
    ws = await pair.client.ws_connect("/ws")
    frame = {"action": "auth", "token": pair.tokens[bob.address], "address": alice.address}
    await ws.send_json(frame)
    assert (await ws.receive_json(timeout=5))["code"] == "forbidden"
    await ws.close()
