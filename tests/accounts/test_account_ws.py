"""/ws with a password account's session, and GET /mail/changes (docs/API.md, "WebSocket
/ws" and "Accounts").

Real servers on 127.0.0.1 and aiohttp's real WebSocket client. Each socket here is read by
a background task (`Socket`), as a browser reads one: the client answers the server's
pings (the acknowledgements, and the heartbeat) whatever the test is awaiting meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import pytest
from accounts_helpers import PASSWORD, Account, make_identity

from flux.protocol import compose
from flux.server.app import PARTS

WAIT_S = 10.0


class Socket:
    """One WebSocket, read continuously into a queue of frames."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.ended = asyncio.Event()
        self.authed: dict[str, Any] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for msg in self.ws:  # answers pings on the way (autoping)
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self.frames.put_nowait(msg.json())
        finally:
            self.ended.set()

    async def next(self, timeout: float = WAIT_S) -> dict[str, Any]:
        return await asyncio.wait_for(self.frames.get(), timeout)

    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send `frame` with a rid; its answer (pushes on the way are kept, in order)."""
        rid = f"r{id(frame)}"
        await self.ws.send_json({**frame, "rid": rid})
        skipped = []
        while True:
            got = await self.next()
            if got.get("rid") == rid:
                for other in skipped:
                    self.frames.put_nowait(other)
                return got
            skipped.append(got)

    async def closed(self) -> int | None:
        """Wait for the server to close the socket; its close code."""
        await asyncio.wait_for(self.ended.wait(), WAIT_S)
        return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


async def open_socket(srv: Any, auth: dict[str, Any]) -> Socket:
    sock = Socket(await srv.client.ws_connect("/ws"))
    await sock.ws.send_json({"action": "auth", **auth})
    sock.authed = await sock.next()
    return sock


async def account_socket(srv: Any, who: Account, **extra: Any) -> Socket:
    sock = await open_socket(srv, {"session": who.session, **extra})
    assert sock.authed["ok"] is True and sock.authed["action"] == "authed", sock.authed
    return sock


async def refused(srv: Any, auth: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    """The error frame and close code answering the auth frame `auth`."""
    sock = await open_socket(srv, auth)
    code = await sock.closed()
    await sock.close()
    return sock.authed, code


async def wait_status(srv: Any, who: Account, msg_id: str, status: str) -> None:
    for _ in range(200):
        [row] = [m for m in await srv.inbox(who) if m["id"] == msg_id]
        if row["_status"] == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{msg_id} never became {status}")


# -- auth, pushes ---------------------------------------------------------------------------


async def test_session_auth_hands_out_pending_and_pushes_arrivals(srv: Any) -> None:
    ada, bob = await srv.account("ada"), await srv.account("bob")
    early = await srv.send(ada, to=bob.address, content="before the socket", subject="early")
    sock = await account_socket(srv, bob)
    assert sock.authed["address"] == bob.address
    assert [m["id"] for m in sock.authed["messages"]] == [early["id"]]
    assert sock.authed["messages"][0]["_from_name"] == f"ada@{srv.config.domain}"
    late = await srv.send(ada, to="bob", content="pushed to you", subject="late")
    frame = await sock.next()
    assert frame["action"] == "message" and frame["message"]["id"] == late["id"]
    assert frame["message"]["from"] == ada.address and frame["state"] > sock.authed["state"]
    # acknowledged by the client's pong, as for a key session: delivered in the store
    await wait_status(srv, bob, early["id"], "delivered")
    await wait_status(srv, bob, late["id"], "delivered")
    assert (await sock.request({"action": "ping"}))["action"] == "pong"
    await sock.close()


async def test_the_inbox_field_and_address_are_honoured(srv: Any) -> None:
    ada, bob = await srv.account("ada"), await srv.account("bob")
    sent = await srv.send(ada, to=bob.address, content="to the inbox")
    only_archive = await account_socket(srv, bob, inbox="archive", address=bob.address)
    assert only_archive.authed["messages"] == []
    await only_archive.close()
    sock = await account_socket(srv, bob, inbox="inbox")
    assert [m["id"] for m in sock.authed["messages"]] == [sent["id"]]
    await sock.close()


async def test_pushes_reach_only_that_account(srv: Any) -> None:
    ada, bob, cy = await srv.account("ada"), await srv.account("bob"), await srv.account("cy")
    bobs, cys = await account_socket(srv, bob), await account_socket(srv, cy)
    await srv.send(ada, to=bob.address, content="for bob only")
    assert (await bobs.next())["action"] == "message"
    assert (await cys.request({"action": "ping"}))["action"] == "pong"
    assert cys.frames.empty()
    await bobs.close()
    await cys.close()


async def test_a_key_holders_mail_is_pushed_to_the_account(srv: Any) -> None:
    bob = await srv.account("bob")
    sock = await account_socket(srv, bob)
    outsider = make_identity("ws-outsider")
    msg = compose(outsider, bob.address, "signed elsewhere", now_ms=srv.clock.now).primary
    await srv.call("POST", "/send", json_body=msg)
    frame = await sock.next()
    assert frame["message"]["id"] == msg["id"] and frame["message"]["from"] == outsider.address
    await sock.close()


# -- actions ---------------------------------------------------------------------------------


async def test_actions_answer_and_other_devices_hear_changed(srv: Any) -> None:
    ada, bob = await srv.account("ada"), await srv.account("bob")
    sent = await srv.send(ada, to=bob.address, content="act on me")
    mid = sent["id"]
    phone, laptop = await account_socket(srv, bob), await account_socket(srv, bob)
    read = await phone.request({"action": "read", "ids": [mid]})
    assert read["ok"] is True and read["updated"] == [mid]
    assert read["refs"] == [{"id": mid, "from": ada.address}]
    changed = await laptop.next()
    assert changed["action"] == "changed" and changed["ids"] == [mid]
    unread = await phone.request({"action": "unread", "id": mid})
    assert unread["updated"] == [mid] and unread["deleted"] == []
    assert (await phone.request({"action": "tag", "id": mid[:8], "add": ["work"]}))["tags"] == ["work"]  # fmt: skip
    assert (await phone.request({"action": "move", "id": mid, "inbox": "later"}))["inbox"] == "later"  # fmt: skip
    assert (await phone.request({"action": "delete", "ids": [mid]}))["updated"] == [mid]
    assert [(await laptop.next())["action"] for _ in range(4)] == ["changed"] * 4
    # a change over HTTP reaches both sockets
    body = {"id": mid, "add": ["home"]}
    await srv.call("POST", "/mail/tag", json_body=body, headers=bob.headers)
    assert {(await phone.next())["action"], (await laptop.next())["action"]} == {"changed"}
    [row] = [m for m in await srv.inbox(bob, inbox="later", status="deleted") if m["id"] == mid]
    assert sorted(row["_tags"]) == ["home", "work"]
    await phone.close()
    await laptop.close()


async def test_send_is_refused_by_name_and_the_socket_stays(srv: Any) -> None:
    ada, bob = await srv.account("ada"), await srv.account("bob")
    sock = await account_socket(srv, ada)
    msg = compose(make_identity("someone"), bob.address, "hi", now_ms=srv.clock.now).primary
    answer = await sock.request({"action": "send", "message": msg})
    assert (answer["ok"], answer["code"], answer["field"]) == (False, "unknown_action", "action")
    assert "/mail/send" in answer["error"] and answer["action"] == "send"
    assert await srv.inbox(bob) == []
    assert (await sock.request({"action": "ping"}))["action"] == "pong"
    await sock.close()


@pytest.mark.parametrize(
    ("frame", "code", "field"),
    [
        ({"action": "read", "ids": ["0" * 32], "colour": "red"}, "invalid_value", "colour"),
        ({"action": "tag", "id": "abc", "add": ["x"]}, "invalid_value", "id"),
        ({"action": "fly"}, "unknown_action", "action"),
        ({"action": "read", "ids": "nope"}, "wrong_type", "ids"),
    ],
)
async def test_bad_request_frames_are_named(
    srv: Any, frame: dict[str, Any], code: str, field: str
) -> None:
    bob = await srv.account("bob")
    sock = await account_socket(srv, bob)
    answer = await sock.request(frame)
    assert (answer["ok"], answer["code"], answer["field"]) == (False, code, field)
    assert (await sock.request({"action": "ping"}))["action"] == "pong"
    await sock.close()


async def test_a_request_for_another_address_is_forbidden(srv: Any) -> None:
    ada, bob = await srv.account("ada"), await srv.account("bob")
    sock = await account_socket(srv, bob)
    answer = await sock.request({"action": "read", "ids": ["0" * 32], "address": ada.address})
    assert (answer["code"], answer["field"]) == ("forbidden", "address")
    await sock.close()


# -- refusals at auth ------------------------------------------------------------------------


async def test_auth_refusals(srv: Any) -> None:
    ada, bob = await srv.account("ada"), await srv.account("bob")
    cases = [
        ({"session": "not-a-session"}, 4401, "unauthorized", None),
        ({"session": 7}, 1008, "wrong_type", "session"),
        ({"session": "x" * 300}, 1008, "too_large", "session"),
        ({"session": bob.session, "token": bob.session}, 1008, "invalid_value", "session"),
        ({"session": bob.session, "colour": "red"}, 1008, "invalid_value", "colour"),
        ({"session": bob.session, "address": ada.address}, 4403, "forbidden", "address"),
        ({"session": bob.session, "inbox": ""}, 1008, "invalid_value", "inbox"),
    ]
    for auth, close_code, code, field in cases:
        answer, closed = await refused(srv, auth)
        assert (answer["ok"], answer["code"], closed) == (False, code, close_code), auth
        assert answer["action"] == "auth"
        if field is not None:
            assert answer["field"] == field, auth


async def test_an_expired_session_is_refused_and_its_open_socket_closed(srv: Any) -> None:
    bob = await srv.account("bob")
    sock = await account_socket(srv, bob)
    srv.clock.now += srv.config.account_session_ttl_ms + 1
    await sock.ws.send_json({"action": "ping", "rid": 1})  # checked before every request
    answer = await sock.next()  # the session's end, not an answer: no rid
    assert (answer["ok"], answer["action"], answer["code"]) == (False, "auth", "unauthorized")
    assert "rid" not in answer
    assert await sock.closed() == 4401
    await sock.close()
    answer, closed = await refused(srv, {"session": bob.session})
    assert (answer["code"], closed) == ("unauthorized", 4401)


# -- revocation closes the socket -------------------------------------------------------------


async def end_frame(sock: Socket) -> dict[str, Any]:
    """The error frame before the server's close (pushes before it are skipped)."""
    while True:
        frame = await sock.next()
        if frame.get("ok") is False:
            return frame


