"""The WebSocket: auth, actions with rid, pushes after the commit, bad frames, slow readers."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import pytest

from flux.server.metrics import Metrics
from flux.server.push import Hub
from flux.store.base import ListQuery, MessageStatus


async def settle(ws: Any) -> None:
    """Two request round trips: aiohttp's receive() answers the server's ack ping on the
    way to the first answer, and the server reads that pong before the second request."""
    for rid in ("settle-1", "settle-2"):
        await ws.send_json({"action": "ping", "rid": rid})
        while (await ws.receive_json(timeout=5)).get("rid") != rid:
            pass


async def test_authed_hands_out_pending_and_marks_delivered_once_acked(pair: Any, alice: Any, bob: Any) -> None:  # fmt: skip
    msg = pair.message(alice, bob)
    await pair.send(msg)
    ws = await pair.ws(bob)
    authed = ws.authed
    assert authed["address"] == bob.address
    assert [m["id"] for m in authed["messages"]] == [msg["id"]]
    assert authed["messages"][0]["_status"] == "delivered"
    # Written is not delivered: pending until the client's pong acknowledges the frame.
    assert (await pair.store.get(bob.address, msg["id"])).status == "pending"
    await settle(ws)
    assert (await pair.store.get(bob.address, msg["id"])).status == "delivered"
    # `state` is the mailbox's before that marking
    assert authed["state"] < await pair.store.state(bob.address)
    await ws.close()


async def test_push_arrives_after_commit(pair: Any, alice: Any, bob: Any) -> None:
    ws = await pair.ws(bob)
    msg = pair.message(alice, bob, "Pushed to you right away")
    await pair.send(msg)
    frame = await ws.receive_json(timeout=5)
    assert frame["action"] == "message" and frame["message"]["id"] == msg["id"]
    assert frame["message"]["_status"] == "delivered"  # as it stands once acked
    stored = await pair.store.get(bob.address, msg["id"])
    assert stored is not None and stored.seq == frame["state"]
    assert stored.status == "pending"
    await settle(ws)
    assert (await pair.store.get(bob.address, msg["id"])).status == "delivered"
    await ws.close()


async def test_push_goes_only_to_the_recipient(pair: Any, alice: Any, bob: Any) -> None:
    ws_alice = await pair.ws(alice)
    ws_bob = await pair.ws(bob)
    await pair.send(pair.message(alice, bob))
    assert (await ws_bob.receive_json(timeout=5))["action"] == "message"
    await ws_alice.send_json({"action": "ping", "rid": 1})
    # the first frame alice gets is the answer to her ping: nothing was pushed to her
    assert await ws_alice.receive_json(timeout=5) == {"ok": True, "action": "pong", "rid": 1}
    await ws_alice.close()
    await ws_bob.close()


async def test_actions_echo_rid_and_push_changes_to_other_devices(
    pair: Any, alice: Any, bob: Any
) -> None:
    msg = pair.message(alice, bob)
    await pair.send(msg)
    phone = await pair.ws(bob)
    laptop = await pair.ws(bob)
    mid = msg["id"]
    await phone.send_json({"action": "read", "ids": [mid], "rid": "r1"})
    answer = await phone.receive_json(timeout=5)
    ref = {"id": mid, "from": alice.address}
    assert answer == {"ok": True, "action": "read", "rid": "r1", "updated": [mid], "refs": [ref]}
    changed = await laptop.receive_json(timeout=5)
    assert changed["action"] == "changed" and changed["ids"] == [mid]
    assert changed["refs"] == [ref]
    await phone.send_json({"action": "tag", "id": mid, "add": ["important"], "rid": 2})
    assert (await phone.receive_json(timeout=5))["tags"] == ["important"]
    await phone.send_json({"action": "move", "id": mid, "inbox": "later", "rid": 3})
    assert (await phone.receive_json(timeout=5))["inbox"] == "later"
    await phone.send_json({"action": "delete", "id": mid, "rid": 4})
    assert (await phone.receive_json(timeout=5))["updated"] == [mid]
    assert [(await laptop.receive_json(timeout=5))["action"] for _ in range(3)] == ["changed"] * 3
    # an HTTP change reaches both sockets
    await pair.post("/tag", {"address": bob.address, "id": mid, "add": ["x"]}, bob)
    assert (await phone.receive_json(timeout=5))["action"] == "changed"
    assert (await laptop.receive_json(timeout=5))["action"] == "changed"
    await phone.close()
    await laptop.close()


async def test_ws_send(pair: Any, alice: Any, bob: Any) -> None:
    ws = await pair.ws(alice)
    msg = pair.message(alice, bob)
    await ws.send_json({"action": "send", "message": msg, "rid": "s"})
    answer = await ws.receive_json(timeout=5)
    assert answer["ok"] is True and answer["rid"] == "s"
    assert answer["recipients"] == {bob.address: "stored"}
    await ws.send_json({"action": "send", "message": msg, "rid": "again"})
    assert (await ws.receive_json(timeout=5))["duplicate"] is True
    await ws.close()


BAD_FRAMES: list[tuple[str, str, str | None]] = [
    ("not json", "malformed_json", None),
    ("null", "wrong_type", "frame"),
    ("[1, 2]", "wrong_type", "frame"),
    ("42", "wrong_type", "frame"),
    ('"ping"', "wrong_type", "frame"),
    ("{}", "missing_field", "action"),
    ('{"action": 7}', "wrong_type", "action"),
    ('{"action": "explode"}', "unknown_action", "action"),
    ('{"action": "auth", "token": "x"}', "unknown_action", "action"),
    ('{"action": "read"}', "missing_field", "ids"),
    ('{"action": "read", "ids": "abc"}', "wrong_type", "ids"),
    ('{"action": "read", "ids": ["xyz"]}', "invalid_value", "ids[0]"),
    ('{"action": "tag", "id": "' + "a" * 32 + '", "add": "x"}', "wrong_type", "add"),
    ('{"action": "tag", "id": "' + "a" * 32 + '", "add": ["UPPER"]}', "invalid_value", "add[0]"),
    ('{"action": "tag", "id": "' + "a" * 32 + '"}', "not_found", "id"),
    ('{"action": "move", "id": "' + "a" * 32 + '"}', "missing_field", "inbox"),
    ('{"action": "move", "id": "' + "a" * 32 + '", "inbox": ""}', "invalid_value", "inbox"),
    ('{"action": "send"}', "missing_field", "message"),
    ('{"action": "send", "message": null}', "wrong_type", "message"),
    ('{"action": "send", "message": {"v": "1.0"}}', "missing_field", "id"),
    ('{"action": "ping", "x": 1.5}', "malformed_json", None),
    ('{"action": "ping", "action": "ping"}', "malformed_json", None),
    ("[" * 100_000, "malformed_json", None),
]


@pytest.mark.parametrize(("text", "code", "field"), BAD_FRAMES)
async def test_bad_frame_gets_error_frame_and_socket_stays(
    pair: Any, bob: Any, text: str, code: str, field: str | None
) -> None:
    ws = await pair.ws(bob)
    before = await pair.store.stats()
    await ws.send_str(text)
    answer = await ws.receive_json(timeout=5)
    assert answer["ok"] is False and answer["code"] == code, answer
    assert answer.get("field") == field
    await ws.send_json({"action": "ping", "rid": "alive"})
    assert (await ws.receive_json(timeout=5))["rid"] == "alive"
    assert await pair.store.stats() == before
    await ws.close()


async def test_binary_frame_is_refused(pair: Any, bob: Any) -> None:
    ws = await pair.ws(bob)
    await ws.send_bytes(b'{"action": "ping"}')
    assert (await ws.receive_json(timeout=5))["code"] == "wrong_type"
    await ws.close()


async def test_frame_over_the_limit_closes_1009(make_server: Any, bob: Any) -> None:
    srv = await make_server(ws_max_msg_bytes=4096)
    await srv.register(bob)
    await srv.login(bob)
    ws = await srv.ws(bob)
    await ws.send_str('{"action": "ping", "pad": "' + "x" * 10_000 + '"}')
    msg = await ws.receive(timeout=5)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code == 1009


@pytest.mark.parametrize(
    ("frame", "close_code", "code"),
    [
        ({"action": "auth", "token": "nope"}, 4401, "unauthorized"),
        ({"action": "auth"}, 1008, "missing_field"),
        ({"action": "ping"}, 1008, "invalid_value"),
        ({"action": "auth", "token": 5}, 1008, "wrong_type"),
    ],
)
async def test_auth_refusals_close_the_socket(
    srv: Any, frame: dict, close_code: int, code: str
) -> None:
    ws = await srv.client.ws_connect("/ws")
    await ws.send_json(frame)
    answer = await ws.receive_json(timeout=5)
    assert answer["ok"] is False and answer["code"] == code
    msg = await ws.receive(timeout=5)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code == close_code


async def test_auth_with_token_for_another_address(pair: Any, alice: Any, bob: Any) -> None:
    ws = await pair.client.ws_connect("/ws")
    await ws.send_json({"action": "auth", "token": pair.tokens[alice.address], "address": bob.address})  # fmt: skip
    assert (await ws.receive_json(timeout=5))["code"] == "forbidden"
    await ws.receive(timeout=5)
    assert ws.close_code == 4403


async def test_no_auth_frame_in_time(make_server: Any) -> None:
    srv = await make_server(ws_auth_timeout_s=0.2)
    ws = await srv.client.ws_connect("/ws")
    msg = await ws.receive(timeout=5)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code == 1008


# -- the hub on its own: a reader that never reads ----------------------------------------


class StuckSocket:
    """A socket whose peer never reads: every send blocks until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.sent: list[str] = []
        self.closed_with: int | None = None
        self.closed = asyncio.Event()

    async def send_str(self, data: str) -> None:
        await self.release.wait()
        self.sent.append(data)

    async def ping(self, message: bytes = b"") -> None:
        await self.release.wait()

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        self.closed_with = code
        self.closed.set()
        return True


