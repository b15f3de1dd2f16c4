"""Review of issue 10 (request budget): attacks a reviewer tried against real servers on
127.0.0.1, each kept as a regression test. Clients are bound to their own loopback
addresses, so each is another host as far as the server knows.

Found and fixed (connections.py): a body's turns were taken from its Content-Length only,
so the same 64 KiB sent chunked cost one turn instead of five; and a request was charged
its whole body at admission, so a body larger than an idle address's burst plus its
delay (8 MiB, a full federation transaction, is 513 turns against 200 + 200) was a 429
forever, whoever sent it. Now every byte read pays its turns once, as it is read (the
head and what came with it at admission, at most a burst; the rest while it is read,
reading paused past the budget).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "client"))
from client_helpers import WAIT

from flux.server.connections import RequestBudget, RequestTurns, most_turns_at_once, turns_for
from server.loopback import session

#: one turn in 10 s past a burst of 10; 1 s of waiting at most
STINGY = {"requests_per_address_per_s": 0.1, "request_burst_per_address": 10,
          "request_delay_max_s": 1.0}  # fmt: skip


async def served_before_429(url: str, source: str, *, chunked: bool, tries: int = 12) -> int:
    body = b"x" * (64 * 1024)  # 5 turns: one, and one per 16 KiB
    async with session(source) as http:
        for served in range(tries):

            async def stream() -> AsyncIterator[bytes]:
                yield body

            async with http.post(url + "/nope", data=stream() if chunked else body) as r:
                await r.read()
                if r.status == 429:
                    return served
    return tries


@pytest.mark.parametrize("running", [STINGY], indirect=True)
async def test_a_chunked_body_costs_the_same_turns_as_a_declared_one(running):
    """Attack: send the body chunked (no Content-Length) to pay one turn for 64 KiB.
    Before the fix: 10 chunked bodies went through where 2 declared ones did."""
    declared = await served_before_429(running.url, "127.0.0.2", chunked=False)
    chunked = await served_before_429(running.url, "127.0.0.3", chunked=True)
    assert declared == 2  # 5 + 5 turns fill the burst of 10
    assert chunked == declared


@pytest.mark.parametrize("running", [{}], indirect=True)
async def test_a_full_federation_transaction_is_not_refused_for_its_size_alone(running):
    """A peer's transaction may be up to 8 MiB (federation.delivery.MAX_BATCH_BYTES). With
    the default budget (100/s, burst 200, 2 s) one request may never take more than 400
    turns at once, so charging a 7 MiB body at admission (449 turns) was a 429 for every
    sender on an idle server, and such mail could never be delivered. It is judged on its
    merits (here: not a signed transaction) and only slowed."""
    body = b"{" + b" " * (7 * 1024 * 1024) + b"}"
    assert turns_for(len(body)) > 400
    async with session("127.0.0.4") as http:
        started = time.monotonic()
        async with http.post(running.url + "/federation/deliver", data=body,
                             headers={"Content-Type": "application/json"}) as r:  # fmt: skip
            await r.read()
            assert r.status != 429
            assert r.status in (400, 401)
        # its bytes were paid while they were read: the address's next request waits
        # its turn, it is not refused (the body's turns exceed the burst by ~2.5 s)
        async with http.get(running.url + "/health") as r:
            assert r.status == 200
        assert time.monotonic() - started < WAIT


def test_no_request_takes_more_than_a_burst_at_admission():
    budget = RequestBudget()
    turns = RequestTurns(budget)
    cost = min(turns_for(8 * 1024 * 1024), most_turns_at_once(budget))
    assert turns.admit("198.51.100.1", 0.0, cost) == 0.0  # an idle address: at once
    assert turns.admit("198.51.100.2", 0.0, turns_for(8 * 1024 * 1024)) is None  # the old way


@pytest.mark.parametrize("running", [{"keepalive_timeout_s": 1.0, "header_timeout_s": 1.0}],
                         indirect=True)  # fmt: skip
async def test_an_upgrade_header_on_a_plain_route_does_not_escape_the_deadlines(running):
    """Attack (held): `Connection: Upgrade` on /health or a 404 makes aiohttp stop parsing
    HTTP, and the guard stops its own timers for upgraded connections; the connection is
    still closed after the answer, within the keep-alive timeout."""
    host, port = running.url.split("//")[1].rsplit(":", 1)
    for path, upgrade in (("/health", "websocket"), ("/nope", "h2c"), ("/ws", "foo")):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                     f"Upgrade: {upgrade}\r\n\r\n".encode())  # fmt: skip
        await writer.drain()
        started = time.monotonic()
        head = await asyncio.wait_for(reader.read(64), WAIT)
        assert head.startswith(b"HTTP/1.1 ")
        await asyncio.wait_for(reader.read(), 5)  # EOF: torn down
        assert time.monotonic() - started < 5
        writer.close()


def test_many_addresses_on_schedule_cost_no_sweep_per_request(monkeypatch):
    """Attack: more addresses than the table's sweep size, each with turns ahead of it
    (a large body, a held WebSocket). Before the fix every new address swept the whole
    table (quadratic: 3,000 sweeps over 1,000+ entries here); now a sweep that frees
    nothing waits until the table has doubled, and stale entries still go."""
    turns = RequestTurns(RequestBudget(), max_addresses=1_000)
    sweeps = 0
    forget = turns._forget

    def counting(now: float) -> None:
        nonlocal sweeps
        sweeps += 1
        forget(now)

    monkeypatch.setattr(turns, "_forget", counting)
    for n in range(4_000):
        turns.take(f"2001:db8:{n:x}::/64", 0.0, 100)  # one second ahead each
    assert sweeps <= 3
    for n in range(4_000, 4_000 + 10_000):  # later: everyone before is back on schedule
        turns.take(f"2001:db8:{n:x}::/64", 10.0 + n * 1e-3, 1)
    assert len(turns._due) <= 2 * 4_000  # memory bounded by the addresses recently active


@pytest.mark.parametrize("running", [{}], indirect=True)
async def test_websocket_frames_are_not_compressed_so_their_turns_match_their_size(running):
    """Attack: offer permessage-deflate and send frames of 250 KiB of one letter. Turns are
    counted on the bytes read (FrameCounter, turns_for), so each costs one turn instead of
    sixteen; in the reviewer's run 16 such sockets from one address got 5x the frames of
    uncompressed ones through and took the neighbour's /health to 0.63x idle (0.74x)."""
    async with (
        session("127.0.0.6") as http,
        http.ws_connect(running.url + "/ws", compress=15) as ws,
    ):
        assert ws.compress == 0  # no deflate: the bytes read are the bytes parsed


