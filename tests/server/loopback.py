"""Clients on other loopback addresses, each another host as far as the server knows: for
the per-address tests (request budget, proxies) against the `running` fixture (conftest)."""

from __future__ import annotations

import aiohttp

from client.client_helpers import WAIT


def session(source: str) -> aiohttp.ClientSession:
    """A client on its own loopback address `source` (e.g. 127.0.0.5)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(local_addr=(source, 0)),
        timeout=aiohttp.ClientTimeout(total=WAIT),
    )
