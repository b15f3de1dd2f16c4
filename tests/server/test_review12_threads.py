"""Issue 12 review: threads that include your sent mail (docs/API.md, "Threads include your
sent mail"; store/base.py, "Threads"), attacked as a stranger and checked as a user.

Real servers on 127.0.0.1 (tests/server/conftest.py `make_server`) over SQLite and
PostgreSQL stores, key sessions (`/thread/{id}`) and account sessions (`/mail/thread/{id}`),
and the `flux thread` command against a real `flux server` (`running`).

What a stranger (Mallory, never a participant) must not do: put a message into someone's
conversation (a reply to their sent id, a message reusing that id, a cc list naming them),
or learn anything of another user's sent mail through a thread request (full ids,
prefixes, `from=`). What each person of a three-party conversation must see: their own
view, their own sent messages with their own delivery state, nobody else's.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cli.cli_helpers import flux, user_env
from clocks import FakeClock
from flux.protocol import Identity
from postgres_env import postgres_dsn

Harness = Any  # tests/server/conftest.py's Harness, as its fixtures give it
ServerFactory = Any

PASSWORD = "correct horse battery staple"


def make_identity(label: str) -> Identity:
    return Identity(hashlib.sha256(f"flux-review12-threads:{label}".encode()).digest())


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def srv(
    request: pytest.FixtureRequest, make_server: ServerFactory, clock: FakeClock
) -> AsyncIterator[Harness]:
    """A hosted-mode server whose mail store is an SQLite file or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield await make_server(sqlite=True)
        return
    from flux.store.postgres import PostgresStore

    store = PostgresStore(postgres_dsn(), clock=clock, fresh_schema=True)
    await store.open()
    harness = await make_server(store=store)
    try:
        yield harness
    finally:
        await (
            harness.client.close()
        )  # before its store closes (make_server's close is a no-op then)
        await store.close()


@pytest.fixture
async def people(srv: Harness) -> dict[str, Identity]:
    """alice, bob, carol (who write to each other) and mallory (a stranger), registered and
    logged in with key sessions."""
    who = {name: make_identity(name) for name in ("alice", "bob", "carol", "mallory")}
    await srv.register(*who.values())
    for ident in who.values():
        await srv.login(ident)
    return who


async def send(srv: Harness, sender: Identity, to: Identity, **kwargs: Any) -> dict[str, Any]:
    """Sign and submit one message (a millisecond later than the last: arrival order)."""
    srv.clock.advance(1)
    cc = kwargs.pop("cc", None)
    if cc is not None:
        kwargs["cc"] = [c.address for c in cc]
    msg = srv.message(sender, to, **kwargs)
    await srv.send(msg)
    return msg


async def thread(srv: Harness, who: Identity, msg_id: str, expect: int = 200,
                 **params: str) -> dict[str, Any]:  # fmt: skip
    return await srv.get(f"/thread/{msg_id}", who, expect, address=who.address, **params)


def view(answer: dict[str, Any]) -> list[tuple[str, str]]:
    """(id, "sent" or "in") of each message of a thread answer, in order."""
    return [(m["id"], m.get("_folder", "in")) for m in answer["messages"]]


def check_own_view(answer: dict[str, Any], who: Identity) -> None:
    """Every item is the caller's: a sent item is theirs (with its delivery state), a
    received one carries no delivery state (someone else's recipients, a Bcc included)."""
    for m in answer["messages"]:
        if m.get("_folder") == "sent":
            assert m["from"] == who.address and "_delivery" in m and "_status" not in m, m
        else:
            assert "_delivery" not in m and "_sent_at" not in m and "_status" in m, m
            assert who.address in [m["to"], *m.get("cc", [])], m


