"""FLUX's client and CLI against a real prototype server, and against a near-miss server.

Issue 11 item 10: `FluxClient(identity, url, legacy_secret=...)` and `flux … --legacy-secret`
talk to the prototype's `main.py server` (run for real from ../shared/seed-prototype); and
from any server, an answer missing a field the client needs is a FluxClientError naming
that field (a real aiohttp server on 127.0.0.1 answers the near-miss shapes).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from cli.cli_helpers import Running, flux
from compat.proto import SECRET, ProtoServer, run_proto
from flux import FluxIdentity
from flux.client import FluxClient, FluxClientError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def proto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProtoServer]:
    server = ProtoServer(tmp_path_factory.mktemp("proto")).start()
    yield server
    server.stop()


@pytest.fixture
async def clients(proto: ProtoServer) -> AsyncIterator[list[FluxClient]]:
    made = [
        FluxClient(FluxIdentity.generate(), proto.url, legacy_secret=SECRET, reconnect_base=0.05)
        for _ in range(2)
    ]
    yield made
    for client in made:
        await client.close()


# -- the library against the prototype ------------------------------------------------------


async def test_send_fetch_peek_against_the_prototype(clients: list[FluxClient]) -> None:
    alice, bob = clients
    sent = await alice.send(bob.address, "Hello from FLUX", subject="Hi")
    # the prototype's answer, as its own client returned it, and FLUX's reading of it
    assert sent["ok"] is True and sent["delivery"] == "queued"
    assert sent.recipients == {bob.address: "queued"}
    json.dumps(sent)  # the prototype's main.py prints it so

    peek = await bob.peek()
    assert peek == 1 and peek.pending == 1 and peek.messages == []

    fetched = await bob.fetch()
    assert [m["id"] for m in fetched] == [sent.id]
    verified = bob.verify(fetched[0])  # the prototype's hop record, checked against itself
    assert verified.sender == alice.address and verified.hops == 1
    assert await bob.peek() == 0 and await bob.fetch() == []


async def test_reply_by_position_is_the_prototypes_reply_to(clients: list[FluxClient]) -> None:
    alice, bob = clients
    first = await alice.send(bob.address, "question")
    await bob.send(alice.address, "answer", first.id)  # send(to, content, reply_to)
    (got,) = await alice.fetch()
    assert got["re"] == first.id and "subject" not in got


async def test_mailbox_calls_against_the_prototype(clients: list[FluxClient]) -> None:
    alice, bob = clients
    sent = await alice.send(bob.address, "keep me")
    page = await bob.inbox()
    assert [m["id"] for m in page.messages] == [sent.id] and page.next_cursor is None
    assert await bob.get(sent.id) == page.messages[0]  # found through /inbox
    assert await bob.read(sent.id) == [sent.id]
    assert await bob.move(sent.id, "archive") == "archive"
    assert set(await bob.inboxes()) >= {"archive"}
    assert await bob.delete(sent.id) == [sent.id]
    with pytest.raises(FluxClientError) as caught:
        await bob.get("0" * 32)
    assert caught.value.code == "not_found" and caught.value.field == "id"


async def test_status_is_online_as_a_bool(clients: list[FluxClient]) -> None:
    alice, bob = clients
    assert not await alice.status(bob.address)
    task = await bob.start_ws(timeout=30)
    try:
        status = await alice.status(bob.address)
        assert status and status.online is True and status["address"] == bob.address
    finally:
        await bob.close()
        await asyncio.gather(task, return_exceptions=True)


async def test_websocket_push_queued_and_send_ws(clients: list[FluxClient]) -> None:
    alice, bob = clients
    early = await alice.send(bob.address, "before bob connected")
    got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    bob.on_message(got.put)
    task = await bob.start_ws(timeout=30)
    try:
        assert (await asyncio.wait_for(got.get(), 30))["id"] == early.id
        pushed = await alice.send(bob.address, "while connected")
        assert (await asyncio.wait_for(got.get(), 30))["id"] == pushed.id

        # bob answers over his own socket, in the prototype's frame
        alice_got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        alice.on_message(alice_got.put)
        alice_task = await alice.start_ws(timeout=30)
        envelope = await bob.send_ws(alice.address, "over the socket", pushed.id)
        msg = await asyncio.wait_for(alice_got.get(), 30)
        assert msg["id"] == envelope["id"] and msg["re"] == pushed.id
        await alice.close()
        await asyncio.gather(alice_task, return_exceptions=True)
    finally:
        await bob.close()
        await asyncio.gather(task, return_exceptions=True)


async def test_send_ws_without_a_socket_is_a_named_error(clients: list[FluxClient]) -> None:
    alice, bob = clients
    with pytest.raises(FluxClientError) as caught:
        await alice.send_ws(bob.address, "nobody listening")
    assert caught.value.code == "ws_closed"


async def test_without_the_secret_the_prototype_refuses(proto: ProtoServer) -> None:
    async with FluxClient(FluxIdentity.generate(), proto.url, legacy_secret="wrong") as c:
        with pytest.raises(FluxClientError) as caught:
            await c.fetch()
        assert caught.value.status == 401


async def test_the_challenge_needs_a_domain_the_prototype_lacks(proto: ProtoServer) -> None:
    async with FluxClient(FluxIdentity.generate(), proto.url) as c:
        with pytest.raises(FluxClientError) as caught:
            await c.server_domain()  # was a raw KeyError: 'domain'
        assert caught.value.code == "bad_answer" and caught.value.field == "domain"
        with pytest.raises(FluxClientError):
            await c.fetch()  # no /auth/challenge there: refused, not a crash


async def test_a_message_from_the_prototypes_client_reaches_flux_client(
    clients: list[FluxClient], proto: ProtoServer
) -> None:
    _, bob = clients
    code = (
        "import asyncio, sys\n"
        "from flux import FluxIdentity, FluxClient\n"
        "async def main():\n"
        "    c = FluxClient(FluxIdentity.generate(), sys.argv[1])\n"
        "    print(await c.send(sys.argv[2], 'from the prototype'))\n"
        "    await c.close()\n"
        "asyncio.run(main())\n"
    )
    done = run_proto(code, proto.url, bob.address)
    assert done.returncode == 0, done.stderr
    (msg,) = await bob.fetch()
    assert msg["content"] == "from the prototype" and bob.verify(msg).hops == 1


# -- the CLI against the prototype ------------------------------------------------------------


def test_cli_send_inbox_read_watch_against_the_prototype(
    proto: ProtoServer, tmp_path: Path
) -> None:
    alice_key, bob_key = tmp_path / "alice.json", tmp_path / "bob.json"
    FluxIdentity.generate().save(alice_key)
    bob = FluxIdentity.generate()
    bob.save(bob_key)
    env = {"FLUX_SERVER": proto.url, "FLUX_LEGACY_SECRET": SECRET}

    sent = flux("send", bob.address, "hello via the CLI", "--key", str(alice_key), **env)
    assert sent.returncode == 0, sent.stderr
    assert f"{bob.address}: queued" in sent.stdout
    msg_id = sent.stdout.split("sent ")[1].split()[0]

    listed = flux("inbox", "--json", "--key", str(bob_key), **env)
    assert listed.returncode == 0, listed.stderr
    assert [m["id"] for m in json.loads(listed.stdout)] == [msg_id]

    shown = flux("read", msg_id, "--key", str(bob_key), **env)
    assert shown.returncode == 0, shown.stderr
    assert "hello via the CLI" in shown.stdout and "signature verifies" in shown.stdout
    assert "not all sealed (prototype hops)" in shown.stdout  # it publishes no keys

    watch = Running("watch", "--key", str(bob_key), **env)
    try:
        watch.wait_for("watching")
        again = flux("send", bob.address, "pushed live", "--key", str(alice_key), **env)
        assert again.returncode == 0, again.stderr
        watch.wait_for("pushed live")
    finally:
        watch.interrupt()

    # without the secret (FLUX's challenge) the prototype cannot be asked: a named error
    bare = flux("inbox", "--key", str(bob_key), FLUX_SERVER=proto.url)
    assert bare.returncode == 1 and "Traceback" not in bare.stderr


def test_cli_with_the_legacy_secret_against_a_flux_server(tmp_path: Path) -> None:
    """The same commands against `flux server --open --legacy-tokens` (issue 11 item 10's
    setting): the prototype's token works there too, with FLUX's published keys."""
    server = Running(
        "server", "--host", "127.0.0.1", "--port", "0", "--backend", "sqlite",
        "--data-dir", str(tmp_path / "server"), "--open", "--legacy-tokens",
        FLUX_SECRET=SECRET,
    )  # fmt: skip
    try:
        url = server.wait_for(r"FLUX server for \S+ at (http://127\.0\.0\.1:\d+)").group(1)
        alice_key, bob_key = tmp_path / "alice.json", tmp_path / "bob.json"
        FluxIdentity.generate().save(alice_key)
        bob = FluxIdentity.generate()
        bob.save(bob_key)
        env = {"FLUX_SERVER": url, "FLUX_LEGACY_SECRET": SECRET}
        sent = flux("send", bob.address, "legacy to FLUX", "--key", str(alice_key), **env)
        assert sent.returncode == 0, sent.stderr
        msg_id = sent.stdout.split("sent ")[1].split()[0]
        listed = flux("inbox", "--json", "--key", str(bob_key), **env)
        assert listed.returncode == 0, listed.stderr
        assert [m["id"] for m in json.loads(listed.stdout)] == [msg_id]
        shown = flux("read", msg_id, "--key", str(bob_key), **env)
        assert shown.returncode == 0, shown.stderr
        assert "legacy to FLUX" in shown.stdout
        assert "sealed under its server's published key" in shown.stdout
        wrong = flux("inbox", "--key", str(bob_key), FLUX_SERVER=url, FLUX_LEGACY_SECRET="no")
        assert wrong.returncode == 1 and "401" in wrong.stderr
    finally:
        assert server.interrupt() == 0


def test_cli_help_shows_the_legacy_secret_variable() -> None:
    for command in ("send", "inbox", "read", "watch"):
        shown = flux(command, "--help")
        assert "--legacy-secret" in shown.stdout and "FLUX_LEGACY_SECRET" in shown.stdout


# -- a near-miss server: every field the client reads, missing or ill-typed --------------------

ADDRESS = FluxIdentity.generate().address
#: (route, the answer with one field missing or wrong, the field the error must name)
NEAR_MISSES: dict[str, tuple[dict[str, Any], str]] = {
    "GET /health": ({"ok": True, "protocol": "1.0"}, "domain"),
    "GET /auth/challenge": ({"ok": True, "domain": "near.miss"}, "challenge"),
    "GET /fetch": ({"ok": True, "count": 0}, "messages"),
    "GET /peek": ({"ok": True, "messages": []}, "pending"),
    "GET /inbox": ({"ok": True, "messages": "none"}, "messages"),
    "GET /inboxes": ({"ok": True}, "inboxes"),
    "GET /message": ({"ok": True}, "message"),
    "POST /read": ({"ok": True}, "updated"),
    "POST /delete": ({"ok": True, "updated": [1]}, "updated"),
    "POST /tag": ({"ok": True, "tag": "x"}, "tags"),
    "POST /move": ({"ok": True, "moved": True}, "inbox"),
    "GET /thread": ({"ok": True}, "messages"),
    "GET /changes": ({"ok": True, "state": "7"}, "state"),
    "GET /status": ({"ok": True, "hosted": True}, "online"),
    "POST /send": ({"ok": True, "id": "x"}, "recipients"),
}


def near_miss_app(overrides: dict[str, Any], ws: Any = None) -> web.Application:
    """A server that answers every client route `ok`, each answer one field short (and
    `ws` at /ws when given)."""

    async def answer(request: web.Request) -> web.Response:
        route = f"{request.method} /{request.path.split('/')[1]}"
        if route == "POST /auth":
            return web.json_response(overrides.get("POST /auth", {"ok": True, "token": "t"}))
        if route == "GET /auth":
            return web.json_response(overrides.get("GET /auth/challenge", {}))
        return web.json_response(overrides.get(route, {"ok": True}))

    app = web.Application()
    if ws is not None:
        app.router.add_get("/ws", ws)
    app.router.add_route("*", "/{tail:.*}", answer)
    return app


@pytest.fixture
async def near_miss() -> AsyncIterator[str]:
    answers = {route: body for route, (body, _) in NEAR_MISSES.items()}
    answers["GET /auth/challenge"] = {"ok": True, "domain": "near.miss", "challenge": "c"}
    runner = web.AppRunner(near_miss_app(answers))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


CALLS = {
    "GET /health": lambda c: c.server_domain(),
    "GET /fetch": lambda c: c.fetch(),
    "GET /peek": lambda c: c.peek(),
    "GET /inbox": lambda c: c.inbox(),
    "GET /inboxes": lambda c: c.inboxes(),
    "GET /message": lambda c: c.get("a" * 32),
    "POST /read": lambda c: c.read("a" * 32),
    "POST /delete": lambda c: c.delete(["a" * 32]),
    "POST /tag": lambda c: c.tag("a" * 32, add=["x"]),
    "POST /move": lambda c: c.move("a" * 32, "archive"),
    "GET /thread": lambda c: c.thread("a" * 32),
    "GET /changes": lambda c: c.changes(),
    "GET /status": lambda c: _truth(c.status(ADDRESS)),
    "POST /send": lambda c: c.send(ADDRESS, "hi"),
}


async def _truth(status: Any) -> bool:
    return bool(await status)


@pytest.mark.parametrize("route", sorted(CALLS))
@pytest.mark.parametrize("legacy", [False, True], ids=["session", "legacy"])
async def test_a_missing_field_is_a_named_client_error(
    near_miss: str, route: str, legacy: bool
) -> None:
    secret = SECRET if legacy else None
    async with FluxClient(FluxIdentity.generate(), near_miss, legacy_secret=secret) as client:
        with pytest.raises(FluxClientError) as caught:
            await CALLS[route](client)
    assert caught.value.code == "bad_answer"
    assert caught.value.field == NEAR_MISSES[route][1], str(caught.value)
    assert route in caught.value.message


async def test_a_challenge_without_its_nonce_is_named() -> None:
    runner = web.AppRunner(near_miss_app({"GET /auth/challenge": NEAR_MISSES["GET /auth/challenge"][0]}))  # fmt: skip
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with FluxClient(FluxIdentity.generate(), url) as client:
            with pytest.raises(FluxClientError) as caught:
                await client.authenticate()
        assert caught.value.field == "challenge" and caught.value.code == "bad_answer"
    finally:
        await runner.cleanup()


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def test_published_keys_ill_typed_are_named() -> None:
    app = near_miss_app({
        "GET /health": {"ok": True, "domain": "near.miss"},
        "GET /federation": {"ok": True, "keys": 5},
    })  # fmt: skip
    runner, url = await _serve(app)
    try:
        async with FluxClient(FluxIdentity.generate(), url) as client:
            with pytest.raises(FluxClientError) as caught:
                await client.published_keys("near.miss")
        assert caught.value.code == "bad_answer" and caught.value.field == "keys"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("authed", "field"),
    [
        ({"ok": True, "action": "authed", "messages": "none"}, "messages"),
        ({"ok": True, "action": "authed", "queued": [1]}, "queued"),
        (["not", "an", "object"], "action"),
    ],
)
async def test_a_websocket_near_miss_is_named_not_retried(authed: Any, field: str) -> None:
    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        await sock.receive()  # the auth frame
        await sock.send_json(authed)
        await sock.receive()  # until the client goes
        return sock

    runner, url = await _serve(near_miss_app({"GET /fetch": {"ok": True, "messages": []}}, ws))
    try:
        async with FluxClient(FluxIdentity.generate(), url, legacy_secret=SECRET) as client:
            with pytest.raises(FluxClientError) as caught:
                await client.start_ws(timeout=30)
        assert caught.value.code == "bad_answer" and caught.value.field == field
    finally:
        await runner.cleanup()


async def test_a_session_answer_without_its_token_is_named() -> None:
    challenge = {"ok": True, "domain": "n.m", "challenge": "c"}
    app = near_miss_app(
        {"GET /auth/challenge": challenge, "POST /auth": {"ok": True, "session": "t"}}
    )
    runner, url = await _serve(app)
    try:
        async with FluxClient(FluxIdentity.generate(), url) as client:
            with pytest.raises(FluxClientError) as caught:
                await client.inbox()
        assert caught.value.code == "bad_answer" and caught.value.field == "token"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    "answer",
    [{"ok": True}, {"ok": True, "address": ADDRESS, "pub": 7}, {"ok": True, "pub": "!!"}],
)
async def test_a_key_answer_without_a_valid_key_is_named(answer: dict[str, Any]) -> None:
    runner, url = await _serve(near_miss_app({"GET /federation": answer}))
    try:
        async with FluxClient(FluxIdentity.generate(), url) as client:
            with pytest.raises(FluxClientError) as caught:
                await client.fetch_key(ADDRESS)
        assert caught.value.code == "unknown_key" and caught.value.field == "pub"
    finally:
        await runner.cleanup()