class FastSocket(StuckSocket):
    def __init__(self) -> None:
        super().__init__()
        self.release.set()
        self.got = asyncio.Event()

    async def send_str(self, data: str) -> None:
        self.sent.append(data)
        if len(self.sent) >= 11:
            self.got.set()


async def test_slow_reader_is_closed_and_does_not_block_others() -> None:
    metrics = Metrics()
    hub = Hub(metrics, max_frames=4)
    slow_ws, fast_ws = StuckSocket(), FastSocket()
    slow = hub.connect(slow_ws, "fx1slow")
    fast = hub.connect(fast_ws, "fx1fast")
    slow.start({"action": "authed"})
    fast.start({"action": "authed"})
    for n in range(10):
        hub.push("fx1slow", {"n": n})
        hub.push("fx1fast", {"n": n})
        await asyncio.sleep(0)  # a yield: the fast writer keeps up, the stuck one cannot
    await asyncio.wait_for(slow_ws.closed.wait(), 5)
    assert slow_ws.closed_with == 1008
    await asyncio.wait_for(fast_ws.got.wait(), 5)
    assert len(fast_ws.sent) == 11  # authed + 10, none lost
    assert metrics.slow_closed._value.get() == 1
    for conn in (slow, fast):
        hub.disconnect(conn)
        await conn.finish()
    assert hub.count() == 0


