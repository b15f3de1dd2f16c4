"""The prototype's own client code, unchanged, against a real FLUX server (issue 11, items
1-4 and 11; compat/ws.py, compat/http.py): its library (`FluxClient`), `main.py
send/fetch/listen`, its WebSocket frames and HTTP forms; and, on the same server, FLUX's
own shapes for FLUX's clients, and every route and action refusing a field it would
otherwise ignore."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from compat.conftest import WAIT, proto_identity, proto_json
from compat.proto import SECRET, proto_env, require_seed, run_proto, run_proto_script
from flux.protocol.identity import Identity
from flux.protocol.tokens import legacy_token

PRE = textwrap.dedent("""
    import asyncio, json, sys
    from flux.identity import FluxIdentity
    from flux.client import FluxClient
    url = sys.argv[1]
    def client(path):
        return FluxClient(FluxIdentity.from_file(path), url)
    def within(awaitable):
        return asyncio.wait_for(awaitable, 30)
""")


@pytest.fixture
def alice(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "alice.json"
    return path, proto_identity(path)


@pytest.fixture
def bob(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "bob.json"
    return path, proto_identity(path)


def legacy(address: str) -> dict[str, str]:
    """The prototype client's header (its token, derived from the shared secret)."""
    return {"X-Flux-Token": legacy_token(address, SECRET)}


async def call(
    url: str, method: str, path: str, *, expect: int = 200, **kwargs: Any
) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.request(method, url + path, **kwargs) as r:
        body = await r.json(content_type=None)
        assert r.status == expect, (method, path, r.status, body)
        return body


def send_plain(url: str, sender: Path, to: str, content: str) -> dict[str, Any]:
    code = PRE + textwrap.dedent("""
        async def main():
            c = client(sys.argv[2])
            print(json.dumps(await c.send(sys.argv[3], sys.argv[4])))
            await c.close()
        asyncio.run(main())
    """)
    return proto_json(code, url, str(sender), to, content)


async def session_token(url: str) -> tuple[Identity, str]:
    """A FLUX identity and its session token (signed challenge, docs/API.md)."""
    me = Identity.generate()
    got = await call(url, "GET", "/auth/challenge", params={"address": me.address})
    payload = f"flux-auth:1:{got['domain']}:{got['challenge']}"
    body = {"address": me.address, "pub": me.pub_b64(), "challenge": got["challenge"],
            "sig": me.sign(payload)}  # fmt: skip
    return me, (await call(url, "POST", "/auth/session", json=body))["token"]


# -- the library: HTTP -----------------------------------------------------------------------


def test_library_send_peek_fetch(flux_server: str, alice: Any, bob: Any) -> None:
    code = PRE + textwrap.dedent("""
        async def main():
            alice, bob = client(sys.argv[2]), client(sys.argv[3])
            sent = await alice.send(bob.address, "hello bob")
            peeked = await bob.peek()
            fetched = await bob.fetch()
            print(json.dumps({"sent": sent, "peek": peeked, "fetched": fetched,
                              "again": await bob.fetch(), "peek_after": await bob.peek()}))
            await alice.close()
            await bob.close()
        asyncio.run(main())
    """)
    out = proto_json(code, flux_server, str(alice[0]), str(bob[0]))
    assert out["sent"]["ok"] is True and out["sent"]["recipients"] == {bob[1]: "stored"}
    assert out["peek"] == 1  # /peek answers `count` (item 4)
    [msg] = out["fetched"]
    assert (msg["from"], msg["to"], msg["content"]) == (alice[1], bob[1], "hello bob")
    assert out["again"] == [] and out["peek_after"] == 0


def test_library_ack_is_refused_by_name(flux_server: str, alice: Any, bob: Any) -> None:
    """`ack()` sends no credential: FLUX refuses it by name (compat/http.py) rather than
    answering ok; the prototype's client reads that as not acked."""
    send_plain(flux_server, alice[0], bob[1], "to ack")
    code = PRE + textwrap.dedent("""
        async def main():
            bob = client(sys.argv[2])
            [msg] = await bob.fetch()
            print(json.dumps(await bob.ack(msg["id"])))
            await bob.close()
        asyncio.run(main())
    """)
    assert proto_json(code, flux_server, str(bob[0])) is False