async def test_logout_closes_the_sessions_socket_at_once(srv: Any) -> None:
    bob = await srv.account("bob")
    other = Account("bob", bob.address, (await srv.login("bob"))["session"])
    sock, kept = await account_socket(srv, bob), await account_socket(srv, other)
    await srv.call("POST", "/account/logout", headers=bob.headers)
    ended = await end_frame(sock)
    assert (ended["action"], ended["code"]) == ("auth", "unauthorized")
    assert await sock.closed() == 4401
    # the account's other session (another device) keeps its socket
    assert (await kept.request({"action": "ping"}))["action"] == "pong"
    await sock.close()
    await kept.close()


async def test_a_password_change_closes_the_other_sessions_sockets(srv: Any) -> None:
    bob = await srv.account("bob")
    other = Account("bob", bob.address, (await srv.login("bob"))["session"])
    theirs, mine = await account_socket(srv, other), await account_socket(srv, bob)
    body = {"password": PASSWORD, "new_password": "a brand new password"}
    answer = await srv.call("POST", "/account/password", json_body=body, headers=bob.headers)
    assert answer["sessions_revoked"] == 2  # `other`, and the one /account/register opened
    assert (await end_frame(theirs))["code"] == "unauthorized"
    assert await theirs.closed() == 4401
    assert (await mine.request({"action": "ping"}))["action"] == "pong"
    await theirs.close()
    await mine.close()


