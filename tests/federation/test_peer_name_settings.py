"""Settings that name servers or hosts are compared in lower case (PROTOCOL.md §2.4, §10.5):
`FLUX_INSECURE_PEERS=Peer.Example:8443` means the server `peer.example:8443`. Before, such
a name was kept as written and never matched, so that peer was silently reached over
HTTPS (and mail to it waited for days). Invite codes are secrets and keep their case.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp

from cli.cli_helpers import free_port
from flux.protocol import Identity, compose
from flux.server.config import ServerConfig
from flux.server.runner import start_server
from flux.store.base import ListQuery


def test_name_settings_are_lower_cased_from_every_source(tmp_path: Path) -> None:
    env = {
        "FLUX_INSECURE_PEERS": "Peer.Example:8443, LOCALHOST:1",
        "FLUX_ALLOW_PRIVATE_PEERS": "Mesh.Example,10.0.0.0/8,FE80::/10",
        "FLUX_TRUSTED_PROXIES": "Proxy.Example,FD00::1",
        "FLUX_INVITES": "AbC-123,xyz",
    }
    config = ServerConfig.from_env(env, data_dir=tmp_path)
    assert config.insecure_peers == {"peer.example:8443", "localhost:1"}
    assert config.allow_private_peers == {"mesh.example", "10.0.0.0/8", "fe80::/10"}
    assert set(config.trusted_proxies) == {"proxy.example", "fd00::1"}
    assert "fd00::1" in config.trusted_proxies
    assert config.invites == {"AbC-123", "xyz"}  # codes are matched exactly
    # the same through a TOML file and through values given directly
    toml = tmp_path / "flux.toml"
    toml.write_text('insecure_peers = ["A.Example:80"]\nallow_private_peers = "B.Example"\n')
    from_file = ServerConfig.from_toml(toml, data_dir=tmp_path)
    assert (from_file.insecure_peers, from_file.allow_private_peers) == (
        {"a.example:80"}, {"b.example"},
    )  # fmt: skip
    direct = ServerConfig(data_dir=tmp_path, insecure_peers=frozenset({"C.Example"}))
    assert direct.insecure_peers == {"c.example"}
    assert direct.peer_policy.name_allowed("c.example", None)


async def test_a_peer_listed_with_capitals_is_reached_over_plain_http(tmp_path: Path) -> None:
    """B is `localhost:<port>` over plain HTTP; A lists it as `LocalHost:<port>`. A's mail
    for B arrives (before, A reached it over HTTPS, which failed, and kept the mail)."""
    b_port, a_port = free_port(), free_port()
    b_name = f"localhost:{b_port}"
    common = {"host": "127.0.0.1", "backend": "memory", "open_mode": True}
    b = await start_server(ServerConfig.from_env(  # B fetches A's keys over plain HTTP
        {"FLUX_INSECURE_PEERS": f"127.0.0.1:{a_port}"}, port=b_port, domain=b_name,
        data_dir=tmp_path / "b", **common,
    ))  # fmt: skip
    a = await start_server(ServerConfig.from_env(
        {"FLUX_INSECURE_PEERS": f"LocalHost:{b_port}"}, port=a_port,
        domain=f"127.0.0.1:{a_port}", data_dir=tmp_path / "a", **common,
    ))  # fmt: skip
    try:
        alice, bob = Identity(b"\x31" * 32), Identity(b"\x32" * 32)
        message = compose(alice, bob.address, "hi", now_ms=int(time.time() * 1000)).primary
        body = {"message": message, "domains": {bob.address: b_name}}
        async with aiohttp.ClientSession() as http, http.post(a.url + "/send", json=body) as r:
            assert r.status == 200, await r.text()
        async with asyncio.timeout(30):
            while not (await b.store.list(bob.address, ListQuery())).items:
                await asyncio.sleep(0.05)  # polling a condition, bounded by the timeout

        async def state() -> str:
            sent = await a.store.sent_message(alice.address, message["id"])
            return sent.delivery[bob.address]["state"] if sent else "none"

        async with asyncio.timeout(30):  # the answer settles A's queue just after B stored it
            while await state() != "delivered":
                await asyncio.sleep(0.05)  # polling a condition, bounded by the timeout
    finally:
        await a.stop()
        await b.stop()
