"""Which address a request comes from, behind trusted proxies or not (wire.client_address)."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from flux.server.wire import client_address

LB = frozenset({"10.0.0.1", "10.0.0.2"})


@pytest.mark.parametrize(
    ("remote", "forwarded", "expected"),
    [
        ("203.0.113.9", None, "203.0.113.9"),
        ("203.0.113.9", "198.51.100.7", "203.0.113.9"),  # not a proxy: its header is ignored
        ("10.0.0.1", "198.51.100.7", "198.51.100.7"),
        ("10.0.0.1", "1.2.3.4, 198.51.100.7", "198.51.100.7"),  # the left part is a claim
        ("10.0.0.1", "198.51.100.7, 10.0.0.2", "198.51.100.7"),  # two proxies deep
        ("10.0.0.1", None, "10.0.0.1"),
    ],
)
def test_client_address(remote: str, forwarded: str | None, expected: str) -> None:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    request = make_mocked_request("POST", "/account/login", headers=headers)
    assert client_address(request.clone(remote=remote), LB) == expected