async def test_ack_answer_names_why(flux_server: str) -> None:
    answer = await call(flux_server, "POST", "/ack", json={"id": "x" * 8}, expect=400)
    assert answer["code"] == "bad_request" and answer["field"] == "ack"
    assert "/fetch" in answer["error"] and "pong" in answer["error"]


# -- the library: WebSocket ------------------------------------------------------------------


def test_library_listener_gets_queued_and_pushed_mail(
    flux_server: str, alice: Any, bob: Any
) -> None:
    """Item 1: mail queued before connecting arrives from `queued` in `authed`, new mail as
    a `{type: "msg"}` push; /status says online while the socket is open."""
    code = PRE + textwrap.dedent("""
        async def main():
            alice, bob = client(sys.argv[2]), client(sys.argv[3])
            before = await alice.status(bob.address)
            await alice.send(bob.address, "queued first")
            got, first, second = [], asyncio.Event(), asyncio.Event()
            @bob.on_message
            async def on(msg):
                got.append(msg)
                (second if first.is_set() else first).set()
            task = asyncio.create_task(bob.connect_ws())
            await within(first.wait())
            online = await alice.status(bob.address)
            await alice.send(bob.address, "pushed second")
            await within(second.wait())
            await bob.close()
            await within(task)
            await alice.close()
            print(json.dumps({"before": before, "online": online,
                              "got": [[m["from"], m["content"]] for m in got]}))
        asyncio.run(main())
    """)
    out = proto_json(code, flux_server, str(alice[0]), str(bob[0]))
    assert out["got"] == [[alice[1], "queued first"], [alice[1], "pushed second"]]
    assert (out["before"], out["online"]) == (False, True)


def test_library_send_ws(flux_server: str, alice: Any, bob: Any) -> None:
    """Item 2: `send_ws` (`{action: send, msg}`) is delivered."""
    code = PRE + textwrap.dedent("""
        async def main():
            alice, bob = client(sys.argv[2]), client(sys.argv[3])
            got = asyncio.Event()
            received = []
            @bob.on_message
            async def on(msg):
                received.append(msg["content"])
                got.set()
            listening = asyncio.create_task(bob.connect_ws())
            sending = asyncio.create_task(alice.connect_ws())
            while alice._ws is None:  # connect_ws sets it once the socket is open
                await asyncio.sleep(0.01)
            await alice.send_ws(bob.address, "over the socket")
            await within(got.wait())
            for c, task in ((alice, sending), (bob, listening)):
                await c.close()
                await within(task)
            print(json.dumps(received))
        asyncio.run(main())
    """)
    assert proto_json(code, flux_server, str(alice[0]), str(bob[0])) == ["over the socket"]


async def test_prototype_socket_frames_and_flux_socket_frames(
    flux_server: str, tmp_path: Path
) -> None:
    """Item 1 and its sibling: on one server, a socket authenticated by a legacy token
    speaks the prototype's frames, one that says `dialect: "flux"` (or uses a session)
    FLUX's; each gets the same new message in its own shape."""
    sender = tmp_path / "s.json"
    sender_addr = proto_identity(sender)
    rcpt = Identity.generate().address
    ws_url = flux_server.replace("http://", "ws://") + "/ws"
    token = legacy_token(rcpt, SECRET)
    async with aiohttp.ClientSession() as http:
        proto = await http.ws_connect(ws_url)
        await proto.send_json({"action": "auth", "address": rcpt, "token": token})
        authed = await proto.receive_json(timeout=WAIT)
        assert authed["action"] == "authed" and authed["queued"] == authed["messages"] == []
        flux = await http.ws_connect(ws_url)
        await flux.send_json({"action": "auth", "address": rcpt, "token": token,
                              "dialect": "flux"})  # fmt: skip
        authed = await flux.receive_json(timeout=WAIT)
        assert authed["action"] == "authed" and "queued" not in authed
        send_plain(flux_server, sender, rcpt, "both dialects")
        push = await proto.receive_json(timeout=WAIT)
        assert push["type"] == "msg" and "action" not in push
        assert (push["msg"]["from"], push["msg"]["content"]) == (sender_addr, "both dialects")
        push = await flux.receive_json(timeout=WAIT)
        assert push["action"] == "message" and push["message"]["content"] == "both dialects"
        assert "type" not in push
        await proto.close()
        await flux.close()
        bad = await http.ws_connect(ws_url)
        await bad.send_json({"action": "auth", "address": rcpt, "token": token,
                             "dialect": "klingon"})  # fmt: skip
        refused = await bad.receive_json(timeout=WAIT)
        assert refused["ok"] is False and refused["field"] == "dialect"
        await bad.close()


