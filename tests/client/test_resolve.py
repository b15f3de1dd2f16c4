"""Recipients, name resolution and remembered bindings (BRIEF §Routing)."""

from __future__ import annotations

import json
import stat

import pytest

from flux import FluxIdentity
from flux.client import BindingChanged, KnownBindings, parse_recipient, resolve_name, resolve_url
from flux.client.errors import FluxClientError
from flux.protocol.errors import InvalidValue

ADDR = "fx1" + "ab" * 20


def test_the_three_ways_to_write_a_recipient():
    assert parse_recipient(ADDR).address == ADDR
    at_domain = parse_recipient(f"{ADDR}@Mail.Example.org")
    assert (at_domain.address, at_domain.domain) == (ADDR, "mail.example.org")
    named = parse_recipient("bob@example.org:8443")
    assert named.needs_resolution and named.handle == "bob@example.org:8443"
    for bad in ("bob", "@example.org", "bob@", "b o b@example.org", "fx1zz"):
        with pytest.raises(InvalidValue):
            parse_recipient(bad)


def test_names_resolve_over_https_except_on_localhost():
    assert resolve_url("example.org", "bob") == "https://example.org/federation/resolve/bob"
    assert (
        resolve_url("example.org:8443", "bob") == "https://example.org:8443/federation/resolve/bob"
    )
    assert resolve_url("localhost:8765", "bob") == "http://localhost:8765/federation/resolve/bob"
    assert resolve_url("127.0.0.1:9", "a/b") == "http://127.0.0.1:9/federation/resolve/a%2Fb"


def test_bindings_are_remembered_and_a_change_is_raised(tmp_path):
    path = tmp_path / "known.json"
    bindings = KnownBindings(path)
    bindings.check("Bob@Example.org", ADDR, "pub")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["bindings"]["bob@example.org"]["address"] == ADDR
    bindings.check("bob@example.org", ADDR, "pub")  # the same again is fine

    reloaded = KnownBindings(path)
    other = "fx1" + "cd" * 20
    with pytest.raises(BindingChanged) as caught:
        reloaded.check("bob@example.org", other, "pub2")
    assert (caught.value.known, caught.value.seen) == (ADDR, other)
    assert caught.value.code == "binding_changed"

    reloaded.accept("bob@example.org", other, "pub2")
    assert KnownBindings(path).get("bob@example.org") == other
    reloaded.forget("bob@example.org")
    assert KnownBindings(path).get("bob@example.org") is None


async def test_resolving_a_hosted_address_at_a_real_server(make_client, server):
    bob = await make_client()
    alice = await make_client()
    session = await alice._http()
    url = f"{server.url}/federation/resolve/{bob.address}"
    address, pub = await resolve_name(session, "localhost", bob.address, url=url)
    assert (address, pub) == (bob.address, bob.identity.pub_b64())
    assert await alice.fetch_key(bob.address) == pub

    stranger = FluxIdentity.generate().address
    with pytest.raises(FluxClientError) as caught:
        await resolve_name(
            session, "localhost", stranger, url=f"{server.url}/federation/resolve/{stranger}"
        )
    assert caught.value.code == "resolve_failed" and caught.value.status == 404


async def test_online_verification_checks_seals_against_published_keys(make_client):
    alice, bob = await make_client(), await make_client()
    sent = await alice.send(bob.address, "sealed?")
    msg = await bob.get(sent.id)
    verified = await bob.verify_online(msg)
    assert verified.hops >= 1 and verified.chain.sealed
    assert verified.sender == alice.address


async def test_a_domain_delegates_to_its_flux_server_through_well_known(server, make_client):
    import aiohttp
    from aiohttp import web

    bob = await make_client()
    # The domain's own web site (not FLUX) names the FLUX server that serves it.
    site = web.Application()
    flux_server = server.url.removeprefix("http://")

    async def well_known(_: web.Request) -> web.Response:
        return web.json_response({"server": flux_server})

    site.router.add_get("/.well-known/flux", well_known)
    runner = web.AppRunner(site)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    domain = f"127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with aiohttp.ClientSession() as session:
            address, pub = await resolve_name(session, domain, bob.identity.address)
            # and a FLUX server answers for itself
            async with session.get(f"{server.url}/.well-known/flux") as r:
                assert (await r.json())["ok"] is True
    finally:
        await runner.cleanup()
    assert (address, pub) == (bob.identity.address, bob.identity.pub_b64())