# -- three people, each their own view ------------------------------------------------------------
async def test_three_people_each_see_their_own_view(srv: Harness, people: dict) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    s1 = await send(srv, alice, bob, cc=[carol], subject="plans")
    r1 = await send(srv, bob, alice, cc=[carol], reply_to=s1["id"])  # reply-all
    r2 = await send(srv, carol, bob, cc=[alice], reply_to=r1["id"])  # reply-all to Bob's
    r3 = await send(srv, alice, carol, reply_to=r2["id"])  # only to Carol: Bob is not in it
    ids = [s1["id"], r1["id"], r2["id"], r3["id"]]
    expected = {
        "alice": [(ids[0], "sent"), (ids[1], "in"), (ids[2], "in"), (ids[3], "sent")],
        "bob": [(ids[0], "in"), (ids[1], "sent"), (ids[2], "in")],
        "carol": [(ids[0], "in"), (ids[1], "in"), (ids[2], "sent"), (ids[3], "in")],
    }
    for name, want in expected.items():
        for msg_id, _ in want:  # asked by any message of it, by full id and by short id
            for ask in (msg_id, msg_id[:8]):
                got = await thread(srv, people[name], ask)
                assert view(got) == want, (name, ask)
                check_own_view(got, people[name])
    # Bob asking by the id of the reply he was not sent: the same 404 as an unknown id
    unknown = await thread(srv, bob, "0" * 32, expect=404)
    assert await thread(srv, bob, r3["id"], expect=404) == unknown
    assert await thread(srv, bob, r3["id"][:10], expect=404) == {**unknown}


async def test_account_sessions_each_see_their_own_view_bcc_hidden(srv: Harness) -> None:
    """Password accounts through `/mail/send` and `/mail/thread`; Alice's Bcc to Dave is in
    her own sent item's `_delivery` and nowhere in Bob's, Carol's or Dave's view."""
    users = {}
    for name in ("alice", "bob", "carol", "dave"):
        body = {"username": name, "password": PASSWORD}
        made = await srv.post("/account/register", body)
        users[name] = {"address": made["address"], "X-Flux-Session": made["session"]}

    async def mail_send(name: str, **body: Any) -> str:
        srv.clock.advance(1)
        resp = await srv.client.post("/mail/send", json=body, headers=hdr(name))
        answer = await resp.json()
        assert resp.status == 200, answer
        return answer["id"]

    def hdr(name: str) -> dict[str, str]:
        return {"X-Flux-Session": users[name]["X-Flux-Session"]}

    async def mail_thread(name: str, ask: str, expect: int = 200) -> dict[str, Any]:
        resp = await srv.client.get(f"/mail/thread/{ask}", headers=hdr(name))
        answer = await resp.json()
        assert resp.status == expect, answer
        return answer

    s1 = await mail_send("alice", to="bob", cc=["carol"], bcc=["dave"], content="the plan")
    r1 = await mail_send("bob", to="alice", cc=["carol"], content="yes", re=s1)
    r2 = await mail_send("carol", to="bob", cc=["alice"], content="me too", re=r1)
    mine = (await mail_thread("alice", s1[:8]))["messages"]
    assert [(m["id"], m.get("_folder", "in")) for m in mine] == [
        (s1, "sent"), (r1, "in"), (r2, "in")]  # fmt: skip
    assert users["dave"]["address"] in mine[0]["_delivery"]  # Alice knows whom she Bcc'd
    for name, want in (("bob", [s1, r2]), ("carol", [s1, r1])):
        got = await mail_thread(name, s1)
        assert [m["id"] for m in got["messages"] if m.get("_folder") != "sent"] == want
        assert users["dave"]["address"] not in json.dumps(got), name
    # Dave has only his Bcc copy: the replies were not sent to him
    dave = await mail_thread("dave", s1)
    assert [m["id"] for m in dave["messages"]] == [s1]
    assert dave["messages"][0]["bcc"] == [users["dave"]["address"]]
    # nobody reaches a thread of Alice's that they were not sent, or another mailbox
    note = await mail_send("alice", to="carol", content="just carol")
    missing = await mail_thread("bob", "f" * 32, expect=404)
    assert await mail_thread("bob", note, expect=404) == missing
    assert await mail_thread("bob", note[:9], expect=404) == missing
    resp = await srv.client.get(f"/mail/thread/{note}", headers=hdr("bob"),
                                params={"address": users["alice"]["address"]})  # fmt: skip
    assert resp.status == 403 and (await resp.json())["field"] == "address"