async def test_session_socket_speaks_flux(flux_server: str, tmp_path: Path) -> None:
    sender = tmp_path / "s.json"
    proto_identity(sender)
    me, token = await session_token(flux_server)
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(flux_server.replace("http://", "ws://") + "/ws")
        await ws.send_json({"action": "auth", "token": token})
        assert (await ws.receive_json(timeout=WAIT))["action"] == "authed"
        send_plain(flux_server, sender, me.address, "to a FLUX client")
        push = await ws.receive_json(timeout=WAIT)
        assert push["action"] == "message" and push["message"]["content"] == "to a FLUX client"
        await ws.close()


async def test_flux_client_on_the_same_server_gets_flux_shapes(
    flux_server: str, tmp_path: Path
) -> None:
    """The sibling, end to end: FLUX's own FluxClient (session auth) on the server the
    prototype's clients use gets a prototype sender's mail and FLUX's answers (the frames
    themselves: test_session_socket_speaks_flux)."""
    from flux.client import FluxClient

    sender = tmp_path / "s.json"
    sender_addr = proto_identity(sender)
    client = FluxClient(Identity.generate(), flux_server)
    frames: list[dict[str, Any]] = []
    got = asyncio.Event()

    @client.on_message
    async def on(msg: dict[str, Any]) -> None:
        frames.append(msg)
        got.set()

    try:
        task = await client.start_ws(timeout=WAIT)
        await asyncio.to_thread(send_plain, flux_server, sender, client.address, "to FLUX")
        await asyncio.wait_for(got.wait(), WAIT)
        assert (frames[0]["from"], frames[0]["content"]) == (sender_addr, "to FLUX")
        assert set(await client.inboxes()) == {"inbox"}  # FLUX's {name: counts}
    finally:
        await client.close()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_ws_tag_and_send_frames_in_the_prototype_form(
    flux_server: str, tmp_path: Path
) -> None:
    """Item 2: WS `tag {id, tag, tag_action}` changes the tags (and answers in the
    prototype's terms); WS `send {msg}` is the prototype's send form."""
    sender = tmp_path / "s.json"
    proto_identity(sender)
    rcpt = Identity.generate().address
    msg_id = send_plain(flux_server, sender, rcpt, "tag me")["id"]
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(flux_server.replace("http://", "ws://") + "/ws")
        await ws.send_json({"action": "auth", "address": rcpt, "token": legacy_token(rcpt, SECRET)})  # fmt: skip
        assert (await ws.receive_json(timeout=WAIT))["action"] == "authed"
        await ws.send_json({"action": "tag", "id": msg_id, "tag": "Important"})
        tagged = await ws.receive_json(timeout=WAIT)
        assert tagged["ok"] is True and tagged["tags"] == ["important"]
        assert (tagged["tag"], tagged["tag_action"], tagged["applied"]) == ("important", "add", True)  # fmt: skip
        await ws.send_json({"action": "tag", "id": msg_id, "tag": "important",
                            "tag_action": "remove"})  # fmt: skip
        assert (await ws.receive_json(timeout=WAIT))["tags"] == []
        await ws.send_json({"action": "tag", "id": msg_id, "tag": "x", "tag_action": "flip"})
        bad = await ws.receive_json(timeout=WAIT)
        assert (bad["ok"], bad["field"]) == (False, "tag_action")
        await ws.send_json({"action": "send", "msg": {"v": "1.0"}})
        bad = await ws.receive_json(timeout=WAIT)  # the envelope is judged: `msg` was read
        assert bad["ok"] is False and bad["field"] != "message", bad
        await ws.close()
    listed = await call(flux_server, "GET", f"/inbox/{rcpt}", headers=legacy(rcpt))
    assert listed["messages"][0]["_tags"] == []


