"""Login starvation (issue 10 §2): argon2id work is shared fairly between client addresses
and failed logins are limited per address and per username, behind a trusted proxy that
appends its own X-Forwarded-For line. Real logins against a real server, concurrent and
bounded in number; the assertions are on order and outcomes, never on time."""

from __future__ import annotations

import asyncio

import pytest
from accounts_helpers import PASSWORD

from flux.server.app import PARTS

PROXY = {"trusted_proxies": "127.0.0.1"}


def via(address: str, claim: str = "6.6.6.6") -> list[tuple[str, str]]:
    """Headers as HAProxy sends them: the client's own line, then the proxy's."""
    return [("X-Forwarded-For", claim), ("X-Forwarded-For", address)]


async def login(srv, username: str, address: str, password: str = "wrong password!") -> int:
    resp = await srv.client.post("/account/login", json={"username": username, "password": password},
                                 headers=via(address))  # fmt: skip
    await resp.read()
    return resp.status


async def test_a_real_login_is_served_while_usernames_are_rotated(make_server):
    """Six attacking addresses keep four logins each queued (a new username every time);
    the real login from another address is served after at most one job of each client
    waiting (round robin) plus the slot in use, where a FIFO queue would put all 24 ahead."""
    srv = await make_server(kdf_slots=1, kdf_per_client=4, kdf_queue=64, **PROXY)
    await srv.register("alice")
    kdf = srv.client.server.app[PARTS]["accounts"].kdf
    attackers = [f"203.0.113.{n}" for n in range(1, 7)]
    attack = [asyncio.create_task(login(srv, f"user{a[-1]}x{k}", a)) for a in attackers for k in range(4)]
    for _ in range(2000):  # until the attack fills its share of the queue (bounded)
        if kdf.waiting >= 20:
            break
        await asyncio.sleep(0.005)
    assert kdf.waiting >= 20
    mark = len(kdf.history)
    legit = await login(srv, "alice", "198.51.100.7", PASSWORD)
    assert legit == 200
    events = list(kdf.history)[mark:]
    queued = events.index(("queued", "198.51.100.7"))
    started = events.index(("started", "198.51.100.7"))
    ahead = [e for e in events[queued:started] if e[0] == "started"]
    assert len(ahead) <= len(attackers) + 1, ahead
    statuses = await asyncio.gather(*attack)
    assert set(statuses) <= {401, 429, 503}


async def test_one_address_cannot_queue_more_than_its_part(make_server):
    srv = await make_server(kdf_slots=1, kdf_per_client=2, **PROXY)
    statuses = await asyncio.gather(*(login(srv, f"nobody{k}", "203.0.113.9") for k in range(6)))
    assert statuses.count(401) >= 2 and set(statuses) <= {401, 429}
    assert 429 in statuses


async def test_failed_logins_are_limited_per_address_whatever_the_username(make_server):
    srv = await make_server(login_failures_per_ip=3, **PROXY)
    got = [await login(srv, f"rotating{k}", "203.0.113.7") for k in range(5)]
    assert got == [401, 401, 401, 429, 429]
    resp = await srv.client.post("/account/login", json={"username": "x", "password": "y" * 9},
                                 headers=via("203.0.113.7"))  # fmt: skip
    assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
    assert await login(srv, "rotating9", "198.51.100.1") == 401  # another client is not held


async def test_a_username_is_limited_whatever_the_address(make_server):
    """The HAProxy case: every request claims a new first line; the right-most address the
    proxy wrote is the client, and the username has a limit of its own as well."""
    srv = await make_server(login_failures_per_account=4, **PROXY)
    await srv.register("alice")
    got = []
    for k in range(6):
        resp = await srv.client.post(
            "/account/login", json={"username": "alice", "password": f"guess number {k}"},
            headers=via(f"198.51.100.{k + 1}", claim=f"10.9.9.{k}"),
        )  # fmt: skip
        got.append(resp.status)
    assert got == [401] * 4 + [429] * 2


@pytest.mark.parametrize("claims", [1, 8])
async def test_claimed_first_lines_do_not_make_new_clients(make_server, claims):
    """8 wrong passwords behind HAProxy, each with a new claimed first line: still one
    client, so the per-(username, address) limit of 5 holds."""
    srv = await make_server(**PROXY)
    await srv.register("alice")
    got = []
    for k in range(8):
        resp = await srv.client.post(
            "/account/login", json={"username": "alice", "password": f"guess number {k}"},
            headers=via("198.51.100.50", claim=f"10.0.{k % claims}.1"),
        )  # fmt: skip
        got.append(resp.status)
    assert got == [401] * 5 + [429] * 3
