"""The submit pipeline's rules (server/submission.py), each proved through a real server.

These tests were written to kill the mutants of `submission.py` that the other server and
federation tests let live (tests/mutation/submission.md, `python scripts/mutation.py
src/flux/server/submission.py`): each names the rule a user, operator or peer can observe
and checks it through HTTP or the WebSocket on 127.0.0.1, over a real store.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from flux.protocol import Identity, ServerSigner, append_hop, compose
from flux.server.app import PARTS
from flux.store import Strike

ELSEWHERE = "localhost:9"  # a closed port: queued mail stays queued for the assertions
SPAM = "WINNER! claim your prize, free money, click here now"


def metric(srv: Any, name: str, **labels: str) -> float:
    """The current value of one sample of the server's Prometheus registry."""
    value = srv.app[PARTS]["metrics"].registry.get_sample_value(name, labels or None)
    return value or 0.0


async def stored(srv: Any, who: Identity, msg: dict[str, Any]) -> dict[str, Any]:
    return (await srv.get(f"/message/{who.address}/{msg['id']}", who))["message"]


# -- every refusal names its field and says why ---------------------------------------------


async def test_mail_that_has_already_expired_is_refused_naming_expires_and_why(pair, alice, bob):
    now = pair.clock.now
    for expires in (now, now - 1, 1):  # `now` itself is past: nobody could read it
        body = await pair.send(pair.message(alice, bob, "late", expires=expires), expect=400)
        assert (body["code"], body["field"]) == ("invalid_value", "expires")
        assert body["error"] == "expires is already past: this message could never be read"
    for expires in (now + 1, 0):  # 0: deleted on first read, a time that never passes
        await pair.send(pair.message(alice, bob, "in time", expires=expires))
    assert len((await pair.get(f"/inbox/{bob.address}", bob))["messages"]) == 2


async def test_mail_for_nobody_hosted_is_404_naming_to_or_bcc(srv, alice, bob):
    await srv.register(alice)
    body = await srv.send(srv.message(alice, bob), expect=404)
    assert (body["code"], body["field"]) == ("unknown_recipient", "to")
    assert body["error"] == "no recipient of this message is hosted here"
    carol = Identity.generate()
    outgoing = compose(alice, alice.address, "hi", bcc=[carol.address], now_ms=srv.clock.now)
    ((_, bcc_copy),) = outgoing.bcc_copies
    body = await srv.send(bcc_copy, expect=404)
    assert (body["code"], body["field"]) == ("unknown_recipient", "bcc")


async def test_reusing_ones_own_id_with_another_body_is_409_naming_id(pair, alice, bob):
    first = pair.message(alice, bob, "first body")
    await pair.send(first)
    other = pair.message(alice, bob, "another body", message_id=first["id"])
    body = await pair.send(other, expect=409)
    assert (body["code"], body["field"]) == ("conflict", "id")
    assert body["error"] == "you already sent a message with this id and another body"
    assert (await stored(pair, bob, first))["content"] == "first body"


async def test_a_full_mailbox_is_429_naming_to_with_the_quota(make_server, alice, bob):
    srv = await make_server(pending_quota=2)
    await srv.register(alice, bob)
    await srv.send(srv.message(bob, alice, "bob writes first: alice is no stranger"))
    for n in range(2):
        await srv.send(srv.message(alice, bob, f"message {n}"))
    body = await srv.send(srv.message(alice, bob, "one too many"), expect=429)
    assert (body["code"], body["field"]) == ("quota_exceeded", "to")
    assert body["error"] == "the recipient has 2 pending messages"


async def test_a_full_stranger_share_is_429_naming_from_with_both_limits(make_server, alice, bob):
    srv = await make_server(pending_quota=10, stranger_pending_total=3,
                            stranger_pending_per_sender=2)  # fmt: skip
    await srv.register(alice, bob)
    for n in range(2):
        await srv.send(srv.message(alice, bob, f"first contact {n}"))
    body = await srv.send(srv.message(alice, bob, "third"), expect=429)
    assert (body["code"], body["field"]) == ("quota_exceeded", "from")
    assert body["error"] == (
        "the recipient has not written to you, and the stranger share of its pending mail is "
        "full (3 from all strangers, 2 from any one); try again once it has read them"
    )


