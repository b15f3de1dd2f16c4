"""Each client address gets its share of the event loop, whatever it asks for (issue 10 §2;
connections.py RequestBudget / RequestTurns): requests and WebSocket frames past an
address's budget wait their turn with reading paused, and past `request_delay_max_s` of
waiting are refused with 429 and `Retry-After`, before any routing, while other addresses
are served. Real servers on 127.0.0.1, clients bound to other loopback addresses.

No assertion on durations: budgets are set so low (one request in 10 or 20 s) that what a
test checks cannot be reached by the refill, or so that every answer is only awaited.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "client"))
from client_helpers import WAIT

from flux import FluxIdentity
from flux.client import FluxClient
from flux.server import ServerConfig
from flux.server.connections import FrameCounter, RequestBudget, RequestTurns, turns_for
from server.loopback import session

#: one request in 10 s once the burst is spent, and no waiting: the next is a 429
STINGY = {"requests_per_address_per_s": 0.1, "request_burst_per_address": 3,
          "request_delay_max_s": 1.0}  # fmt: skip


async def status(server: Any, source: str, path: str = "/health", **kwargs: Any) -> int:
    async with session(source) as http, http.get(server.url + path, **kwargs) as r:
        await r.read()
        return r.status


def turns(server: Any) -> RequestTurns:
    return server.runner.server.turns


# -- over HTTP: whatever the endpoint -------------------------------------------------------


@pytest.mark.parametrize("running", [STINGY], indirect=True)
async def test_a_flood_from_one_address_gets_429_with_retry_after_and_others_are_served(running):
    async with session("127.0.0.2") as http:
        answers = []
        # A 404, a junk login and /health: one budget, whatever the endpoint.
        for method, path in [("GET", "/nope"), ("POST", "/account/login"), ("GET", "/health"),
                             ("GET", "/health"), ("GET", "/nope")]:  # fmt: skip
            async with http.request(method, running.url + path, json={}) as r:
                answers.append((r.status, r.headers.get("Retry-After"), await r.read()))
    assert [a[0] for a in answers[:3]] == [404, 400, 200]  # the burst: served as usual
    assert [a[0] for a in answers[3:]] == [429, 429]
    for _, retry_after, body in answers[3:]:
        assert retry_after is not None and int(retry_after) >= 1
        assert b'"code":"rate_limited"' in body
    assert turns(running).refused == 2
    assert await status(running, "127.0.0.3") == 200  # another address is served
    assert await status(running, "127.0.0.1") == 200


@pytest.mark.parametrize(
    "running",
    # shutdown_timeout_s: the request left waiting its turn is not waited for at teardown
    [{"requests_per_address_per_s": 0.05, "request_burst_per_address": 1,
      "request_delay_max_s": 60.0, "shutdown_timeout_s": 0.5}],
    indirect=True,
)  # fmt: skip
async def test_past_its_burst_a_request_waits_its_turn_while_other_addresses_are_served(running):
    async with session("127.0.0.2") as flood:
        async with flood.get(running.url + "/health") as r:
            assert r.status == 200  # the burst
        waiting = asyncio.create_task(flood.get(running.url + "/health"))  # its turn: in 20 s
        for _ in range(500):  # until the server holds it (bounded: WAIT)
            if turns(running).delayed:
                break
            await asyncio.sleep(0.02)
        assert turns(running).delayed == 1
        assert await status(running, "127.0.0.3") == 200
        assert await status(running, "127.0.0.4", "/nope") == 404
        assert not waiting.done()  # held, not refused
        waiting.cancel()
    assert turns(running).refused == 0


@pytest.mark.parametrize(
    "running",
    [{"requests_per_address_per_s": 4.0, "request_burst_per_address": 2,
      "request_delay_max_s": 30.0}],
    indirect=True,
)  # fmt: skip
async def test_requests_waiting_their_turn_are_all_answered(running):
    async with session("127.0.0.2") as http:

        async def one() -> int:
            async with http.get(running.url + "/health") as r:
                return r.status

        assert await asyncio.gather(*(one() for _ in range(8))) == [200] * 8
    assert turns(running).delayed >= 1
    assert turns(running).refused == 0


@pytest.mark.parametrize(
    "running",
    [{"requests_per_address_per_s": 0.1, "request_burst_per_address": 6,
      "request_delay_max_s": 1.0}],
    indirect=True,
)  # fmt: skip
async def test_a_large_body_costs_more_turns_than_an_empty_request(running):
    big = b"x" * (64 * 1024)  # 5 turns: one, and one per 16 KiB
    async with session("127.0.0.2") as http:
        async with http.post(running.url + "/send", data=big) as r:
            assert r.status == 400  # judged on its merits (not JSON)
        async with http.post(running.url + "/send", data=big) as r:
            assert r.status == 429  # 10 turns do not fit in a burst of 6
        async with http.get(running.url + "/health") as r:
            assert r.status == 200  # the sixth turn
    assert [turns_for(n) for n in (None, 0, 16383, 16384, 64 * 1024)] == [1, 1, 1, 2, 5]


@pytest.mark.parametrize(
    "running",
    [{"requests_per_address_per_s": 20.0, "request_burst_per_address": 1,
      "request_delay_max_s": 30.0}],
    indirect=True,
)  # fmt: skip
async def test_a_neighbour_behind_the_same_address_is_slowed_by_a_flood_but_never_starved(running):
    """Users behind one NAT share its budget; turns go in arrival order, so a neighbour's
    request waits behind at most one request per flooding connection, not the flood."""
    done = asyncio.Event()

    async def flood(http: aiohttp.ClientSession) -> int:
        sent = 0
        while not done.is_set():
            async with http.get(running.url + "/nope") as r:
                await r.read()
            sent += 1
        return sent

    async with session("127.0.0.2") as attacker, session("127.0.0.2") as neighbour:
        flooding = [asyncio.create_task(flood(attacker)) for _ in range(8)]
        try:
            for _ in range(5):
                async with neighbour.get(running.url + "/health") as r:
                    assert r.status == 200
        finally:
            done.set()
            sent = await asyncio.gather(*flooding)
    assert turns(running).delayed > 0 and turns(running).refused == 0
    assert sum(sent) > 0


# -- siblings: federation endpoints, WebSocket frames, a trusted proxy ----------------------


@pytest.mark.parametrize("running", [STINGY], indirect=True)
async def test_junk_federation_requests_are_throttled_per_address_too(running):
    junk = {"txn": "t", "from_server": "junk.invalid", "messages": []}
    headers = {"Signature-Input": 'sig1=("@method");keyid="junk.invalid";created=1',
               "Signature": "sig1=:AAAA:", "Content-Digest": "sha-256=:AAAA:"}  # fmt: skip
    seen = []
    async with session("127.0.0.2") as http:
        for path in ["/federation/deliver", "/mesh/relay", "/integrity/tamper_report"] * 2:
            async with http.post(running.url + path, json=junk, headers=headers) as r:
                seen.append(r.status)
    assert 429 not in seen[:3] and seen[3:] == [429, 429, 429]
    url = running.url + "/federation/deliver"
    async with session("127.0.0.3") as peer, peer.post(url, json=junk, headers=headers) as r:
        assert r.status not in (429, 200)  # another peer is judged on its merits


async def websocket_token(server: Any) -> tuple[FluxClient, str]:
    client = FluxClient(FluxIdentity.generate(), server.url)  # from 127.0.0.1
    await client.register()
    return client, await client.authenticate()


@pytest.mark.parametrize(
    "running",
    [{"requests_per_address_per_s": 3.0, "request_burst_per_address": 4,
      "request_delay_max_s": 30.0}],
    indirect=True,
)  # fmt: skip
async def test_websocket_frames_from_one_address_take_turns_and_none_is_lost(running):
    client, token = await websocket_token(running)
    try:
        async with session("127.0.0.2") as http, http.ws_connect(running.url + "/ws") as ws:
            await ws.send_json({"action": "auth", "token": token})
            while (await ws.receive_json(timeout=WAIT)).get("action") != "authed":
                pass
            for n in range(12):  # past the burst: the socket is read at the address's pace
                await ws.send_json({"action": "ping", "rid": str(n)})
            for _ in range(500):  # until the server holds the socket (bounded: WAIT)
                if turns(running).delayed:
                    break
                await asyncio.sleep(0.02)
            assert turns(running).delayed >= 1
            assert await status(running, "127.0.0.3") == 200  # others served meanwhile
            answered = set()
            while len(answered) < 12:  # every frame is answered in its turn, none dropped
                frame = await ws.receive_json(timeout=WAIT)
                if "rid" in frame:
                    assert frame["ok"] is True, frame
                    answered.add(frame["rid"])
        assert turns(running).refused == 0
    finally:
        await client.close()


@pytest.mark.parametrize(
    "running", [{**STINGY, "trusted_proxies": "127.0.0.1"}], indirect=True
)  # fmt: skip
async def test_behind_a_trusted_proxy_the_forwarded_client_is_counted(running):
    def via_proxy(*lines: str) -> dict[str, Any]:
        return {"headers": [("X-Forwarded-For", line) for line in lines]}

    statuses = [
        await status(running, "127.0.0.1", **via_proxy(claim, "203.0.113.5"))
        for claim in ["198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"]
    ]  # a client claiming a new address each time, the proxy appending its real one
    assert statuses == [200, 200, 200, 429]
    assert await status(running, "127.0.0.1", **via_proxy("203.0.113.6")) == 200
    for _ in range(10):  # the proxy's own health checks are not a client's requests
        assert await status(running, "127.0.0.1") == 200


# -- the defaults: a real client never meets them -------------------------------------------


def test_the_budget_is_a_setting():
    config = ServerConfig.from_env({
        "FLUX_REQUESTS_PER_ADDRESS_PER_S": "12.5", "FLUX_REQUEST_BURST_PER_ADDRESS": "40",
        "FLUX_REQUEST_DELAY_MAX_S": "0.5",
    })  # fmt: skip
    assert RequestBudget.from_config(config) == RequestBudget(12.5, 40, 0.5)
    assert RequestBudget.from_config(ServerConfig()) == RequestBudget(100.0, 200, 2.0)
    for bad in [{"FLUX_REQUESTS_PER_ADDRESS_PER_S": "-1"}, {"FLUX_REQUEST_BURST_PER_ADDRESS": "0"},
                {"FLUX_REQUEST_DELAY_MAX_S": "soon"}]:  # fmt: skip
        with pytest.raises(ValueError):
            ServerConfig.from_env(bad)


@pytest.mark.parametrize("running", [{}], indirect=True)
async def test_a_busy_legitimate_client_never_waits_under_the_defaults(running):
    """A web client's page load, a sync and a bulk sender within its budget, all from one
    address at once: no request waits, none is refused."""
    alice = FluxClient(FluxIdentity.generate(), running.url)
    bob = FluxClient(FluxIdentity.generate(), running.url)
    try:
        await alice.register()
        await bob.register()
        await bob.send(alice.address, "write to me")
        for n in range(20):
            await alice.send(bob.address, f"a message of a bulk sender, number {n}")
        async with session("127.0.0.1") as http:
            burst = [http.get(running.url + "/health") for _ in range(60)]
            assert {r.status for r in await asyncio.gather(*burst)} == {200}
        assert len((await bob.inbox()).messages) >= 20
    finally:
        await alice.close()
        await bob.close()
    assert (turns(running).delayed, turns(running).refused) == (0, 0)


# -- the parts, without a server ------------------------------------------------------------


def test_turns_follow_the_budget_and_a_refusal_takes_nothing():
    t = RequestTurns(RequestBudget(per_s=1.0, burst=3, delay_max_s=1.5))
    assert [t.admit("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert t.admit("a", 0.0) == pytest.approx(1.0)  # waits its turn
    assert t.admit("a", 0.0) is None  # its turn would be 2 s away
    assert t.retry_after_s("a", 0.0) == 1
    assert t.admit("b", 0.0) == 0.0  # another address has its own budget
    assert t.admit("a", 10.0) == 0.0  # refilled
    assert (t.delayed, t.refused) == (1, 1)
    assert t.take("a", 10.0, cost=10) > 0  # frames already read: a wait, never a refusal


def test_addresses_whose_turn_has_passed_are_forgotten_when_there_are_too_many():
    t = RequestTurns(RequestBudget(per_s=10.0, burst=5), max_addresses=10)
    for n in range(10):
        t.admit(f"10.0.0.{n}", 0.0)
    t.admit("10.0.1.1", 5.0)  # every earlier schedule is in the past by now
    assert len(t._due) == 1


def frame(payload: bytes, *, masked: bool = True) -> bytes:
    size = len(payload)
    if size < 126:
        head = bytes([0x81, (0x80 if masked else 0) | size])
    elif size < 65536:
        head = bytes([0x81, (0x80 if masked else 0) | 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([0x81, (0x80 if masked else 0) | 127]) + size.to_bytes(8, "big")
    return head + (b"\x01\x02\x03\x04" if masked else b"") + payload


def test_frames_are_counted_however_the_bytes_are_split():
    stream = b"".join(
        [frame(b""), frame(b"x" * 125), frame(b"y" * 126), frame(b"z" * 70_000),
         frame(b"ping", masked=False), frame(b"w" * 3)]
    )  # fmt: skip
    assert FrameCounter().feed(stream) == 6
    for step in (1, 2, 3, 7, 100, 4096):
        counter = FrameCounter()
        parts = [stream[i : i + step] for i in range(0, len(stream), step)]
        assert sum(counter.feed(p) for p in parts) == 6, step
