"""Review of issue 10 (X-Forwarded-For and the per-address budgets): a client that claims a
new address on every request gets no new budget, with or without FLUX_TRUSTED_PROXIES,
with exact and CIDR entries. Real servers on 127.0.0.1; the "proxy" is a client bound to a
trusted loopback address that writes the lines a proxy would.

Found and fixed (fair.client_bucket): a proxy that writes the client's port after its
address (Azure's Application Gateway: `203.0.113.7:51234`) made every connection of one
client a new client with a budget of its own.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "client"))
from client_helpers import WAIT

from flux.server.fair import client_bucket

#: three requests at once, then one in 10 s; no waiting: the fourth is a 429
STINGY = {"requests_per_address_per_s": 0.1, "request_burst_per_address": 3,
          "request_delay_max_s": 1.0}  # fmt: skip


async def statuses(server: Any, source: str, forwarded: list[list[str]]) -> list[int]:
    """One request per entry, each carrying those X-Forwarded-For lines."""
    out = []
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(local_addr=(source, 0), force_close=True),
        timeout=aiohttp.ClientTimeout(total=WAIT),
    ) as http:
        for lines in forwarded:
            headers = [("X-Forwarded-For", line) for line in lines]
            async with http.get(server.url + "/health", headers=headers) as r:
                await r.read()
                out.append(r.status)
    return out


@pytest.mark.parametrize("running", [STINGY], indirect=True)
async def test_without_trusted_proxies_claimed_addresses_are_ignored(running):
    claims = [[f"198.51.100.{n}"] for n in range(6)]
    assert await statuses(running, "127.0.0.2", claims) == [200] * 3 + [429] * 3


@pytest.mark.parametrize(
    "running",
    [{**STINGY, "trusted_proxies": frozenset({"127.0.0.2"})},
     {**STINGY, "trusted_proxies": frozenset({"127.0.0.0/30"})}],
    indirect=True,
)  # fmt: skip
async def test_claims_left_of_what_the_proxy_wrote_make_no_new_client(running):
    # the client's own line (claims, rotated) and the proxy's appended line (HAProxy),
    # or one line the proxy extended (nginx); a trusted hop in between is skipped
    forms = [[f"198.51.100.{n}", "203.0.113.7"] for n in range(3)]
    forms += [[f"198.51.100.{n}, 203.0.113.7"] for n in range(3, 5)]
    forms += [["198.51.100.9, 203.0.113.7, 127.0.0.2"]]
    assert await statuses(running, "127.0.0.2", forms) == [200] * 3 + [429] * 3
    # another forwarded client is served: the limit is the client's, not the proxy's
    assert await statuses(running, "127.0.0.2", [["203.0.113.8"]]) == [200]


@pytest.mark.parametrize("running", [{**STINGY, "trusted_proxies": frozenset({"127.0.0.2"})}],
                         indirect=True)  # fmt: skip
async def test_a_proxy_that_writes_the_clients_port_does_not_make_new_clients(running):
    """Attack: each new connection of one client comes with a new source port, which a
    proxy such as Azure's Application Gateway writes into X-Forwarded-For. Before the fix
    each was a new budget: six answers 200."""
    ports = [[f"203.0.113.7:{40000 + n}"] for n in range(4)]
    ports += [[f"[2001:db8::1]:{40000 + n}"] for n in range(4)]
    assert await statuses(running, "127.0.0.2", ports) == [200] * 3 + [429] + [200] * 3 + [429]


def test_client_buckets_ignore_ports_and_brackets():
    assert client_bucket("203.0.113.7:51234") == client_bucket("203.0.113.7") == "203.0.113.7"
    assert client_bucket("[2001:db8::1]:443") == client_bucket("2001:db8::1:2") == "2001:db8::/64"
    assert client_bucket("::ffff:203.0.113.7") == "203.0.113.7"
    assert client_bucket("2001:db8:0:1::1") != client_bucket("2001:db8:0:2::1")  # other /64s
