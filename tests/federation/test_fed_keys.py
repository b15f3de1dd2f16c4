"""Fetching and caching the keys servers publish (flux.federation.keys), over real TLS."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest
import trustme

from flux.federation.keys import KeyCache, KeyFetcher, parse_info
from flux.federation.netguard import PeerPolicy
from flux.protocol import InvalidValue, PublishedKey
from flux.protocol.encoding import b64d, b64e
from flux.server.config import ServerConfig
from flux.server.runner import start_server

PUB = b64e(bytes(32))
OTHER = b64e(bytes([1]) * 32)
#: these tests fetch from 127.0.0.1, which the default outbound policy refuses
LOOPBACK = PeerPolicy.from_settings(["127.0.0.1/32"])


def test_parse_info_merges_current_and_retired_keys() -> None:
    keys = parse_info(
        {
            "keys": [{"pub": PUB, "valid_from": 5, "valid_until": None}],
            "retired_keys": [{"pub": OTHER, "valid_from": 1, "valid_until": 4}],
        }
    )
    assert keys == (PublishedKey(bytes(32), 5, None), PublishedKey(bytes([1]) * 32, 1, 4))


@pytest.mark.parametrize(
    "body",
    [
        None, [], {}, {"keys": []}, {"keys": ["x"]}, {"keys": [{"pub": "short"}]},
        {"keys": [{"pub": PUB, "valid_from": 1.5}]}, {"keys": [{"pub": PUB, "valid_until": True}]},
        {"keys": [{"pub": PUB}] * 17}, {"keys": 5}, {"keys": "abc"},
        {"keys": [{"pub": PUB}], "retired_keys": 7}, {"keys": {"pub": PUB}},
    ],
)  # fmt: skip
def test_parse_info_refuses_what_is_not_a_key_list(body: object) -> None:
    with pytest.raises(InvalidValue):
        parse_info(body)


def test_cache_refresh_rules() -> None:
    cache = KeyCache(max_age_ms=1_000, miss_interval_ms=100)
    assert cache.wants_fetch("a.example", 0)
    cache.put("a.example", (PublishedKey(bytes(32)),), 0)
    assert not cache.wants_fetch("a.example", 50)
    assert not cache.wants_fetch("a.example", 50, after_miss=True)  # misses cannot force it
    assert cache.wants_fetch("a.example", 100, after_miss=True)  # ...more than once a minute
    assert not cache.wants_fetch("a.example", 999)
    assert cache.wants_fetch("a.example", 1_000)  # stale
    cache.fetch_failed("a.example", 2_000)  # keeps the old keys, tries again after a while
    assert cache.lookup("a.example") == (PublishedKey(bytes(32)),)
    assert not cache.wants_fetch("a.example", 2_050)
    assert cache.wants_fetch("a.example", 2_100)


def test_a_failed_fetch_is_not_repeated_on_a_signature_miss() -> None:
    cache = KeyCache(max_age_ms=1_000, miss_interval_ms=100)
    cache.fetch_failed("gone.example", 0)
    assert not cache.wants_fetch("gone.example", 50, after_miss=True)  # no fetch per request
    assert cache.wants_fetch("gone.example", 100)


def test_cache_is_bounded_and_forgets_the_least_recently_used() -> None:
    cache = KeyCache(max_servers=3)
    key = (PublishedKey(bytes(32)),)
    for n in range(3):
        cache.put(f"s{n}.example", key, 0)
    assert cache.lookup("s0.example") == key  # used: now the most recent
    cache.put("s3.example", key, 0)
    cache.fetch_failed("s4.example", 0)  # failures take a slot too, and evict likewise
    assert len(cache) == 3
    assert cache.lookup("s1.example") == () and cache.lookup("s2.example") == ()
    assert cache.lookup("s0.example") == key and cache.lookup("s3.example") == key


async def test_unlisted_loopback_is_refused_without_a_connection(tmp_path: Path) -> None:
    server = await serve(tmp_path, None)
    try:
        name = f"127.0.0.1:{server.port}"
        async with aiohttp.ClientSession() as http:
            # listed insecure: allowed (exactly that name); not listed: no request is made
            listed = KeyFetcher(http, KeyCache(), lambda: 0, insecure_peers=[name])
            assert len(await listed.keys(name)) == 1
            guarded = KeyFetcher(http, KeyCache(), lambda: 0, insecure_peers=["127.0.0.1:1"])
            assert await guarded.keys(name) == ()
    finally:
        await server.stop()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_files(ca: trustme.CA, tmp: Path) -> tuple[Path, Path]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key_path))
    return cert_path, key_path


async def serve(tmp: Path, tls: tuple[Path, Path] | None):
    overrides = {"tls_cert": tls[0], "tls_key": tls[1]} if tls else {}
    config = ServerConfig.from_env(
        {}, host="127.0.0.1", port=0, domain="127.0.0.1", data_dir=tmp, backend="memory",
        **overrides,
    )  # fmt: skip
    return await start_server(config)


async def published(url: str, ssl_context: ssl.SSLContext | bool) -> bytes:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{url}/federation/info", ssl=ssl_context) as r,
    ):
        return b64d((await r.json())["keys"][0]["pub"])


async def test_keys_are_fetched_over_verified_https(ca: trustme.CA, tmp_path: Path) -> None:
    server = await serve(tmp_path, tls_files(ca, tmp_path))
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    now = [1_000]
    try:
        assert server.url.startswith("https://")
        name = f"127.0.0.1:{server.port}"
        async with aiohttp.ClientSession() as http:
            fetcher = KeyFetcher(
                http, KeyCache(), lambda: now[0], ssl_context=trusting, policy=LOOPBACK
            )
            keys = await fetcher.keys(name)
            assert [k.pub for k in keys] == [await published(server.url, trusting)]
            # A client that does not trust the test CA gets nothing: verification is on.
            strict = KeyFetcher(http, KeyCache(), lambda: now[0], policy=LOOPBACK)
            assert await strict.keys(name) == ()
            # Plain HTTP to a TLS server is not attempted unless the peer is listed insecure.
            assert fetcher.info_url(name).startswith("https://")
    finally:
        await server.stop()


async def test_plain_http_only_for_listed_insecure_peers(tmp_path: Path) -> None:
    server = await serve(tmp_path, None)
    try:
        name = f"127.0.0.1:{server.port}"
        async with aiohttp.ClientSession() as http:
            listed = KeyFetcher(http, KeyCache(), lambda: 0, insecure_peers=[name])
            assert len(await listed.keys(name)) == 1
            unlisted = KeyFetcher(http, KeyCache(), lambda: 0, policy=LOOPBACK)
            assert await unlisted.keys(name) == ()  # https to a plain server fails
    finally:
        await server.stop()


@pytest.mark.parametrize(
    "name", ["evil.example/x", "https://a.example", "a.example:99999999", "A B"]
)
def test_only_server_names_are_fetched(name: str) -> None:
    fetcher = KeyFetcher(None, KeyCache(), lambda: 0)  # type: ignore[arg-type]
    with pytest.raises(InvalidValue):
        fetcher.info_url(name)
