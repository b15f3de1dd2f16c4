"""A replay is answered from what is already stored, before the sender's budget is looked
at (server/submission.py `_dedupe`), proved through a real server on 127.0.0.1.

Written for `_dedupe__mutmut_4` (tests/mutation/submission.md): with the stored copy never
looked up, the store still dedupes inside its transaction, but the replay first meets the
rate check, so a client retrying a send it did not see answered is refused as spam.
"""

from __future__ import annotations


async def test_a_replay_from_a_sender_over_its_budget_is_still_answered_duplicate(
    make_server, alice, bob
):
    srv = await make_server(open_mode=True, spam_rate_per_minute=2)
    first = srv.message(alice, bob, "one")
    await srv.send(first)
    await srv.send(srv.message(alice, bob, "two"))
    body = await srv.send(srv.message(alice, bob, "three"), expect=451)
    assert body["reasons"] == ["rate limit exceeded"]
    again = await srv.send(first)  # the client retries a send whose answer it lost
    assert again == {"ok": True, "id": first["id"], "duplicate": True,
                     "recipients": {bob.address: "duplicate"}}  # fmt: skip


async def test_reusing_an_id_with_another_body_over_budget_is_409_not_spam(make_server, alice, bob):
    srv = await make_server(open_mode=True, spam_rate_per_minute=1)
    first = srv.message(alice, bob, "one")
    await srv.send(first)
    other = srv.message(alice, bob, "another body", message_id=first["id"])
    body = await srv.send(other, expect=409)
    assert (body["code"], body["field"]) == ("conflict", "id")


async def test_an_id_another_sender_already_used_is_no_replay_and_no_conflict(
    pair, alice, bob, mallory
):
    """Ids are each sender's own: mallory reusing alice's id to bob is new mail, stored."""
    mine = pair.message(alice, bob, "alice's message")
    await pair.send(mine)
    await pair.register(mallory)
    theirs = pair.message(mallory, bob, "mallory's message", message_id=mine["id"])
    body = await pair.send(theirs)
    assert body == {"ok": True, "id": mine["id"], "duplicate": False,
                    "recipients": {bob.address: "stored"}}  # fmt: skip