# -- main.py ---------------------------------------------------------------------------------


def test_main_py_send_and_fetch(flux_server: str, alice: Any, bob: Any) -> None:
    sent = run_proto_script("main.py", "send", "--identity", str(alice[0]), "--to", bob[1],
                            "-m", "by main.py", "--server", flux_server)  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["ok"] is True
    fetched = run_proto_script("main.py", "fetch", "--identity", str(bob[0]),
                               "--server", flux_server)  # fmt: skip
    assert fetched.returncode == 0, fetched.stderr
    assert f"from: {alice[1]}" in fetched.stdout and "→  by main.py" in fetched.stdout
    again = run_proto_script("main.py", "fetch", "--identity", str(bob[0]),
                             "--server", flux_server)  # fmt: skip
    assert again.stdout.strip() == "No messages."


def test_main_py_listen_prints_mail(flux_server: str, alice: Any, bob: Any) -> None:
    """Item 1 as a user sees it: `main.py listen` prints queued and new mail."""
    send_plain(flux_server, alice[0], bob[1], "waiting for you")
    listen = subprocess.Popen(
        [sys.executable, str(require_seed() / "main.py"), "listen", "--identity", str(bob[0]),
         "--server", flux_server], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=proto_env(), cwd=require_seed(),
    )  # fmt: skip
    try:
        assert listen.stdout is not None
        lines = iter(listen.stdout.readline, "")
        assert f"Listening as {bob[1]}" in next(lines)
        assert next(lines).strip().endswith("→ waiting for you")  # from `queued`
        send_plain(flux_server, alice[0], bob[1], "pushed now")
        assert next(lines).strip().endswith("→ pushed now")  # a {type: msg} push
    finally:
        listen.kill()
        listen.wait(timeout=WAIT)


# -- HTTP answers and forms ------------------------------------------------------------------


async def test_answer_shapes_by_dialect(flux_server: str, tmp_path: Path) -> None:
    """Item 4: `count` on /peek, /inbox, /fetch and `online` on /status for everyone; the
    prototype's list of inbox names for a legacy-token request, FLUX's object for a
    session or an explicit `X-Flux-Dialect: flux`."""
    sender = tmp_path / "s.json"
    proto_identity(sender)
    me, token = await session_token(flux_server)
    send_plain(flux_server, sender, me.address, "count me")
    bearer = {"Authorization": f"Bearer {token}"}
    old = legacy(me.address)
    assert (await call(flux_server, "GET", f"/peek/{me.address}", headers=old))["count"] == 1
    inbox = await call(flux_server, "GET", f"/inbox/{me.address}", headers=old)
    assert inbox["count"] == len(inbox["messages"]) == 1
    status = await call(flux_server, "GET", f"/status/{me.address}")
    assert status["online"] is False and status["hosted"] is False  # --open: not registered
    owner = await call(flux_server, "GET", f"/status/{me.address}", headers=bearer)
    assert owner["online"] is False and owner["pending"] == 1
    names = await call(flux_server, "GET", f"/inboxes/{me.address}", headers=old)
    assert names["inboxes"] == ["inbox"]
    for headers in (bearer, {**old, "X-Flux-Dialect": "flux"}):
        counts = await call(flux_server, "GET", f"/inboxes/{me.address}", headers=headers)
        assert isinstance(counts["inboxes"], dict) and "inbox" in counts["inboxes"]
    forced = await call(flux_server, "GET", f"/inboxes/{me.address}",
                        headers={**bearer, "X-Flux-Dialect": "prototype"})  # fmt: skip
    assert forced["inboxes"] == ["inbox"]
    bad = await call(flux_server, "GET", f"/inboxes/{me.address}",
                     headers={**bearer, "X-Flux-Dialect": "yes"}, expect=400)  # fmt: skip
    assert bad["field"] == "X-Flux-Dialect"
    elsewhere = await call(flux_server, "GET", f"/peek/{me.address}",
                           headers={**bearer, "X-Flux-Dialect": "yes"}, expect=400)  # fmt: skip
    assert elsewhere["field"] == "X-Flux-Dialect"  # checked wherever it is sent
    fetched = await call(flux_server, "GET", f"/fetch/{me.address}", headers=bearer)
    assert fetched["count"] == 1