async def test_an_operator_disable_closes_the_socket_and_refuses_the_session(
    make_server: Any,
) -> None:
    # `flux admin accounts disable` writes the accounts store from another process, so
    # nothing in the server hears it: the periodic check (the heartbeat period) finds it
    srv = await make_server(ws_heartbeat_s=1.0)
    ada, bob = await srv.account("ada"), await srv.account("bob")
    sock = await account_socket(srv, bob)
    await srv.accounts.store.set_disabled("bob", srv.clock.now, srv.clock.now)
    ended = await end_frame(sock)
    assert (ended["action"], ended["code"]) == ("auth", "unauthorized")
    assert await sock.closed() == 4401
    await sock.close()
    answer, closed = await refused(srv, {"session": bob.session})
    assert (answer["code"], closed) == ("unauthorized", 4401)
    # an account disabled while its session lives on (a store that kept it) is refused too
    await srv.accounts.store.set_disabled("bob", None, srv.clock.now)
    again = Account("bob", bob.address, (await srv.login("bob"))["session"])
    sock = await account_socket(srv, again)
    await sock.close()
    assert (await srv.send(ada, to="bob", content="still hosted"))["recipients"]


async def test_a_key_sessions_socket_closes_on_logout_too(srv: Any) -> None:
    who = make_identity("ws-key-holder")
    token = await srv.key_login(who)
    sock = await open_socket(srv, {"token": token})
    assert sock.authed["action"] == "authed"
    await srv.call("POST", "/auth/logout", headers={"Authorization": f"Bearer {token}"})
    ended = await end_frame(sock)
    assert (ended["action"], ended["code"], ended["field"]) == ("auth", "unauthorized", "token")
    assert await sock.closed() == 4401
    await sock.close()


# -- GET /mail/changes ---------------------------------------------------------------------


async def changes(srv: Any, who: Account, expect: int = 200, **params: Any) -> dict[str, Any]:
    return await srv.call("GET", "/mail/changes", headers=who.headers, params=params,
                          expect=expect)  # fmt: skip