# -- a stranger cannot join or see a conversation ---------------------------------------------------
async def test_a_planted_reply_to_a_sent_id_stays_out(srv: Harness, people: dict) -> None:
    alice, bob, carol, mallory = (people[n] for n in ("alice", "bob", "carol", "mallory"))
    s1 = await send(srv, alice, bob, cc=[carol])
    # Mallory learned the id (say from a forwarded copy) and "replies", naming everyone
    for target in (alice, bob, carol):
        others = [p for p in (alice, bob, carol) if p is not target]
        await send(srv, mallory, target, cc=others, reply_to=s1["id"])
    assert view(await thread(srv, alice, s1["id"])) == [(s1["id"], "sent")]
    assert view(await thread(srv, bob, s1["id"])) == [(s1["id"], "in")]
    assert view(await thread(srv, carol, s1["id"])) == [(s1["id"], "in")]
    # a real reply still joins, after the planted ones
    r1 = await send(srv, bob, alice, cc=[carol], reply_to=s1["id"])
    assert view(await thread(srv, alice, r1["id"])) == [(s1["id"], "sent"), (r1["id"], "in")]


async def test_a_message_reusing_a_sent_id_is_its_own_thread(srv: Harness, people: dict) -> None:
    """Mallory sends Alice a message with the id of Alice's sent message, its cc naming Bob
    and Carol: a bare id is then 409 (two senders), `from` chooses, neither thread holds
    the other, and Bob's reply still goes to Alice's message."""
    alice, bob, carol, mallory = (people[n] for n in ("alice", "bob", "carol", "mallory"))
    s1 = await send(srv, alice, bob, cc=[carol])
    squat = await send(srv, mallory, alice, cc=[bob, carol], message_id=s1["id"])
    clash = await thread(srv, alice, s1["id"], expect=409)
    assert (clash["code"], clash["field"]) == ("ambiguous", "from")
    assert clash["ambiguous"] == [{"id": s1["id"],
                                   "senders": sorted([alice.address, mallory.address])}]  # fmt: skip
    assert (await thread(srv, alice, s1["id"][:8], expect=409))["field"] == "from"
    r1 = await send(srv, bob, alice, cc=[carol], reply_to=s1["id"])
    mine = await thread(srv, alice, s1["id"], **{"from": alice.address})
    assert view(mine) == [(s1["id"], "sent"), (r1["id"], "in")]
    theirs = await thread(srv, alice, s1["id"], **{"from": mallory.address})
    assert (
        view(theirs) == [(squat["id"], "in")] and theirs["messages"][0]["from"] == mallory.address
    )
    assert view(await thread(srv, alice, r1["id"])) == view(mine)


async def test_a_reply_all_naming_the_squatter_still_joins_the_sent_message(
    srv: Harness, people: dict
) -> None:
    """Mallory is in the cc of Alice's message (so knows its id), sends Alice another
    message with that id, then Bob replies to all (Alice, Mallory): the reply answers
    Alice's message, the oldest of the two that name Bob (docs/API.md: "A reply to a message
    you sent joins its conversation"), but is filed under Mallory's."""
    alice, bob, mallory = people["alice"], people["bob"], people["mallory"]
    s1 = await send(srv, alice, bob, cc=[mallory])
    await send(srv, mallory, alice, cc=[bob], message_id=s1["id"])
    r1 = await send(srv, bob, alice, cc=[mallory], reply_to=s1["id"])
    mine = await thread(srv, alice, s1["id"], **{"from": alice.address})
    assert view(mine) == [(s1["id"], "sent"), (r1["id"], "in")]


async def test_a_short_id_of_both_a_sent_and_a_received_message_is_ambiguous(
    srv: Harness, people: dict
) -> None:
    """Mallory (who knows an 8-digit prefix of Alice's sent id) sends Alice a message whose
    id starts the same: `flux thread <prefix>` must not silently open Mallory's message
    in place of Alice's own; it is 409 with both candidates."""
    alice, bob, mallory = people["alice"], people["bob"], people["mallory"]
    s1 = await send(srv, alice, bob)
    lookalike = s1["id"][:8] + ("0" if s1["id"][8] != "0" else "1") + s1["id"][9:]
    squat = await send(srv, mallory, alice, message_id=lookalike)
    clash = await thread(srv, alice, s1["id"][:8], expect=409)
    assert (clash["code"], clash["field"], clash["count"]) == ("ambiguous", "id", 2)
    assert sorted((c["id"], c["from"]) for c in clash["candidates"]) == sorted(
        [(s1["id"], alice.address), (squat["id"], mallory.address)])  # fmt: skip
    # one more digit decides, either way
    assert view(await thread(srv, alice, s1["id"][:9])) == [(s1["id"], "sent")]
    assert view(await thread(srv, alice, lookalike[:9])) == [(squat["id"], "in")]