async def test_http_tag_in_the_prototype_form(flux_server: str, tmp_path: Path) -> None:
    """Item 3: `POST /tag {id, address, tag, action}` tags (it used to answer ok and do
    nothing), in the prototype's answer terms for its client; a bad action is named."""
    sender = tmp_path / "s.json"
    proto_identity(sender)
    rcpt = Identity.generate().address
    msg_id = send_plain(flux_server, sender, rcpt, "tag over http")["id"]
    old = legacy(rcpt)
    body = {"id": msg_id, "address": rcpt, "tag": "Work", "action": "add"}
    added = await call(flux_server, "POST", "/tag", json=body, headers=old)
    assert added["tags"] == ["work"] and (added["tag"], added["action"], added["applied"]) == (
        "work", "add", True)  # fmt: skip
    listed = await call(flux_server, "GET", f"/inbox/{rcpt}", headers=old, params={"tag": "work"})
    assert [m["id"] for m in listed["messages"]] == [msg_id]
    removed = await call(flux_server, "POST", "/tag", headers=old,
                         json={**body, "tag": "work", "action": "remove"})  # fmt: skip
    assert removed["tags"] == []
    bad = await call(flux_server, "POST", "/tag", headers=old, json={**body, "action": "toggle"},
                     expect=400)  # fmt: skip
    assert (bad["code"], bad["field"]) == ("invalid_value", "action")
    both = await call(flux_server, "POST", "/tag", headers=old, json={**body, "add": ["x"]},
                      expect=400)  # fmt: skip
    assert both["field"] == "tag"


#: (method, path template, body or query, the field that must be named) of every mailbox
#: route, each with a field it does not take
IGNORED_FIELD_CASES = [
    ("POST", "/read", {"ids": ["i"], "status": "read"}, "status"),
    ("POST", "/delete", {"ids": ["i"], "hard": True}, "hard"),
    ("POST", "/tag", {"id": "i", "tags": ["x"]}, "tags"),
    ("POST", "/tag", {"id": "i", "action": "add"}, "action"),  # an action without a tag
    ("POST", "/move", {"id": "i", "inbox": "x", "folder": "y"}, "folder"),
    ("GET", "/fetch/{a}", {"inbox": "spam"}, "inbox"),
    ("GET", "/peek/{a}", {"inbox": "spam"}, "inbox"),
    ("GET", "/inbox/{a}", {"order": "oldest"}, "order"),
    ("GET", "/inboxes/{a}", {"all": "1"}, "all"),
    ("GET", "/changes", {"since": "0", "wait": "30"}, "wait"),
    ("GET", "/status/{a}", {"detail": "1"}, "detail"),
    ("GET", "/message/{a}/i", {"raw": "1"}, "raw"),
]


