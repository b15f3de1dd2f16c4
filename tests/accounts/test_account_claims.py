"""Claimed names (a key its owner holds), /federation/resolve for every kind of account,
and the OAuth hook."""

from __future__ import annotations

from typing import Any

import pytest
from accounts_helpers import make_identity

from flux.accounts import complete_oauth_login
from flux.accounts.errors import RegistrationClosed
from flux.protocol import compose, verify_envelope
from flux.protocol.errors import InvalidValue, WrongType


async def test_claim_with_a_valid_signature(srv: Any) -> None:
    who = make_identity("grace")
    answer = await srv.call("POST", "/account/claim", json_body=srv.claim_body(who, "grace"))
    assert answer["created"] is True and answer["kind"] == "claimed"
    assert (answer["address"], answer["pub"]) == (who.address, who.pub_b64())
    assert await srv.store.hosted(who.address) is not None
    again = await srv.call("POST", "/account/claim", json_body=srv.claim_body(who, "grace"))
    assert again["created"] is False  # the same key and name again: nothing changes
    # a claimed account has no password and cannot use /mail/*; it uses key sessions
    token = await srv.key_login(who)
    await srv.call("GET", f"/inbox/{who.address}", headers={"Authorization": f"Bearer {token}"})


async def test_claim_refusals(srv: Any) -> None:
    who, other = make_identity("claimer"), make_identity("other")
    good = srv.claim_body(who, "claimer")
    cases: list[tuple[dict[str, Any], int, str, str]] = [
        ({**good, "sig": other.sign("flux-claim:1:x")}, 400, "bad_signature", "sig"),
        (srv.claim_body(who, "claimer", domain="elsewhere.test"), 400, "bad_signature", "sig"),
        ({**good, "username": "someone-else"}, 400, "bad_signature", "sig"),
        ({**good, "pub": other.pub_b64()}, 400, "address_mismatch", "pub"),
        (srv.claim_body(who, "claimer", t=srv.clock.now - 6 * 60_000), 400, "stale", "t"),
        (srv.claim_body(who, "claimer", t=srv.clock.now + 6 * 60_000), 400, "future", "t"),
        (srv.claim_body(who, "Claimer"), 400, "invalid_value", "username"),
        ({**good, "sig": "not base64!"}, 400, "invalid_value", "sig"),
    ]
    for body, status, code, field in cases:
        answer = await srv.call("POST", "/account/claim", json_body=body, expect=status)
        assert (answer["code"], answer["field"]) == (code, field), body
    assert await srv.accounts.resolve("claimer") is None


async def test_claim_conflicts(srv: Any) -> None:
    await srv.register("ada")
    who = make_identity("late")
    taken = await srv.call("POST", "/account/claim", json_body=srv.claim_body(who, "ada"), expect=409)  # fmt: skip
    assert (taken["code"], taken["field"]) == ("username_taken", "username")
    await srv.call("POST", "/account/claim", json_body=srv.claim_body(who, "late"))
    second = await srv.call("POST", "/account/claim", json_body=srv.claim_body(who, "late-2"), expect=409)  # fmt: skip
    assert (second["code"], second["field"]) == ("address_taken", "address")
    register = await srv.call("POST", "/account/register", expect=409,
                              json_body={"username": "late", "password": "a fine password"})  # fmt: skip
    assert register["code"] == "username_taken"


async def test_resolve_answers_for_both_kinds(srv: Any) -> None:
    password = await srv.register("pat")
    who = make_identity("claude")
    await srv.call("POST", "/account/claim", json_body=srv.claim_body(who, "claude"))
    for name, address, pub in (("pat", password["address"], password["pub"]),
                               ("claude", who.address, who.pub_b64()),
                               ("PAT", password["address"], password["pub"])):  # fmt: skip
        answer = await srv.call("GET", f"/federation/resolve/{name}")
        # FLUX's fields, and the same binding under the prototype's names (PROTOCOL §13)
        assert answer == {"ok": True, "address": address, "pub": pub, "name": name.lower(),
                          "domain": srv.config.domain, "_status": 200,
                          "flux_address": address, "flux_pub_b64": pub,
                          "username": name.lower()}  # fmt: skip
    for missing in ("nobody", "not%20a%20name", "x" * 40):
        answer = await srv.call("GET", f"/federation/resolve/{missing}", expect=404)
        assert answer["code"] == "not_found"