async def test_a_thread_request_reveals_no_one_elses_sent_mail(srv: Harness, people: dict) -> None:
    alice, bob, carol, mallory = (people[n] for n in ("alice", "bob", "carol", "mallory"))
    s1 = await send(srv, alice, bob, subject="private")
    unknown = await thread(srv, carol, "e" * 32, expect=404)
    for ask, params in (
        (s1["id"], {}),
        (s1["id"][:8], {}),
        (s1["id"], {"from": alice.address}),
        (s1["id"][:8], {"from": alice.address}),
        (s1["id"], {"from": carol.address}),
        (s1["id"][:8], {"from": carol.address}),
    ):
        assert await thread(srv, carol, ask, expect=404, **params) == unknown, (ask, params)
    # even holding a message with the same id and prefix, Mallory sees only her own
    await send(srv, mallory, carol, message_id=s1["id"])
    got = await thread(srv, carol, s1["id"])
    assert [m["from"] for m in got["messages"]] == [mallory.address]
    # and a prefix of it is hers alone: Alice's sent message is no second candidate
    assert await thread(srv, carol, s1["id"][:8]) == got
    assert view(await thread(srv, mallory, s1["id"])) == [(s1["id"], "sent")]
    assert "_delivery" not in json.dumps(got) and bob.address not in json.dumps(got)
    # another address's thread: 403 for the caller's token, whatever the id
    resp = await srv.client.get(f"/thread/{s1['id']}", headers=srv.auth(carol),
                                params={"address": alice.address})  # fmt: skip
    assert resp.status == 403
    assert (await srv.client.get(f"/thread/{s1['id']}",
                                 params={"address": alice.address})).status == 401  # fmt: skip


# -- a user's own cases -------------------------------------------------------------------------------
async def test_a_message_to_yourself_is_there_once(srv: Harness, people: dict) -> None:
    alice, bob = people["alice"], people["bob"]
    note = await send(srv, alice, alice, subject="note to self")
    follow = await send(srv, alice, bob, reply_to=note["id"])
    got = await thread(srv, alice, note["id"][:8])
    assert view(got) == [(note["id"], "in"), (follow["id"], "sent")]
    assert got["messages"][0]["_status"] in ("pending", "delivered")
    # the received copy deleted, the sent one stands for it, still once
    await srv.post("/delete", {"address": alice.address, "ids": [note["id"]]}, alice)
    assert view(await thread(srv, alice, follow["id"])) == [
        (note["id"], "sent"), (follow["id"], "sent")]  # fmt: skip
    assert view(await thread(srv, bob, follow["id"])) == [(follow["id"], "in")]


async def test_deleted_messages_leave_the_view_of_their_owner_only(
    srv: Harness, people: dict
) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    s1 = await send(srv, alice, bob, cc=[carol])
    r1 = await send(srv, bob, alice, cc=[carol], reply_to=s1["id"])
    r2 = await send(srv, carol, alice, cc=[bob], reply_to=r1["id"])
    await srv.post("/delete", {"address": alice.address, "ids": [r1["id"]]}, alice)
    assert view(await thread(srv, alice, r2["id"])) == [(s1["id"], "sent"), (r2["id"], "in")]
    # asked by the deleted message's own id: the rest of its conversation
    assert view(await thread(srv, alice, r1["id"])) == [(s1["id"], "sent"), (r2["id"], "in")]
    assert view(await thread(srv, bob, r2["id"])) == [
        (s1["id"], "in"), (r1["id"], "sent"), (r2["id"], "in")]  # fmt: skip
    assert view(await thread(srv, carol, r2["id"])) == [
        (s1["id"], "in"), (r1["id"], "in"), (r2["id"], "sent")]  # fmt: skip


