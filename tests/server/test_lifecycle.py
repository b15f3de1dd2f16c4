"""Send → fetch/inbox/peek/read/tag/move/delete, expires, thread, changes, open vs hosted."""

from __future__ import annotations

import asyncio
from typing import Any

from flux.protocol import verify_chain
from flux.protocol.chain import PublishedKey


async def test_health_and_federation_info(srv: Any) -> None:
    body = await srv.get("/health")
    assert body == {"ok": True, "version": body["version"], "domain": "flux.test"}
    info = await srv.get("/federation/info")
    assert info["domain"] == "flux.test"
    assert info["keys"][0]["pub"] == srv.key.signer.identity.pub_b64()
    assert info["keys"][0]["valid_from"] == srv.key.valid_from


async def test_send_then_fetch_marks_delivered(pair: Any, alice: Any, bob: Any) -> None:
    msg = pair.message(alice, bob, "Hello Bob, lunch tomorrow?")
    answer = await pair.send(msg)
    assert answer == {"ok": True, "id": msg["id"], "recipients": {bob.address: "stored"},
                      "duplicate": False}  # fmt: skip
    peek = await pair.get(f"/peek/{bob.address}", bob)
    assert peek["pending"] == 1 and [m["id"] for m in peek["messages"]] == [msg["id"]]
    fetched = await pair.get(f"/fetch/{bob.address}", bob)
    [got] = fetched["messages"]
    assert got["_status"] == "delivered" and got["_inbox"] == "inbox"
    assert got["content"] == "Hello Bob, lunch tomorrow?"
    assert (await pair.get(f"/fetch/{bob.address}", bob))["messages"] == []
    assert (await pair.get(f"/peek/{bob.address}", bob))["pending"] == 0


async def test_stored_message_carries_a_sealed_hop(pair: Any, alice: Any, bob: Any) -> None:
    msg = pair.message(alice, bob)
    await pair.send(msg)
    stored = (await pair.get(f"/message/{bob.address}/{msg['id']}", bob))["message"]
    assert stored["route"] == [{"server": "flux.test", "t": pair.clock.now}]
    [hop] = stored["integrity_chain"]
    assert hop["server"] == "flux.test" and hop["next"] == "local"
    key = PublishedKey(pair.key.signer.identity.public_key, valid_from=pair.key.valid_from)
    check = verify_chain(stored, lambda name: [key] if name == "flux.test" else [])
    assert check.sealed and str(check.verdict) == "pass"
    # and /integrity/verify agrees, with this server's published key
    report = await pair.post("/integrity/verify", stored)
    assert report["signature"]["valid"] is True
    assert report["chain"]["verdict"] == "pass" and report["chain"]["keys"] == "published"
    assert report["chain"]["hops"][0]["status"] == "sealed"


async def test_read_tag_move_delete(pair: Any, alice: Any, bob: Any) -> None:
    msg = pair.message(alice, bob, tags=["work"])
    await pair.send(msg)
    mid = msg["id"]
    read = await pair.post("/read", {"address": bob.address, "ids": [mid]}, bob)
    assert read["updated"] == [mid]
    again = await pair.post("/read", {"address": bob.address, "id": mid}, bob)
    assert again["updated"] == []  # never backwards, nothing changed
    tags = await pair.post("/tag", {"address": bob.address, "id": mid, "add": ["important"],
                                    "remove": ["work"]}, bob)  # fmt: skip
    assert tags["tags"] == ["important"]
    moved = await pair.post("/move", {"address": bob.address, "id": mid, "inbox": "archive"}, bob)
    assert moved["inbox"] == "archive"
    inboxes = await pair.get(f"/inboxes/{bob.address}", bob)
    assert inboxes["inboxes"]["archive"]["read"] == 1
    listed = await pair.get(f"/inbox/{bob.address}", bob, inbox="archive", tag="important")
    assert [m["id"] for m in listed["messages"]] == [mid]
    assert listed["messages"][0]["_tags"] == ["important"]
    deleted = await pair.post("/delete", {"address": bob.address, "ids": [mid]}, bob)
    assert deleted["updated"] == [mid]
    assert (await pair.get(f"/inbox/{bob.address}", bob))["messages"] == []
    gone = await pair.get(f"/inbox/{bob.address}", bob, status="deleted")
    assert [m["_status"] for m in gone["messages"]] == ["deleted"]
    status = await pair.get(f"/status/{bob.address}", bob)
    assert status["total"] == 0 and status["pending"] == 0 and status["hosted"] is True