@pytest.mark.parametrize(("method", "path", "extra", "named"), IGNORED_FIELD_CASES)
async def test_every_route_refuses_a_field_it_would_ignore(
    flux_server: str, method: str, path: str, extra: dict[str, Any], named: str
) -> None:
    """Item 3's class: no endpoint answers ok while a field it carried did nothing."""
    me = Identity.generate().address
    url_path = path.format(a=me)
    if method == "POST":
        kwargs: dict[str, Any] = {"json": {"address": me, **extra}}
    else:
        kwargs = {"params": {**({"address": me} if path == "/changes" else {}), **extra}}
    bad = await call(flux_server, method, url_path, headers=legacy(me), expect=400, **kwargs)
    assert (bad["code"], bad["field"]) == ("invalid_value", named), bad


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "named"),
    [
        ("POST", "/send", {"json": {"message": {}, "priority": 1}}, "priority"),
        ("POST", "/auth/session", {"json": {"address": "x", "remember": True}}, "remember"),
        ("POST", "/register", {"json": {"address": "x", "note": "hi"}}, "note"),
        ("GET", "/auth/challenge", {"params": {"address": "x", "ttl": "1"}}, "ttl"),
        ("POST", "/account/login", {"json": {"username": "x", "password": "y", "keep": 1}}, "keep"),
        ("GET", "/federation/resolve/alice", {"params": {"fresh": "1"}}, "fresh"),
        ("POST", "/auth/logout", {"params": {"all": "1"}}, "all"),
    ],
    ids=["send", "auth-session", "register", "auth-challenge", "account-login", "resolve", "logout"],
)
async def test_unauthenticated_routes_refuse_a_field_they_would_ignore(
    flux_server: str, method: str, path: str, kwargs: dict[str, Any], named: str
) -> None:
    bad = await call(flux_server, method, path, expect=400, **kwargs)
    assert (bad["code"], bad["field"]) == ("invalid_value", named), bad


@pytest.mark.parametrize(
    ("frame", "extra"),
    [
        ({"action": "read", "ids": ["i"], "status": "read"}, "status"),
        ({"action": "delete", "id": "i", "hard": True}, "hard"),
        ({"action": "tag", "id": "i", "add": ["x"], "colour": "red"}, "colour"),
        ({"action": "move", "id": "i", "inbox": "x", "folder": "y"}, "folder"),
        ({"action": "ping", "echo": "x"}, "echo"),
        ({"action": "send", "message": {}, "priority": 1}, "priority"),
    ],
    ids=["read", "delete", "tag", "move", "ping", "send"],
)
async def test_every_ws_action_refuses_a_field_it_would_ignore(
    flux_server: str, frame: dict[str, Any], extra: str
) -> None:
    me = Identity.generate().address
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(flux_server.replace("http://", "ws://") + "/ws")
        await ws.send_json({"action": "auth", "address": me, "token": legacy_token(me, SECRET)})
        assert (await ws.receive_json(timeout=WAIT))["action"] == "authed"
        await ws.send_json(frame)
        bad = await ws.receive_json(timeout=WAIT)
        assert (bad["ok"], bad["code"], bad["field"]) == (False, "invalid_value", extra), bad
        await ws.close()
        ws = await http.ws_connect(flux_server.replace("http://", "ws://") + "/ws")
        await ws.send_json({"action": "auth", "address": me, "token": legacy_token(me, SECRET),
                            "since": 5})  # fmt: skip
        refused = await ws.receive_json(timeout=WAIT)
        assert (refused["ok"], refused["field"]) == (False, "since")
        await ws.close()


async def test_ws_auth_inbox_is_honoured(flux_server: str, tmp_path: Path) -> None:
    """The auth frame's `inbox` chooses which folder's pending mail `authed` carries (it
    used to be accepted and ignored)."""
    sender = tmp_path / "s.json"
    proto_identity(sender)
    rcpt = Identity.generate().address
    moved = send_plain(flux_server, sender, rcpt, "in work")["id"]
    send_plain(flux_server, sender, rcpt, "in inbox")
    await call(flux_server, "POST", "/move", headers=legacy(rcpt),
               json={"address": rcpt, "id": moved, "inbox": "work"})  # fmt: skip
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(flux_server.replace("http://", "ws://") + "/ws")
        await ws.send_json({"action": "auth", "address": rcpt, "inbox": "work",
                            "token": legacy_token(rcpt, SECRET)})  # fmt: skip
        authed = await ws.receive_json(timeout=WAIT)
        assert [m["content"] for m in authed["queued"]] == ["in work"]
        await ws.close()


