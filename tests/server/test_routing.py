"""Routing at submission: `{"message", "domains"}` places recipients at other domains,
which are queued (never an open relay); bad routing input is a clear 400 or 403.

Remote domains here are closed ports on 127.0.0.1, so the delivery worker's attempts fail
locally and the queued rows stay put for the assertions (tests never leave 127.0.0.1)."""

from __future__ import annotations

import pytest

from flux.protocol import Identity

ELSEWHERE = "localhost:9"  # a name: IP literals of private ranges are refused at submission


async def test_remote_recipients_are_queued_and_local_ones_stored(srv, alice, bob) -> None:
    await srv.register(alice, bob)
    carol = Identity.generate()
    msg = srv.message(alice, bob, cc=[carol.address])
    body = await srv.send({"message": msg, "domains": {carol.address: ELSEWHERE}})
    assert body["recipients"] == {bob.address: "stored", carol.address: "queued"}
    again = await srv.send({"message": msg, "domains": {carol.address: ELSEWHERE}})
    assert again["duplicate"] is True and again["recipients"][carol.address] == "duplicate"
    stats = await srv.get("/stats")
    assert stats["queue"]["queued"] == 1
    assert stats["queue"]["destinations"][0]["destination"] == ELSEWHERE


async def test_own_domain_in_domains_means_local(srv, alice, bob) -> None:
    await srv.register(alice, bob)
    msg = srv.message(alice, bob)
    body = await srv.send({"message": msg, "domains": {bob.address: srv.config.domain}})
    assert body["recipients"] == {bob.address: "stored"}


async def test_no_open_relay(srv, alice, bob) -> None:
    stranger = Identity.generate()  # not hosted here
    msg = srv.message(stranger, bob)
    body = await srv.send({"message": msg, "domains": {bob.address: ELSEWHERE}}, expect=403)
    assert body["code"] == "relay_denied" and body["field"] == "domains"
    assert (await srv.get("/stats"))["queue"]["queued"] == 0


@pytest.mark.parametrize(
    ("domains", "status", "field"),
    [
        ([], 400, "domains"),
        ({"not-an-address": ELSEWHERE}, 400, "domains"),
        ({"BOB": ELSEWHERE}, 400, "domains"),
        ({"{bob}": 7}, 400, "domains.{bob}"),
        ({"{bob}": "https://evil.example/x"}, 400, "domains.{bob}"),
        ({"{bob}": "UPPER.example"}, 400, "domains.{bob}"),
        ({"{carol}": ELSEWHERE}, 400, "domains.{carol}"),  # not a recipient of this copy
    ],
)
async def test_bad_domains_are_400_naming_the_field(
    srv, alice, bob, domains, status, field
) -> None:
    await srv.register(alice, bob)
    carol = Identity.generate()
    names = {"{bob}": bob.address, "{carol}": carol.address}
    if isinstance(domains, dict):
        domains = {names.get(k, k): v for k, v in domains.items()}
    body = await srv.send({"message": srv.message(alice, bob), "domains": domains}, expect=status)
    expected = field.replace("{bob}", bob.address).replace("{carol}", carol.address)
    assert (
        body["code"] in ("wrong_type", "invalid_value", "invalid_address")
        and body["field"] == expected
    )
    assert (await srv.get("/stats"))["store"]["messages"] == 0


async def test_ws_send_takes_domains_too(srv, alice, bob) -> None:
    await srv.register(alice, bob)
    carol = Identity.generate()
    await srv.login(alice)
    ws = await srv.ws(alice)
    msg = srv.message(alice, carol)
    await ws.send_json({"action": "send", "message": msg, "domains": {carol.address: ELSEWHERE}})
    answer = await ws.receive_json(timeout=5)
    await ws.close()
    assert answer["ok"] is True and answer["recipients"] == {carol.address: "queued"}
