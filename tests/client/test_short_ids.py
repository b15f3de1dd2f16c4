"""FluxClient takes short ids (docs/API.md, "Short ids") in every call naming a message:
against a real FLUX server, and `get` against the real prototype server (which has no
/message route: the client resolves the prefix in the listing, as FLUX's server would)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from flux import FluxIdentity
from flux.client import AmbiguousId, FluxClient, FluxClientError
from flux.protocol import compose

A1 = "abcd1234" + "0" * 24
A2 = "abcd1234" + "1" * 24
B = "12345678" + "f" * 24


async def send_as(client: FluxClient, to: str, content: str, message_id: str, **kw) -> None:
    out = compose(client.identity, to, content, now_ms=int(time.time() * 1000),
                  message_id=message_id, **kw)  # fmt: skip
    answer = await client._request("POST", "/send", json=out.primary, auth=False)
    assert answer["recipients"] == {to: "stored"}


@pytest.fixture
async def pair(make_client):
    alice, bob = await make_client(), await make_client()
    await send_as(alice, bob.address, "one", A1, subject="first")
    await send_as(alice, bob.address, "two", A2)
    await send_as(alice, bob.address, "three", B)
    return alice, bob


async def test_every_call_takes_a_prefix(pair) -> None:
    alice, bob = pair
    assert (await bob.get("12345678"))["id"] == B
    assert [m["id"] for m in await bob.thread("12345678")] == [B]
    assert await bob.tag("abcd12340", add=["work"]) == ["work"]
    assert await bob.move("abcd12341", "later") == "later"
    assert await bob.read("12345678") == [B]
    assert await bob.delete(["abcd12340", {"id": "abcd12341", "from": alice.address}]) == [A1, A2]


async def test_an_ambiguous_prefix_raises_ambiguous_id_with_candidates(pair) -> None:
    alice, bob = pair
    for call in (bob.get("abcd1234"), bob.read(["abcd1234"]), bob.tag("abcd1234", add=["x"]),
                 bob.move("abcd1234", "x"), bob.thread("abcd1234")):  # fmt: skip
        with pytest.raises(AmbiguousId) as caught:
            await call
        err = caught.value
        assert (err.status, err.code, err.field) == (409, "ambiguous", "id")
        assert err.body["count"] == 2
        assert err.body["candidates"] == [
            {"id": A1, "from": alice.address, "subject": "first"},
            {"id": A2, "from": alice.address},
        ]
        assert err.candidates == {A1: [alice.address], A2: [alice.address]}


async def test_bad_and_unknown_prefixes(pair) -> None:
    _, bob = pair
    with pytest.raises(FluxClientError) as caught:
        await bob.get("abcd")
    assert (caught.value.status, caught.value.code, caught.value.field) == (400, "invalid_value", "id")  # fmt: skip
    with pytest.raises(FluxClientError) as caught:
        await bob.tag("99999999", add=["x"])
    assert (caught.value.status, caught.value.code) == (404, "not_found")
    assert await bob.read("99999999") == []


async def test_another_mailbox_is_never_matched(pair, make_client) -> None:
    alice, bob = pair
    carol = await make_client()
    await send_as(alice, carol.address, "carol's", "cafe0000" + "2" * 24)
    with pytest.raises(FluxClientError) as caught:
        await bob.get("cafe0000")
    assert caught.value.status == 404
    assert (await carol.get("cafe0000"))["content"] == "carol's"


@pytest.fixture(scope="module")
def proto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from compat.proto import ProtoServer

    server = ProtoServer(tmp_path_factory.mktemp("proto")).start()
    yield server
    server.stop()


@pytest.mark.slow
async def test_get_by_prefix_against_the_prototype_server(proto) -> None:
    from compat.proto import SECRET

    alice, bob = (FluxClient(FluxIdentity.generate(), proto.url, legacy_secret=SECRET)
                  for _ in range(2))  # fmt: skip
    try:
        sent = await alice.send(bob.address, "hello", subject="Hi")
        got = await bob.get(sent.id[:10])
        assert got["id"] == sent.id and got["content"] == "hello"
        with pytest.raises(FluxClientError) as caught:
            await bob.get("0" * 8 if not sent.id.startswith("0" * 8) else "f" * 8)
        assert (caught.value.status, caught.value.code) == (404, "not_found")
    finally:
        await alice.close()
        await bob.close()