async def test_relaying_for_a_sender_not_hosted_is_403_naming_domains(srv, alice, bob):
    await srv.register(bob)
    msg = srv.message(alice, bob)  # alice is not hosted here
    body = await srv.send({"message": msg, "domains": {bob.address: ELSEWHERE}}, expect=403)
    assert (body["code"], body["field"]) == ("relay_denied", "domains")
    assert body["error"] == "this server relays mail to other domains only for addresses it hosts"


async def test_domains_naming_an_address_the_copy_is_not_for_is_400_naming_it(pair, alice, bob):
    carol = Identity.generate()
    msg = pair.message(alice, bob)
    body = await pair.send({"message": msg, "domains": {carol.address: ELSEWHERE}}, expect=400)
    assert (body["code"], body["field"]) == ("invalid_value", f"domains.{carol.address}")
    assert body["error"] == "domains names an address this copy is not for"


async def test_a_quarantined_server_on_the_route_is_named_first_in_order(pair, alice, bob):
    for server in ("zz.example", "bad.example"):
        for n in range(3):
            await pair.store.add_strike(Strike(server, f"{server}-{n}", "forged_body",
                                               "r.example", "a" * 32, n))  # fmt: skip
    route = [{"server": "zz.example", "t": 1}, {"server": "bad.example", "t": 2}]
    body = await pair.send(pair.message(alice, bob) | {"route": route}, expect=403)
    assert (body["code"], body["field"]) == ("quarantined", "route")
    assert body["error"] == "the message passed through quarantined bad.example"
    # the chain's servers are looked at too, not only the route
    relay = ServerSigner("bad.example", Identity.generate())
    sealed = append_hop(pair.message(alice, bob), relay, next_hop="flux.test",
                        now_ms=pair.clock.now)  # fmt: skip
    body = await pair.send(sealed, expect=403)
    assert body["error"] == "the message passed through quarantined bad.example"


async def test_report_only_quarantine_accepts_and_says_what_it_would_refuse(
    make_server, alice, bob, caplog
):
    srv = await make_server(enforce_quarantine=False)
    await srv.register(alice, bob)
    for server in ("zz.example", "bad.example"):
        for n in range(3):
            await srv.store.add_strike(Strike(server, f"{server}-{n}", "forged_body",
                                              "r.example", "a" * 32, n))  # fmt: skip
    route = [{"server": "zz.example", "t": 1}, {"server": "bad.example", "t": 2}]
    msg = srv.message(alice, bob) | {"route": route}
    with caplog.at_level(logging.WARNING, logger="flux.server"):
        await srv.send(msg)
    lines = [r.getMessage() for r in caplog.records if "quarantine_report_only" in r.getMessage()]
    assert lines == [f"event=quarantine_report_only id={msg['id']} via=bad.example,zz.example"]
    assert metric(srv, "flux_refusals_total", code="quarantined_report_only") == 1


async def test_a_hop_sealed_for_another_server_is_refused_as_a_replay(pair, alice, bob):
    relay = ServerSigner("relay.example", Identity.generate())
    msg = pair.message(alice, bob)
    first = append_hop(msg, relay, next_hop="elsewhere.example", now_ms=pair.clock.now)
    body = await pair.send(first, expect=400)
    assert (body["code"], body["field"]) == ("chain_invalid", "integrity_chain[0]")
    assert body["error"] == (
        "the last hop sealed this message for 'elsewhere.example', not this server"
    )
    # the last of two hops is the one judged: the first one's `next` is the second server
    second = append_hop(append_hop(msg, relay, next_hop="hop2.example", now_ms=pair.clock.now),
                        ServerSigner("hop2.example", Identity.generate()),
                        next_hop="other.example", now_ms=pair.clock.now)  # fmt: skip
    body = await pair.send(second, expect=400)
    assert body["field"] == "integrity_chain[1]"
    assert "'other.example'" in body["error"]
    # sealed for this server: accepted
    good = append_hop(append_hop(msg, relay, next_hop="hop2.example", now_ms=pair.clock.now),
                      ServerSigner("hop2.example", Identity.generate()),
                      next_hop="flux.test", now_ms=pair.clock.now)  # fmt: skip
    await pair.send(good)


