"""Connections that never finish (issue 10 §2; docs/OPERATING.md, "Timeouts and connection
caps"): header, body and idle deadlines, and the per-address cap, against a real server on
127.0.0.1 driven by raw sockets the way a slowloris or a connection hoarder would.

Nothing here asserts a duration: each attack is a bounded loop (so many bytes, so many
seconds at most) and the test checks that the server hung up before the loop ran out.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "client"))
from aiohttp.test_utils import make_mocked_request
from client_helpers import WAIT, server_config

from flux.server import wire
from flux.server.auth import OperatorAuth
from flux.server.config import ServerConfig
from flux.server.connections import ConnectionPolicy
from flux.server.runner import start_server
from flux.server.wire import TrustedProxies

HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"


async def started(tmp_path: Path, **settings: Any) -> Any:
    return await start_server(server_config(tmp_path / "server", **settings))


@pytest.fixture
async def running(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    server = await started(tmp_path, **getattr(request, "param", {}))
    yield server
    await server.stop()


async def connect(server: Any, source: str = "127.0.0.1") -> tuple[Any, Any]:
    return await asyncio.open_connection("127.0.0.1", server.port, local_addr=(source, 0))


async def hung_up(reader: asyncio.StreamReader) -> bytes | bool:
    """Once the server closed or reset the connection: what it sent before (or True if
    nothing). Raises TimeoutError if it kept the connection open."""
    received = b""
    try:
        while data := await asyncio.wait_for(reader.read(65536), WAIT):
            received += data
    except (ConnectionError, OSError):
        pass
    return received or True


async def served(server: Any, source: str = "127.0.0.1") -> bool:
    reader, writer = await connect(server, source)
    try:
        writer.write(HEALTH)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), WAIT)
        return line.startswith(b"HTTP/1.1 200")
    except (ConnectionError, OSError):
        return False
    finally:
        writer.close()


async def trickle(writer: asyncio.StreamWriter, data: bytes, reader: asyncio.StreamReader) -> int:
    """Send `data` one byte every 0.1 s; return how many bytes went before the server
    hung up (len(data) if it never did)."""
    for sent, byte in enumerate(data):
        if reader.at_eof():
            return sent
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except (ConnectionError, OSError):
            return sent
        await asyncio.sleep(0.1)  # the attacker's pace, not synchronisation
    return len(data)


SLOW = {"header_timeout_s": 0.5, "body_timeout_s": 0.5, "keepalive_timeout_s": 60.0}


@pytest.mark.parametrize("running", [SLOW], indirect=True)
async def test_a_slowloris_head_is_cut_at_the_header_deadline(running):
    reader, writer = await connect(running)
    watcher = asyncio.create_task(hung_up(reader))
    head = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 300  # 30 s at most
    sent = await trickle(writer, head, reader)
    assert await watcher
    assert sent < len(head)  # cut long before the head could ever finish
    writer.close()
    assert await served(running)  # everyone else is still served


@pytest.mark.parametrize("running", [SLOW], indirect=True)
async def test_a_second_request_head_trickled_after_a_good_one_is_cut_too(running):
    reader, writer = await connect(running)
    writer.write(HEALTH)
    await writer.drain()
    assert (await asyncio.wait_for(reader.readline(), WAIT)).startswith(b"HTTP/1.1 200")
    await asyncio.wait_for(reader.readuntil(b"}"), WAIT)  # the rest of the answer
    head = b"GET /health HTTP/1.1\r\n" + b"X-Slow: " + b"a" * 300
    sent = await trickle(writer, head, reader)
    assert await hung_up(reader)
    assert sent < len(head)
    writer.close()


@pytest.mark.parametrize("running", [SLOW], indirect=True)
async def test_a_byte_per_tick_body_is_cut_at_the_body_deadline(running):
    reader, writer = await connect(running)
    body = b"{" + b" " * 300 + b"}"
    writer.write(
        b"POST /send HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    await writer.drain()
    sent = await trickle(writer, body, reader)
    assert await hung_up(reader)
    assert sent < len(body)
    writer.close()


@pytest.mark.parametrize(
    "running", [{"keepalive_timeout_s": 0.5, "header_timeout_s": 60.0}], indirect=True
)
async def test_idle_connections_are_closed_after_the_keepalive_timeout(running):
    silent_reader, silent = await connect(running)  # never sends a byte
    reader, writer = await connect(running)
    writer.write(HEALTH)  # one request, then idle keep-alive
    await writer.drain()
    assert (await asyncio.wait_for(reader.readline(), WAIT)).startswith(b"HTTP/1.1 200")
    assert await hung_up(reader)
    assert await hung_up(silent_reader)
    writer.close()
    silent.close()


@pytest.mark.parametrize("running", [{"max_connections_per_address": 3}], indirect=True)
async def test_the_connection_past_the_cap_is_refused_and_other_addresses_are_served(running):
    held = [await connect(running) for _ in range(3)]
    await asyncio.sleep(0.05)  # let the server account for them (no assertion on time)
    reader, writer = await connect(running)
    writer.write(HEALTH)
    with contextlib.suppress(ConnectionError, OSError):
        await writer.drain()
    assert await hung_up(reader) is True  # refused: not a byte of an answer
    writer.close()
    assert await served(running, "127.0.0.2")  # another address is served meanwhile
    # The held connections still work, and one closed frees a place.
    held_reader, held_writer = held[0]
    held_writer.write(HEALTH)
    await held_writer.drain()
    assert (await asyncio.wait_for(held_reader.readline(), WAIT)).startswith(b"HTTP/1.1 200")
    held_writer.close()
    await held_writer.wait_closed()
    for _ in range(50):  # until the server has seen the close (bounded)
        if await served(running):
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("a closed connection never freed its place")
    for _, w in held[1:]:
        w.close()


@pytest.mark.parametrize(
    "running", [{"max_connections_per_address": 2, "trusted_proxies": "127.0.0.1"}], indirect=True
)
async def test_a_trusted_proxy_is_not_capped(running):
    held = [await connect(running) for _ in range(4)]
    for reader, writer in held:
        writer.write(HEALTH)
        await writer.drain()
        assert (await asyncio.wait_for(reader.readline(), WAIT)).startswith(b"HTTP/1.1 200")
        writer.close()


@pytest.mark.parametrize(
    "running",
    [{"header_timeout_s": 0.3, "body_timeout_s": 0.3, "keepalive_timeout_s": 0.3}],
    indirect=True,
)
async def test_an_open_websocket_outlives_the_http_deadlines(running):
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{running.url}/ws") as ws:
        await asyncio.sleep(1.0)  # past every HTTP deadline; the socket must stay up
        await ws.send_json({"action": "auth", "token": "nope"})
        answer = await ws.receive_json(timeout=WAIT)
        assert answer["code"] == "unauthorized"  # the socket was still being served


def test_addresses_are_counted_per_ipv4_address_and_ipv6_64():
    policy = ConnectionPolicy(max_per_address=5, trusted_proxies=frozenset({"10.0.0.0/8", "::1"}))
    assert policy.counted_as("192.0.2.7") == "192.0.2.7"
    assert policy.counted_as("::ffff:192.0.2.7") == "192.0.2.7"
    assert policy.counted_as("2001:db8:1:2:3::9") == policy.counted_as("2001:db8:1:2:ffff::1")
    assert policy.counted_as("2001:db8:1:3::1") != policy.counted_as("2001:db8:1:2::1")
    assert policy.counted_as("10.1.2.3") is None  # a trusted proxy (CIDR)
    assert policy.counted_as("::1") is None  # a trusted proxy (exact)
    assert ConnectionPolicy(max_per_address=0).counted_as("192.0.2.7") is None  # cap off


def test_one_trusted_proxy_rule_matches_exact_entries_names_and_networks():
    """FLUX_TRUSTED_PROXIES means the same to every per-address decision: the client
    address behind a proxy (budgets, logins), the connection cap, the request budget and
    the operator check all take CIDRs as well as exact addresses and names."""
    proxies = ServerConfig(trusted_proxies="10.0.0.0/8, lb.internal, ::1").trusted_proxies
    assert isinstance(proxies, TrustedProxies)
    for inside in (
        "10.1.2.3",
        "::ffff:10.9.9.9",
        "lb.internal",
        "::1",
        "10.1.2.3:51234",
        "[::1]:443",
    ):
        assert inside in proxies, inside
    for outside in ("11.0.0.1", "lb.internal.evil", "::2", "", "not an address"):
        assert outside not in proxies, outside
    forwarded = make_mocked_request(
        "GET", "/", headers={"X-Forwarded-For": "203.0.113.9, 10.4.4.4"}
    )
    assert wire.client_address(forwarded.clone(remote="10.2.2.2"), proxies) == "203.0.113.9"
    assert ConnectionPolicy(trusted_proxies=proxies).counted_as("10.2.2.2") is None
    # a proxy on this machine forwards strangers: never the operator, even from loopback
    local = make_mocked_request("GET", "/metrics").clone(remote="::1")
    assert not OperatorAuth(None, proxies).allows(local)
    assert OperatorAuth(None, TrustedProxies()).allows(local)


async def test_a_client_that_never_reads_a_large_answer_is_cut_at_the_response_deadline(tmp_path):
    """A large page asked for and never read holds the handler in drain(); once writing
    has been stalled for `response_timeout_s` the connection is reset, others served."""
    from flux import FluxIdentity
    from flux.client import FluxClient

    server = await started(tmp_path, response_timeout_s=0.5, spam_rate_per_minute=1000,
                           pending_quota=500)  # fmt: skip
    alice = FluxClient(FluxIdentity.generate(), server.url)
    bob = FluxClient(FluxIdentity.generate(), server.url)
    try:
        await alice.register()
        await bob.register()
        await bob.send(alice.address, "write to me")  # a correspondent, not a stranger
        rng = random.Random(2)
        words = ["".join(rng.choice("abcdefghijklmnop") for _ in range(7)) for _ in range(5000)]
        for _ in range(100):  # ~60 KiB each: a 6 MB page, more than any socket buffers
            await alice.send(bob.address, " ".join(rng.choice(words) for _ in range(7500)))
        token = await bob.authenticate()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: small window
        sock.bind(("127.0.0.2", 0))
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(f"GET /inbox/{bob.address}?limit=100 HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Bearer {token}\r\n\r\n".encode())  # fmt: skip
        await writer.drain()
        guard = server.runner.server
        assert guard.open_per_address().get("127.0.0.2") == 1
        for _ in range(100):  # never reading; the server must give up within 10 s
            if "127.0.0.2" not in guard.open_per_address():
                break
            await asyncio.sleep(0.1)  # a poll interval, not an assertion on time
        assert "127.0.0.2" not in guard.open_per_address()
        got = await hung_up(reader)  # what had been buffered for us, then the reset
        assert got is True or len(got) < 6_000_000  # cut, not a whole answer
        writer.close()
        assert await served(server)  # everyone else is still served
        assert (await bob.inbox(limit=5)).messages  # and a reading client gets its page
    finally:
        await bob.close()
        await alice.close()
        await server.stop()