async def test_frames_pushed_before_authed_are_held() -> None:
    hub = Hub(Metrics(), max_frames=8)
    ws = FastSocket()
    conn = hub.connect(ws, "fx1a")
    hub.push("fx1a", {"action": "message", "n": 1})
    conn.start({"action": "authed"})
    hub.push("fx1a", {"action": "message", "n": 2})
    while len(ws.sent) < 3:
        await asyncio.sleep(0)  # let the writer task run (a yield, not a timed wait)
    assert [f.split('"action":')[1][:9] for f in ws.sent] == ['"authed"}', '"message"', '"message"']  # fmt: skip
    hub.disconnect(conn)
    await conn.finish()


async def test_push_on_sqlite_is_durable_first(make_server: Any, alice: Any, bob: Any) -> None:
    srv = await make_server(sqlite=True)
    await srv.register(alice, bob)
    await srv.login(bob)
    ws = await srv.ws(bob)
    msg = srv.message(alice, bob)
    await srv.send(msg)
    frame = await ws.receive_json(timeout=5)
    assert frame["message"]["id"] == msg["id"]
    await settle(ws)
    assert (await srv.store.get(bob.address, msg["id"])).status == "delivered"
    await ws.close()


async def test_concurrent_submissions_of_one_message_store_it_once(
    pair: Any, alice: Any, bob: Any
) -> None:
    msg = pair.message(alice, bob)
    answers = await asyncio.gather(*(pair.send(msg) for _ in range(5)))
    assert sum(not a["duplicate"] for a in answers) == 1
    assert (await pair.store.stats())["deliveries"] == 1