async def test_mail_changes_lists_created_then_updated(srv: Any) -> None:
    ada, bob = await srv.account("ada"), await srv.account("bob")
    start = (await changes(srv, bob))["state"]
    sent = await srv.send(ada, to=bob.address, content="a change")
    got = await changes(srv, bob, since=start)
    assert [m["id"] for m in got["created"]] == [sent["id"]] and got["updated"] == []
    assert got["has_more"] is False and got["state"] > start
    await srv.call("POST", "/mail/read", json_body={"ids": [sent["id"]]}, headers=bob.headers)
    later = await changes(srv, bob, since=got["state"])
    assert later["created"] == [] and [m["_status"] for m in later["updated"]] == ["read"]
    # the sender's own sent mail is listed as for a key session (`sent`)
    assert set(later) == set(await changes(srv, ada, since=0))
    assert {"created", "updated", "sent", "state", "has_more"} <= set(later)


async def test_mail_changes_pages_with_limit(srv: Any) -> None:
    ada, bob = await srv.account("ada"), await srv.account("bob")
    for n in range(3):
        await srv.send(ada, to=bob.address, content=f"number {n}")
    first = await changes(srv, bob, since=0, limit=2)
    assert len(first["created"]) == 2 and first["has_more"] is True
    rest = await changes(srv, bob, since=first["state"], limit=2)
    assert len(rest["created"]) == 1 and rest["has_more"] is False


async def test_mail_changes_refusals(srv: Any) -> None:
    ada, bob = await srv.account("ada"), await srv.account("bob")
    future = await changes(srv, bob, expect=400, since=10**6)
    assert (future["code"], future["field"]) == ("cannot_calculate_changes", "since")
    junk = await changes(srv, bob, expect=400, since="yesterday")
    assert (junk["code"], junk["field"]) == ("cannot_calculate_changes", "since")
    for bad in ("0", "100000"):
        limit = await changes(srv, bob, expect=400, limit=bad)
        assert (limit["code"], limit["field"]) == ("invalid_value", "limit")
    extra = await changes(srv, bob, expect=400, colour="red")
    assert (extra["code"], extra["field"]) == ("invalid_value", "colour")
    other = await changes(srv, bob, expect=403, address=ada.address)
    assert (other["code"], other["field"]) == ("forbidden", "address")
    nobody = await srv.call("GET", "/mail/changes", expect=401)
    assert nobody["code"] == "unauthorized"
    await srv.call("POST", "/account/logout", headers=bob.headers)
    assert (await changes(srv, bob, expect=401))["code"] == "unauthorized"


# -- two processes on one PostgreSQL database -------------------------------------------------


@pytest.mark.postgres
async def test_two_processes_on_postgresql_push_and_revoke(pg_dsn: str, tmp_path: Any) -> None:
    """Two servers of one domain on one PostgreSQL schema (processes of one deployment;
    accounts in that database too): mail sent through one is pushed to an account's
    socket on the other, and a logout through one ends that socket at the other's next
    periodic check (nothing in the second process hears the first one's revocation)."""
    from flux.server import ServerConfig, start_server
    from postgres_env import fresh_schema_url

    async with fresh_schema_url("flux_account_ws") as url:
        config = ServerConfig(domain="pg.accounts.test", port=0, data_dir=tmp_path, backend="postgres",
                              db_url=url, ws_heartbeat_s=1.0)  # fmt: skip
        first = await start_server(config)
        second = await start_server(config)
        try:
            for running in (first, second):  # each process listening for the other's pushes
                await asyncio.wait_for(running.app[PARTS]["fanout"].connected.wait(), WAIT_S)
            async with aiohttp.ClientSession() as http:

                async def post(base: str, path: str, body: Any, headers: Any = None) -> Any:
                    async with http.post(base + path, json=body, headers=headers) as r:
                        assert r.status == 200, await r.text()
                        return await r.json()

                ada = await post(first.url, "/account/register",
                                 {"username": "ada", "password": PASSWORD})  # fmt: skip
                bob = await post(first.url, "/account/register",
                                 {"username": "bob", "password": PASSWORD})  # fmt: skip
                bob_headers = {"X-Flux-Session": bob["session"]}
                sock = Socket(await http.ws_connect(second.url + "/ws"))
                await sock.ws.send_json({"action": "auth", "session": bob["session"]})
                assert (await sock.next())["action"] == "authed"
                sent = await post(first.url, "/mail/send", {"to": "bob", "content": "across"},
                                  {"X-Flux-Session": ada["session"]})  # fmt: skip
                pushed = await sock.next()
                assert pushed["action"] == "message" and pushed["message"]["id"] == sent["id"]
                await post(first.url, "/account/logout", {}, bob_headers)
                ended = await end_frame(sock)
                assert (ended["action"], ended["code"]) == ("auth", "unauthorized")
                assert await sock.closed() == 4401
                await sock.close()
        finally:
            await second.stop()
            await first.stop()