# -- what is stored is what was sent, plus this server's hop ----------------------------------


async def test_the_senders_tags_are_kept_lowercased_once_each(pair, alice, bob):
    msg = pair.message(alice, bob, tags=["Work", "work", "Urgent", "b"])
    await pair.send(msg)
    assert (await stored(pair, bob, msg))["_tags"] == ["b", "urgent", "work"]
    found = await pair.get(f"/inbox/{bob.address}", bob, tag="urgent")
    assert [m["id"] for m in found["messages"]] == [msg["id"]]


async def test_the_stored_copy_carries_this_servers_hop_for_local_delivery(pair, alice, bob):
    msg = pair.message(alice, bob)
    pair.clock.advance(1234)
    await pair.send(msg)
    got = await stored(pair, bob, msg)
    hop = got["integrity_chain"][-1]
    assert (hop["server"], hop["next"], hop["t"], hop["cv"]) == (
        "flux.test",
        "local",
        pair.clock.now,
        "none",
    )
    assert got["content"] == msg["content"] and got["from"] == alice.address


# -- the rate budget -------------------------------------------------------------------------


async def test_only_mail_accepted_from_this_sender_counts_against_its_budget(
    make_server, alice, bob, carol
):
    srv = await make_server(open_mode=True, spam_rate_per_minute=2)
    first = srv.message(alice, bob, "one")
    await srv.send(first)
    await srv.send(first)  # a replay: not counted
    await srv.send(srv.message(carol, bob, "carol's mail is hers"))
    await srv.send(srv.message(carol, bob, "carol's mail is hers, again"))
    await srv.send(srv.message(alice, bob, "two"))
    body = await srv.send(srv.message(alice, bob, "three"), expect=451)
    assert body["reasons"] == ["rate limit exceeded"]
    srv.clock.advance(61_000)  # a minute later the budget is back
    await srv.send(srv.message(alice, bob, "next minute"))


async def test_spam_is_refused_with_every_reason(pair, alice, bob):
    body = await pair.send(pair.message(alice, bob, SPAM), expect=451)
    assert (
        body["code"] == "spam" and body["reasons"] and "rate limit exceeded" not in body["reasons"]
    )


# -- answers and metrics ---------------------------------------------------------------------


async def test_the_answer_lists_each_recipient_and_says_if_it_was_a_replay(pair, alice, bob):
    carol = Identity.generate()
    msg = pair.message(alice, bob, cc=[carol.address])
    body = await pair.send({"message": msg, "domains": {carol.address: ELSEWHERE}})
    assert body == {"ok": True, "id": msg["id"], "duplicate": False,
                    "recipients": {bob.address: "stored", carol.address: "queued"}}  # fmt: skip
    again = await pair.send({"message": msg, "domains": {carol.address: ELSEWHERE}})
    assert again == {"ok": True, "id": msg["id"], "duplicate": True,
                     "recipients": {bob.address: "duplicate", carol.address: "duplicate"}}  # fmt: skip
    assert metric(pair, "flux_submissions_total", outcome="stored") == 1
    assert metric(pair, "flux_submissions_total", outcome="duplicate") == 1


