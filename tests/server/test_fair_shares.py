"""Fair shares (issue 10 §2): strangers confined to their share of a recipient's quota,
submissions and registrations limited per client address, already-expired mail refused.
Real servers on 127.0.0.1 (memory and SQLite stores; the store rules run on PostgreSQL
too in tests/store/test_contract.py)."""

from __future__ import annotations

import hashlib

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from flux.protocol import Identity
from flux.server.fair import client_bucket
from flux.server.wire import client_address

SHARE = {"pending_quota": 12, "stranger_pending_total": 5, "stranger_pending_per_sender": 2}


def fresh_key(n: int) -> Identity:
    return Identity(hashlib.sha256(f"throwaway-{n}".encode()).digest())


@pytest.mark.parametrize("sqlite", [False, True], ids=["memory", "sqlite"])
async def test_throwaway_keys_cannot_lock_out_real_correspondents(make_server, alice, bob, sqlite):
    """The case: 26 fresh keys filled the whole quota and bob then got 429. Now they fill
    only the stranger share; bob, whom alice wrote to, is stored; a stranger's refusal is
    429 naming `from` and saying it is the stranger share."""
    srv = await make_server(sqlite=sqlite, **SHARE)
    await srv.register(alice, bob)
    await srv.send(srv.message(alice, bob, "hello bob"))  # alice has written to bob
    answers = []
    for n in range(26):
        resp = await srv.client.post("/send", json=srv.message(fresh_key(n), alice, f"buy {n}"))
        answers.append((resp.status, await resp.json()))
    assert [s for s, _ in answers].count(200) == 5
    refused = [a for s, a in answers if s != 200]
    assert {s for s, _ in answers if s != 200} == {429}
    assert {(a["code"], a["field"]) for a in refused} == {("quota_exceeded", "from")}
    assert "stranger share" in refused[0]["error"]
    for n in range(7):  # the rest of the quota is bob's
        answer = await srv.send(srv.message(bob, alice, f"real mail {n}"))
        assert answer["recipients"][alice.address] == "stored"
    # the whole quota is still the limit for everyone
    over = await srv.send(srv.message(bob, alice, "one too many"), expect=429)
    assert over["field"] == "to"


async def test_a_stranger_over_websocket_is_confined_too(make_server, alice, mallory):
    srv = await make_server(**SHARE)
    await srv.register(alice, mallory)
    await srv.login(mallory)
    ws = await srv.ws(mallory)
    got = []
    for n in range(3):
        await ws.send_json({"action": "send", "message": srv.message(mallory, alice, f"hi {n}")})
        got.append(await ws.receive_json(timeout=5))
    await ws.close()
    assert [g["ok"] for g in got] == [True, True, False]
    assert (got[2]["code"], got[2]["field"]) == ("quota_exceeded", "from")


async def test_replying_makes_a_stranger_known(make_server, alice, mallory):
    srv = await make_server(**SHARE)
    await srv.register(alice, mallory)
    for n in range(2):
        await srv.send(srv.message(mallory, alice, f"first contact {n}"))
    await srv.send(srv.message(mallory, alice, "third"), expect=429)
    await srv.send(srv.message(alice, mallory, "ok, I know you now"))
    await srv.send(srv.message(mallory, alice, "third"))


@pytest.mark.parametrize("sqlite", [False, True], ids=["memory", "sqlite"])
async def test_mail_whose_expires_has_passed_is_refused_naming_expires(
    make_server, alice, bob, sqlite
):
    srv = await make_server(sqlite=sqlite)
    await srv.register(alice, bob)
    past = srv.message(alice, bob, "gone already", expires=srv.clock.now - 1)
    answer = await srv.send(past, expect=400)
    assert answer["field"] == "expires"
    assert await srv.store.get(bob.address, past["id"], alice.address) is None
    soon = srv.message(alice, bob, "not yet", expires=srv.clock.now + 60_000)
    await srv.send(soon)
    assert await srv.store.pending_count(bob.address) == 1  # counted while it can be read
    zero = srv.message(alice, bob, "read once", expires=0)
    await srv.send(zero)


async def test_expired_mail_over_websocket_is_refused(make_server, alice, bob):
    srv = await make_server()
    await srv.register(alice, bob)
    await srv.login(alice)
    ws = await srv.ws(alice)
    msg = srv.message(alice, bob, "late", expires=srv.clock.now - 1000)
    await ws.send_json({"action": "send", "message": msg})
    got = await ws.receive_json(timeout=5)
    await ws.close()
    assert (got["ok"], got["field"]) == (False, "expires")


@pytest.mark.parametrize("proxies", ["127.0.0.1", "127.0.0.0/8", "10.0.0.0/8, 127.0.0.0/24"])
async def test_submissions_are_limited_per_client_address(make_server, alice, bob, proxies):
    """One address, many keys: the address's budget holds (Retry-After given); behind a
    trusted proxy (listed exactly or as a network) another client has its own."""
    srv = await make_server(submit_per_ip_per_minute=3, trusted_proxies=proxies)
    await srv.register(alice, bob)
    me = {"X-Forwarded-For": "203.0.113.5"}
    for n in range(3):
        resp = await srv.client.post(
            "/send", json=srv.message(fresh_key(n), bob, f"m{n}"), headers=me
        )
        assert resp.status == 200, await resp.text()
    resp = await srv.client.post("/send", json=srv.message(fresh_key(9), bob, "m9"), headers=me)
    assert resp.status == 429 and (await resp.json())["code"] == "rate_limited"
    assert int(resp.headers["Retry-After"]) >= 1
    other = {"X-Forwarded-For": "198.51.100.7"}
    resp = await srv.client.post("/send", json=srv.message(alice, bob, "mine"), headers=other)
    assert resp.status == 200


async def test_websocket_sends_count_against_the_address_too(make_server, alice, bob):
    srv = await make_server(submit_per_ip_per_minute=2)
    await srv.register(alice, bob)
    await srv.login(alice)
    ws = await srv.ws(alice)
    codes = []
    for n in range(3):
        await ws.send_json({"action": "send", "message": srv.message(alice, bob, f"ws {n}")})
        got = await ws.receive_json(timeout=5)
        codes.append(got.get("code", "ok"))
    await ws.close()
    assert codes == ["ok", "ok", "rate_limited"]


async def test_registrations_are_limited_per_client_address(make_server):
    srv = await make_server(register_per_ip_per_hour=2)
    for n in range(2):
        resp = await srv.client.post("/register", json=srv.register_body(fresh_key(n)))
        assert resp.status == 200
    resp = await srv.client.post("/register", json=srv.register_body(fresh_key(5)))
    assert resp.status == 429 and "Retry-After" in resp.headers
    resp = await srv.client.post("/account/register", json={"username": "x1", "password": "p" * 12})
    assert resp.status == 429


def test_every_forwarded_line_is_read_and_the_rightmost_untrusted_wins():
    """HAProxy appends its own X-Forwarded-For line: the first line is the client's claim."""
    headers = CIMultiDict([("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-For", "198.51.100.7")])
    request = make_mocked_request("POST", "/account/login", headers=headers)
    assert (
        client_address(request.clone(remote="10.0.0.1"), frozenset({"10.0.0.1"})) == "198.51.100.7"
    )


def test_an_ipv6_client_is_counted_by_its_64():
    assert client_bucket("2001:db8:1:2::1") == client_bucket("2001:db8:1:2:ffff::9")
    assert client_bucket("2001:db8:1:3::1") != client_bucket("2001:db8:1:2::1")
    assert client_bucket("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_bucket(None) == ""