@pytest.mark.parametrize(
    "running",
    [{"requests_per_address_per_s": 20.0, "request_burst_per_address": 5,
      "request_delay_max_s": 3.0}],
    indirect=True,
)  # fmt: skip
async def test_a_neighbour_is_not_refused_while_bodies_stream_from_its_address(running):
    """Attack: six connections stream chunked bodies from the neighbour's own address (a
    NAT). Bodies pay as they are read, but never put the address past its burst: the
    neighbour waits behind at most one read per connection and is never refused."""
    done = asyncio.Event()

    async def stream() -> AsyncIterator[bytes]:
        for _ in range(64):
            if done.is_set():
                return
            yield b"x" * (16 * 1024)

    async def flood(http: aiohttp.ClientSession) -> None:
        while not done.is_set():
            try:
                async with http.post(running.url + "/federation/deliver", data=stream()) as r:
                    await r.read()
            except aiohttp.ClientError:
                pass

    async with session("127.0.0.2") as flooder, session("127.0.0.2") as neighbour:
        tasks = [asyncio.create_task(flood(flooder)) for _ in range(6)]
        try:
            await asyncio.sleep(0.5)
            answers = []
            for _ in range(5):
                async with neighbour.get(running.url + "/health") as r:
                    answers.append(r.status)
        finally:
            done.set()
            await asyncio.gather(*tasks, return_exceptions=True)
    assert answers == [200] * 5
    assert running.runner.server.turns.delayed > 0  # the flood was slowed


async def _pushed_within(url: str, head: bytes, seconds: float) -> int:
    """Bytes of body the server took within `seconds` (its reading paused: drain stalls)."""
    host, port = url.split("//")[1].rsplit(":", 1)
    _reader, writer = await asyncio.open_connection(host, int(port), local_addr=("127.0.0.8", 0))
    writer.write(head)
    chunk, sent = b"x" * 65536, 0
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            writer.write(chunk)
            await asyncio.wait_for(writer.drain(), max(0.01, end - time.monotonic()))
            sent += len(chunk)
    except (TimeoutError, ConnectionError):
        pass
    writer.transport.abort()
    return sent


@pytest.mark.parametrize(
    "running", [{"requests_per_address_per_s": 10.0, "request_burst_per_address": 10,
                 "shutdown_timeout_s": 0.5}],  # the held request is not waited for at teardown
    indirect=True,
)  # fmt: skip
async def test_a_body_nobody_reads_is_still_paid_as_aiohttp_discards_it(running):
    """Attack: a huge body to a route that does not read it (a 404). aiohttp answers, then
    reads and discards the body for up to its lingering time: without a budget the
    reviewer's server took ~950 MiB in 3 s. Declared (now admitted at a burst's cost) or
    chunked, its bytes pay as they are read: ~160 KiB a second here, plus socket buffers."""
    declared = b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n"
    assert await _pushed_within(running.url, declared, 2.0) < 32 * 2**20
    chunked = b"POST /nope HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked += b"%x\r\n" % (2**40)  # one chunk that never ends
    assert await _pushed_within(running.url, chunked, 2.0) < 32 * 2**20