async def test_inbox_pagination(make_server: Any, alice: Any, bob: Any) -> None:
    srv = await make_server(spam_rate_per_minute=1000)
    await srv.register(bob)
    await srv.login(bob)
    ids = []
    for n in range(5):
        msg = srv.message(alice, bob, f"Message number {n} of five")
        await srv.send(msg)
        ids.append(msg["id"])
        srv.clock.advance(1)
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = await srv.get(f"/inbox/{bob.address}", bob, **params)
        seen += [m["id"] for m in page["messages"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]


async def test_expires_zero_deleted_on_first_read(pair: Any, alice: Any, bob: Any) -> None:
    msg = pair.message(alice, bob, expires=0)
    await pair.send(msg)
    await pair.get(f"/fetch/{bob.address}", bob)
    visible = await pair.get(f"/inbox/{bob.address}", bob)
    assert [m["id"] for m in visible["messages"]] == [msg["id"]]
    await pair.post("/read", {"address": bob.address, "ids": [msg["id"]]}, bob)
    got = await pair.get(f"/message/{bob.address}/{msg['id']}", bob)
    assert got["message"]["_status"] == "deleted"
    assert (await pair.get(f"/inbox/{bob.address}", bob))["messages"] == []


async def test_expires_time_hides_then_sweeps(pair: Any, alice: Any, bob: Any) -> None:
    msg = pair.message(alice, bob, expires=pair.clock.now + 60_000)
    await pair.send(msg)
    assert (await pair.get(f"/peek/{bob.address}", bob))["pending"] == 1
    pair.clock.advance(60_001)
    assert (await pair.get(f"/peek/{bob.address}", bob))["pending"] == 0
    assert (await pair.get(f"/inbox/{bob.address}", bob))["messages"] == []
    assert (await pair.get(f"/fetch/{bob.address}", bob))["messages"] == []
    assert await pair.store.expire(pair.clock.now) == 1


async def test_thread_follows_re(make_server: Any, alice: Any, bob: Any) -> None:
    srv = await make_server()
    await srv.register(alice, bob)
    await srv.login(bob)
    first = srv.message(alice, bob, "First message of the thread")
    await srv.send(first)
    srv.clock.advance(1)
    reply = srv.message(alice, bob, "A reply to the first one", reply_to=first["id"])
    await srv.send(reply)
    other = srv.message(alice, bob, "Something else entirely")
    await srv.send(other)
    thread = await srv.get(f"/thread/{reply['id']}", bob, address=bob.address)
    assert [m["id"] for m in thread["messages"]] == [first["id"], reply["id"]]


async def test_changes_replay_from_state(pair: Any, alice: Any, bob: Any) -> None:
    start = (await pair.get("/changes", bob, address=bob.address, since=0))["state"]
    msg = pair.message(alice, bob)
    await pair.send(msg)
    changes = await pair.get("/changes", bob, address=bob.address, since=start)
    assert [m["id"] for m in changes["created"]] == [msg["id"]] and changes["updated"] == []
    state = changes["state"]
    await pair.post("/read", {"address": bob.address, "ids": [msg["id"]]}, bob)
    later = await pair.get("/changes", bob, address=bob.address, since=state)
    assert later["created"] == [] and [m["_status"] for m in later["updated"]] == ["read"]
    assert later["state"] > state and later["has_more"] is False


async def test_hosted_mode_refuses_unknown_recipient(pair: Any, alice: Any, carol: Any) -> None:
    msg = pair.message(alice, carol)
    body = await pair.send(msg, expect=404)
    assert body["code"] == "unknown_recipient" and body["field"] == "to"


async def test_hosted_mode_partial_recipients(pair: Any, alice: Any, bob: Any, carol: Any) -> None:
    msg = pair.message(alice, bob, cc=[carol.address])
    body = await pair.send(msg)
    assert body["recipients"] == {bob.address: "stored", carol.address: "not_hosted"}


async def test_open_mode_accepts_any_recipient(make_server: Any, alice: Any, carol: Any) -> None:
    srv = await make_server(open_mode=True)
    body = await srv.send(srv.message(alice, carol))
    assert body["recipients"] == {carol.address: "stored"}


async def test_replay_is_duplicate_and_changes_nothing(pair: Any, alice: Any, bob: Any) -> None:
    msg = pair.message(alice, bob)
    await pair.send(msg)
    before = await pair.store.stats()
    again = await pair.send(msg)
    assert again["duplicate"] is True and again["recipients"] == {bob.address: "duplicate"}
    assert await pair.store.stats() == before


async def test_same_id_other_body_conflicts(pair: Any, alice: Any, bob: Any) -> None:
    msg = pair.message(alice, bob, "The original content here")
    await pair.send(msg)
    other = pair.message(alice, bob, "Another content, same id", message_id=msg["id"])
    body = await pair.send(other, expect=409)
    assert body["code"] == "conflict" and body["field"] == "id"


async def test_bcc_copy_reaches_only_its_recipient(
    pair: Any, alice: Any, bob: Any, carol: Any
) -> None:
    from flux.protocol import compose

    await pair.register(carol)
    out = compose(alice, bob.address, "Hi Bob, Carol is in bcc", bcc=[carol.address],
                  now_ms=pair.clock.now)  # fmt: skip
    first = await pair.send(out.primary)
    assert first["recipients"] == {bob.address: "stored"}
    [(_, copy)] = out.bcc_copies
    second = await pair.send(copy)
    assert second["recipients"] == {carol.address: "stored"}


async def test_spam_refused_with_reasons_and_not_stored(pair: Any, alice: Any, bob: Any) -> None:
    before = await pair.store.stats()
    msg = pair.message(alice, bob, "WINNER! claim your prize, free money, click here now")
    body = await pair.send(msg, expect=451)
    assert body["code"] == "spam" and body["reasons"]
    assert await pair.store.stats() == before


async def test_rate_limit_is_spam(make_server: Any, alice: Any, bob: Any) -> None:
    srv = await make_server(open_mode=True, spam_rate_per_minute=3)
    for n in range(3):
        await srv.send(srv.message(alice, bob, f"Ordinary message {n}"))
    body = await srv.send(srv.message(alice, bob, "One too many"), expect=451)
    assert "rate limit exceeded" in body["reasons"]


async def test_pending_quota(make_server: Any, alice: Any, bob: Any) -> None:
    srv = await make_server(open_mode=True, pending_quota=2, spam_rate_per_minute=100)
    for n in range(2):
        await srv.send(srv.message(alice, bob, f"Ordinary message {n}"))
    before = await srv.store.stats()
    body = await srv.send(srv.message(alice, bob, "Over the quota"), expect=429)
    assert body["code"] == "quota_exceeded"
    assert await srv.store.stats() == before


async def test_status_for_others_says_only_hosted(pair: Any, alice: Any, bob: Any, carol: Any) -> None:  # fmt: skip
    assert await pair.get(f"/status/{bob.address}", alice) == {"ok": True, "hosted": True}
    assert await pair.get(f"/status/{carol.address}") == {"ok": True, "hosted": False}


async def test_stats_has_no_addresses(pair: Any, alice: Any, bob: Any) -> None:
    await pair.send(pair.message(alice, bob))
    stats = await pair.get("/stats")
    assert stats["store"]["messages"] == 1
    assert alice.address not in str(stats) and bob.address not in str(stats)


async def test_federation_resolve(pair: Any, bob: Any, carol: Any) -> None:
    body = await pair.get(f"/federation/resolve/{bob.address}")
    assert body["pub"] == bob.pub_b64()
    assert (await pair.get(f"/federation/resolve/{carol.address}", expect=404))[
        "code"
    ] == "not_found"


async def test_sqlite_backend_round_trip(make_server: Any, alice: Any, bob: Any) -> None:
    srv = await make_server(sqlite=True)
    await srv.register(bob)
    await srv.login(bob)
    msg = srv.message(alice, bob)
    await srv.send(msg)
    await srv.send(msg)  # duplicate
    fetched = await srv.get(f"/fetch/{bob.address}", bob)
    assert [m["id"] for m in fetched["messages"]] == [msg["id"]]
    assert await srv.post("/read", {"address": bob.address, "ids": [msg["id"]]}, bob)


async def test_quarantine_from_strikes_and_operator_override(
    pair: Any, alice: Any, bob: Any
) -> None:
    from flux.store import Strike

    for n in range(3):
        strike = Strike("bad.example", f"proof-{n}", "forged_body", "r.example", "a" * 32, n)
        await pair.store.add_strike(strike)
    await pair.store.add_strike(Strike("meh.example", "p", "false_hop", "r.example", "b" * 32, 1))
    standing = await pair.get("/integrity/reputation")
    assert standing["strikes"] == {"bad.example": 3, "meh.example": 1}
    assert standing["quarantined"] == ["bad.example"]
    via_bad = pair.message(alice, bob) | {"route": [{"server": "bad.example", "t": 1}]}
    before = await pair.store.stats()
    body = await pair.send(via_bad, expect=403)
    assert (body["code"], body["field"]) == ("quarantined", "route")
    assert await pair.store.stats() == before
    # As `flux admin lift` does from another process: the server sees it within its
    # reputation cache's staleness bound (1 s, server/reputation.py), not at once.
    await pair.store.set_quarantine_override("bad.example", True, pair.clock.now)
    # The page and the submit path each keep their own cached view: poll what is under
    # test, the submission (a refused one stores nothing, so it can be sent again).
    async with asyncio.timeout(5):
        while (body := await pair.send(via_bad, expect=None)).get("code") == "quarantined":
            await asyncio.sleep(0.1)  # polling the documented staleness bound
    assert body.get("ok") is True, body


async def test_message_relayed_by_another_server_keeps_its_chain(
    pair: Any, alice: Any, bob: Any, mallory: Any
) -> None:
    from flux.protocol import ServerSigner, append_hop

    relay = ServerSigner("relay.example", mallory)  # any key: the relay's own
    msg = pair.message(alice, bob)
    relayed = append_hop(msg, relay, next_hop="flux.test", now_ms=pair.clock.now)
    await pair.send(relayed)
    stored = (await pair.get(f"/message/{bob.address}/{msg['id']}", bob))["message"]
    assert [h["server"] for h in stored["integrity_chain"]] == ["relay.example", "flux.test"]
    assert stored["integrity_chain"][1]["cv"] == "pass"
    report = await pair.post("/integrity/verify", stored)
    assert report["chain"]["verdict"] == "pass" and report["chain"]["keys"] == "unchecked"
    # a delivery the relay sealed for another server is a replay
    elsewhere = append_hop(msg, relay, next_hop="other.example", now_ms=pair.clock.now)
    body = await pair.send(elsewhere | {"id": "b" * 32}, expect=400)
    assert body["code"] in ("bad_signature",)  # changing the id breaks alice's signature
    replay = append_hop(pair.message(alice, bob, "Fresh one"), relay, next_hop="other.example",
                        now_ms=pair.clock.now)  # fmt: skip
    body = await pair.send(replay, expect=400)
    assert (body["code"], body["field"]) == ("chain_invalid", "integrity_chain[0]")
    # another body signed by alice under the relay's chain: the chain no longer holds
    other = pair.message(alice, bob, "A different body", message_id=msg["id"])
    spliced = other | {"route": relayed["route"], "integrity_chain": relayed["integrity_chain"]}
    body = await pair.send(spliced, expect=400)
    assert (body["code"], body["field"]) == ("chain_invalid", "integrity_chain[0]")


async def test_report_only_mode_counts_but_does_not_refuse(
    make_server: Any, alice: Any, bob: Any
) -> None:
    from flux.store import Strike

    srv = await make_server(open_mode=True, enforce_quarantine=False)
    for n in range(3):
        await srv.store.add_strike(Strike("bad.example", f"p{n}", "forged_body", "r.example", "a" * 32, n))  # fmt: skip
    assert (await srv.get("/integrity/reputation"))["quarantined"] == ["bad.example"]
    via_bad = srv.message(alice, bob) | {"route": [{"server": "bad.example", "t": 1}]}
    await srv.send(via_bad)  # accepted: report-only
    assert await srv.store.get(bob.address, via_bad["id"]) is not None
    metrics = await srv.client.get("/metrics")
    assert 'code="quarantined_report_only"' in await metrics.text()