async def test_submit_time_is_measured_per_message(pair, alice, bob, caplog):
    import time

    before = time.perf_counter()
    with caplog.at_level(logging.DEBUG, logger="flux.server"):
        msg = pair.message(alice, bob)
        await pair.send(msg)
    took = time.perf_counter() - before
    assert metric(pair, "flux_submit_seconds_count") == 1
    assert 0 <= metric(pair, "flux_submit_seconds_sum") <= took  # one message's own time
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("event=submit ")]
    assert lines == [f"event=submit id={msg['id']} from={alice.address} stored=1 duplicate=False"]


async def test_a_new_message_is_pushed_to_the_recipients_socket(pair, alice, bob):
    ws = await pair.ws(bob)
    msg = pair.message(alice, bob)
    await pair.send(msg)
    frame = await ws.receive_json(timeout=5)
    await ws.close()
    assert frame["action"] == "message"
    assert (frame["message"]["id"], frame["message"]["from"]) == (msg["id"], alice.address)


# -- who may send what where -----------------------------------------------------------------


async def test_a_sender_not_hosted_here_may_still_write_to_a_local_recipient(srv, bob):
    """The relay rule is about other domains: mail for this server's own users is taken
    from anyone (that is what a mail server is for)."""
    await srv.register(bob)
    stranger = Identity.generate()
    body = await srv.send(srv.message(stranger, bob, "hello from outside"))
    assert body["recipients"] == {bob.address: "stored"}


async def test_a_message_refused_here_is_not_queued_for_elsewhere_either(make_server, alice, bob):
    srv = await make_server(pending_quota=1)
    await srv.register(alice, bob)
    await srv.send(srv.message(bob, alice, "bob knows alice"))
    await srv.send(srv.message(alice, bob, "fills bob's one place"))
    carol = Identity.generate()
    msg = srv.message(alice, bob, "bob is full", cc=[carol.address])
    body = await srv.send({"message": msg, "domains": {carol.address: ELSEWHERE}}, expect=429)
    assert body["field"] == "to"
    assert (await srv.get("/stats"))["queue"]["queued"] == 0


@pytest.mark.parametrize("sqlite", [False, True], ids=["memory", "sqlite"])
async def test_in_open_mode_writing_to_someone_makes_their_mail_no_strangers(
    make_server, alice, mallory, sqlite
):
    srv = await make_server(open_mode=True, sqlite=sqlite, stranger_pending_total=1,
                            stranger_pending_per_sender=1)  # fmt: skip
    await srv.send(srv.message(mallory, alice, "first contact"))
    await srv.send(srv.message(mallory, alice, "second contact"), expect=429)
    await srv.send(srv.message(alice, mallory, "ok, I know you now"))
    await srv.send(srv.message(mallory, alice, "second contact"))


async def test_two_messages_for_one_domain_are_each_queued(pair, alice, bob):
    """The queue knows a message by its body: another message to the same domain is
    queued too, and only the same message again is a duplicate."""
    carol = Identity.generate()
    where = {carol.address: ELSEWHERE}
    first = pair.message(alice, carol, "first")
    second = pair.message(alice, carol, "second")
    for msg in (first, second):
        body = await pair.send({"message": msg, "domains": where})
        assert body["recipients"] == {carol.address: "queued"}
    again = await pair.send({"message": second, "domains": where})
    assert again["recipients"] == {carol.address: "duplicate"}
    assert (await pair.get("/stats"))["queue"]["queued"] == 2


async def test_mail_sent_before_registering_makes_nobody_known(make_server, alice, mallory):
    """Only a sender this server hosts comes to know whom it wrote to: mail mallory sent
    from outside does not later let alice past the stranger share of mallory's mailbox."""
    srv = await make_server(stranger_pending_total=1, stranger_pending_per_sender=1)
    await srv.register(alice)
    await srv.send(srv.message(mallory, alice, "written from outside"))
    await srv.register(mallory)
    await srv.send(srv.message(alice, mallory, "alice is a stranger to mallory"))
    await srv.send(srv.message(alice, mallory, "still a stranger"), expect=429)