# -- delivered means acknowledged (issue 10 §2, "Oversized first frame") -----------------


async def raw_ws(srv: Any, who: Any) -> Any:
    """A socket that answers no ping (autoping off): it reads, but never acknowledges."""
    ws = await srv.client.ws_connect("/ws", autoping=False)
    await ws.send_json({"action": "auth", "token": srv.tokens[who.address]})
    return ws


async def reset(ws: Any) -> None:
    """Gone without a close frame: the way a dropped phone connection ends."""
    sock = ws.get_extra_info("socket")
    if sock is not None:
        sock.shutdown(socket.SHUT_RDWR)
    await ws.close()


async def pending_ids(srv: Any, who: Any) -> set[str]:
    page = await srv.store.list(who.address, ListQuery(status=MessageStatus.PENDING, limit=500))
    return {row.id for row in page.items}


@pytest.mark.parametrize("reads_authed", [False, True])
async def test_a_client_that_resets_right_after_auth_leaves_every_message_pending(
    pair: Any, alice: Any, bob: Any, reads_authed: bool
) -> None:
    sent = {(await pair.send(pair.message(alice, bob, f"n{n}")))["id"] for n in range(12)}
    for _ in range(5):  # every round: all of it still pending, none lost or marked
        ws = await raw_ws(pair, bob)
        if reads_authed:
            authed = await ws.receive_json(timeout=5)
            assert {m["id"] for m in authed["messages"]} == sent
        await reset(ws)
        assert await pending_ids(pair, bob) == sent
    ws = await pair.ws(bob)  # a client that reads and acks: each once, then delivered
    assert sorted(m["id"] for m in ws.authed["messages"]) == sorted(sent)
    await settle(ws)
    assert await pending_ids(pair, bob) == set()
    await ws.close()
    again = await pair.ws(bob)
    assert again.authed["messages"] == []  # no duplicate for a well-behaved client
    await again.close()


async def test_pushes_to_a_socket_that_dies_before_acking_stay_pending(
    pair: Any, alice: Any, bob: Any
) -> None:
    ws = await raw_ws(pair, bob)
    assert (await ws.receive_json(timeout=5))["messages"] == []
    sent = [(await pair.send(pair.message(alice, bob, f"p{n}")))["id"] for n in range(10)]
    pushed: list[str] = []
    while len(pushed) < len(sent):  # message frames, and pings this client never answers
        msg = await ws.receive(timeout=5)
        if msg.type == aiohttp.WSMsgType.TEXT:
            pushed.append(msg.json()["message"]["id"])
    assert pushed == sent
    await reset(ws)
    assert await pending_ids(pair, bob) == set(sent)
    back = await pair.ws(bob)  # handed out again on reconnect
    assert [m["id"] for m in back.authed["messages"]] == sent
    await back.close()


async def test_a_pong_acks_every_ping_up_to_its_number_and_nothing_else(
    pair: Any, alice: Any, bob: Any
) -> None:
    ws = await raw_ws(pair, bob)
    await ws.receive_json(timeout=5)
    sent = [(await pair.send(pair.message(alice, bob, f"q{n}")))["id"] for n in range(3)]
    pings: list[bytes] = []
    while len(pings) < 3:
        msg = await ws.receive(timeout=5)
        if msg.type == aiohttp.WSMsgType.PING:
            pings.append(msg.data)
    await ws.pong(b"")  # a heartbeat-style pong acknowledges nothing
    await ws.pong(b"not a number")
    await ws.send_json({"action": "ping", "rid": 1})
    while (await ws.receive(timeout=5)).type != aiohttp.WSMsgType.TEXT:
        pass
    assert await pending_ids(pair, bob) == set(sent)
    await ws.pong(pings[1])  # RFC 6455: answering the latest ping may stand for earlier ones
    await ws.send_json({"action": "ping", "rid": 2})
    while (await ws.receive(timeout=5)).type != aiohttp.WSMsgType.TEXT:
        pass
    assert await pending_ids(pair, bob) == {sent[2]}
    await ws.close()