# -- BCC (item 11) ---------------------------------------------------------------------------


BCC_BUILD = textwrap.dedent("""
    import json, sys
    from flux.identity import FluxIdentity
    from flux.message import build_message
    me = FluxIdentity.from_file(sys.argv[1])
    print(json.dumps(build_message(me, sys.argv[2], "with bcc", cc=[sys.argv[3]],
                                   bcc=json.loads(sys.argv[4]))))
""")


def bcc_envelope(sender: Path, to: str, cc: str, bcc: list[str]) -> dict[str, Any]:
    """An envelope built by the prototype's own `build_message` with a `bcc` list."""
    return proto_json(BCC_BUILD, str(sender), to, cc, json.dumps(bcc))


async def test_a_prototype_envelope_with_a_bcc_list_is_refused_by_name(
    flux_server: str, alice: Any
) -> None:
    """Item 11: the prototype's one envelope with several `bcc` addresses is refused
    naming `bcc` (PROTOCOL.md §13) over HTTP and over the socket, and nobody gets
    anything: it is not stored for the bcc addresses while to/cc silently get nothing."""
    to, cc, b1, b2 = (Identity.generate().address for _ in range(4))
    envelope = bcc_envelope(alice[0], to, cc, [b1, b2])
    answer = await call(flux_server, "POST", "/send", json=envelope, expect=400)
    assert (answer["code"], answer["field"]) == ("invalid_value", "bcc")
    assert "one separately signed copy per bcc address" in answer["error"]
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(flux_server.replace("http://", "ws://") + "/ws")
        await ws.send_json({"action": "auth", "address": alice[1],
                            "token": legacy_token(alice[1], SECRET)})  # fmt: skip
        assert (await ws.receive_json(timeout=WAIT))["action"] == "authed"
        await ws.send_json({"action": "send", "msg": envelope})
        refused = await ws.receive_json(timeout=WAIT)
        assert (refused["ok"], refused["field"]) == (False, "bcc")
        await ws.close()
    for rcpt in (to, cc, b1, b2):
        peek = await call(flux_server, "GET", f"/peek/{rcpt}", headers=legacy(rcpt))
        assert peek["count"] == 0


async def test_one_bcc_address_is_a_flux_bcc_copy(flux_server: str, alice: Any) -> None:
    """With one `bcc` address the envelope is exactly a FLUX BCC copy (§5.2): it reaches
    that address only, and the answer names who got it, recipient by recipient."""
    to, cc, b1 = (Identity.generate().address for _ in range(3))
    envelope = bcc_envelope(alice[0], to, cc, [b1])
    answer = await call(flux_server, "POST", "/send", json=envelope)
    assert answer["recipients"] == {b1: "stored"}


def test_proto_status_without_legacy_tokens_is_hosted_only(tmp_path: Path) -> None:
    """Presence is public only in the prototype's setting (--legacy-tokens): a server
    without it tells strangers only whether an address is hosted."""
    from cli.cli_helpers import Running

    server = Running("server", "--host", "127.0.0.1", "--port", "0", "--backend", "memory",
                     "--data-dir", str(tmp_path / "plain"), "--open")  # fmt: skip
    try:
        url = server.wait_for(r"FLUX server for \S+ at (http://127\.0\.0\.1:\d+)").group(1)
        code = "import json, sys, urllib.request\n" + (
            "print(urllib.request.urlopen(sys.argv[1] + '/status/' + sys.argv[2]).read().decode())"
        )
        done = run_proto(code, url, Identity.generate().address)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"ok": True, "hosted": False}
    finally:
        assert server.interrupt() == 0, server.output
