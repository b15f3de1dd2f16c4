"""Fast failure (PROTOCOL.md §10.3): what the delivery worker treats as permanent, and the
words a sender reads for each failure. Real resolvers, sockets and sessions; a name that
does not exist is under `.invalid` (RFC 6761 §6.4), answered without any DNS query.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from cli.cli_helpers import free_port
from flux.federation.delivery import (
    DeliveryFailed,
    Settlement,
    clock_time,
    delivery_changes,
    failure_words,
    http_words,
)
from flux.federation.netguard import GuardedResolver, NameNotFound, PeerPolicy, guarded_session
from flux.store.base import Lease, Outbound, Queued

POLICY = PeerPolicy.from_settings(allow=["127.0.0.0/8"])


class AskedResolver(AbstractResolver):
    """A resolver that records what it is asked and answers with `error` (or loopback)."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.asked: list[str] = []
        self.error = error

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        if self.error is not None:
            raise self.error
        return [{"hostname": host, "host": "127.0.0.1", "port": port, "family": family,
                 "proto": 0, "flags": 0}]  # fmt: skip

    async def close(self) -> None:
        return None


@pytest.mark.parametrize("host", ["nowhere.invalid", "a.b.INVALID", "x.invalid."])
async def test_an_invalid_name_is_nxdomain_without_a_query(host: str) -> None:
    inner = AskedResolver()
    with pytest.raises(NameNotFound) as missing:
        await GuardedResolver(POLICY, inner).resolve(host, 443)
    assert inner.asked == [] and missing.value.host == host


async def test_nxdomain_from_the_resolver_is_permanent_and_a_resolver_timeout_is_not() -> None:
    gone = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    with pytest.raises(NameNotFound):
        await GuardedResolver(POLICY, AskedResolver(gone)).resolve("gone.example", 443)
    again = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    with pytest.raises(socket.gaierror) as transient:
        await GuardedResolver(POLICY, AskedResolver(again)).resolve("slow.example", 443)
    assert not isinstance(transient.value, NameNotFound)
    # aiohttp's threaded resolver wraps gaierror in an OSError: still NXDOMAIN
    wrapped = OSError(None, "Name or service not known")
    wrapped.__cause__ = gone
    with pytest.raises(NameNotFound):
        await GuardedResolver(POLICY, AskedResolver(wrapped)).resolve("gone.example", 443)


async def _failure(url: str, timeout_s: float = 10.0) -> DeliveryFailed:
    async with guarded_session(POLICY, limit=2, limit_per_host=2) as http:
        try:
            async with http.post(url, data=b"{}", timeout=aiohttp.ClientTimeout(total=timeout_s)):
                pass
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return DeliveryFailed.of(exc, timeout_s)
    raise AssertionError("the request did not fail")


async def test_a_real_nxdomain_through_aiohttp_is_permanent_in_words() -> None:
    failed = await _failure("http://nowhere.invalid/federation/deliver")
    assert failed.permanent
    assert failed.words == "the domain nowhere.invalid does not exist (no such domain)"
    assert str(failed).startswith("ClientConnectorDNSError: ")  # the operator's detail


async def test_connection_refused_and_timeout_are_transient_in_words() -> None:
    refused = await _failure(f"http://127.0.0.1:{free_port()}/federation/deliver")
    assert not refused.permanent
    assert refused.words == "the receiving server did not answer (connection refused)"

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads, never answers

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        slow = await _failure(f"http://127.0.0.1:{port}/federation/deliver", timeout_s=0.3)
    finally:
        server.close()
    assert not slow.permanent
    assert slow.words == "the receiving server did not answer within 0.3 s (timeout)"


def test_answers_in_words() -> None:
    assert http_words(503) == "the receiving server is temporarily unavailable (HTTP 503)"
    assert http_words(500) == "the receiving server failed (HTTP 500)"
    assert http_words(429).endswith("(HTTP 429)") and http_words(400).endswith("(HTTP 400)")
    assert failure_words(ValueError("odd"), 1.0) == (
        "the receiving server could not be reached (ValueError)", False)  # fmt: skip
    assert clock_time(0) == "00:00 UTC"


def _queued(qid: int, msg_id: str, *rcpts: str) -> Queued:
    env: dict[str, Any] = {"id": msg_id, "from": "fx1" + "a" * 40}
    return Queued(qid, Outbound("b.example", env, "h" + msg_id, rcpts, "none", 0))


def test_delivery_changes_say_what_each_recipient_came_to() -> None:
    one, two, three = _queued(1, "1", "x", "y"), _queued(2, "2", "z"), _queued(3, "3", "w")
    lease = Lease("b.example", "w1", [one, two, three], attempts=2)
    verdict = Settlement(
        [1, 2], [(one, ["y"], "the receiving server does not host this address")],
        "HTTP 503 unavailable", "the receiving server is temporarily unavailable (HTTP 503)",
    )  # fmt: skip
    sender = "fx1" + "a" * 40
    changes = delivery_changes(lease, verdict, retry_at=3_600_000, now=1_000)
    assert changes == {
        (sender, "1"): {
            "x": {"state": "delivered", "at": 1_000},
            "y": {"state": "bounced", "at": 1_000,
                  "reason": "the receiving server does not host this address"},
        },
        (sender, "2"): {"z": {"state": "delivered", "at": 1_000}},
        (sender, "3"): {"w": {
            "state": "queued", "at": 1_000, "attempts": 3, "next_retry_at": 3_600_000,
            "error": "the receiving server is temporarily unavailable (HTTP 503); "
                     "next try at 01:00 UTC",
        }},
    }  # fmt: skip
    # nothing retried and nothing settled: nothing changes
    assert delivery_changes(lease, Settlement([], [], None), retry_at=None, now=1) == {}