async def test_a_reply_arriving_before_its_parent(srv: Harness, people: dict) -> None:
    """Carol's reply-all to Bob's message reaches Alice first; the message then adopts it,
    but not Mallory's early "reply" to the same id."""
    alice, bob, carol, mallory = (people[n] for n in ("alice", "bob", "carol", "mallory"))
    srv.clock.advance(1)
    parent = srv.message(bob, alice, cc=[carol.address], subject="late")
    early = await send(srv, carol, alice, cc=[bob], reply_to=parent["id"])
    planted = await send(srv, mallory, alice, reply_to=parent["id"])
    mine = await send(srv, alice, carol, cc=[bob], reply_to=early["id"])
    assert view(await thread(srv, alice, early["id"])) == [
        (early["id"], "in"),
        (mine["id"], "sent"),
    ]
    srv.clock.advance(1)
    await srv.send(parent)  # by arrival: the parent is shown last, as it came
    want = [(early["id"], "in"), (mine["id"], "sent"), (parent["id"], "in")]
    for ask in (parent["id"], early["id"], mine["id"]):
        assert view(await thread(srv, alice, ask)) == want
    assert view(await thread(srv, alice, planted["id"])) == [(planted["id"], "in")]


# -- `flux thread` against a real server --------------------------------------------------------------
def sent_id(result: Any) -> str:
    assert result.returncode == 0, result.stderr
    return re.search(r"([0-9a-f]{32})", result.stdout).group(1)


@pytest.mark.parametrize("running", [{"backend": "sqlite"}], indirect=True)
async def test_flux_thread_shows_each_their_own_and_no_strangers(
    running: Any, tmp_path: Path
) -> None:
    from cli.cli_helpers import make_key

    async def run(*args: str, who: str) -> Any:
        key = str(tmp_path / f"{who}.json")
        return await asyncio.to_thread(flux, *args, "--key", key, **envs[who])

    envs, addr = {}, {}
    for who in ("alice", "bob", "carol", "mallory"):
        envs[who] = user_env(tmp_path, running.url, who)
        addr[who] = make_key(tmp_path / f"{who}.json")
        assert (await run("register", who=who)).returncode == 0
    s1 = sent_id(await run("send", addr["bob"], "plans", "--cc", addr["carol"], who="alice"))
    await run("send", addr["alice"], "me too", "--reply-to", s1, who="mallory")  # planted
    r1 = sent_id(
        await run("send", addr["alice"], "yes", "--cc", addr["carol"], "--reply-to", s1, who="bob")
    )  # reply-all
    for who, mine in (("alice", [s1]), ("bob", [r1]), ("carol", [])):
        shown = await run("thread", s1[:8], "--json", who=who)
        assert shown.returncode == 0, (who, shown.stderr)
        items = json.loads(shown.stdout)
        assert [m["id"] for m in items] == [s1, r1], who
        assert [m["id"] for m in items if m.get("_folder") == "sent"] == mine, who
        assert addr["mallory"] not in shown.stdout, who
    for ask in (s1, s1[:8]):  # Mallory was not sent it: as unknown as any id
        missing = await run("thread", ask, who="mallory")
        assert missing.returncode == 1 and "Traceback" not in missing.stderr
        assert len(missing.stderr.strip().splitlines()) == 1, missing.stderr
        assert s1 not in missing.stdout


async def test_a_reply_from_your_own_bcc_recipient_joins_your_message(srv: Harness) -> None:
    """Alice Bcc's Dave; Dave answers Alice. Alice knows she wrote to Dave (her sent item's
    `_delivery` names him), so his answer is part of her conversation, in her view."""
    users = {}
    for name in ("alice", "bob", "dave"):
        made = await srv.post("/account/register", {"username": name, "password": PASSWORD})
        users[name] = {"X-Flux-Session": made["session"]}

    async def mail_send(name: str, **body: Any) -> str:
        srv.clock.advance(1)
        resp = await srv.client.post("/mail/send", json=body, headers=users[name])
        assert resp.status == 200, await resp.text()
        return (await resp.json())["id"]

    s1 = await mail_send("alice", to="bob", bcc=["dave"], content="the plan")
    r1 = await mail_send("dave", to="alice", content="thanks for the copy", re=s1)
    resp = await srv.client.get(f"/mail/thread/{s1}", headers=users["alice"])
    assert [m["id"] for m in (await resp.json())["messages"]] == [s1, r1]