async def test_resolve_keeps_its_fx1_behaviour(srv: Any) -> None:
    keyholder = make_identity("fx1-only")
    await srv.key_login(keyholder)
    answer = await srv.call("GET", f"/federation/resolve/{keyholder.address}")
    assert answer == {"ok": True, "address": keyholder.address, "pub": keyholder.pub_b64(),
                      "domain": srv.config.domain, "_status": 200,
                      "flux_address": keyholder.address,
                      "flux_pub_b64": keyholder.pub_b64()}  # fmt: skip
    account = await srv.register("by-address")
    by_address = await srv.call("GET", f"/federation/resolve/{account['address']}")
    assert by_address["pub"] == account["pub"]
    stranger = make_identity("stranger").address
    await srv.call("GET", f"/federation/resolve/{stranger}", expect=404)


async def test_oauth_creates_then_logs_in_the_same_account(srv: Any) -> None:
    token, account = await complete_oauth_login(srv.accounts, "github", "12345", "Ada Lovelace")
    assert account.username == "ada-lovelace" and account.kind == "oauth"
    headers = {"X-Flux-Session": token}
    me = await srv.call("GET", "/account/me", headers=headers)
    assert (me["username"], me["address"], me["kind"]) == ("ada-lovelace", account.address, "oauth")
    assert await srv.store.hosted(account.address) is not None

    token2, again = await complete_oauth_login(srv.accounts, "github", "12345", "Someone Else")
    assert token2 != token and again.username == account.username
    assert again.address == account.address

    # the session signs like a password account's
    bob = await srv.account("bob")
    await srv.call("POST", "/mail/send", headers={"X-Flux-Session": token2},
                   json_body={"to": "bob", "content": "hello from oauth"})  # fmt: skip
    [msg] = await srv.inbox(bob)
    assert verify_envelope(msg, now_ms=srv.clock.now).sender == account.address

    # another subject suggesting the same name gets another name; another provider too
    _, other = await complete_oauth_login(srv.accounts, "github", "67890", "ada.lovelace@x.org")
    _, third = await complete_oauth_login(srv.accounts, "gitlab", "12345", "Ada Lovelace")
    assert len({account.username, other.username, third.username}) == 3
    assert other.username == "ada.lovelace" and third.username == "ada-lovelace-2"
    # an OAuth account has no password to log in with
    await srv.login("ada-lovelace", "any password at all", expect=401)


async def test_oauth_names_and_inputs(srv: Any) -> None:
    _, odd = await complete_oauth_login(srv.accounts, "google", "1", "  ---Ünïcödé!! Nämé---  ")
    assert odd.username == "unicode-name"
    _, blank = await complete_oauth_login(srv.accounts, "google", "2", "!!!")
    assert blank.username == "user"
    _, long = await complete_oauth_login(srv.accounts, "google", "3", "x" * 100)
    assert long.username == "x" * 32
    with pytest.raises(WrongType):
        await complete_oauth_login(srv.accounts, "google", 4, "name")  # type: ignore[arg-type]
    with pytest.raises(InvalidValue):
        await complete_oauth_login(srv.accounts, "", "5", "name")


async def test_oauth_respects_a_closed_server(make_server: Any) -> None:
    srv = await make_server(registration="closed")
    with pytest.raises(RegistrationClosed):
        await complete_oauth_login(srv.accounts, "github", "1", "ada")


async def test_claimed_name_receives_mail_sent_by_name(srv: Any) -> None:
    who = make_identity("named-key")
    await srv.call("POST", "/account/claim", json_body=srv.claim_body(who, "keyed"))
    ada = await srv.account("ada")
    sent = await srv.send(ada, to="keyed", content="to a claimed name")
    assert sent["recipients"] == {who.address: "stored"}
    outsider = make_identity("outsider")
    msg = compose(outsider, who.address, "and by address", now_ms=srv.clock.now).primary
    await srv.call("POST", "/send", json_body=msg)
