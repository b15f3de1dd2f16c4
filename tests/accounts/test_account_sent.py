"""/mail/sent: a password account reads its own sent mail and each recipient's delivery
state (as GET /sent does for a key), by id or short id, and only its own."""

from __future__ import annotations

from typing import Any


async def test_an_account_reads_its_sent_mail_and_delivery_state(srv: Any) -> None:
    ada, bob = await srv.account("ada"), await srv.account("bob")
    sent = await srv.send(ada, to=bob.address, content="kept in sent", subject="Hi")
    page = await srv.call("GET", "/mail/sent", headers=ada.headers)
    [msg] = page["messages"]
    assert (msg["id"], msg["subject"], page["count"], page["next_cursor"]) == (
        sent["id"],
        "Hi",
        1,
        None,
    )
    assert msg["_delivery"][bob.address]["state"] == "stored"
    one = await srv.call("GET", f"/mail/sent/{sent['id'][:8]}", headers=ada.headers)
    assert one["message"]["id"] == sent["id"]


async def test_sent_mail_is_the_accounts_own(srv: Any) -> None:
    ada, bob = await srv.account("ada"), await srv.account("bob")
    sent = await srv.send(ada, to=bob.address, content="not bob's to read")
    assert (await srv.call("GET", "/mail/sent", headers=bob.headers))["messages"] == []
    missing = await srv.call("GET", f"/mail/sent/{sent['id']}", headers=bob.headers, expect=404)
    assert missing["field"] == "id"
    await srv.call("GET", "/mail/sent", expect=401)


async def test_sent_refuses_what_it_would_ignore(srv: Any) -> None:
    ada = await srv.account("ada")
    for params, field in (({"inbox": "x"}, "inbox"), ({"cursor": "nope"}, "cursor"),
                          ({"limit": "0"}, "limit")):  # fmt: skip
        bad = await srv.call("GET", "/mail/sent", headers=ada.headers, params=params, expect=400)
        assert bad["field"] == field, bad
    short = await srv.call("GET", "/mail/sent/abc", headers=ada.headers, expect=400)
    assert short["field"] == "id"
