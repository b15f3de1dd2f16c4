"""The sender's sent record as the submit pipeline writes it (server/submission.py
`sent_record`, PROTOCOL.md §10.3 "Delivery state"), read back through GET /sent on a real
server on 127.0.0.1, on each store backend.

Written for the mutants of `sent_record` (tests/mutation/submission.md): the sent-mail tests
read the record after the delivery worker has settled it, and a settlement replaces a
recipient's entry whole, so the entry the submission itself wrote (each key, `attempts` 0,
`next_retry_at` now, no `error`) went unchecked.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from flux.protocol import Identity

ELSEWHERE = "localhost:9"  # a closed port: every attempt fails and is retried
NOT_HOSTED_REASON = "this server does not host this address"
BACKENDS = pytest.mark.parametrize("sqlite", [False, True], ids=["memory", "sqlite"])


async def sent_copy(srv: Any, who: Identity, msg_id: str) -> dict[str, Any]:
    return (await srv.get(f"/sent/{who.address}/{msg_id}", who))["message"]


async def first_attempt_settled(srv: Any, who: Identity, msg_id: str, rcpt: str) -> None:
    """Wait (real time, polling) until the delivery worker has settled one failed attempt
    of `msg_id` to `rcpt`: the destination then waits out its backoff, which the test's
    clock never reaches."""
    deadline = time.monotonic() + 30
    while (await sent_copy(srv, who, msg_id))["_delivery"][rcpt].get("attempts", 0) < 1:
        assert time.monotonic() < deadline, "the delivery worker never tried the destination"
        await asyncio.sleep(0.05)  # a polling interval, not synchronisation


@BACKENDS
async def test_local_mail_is_kept_with_each_recipients_exact_state(make_server, alice, bob, sqlite):
    """Stored for the hosted recipient, bounced at once for the one not hosted, both at
    the submission's time, and the envelope as the sender signed it."""
    srv = await make_server(sqlite=sqlite)
    await srv.register(alice, bob)
    await srv.login(alice)
    nobody = Identity.generate()
    msg = srv.message(alice, bob, "to bob, and cc someone not hosted", cc=[nobody.address])
    body = await srv.send(msg)
    assert body["recipients"] == {bob.address: "stored", nobody.address: "not_hosted"}
    now = srv.clock.now
    copy = await sent_copy(srv, alice, msg["id"])
    assert copy["_delivery"] == {
        bob.address: {"state": "stored", "at": now},
        nobody.address: {"state": "bounced", "at": now, "reason": NOT_HOSTED_REASON},
    }
    assert copy["_sent_at"] == now
    assert {k: v for k, v in copy.items() if not k.startswith("_")} == msg
    listed = (await srv.get(f"/sent/{alice.address}", alice))["messages"]
    assert [m["id"] for m in listed] == [msg["id"]]


@BACKENDS
async def test_a_replay_keeps_the_recipient_stored_in_a_new_sent_record(
    make_server, alice, bob, sqlite
):
    """A copy the recipient already holds counts as stored for the sender."""
    srv = await make_server(sqlite=sqlite)
    await srv.register(alice, bob)
    await srv.login(alice)
    msg = srv.message(alice, bob, "sent twice")
    await srv.send(msg)
    again = await srv.send(msg)
    assert again["recipients"] == {bob.address: "duplicate"}
    copy = await sent_copy(srv, alice, msg["id"])
    assert copy["_delivery"] == {bob.address: {"state": "stored", "at": srv.clock.now}}


@BACKENDS
async def test_a_queued_recipient_starts_with_no_attempt_and_is_due_at_once(
    make_server, alice, bob, sqlite
):
    """A copy for another server: `queued`, 0 attempts, next retry now, no error yet; the
    local recipient of the same message is `stored`. (The second message is read while its
    destination waits out the first one's failed attempt, so no settlement has touched it.)"""
    srv = await make_server(sqlite=sqlite, queue_retry_base_s=3_600.0)
    await srv.register(alice, bob)
    await srv.login(alice)
    carol, dave = Identity.generate(), Identity.generate()
    first = srv.message(alice, carol, "opens the destination")
    await srv.send({"message": first, "domains": {carol.address: ELSEWHERE}})
    await first_attempt_settled(srv, alice, first["id"], carol.address)
    second = srv.message(alice, bob, "bob here, dave elsewhere", cc=[dave.address])
    body = await srv.send({"message": second, "domains": {dave.address: ELSEWHERE}})
    assert body["recipients"] == {bob.address: "stored", dave.address: "queued"}
    now = srv.clock.now
    copy = await sent_copy(srv, alice, second["id"])
    assert copy["_delivery"] == {
        bob.address: {"state": "stored", "at": now},
        dave.address: {"state": "queued", "at": now, "attempts": 0, "next_retry_at": now,
                       "error": None},
    }  # fmt: skip
    assert copy["_sent_at"] == now
