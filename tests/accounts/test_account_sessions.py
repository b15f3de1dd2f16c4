"""Password accounts over HTTP: register, login, me, logout, expiry, revocation, uniform
failures, the login rate limit and the registration policy."""

from __future__ import annotations

from typing import Any

from accounts_helpers import PASSWORD, make_identity

from flux.protocol import address_from_pub, b64d


async def test_register_login_me_logout(srv: Any) -> None:
    reg = await srv.register("ada")
    assert reg["ok"] is True and reg["username"] == "ada" and reg["kind"] == "password"
    assert reg["name"] == f"ada@{srv.config.domain}" and reg["domain"] == srv.config.domain
    assert address_from_pub(b64d(reg["pub"], length=32)) == reg["address"]
    # register also opens a session (the prototype's clients use it at once), and
    # names the fx1 address `flux_address` too, as the prototype did
    assert reg["flux_address"] == reg["address"]
    first = await srv.call("GET", "/account/me", headers={"X-Flux-Session": reg["session"]})
    assert first["address"] == reg["address"]

    login = await srv.login("ada")
    assert set(login) >= {"ok", "session", "address", "expires_at"}
    assert login["address"] == reg["address"]
    assert login["expires_at"] == srv.clock.now + srv.config.account_session_ttl_ms
    headers = {"X-Flux-Session": login["session"]}

    me = await srv.call("GET", "/account/me", headers=headers)
    assert (me["username"], me["address"], me["kind"]) == ("ada", reg["address"], "password")
    assert me["expires_at"] == login["expires_at"] and me["created_at"] == srv.clock.now

    assert (await srv.call("POST", "/account/logout", headers=headers))["revoked"] is True
    gone = await srv.call("GET", "/account/me", headers=headers, expect=401)
    assert gone["code"] == "unauthorized"
    again = await srv.call("POST", "/account/logout", headers=headers, expect=401)
    assert again["code"] == "unauthorized"


async def test_registering_hosts_the_address(srv: Any) -> None:
    reg = await srv.register("host-me")
    hosted = await srv.store.hosted(reg["address"])
    assert hosted is not None and hosted.pub == reg["pub"]
    status = await srv.call("GET", f"/status/{reg['address']}")
    assert status["hosted"] is True


async def test_two_logins_are_two_sessions(srv: Any) -> None:
    await srv.register("twice")
    first, second = await srv.login("twice"), await srv.login("twice")
    assert first["session"] != second["session"]
    await srv.call("POST", "/account/logout", headers={"X-Flux-Session": first["session"]})
    await srv.call("GET", "/account/me", headers={"X-Flux-Session": first["session"]}, expect=401)
    await srv.call("GET", "/account/me", headers={"X-Flux-Session": second["session"]})


async def test_sessions_expire(srv: Any) -> None:
    acct = await srv.account("brief")
    srv.clock.advance(srv.config.account_session_ttl_ms - 1)
    await srv.call("GET", "/account/me", headers=acct.headers)
    srv.clock.advance(1)
    expired = await srv.call("GET", "/account/me", headers=acct.headers, expect=401)
    assert expired["code"] == "unauthorized"
    sent = await srv.send(acct, expect=401, to=acct.address, content="still there?")
    assert sent["code"] == "unauthorized"


async def test_missing_or_bogus_session_headers(srv: Any) -> None:
    for headers in ({}, {"X-Flux-Session": ""}, {"X-Flux-Session": "A" * 43},
                    {"X-Flux-Session": "A" * 5000}):  # fmt: skip
        for method, path in (("GET", "/account/me"), ("POST", "/account/logout"),
                             ("GET", "/mail/inbox"), ("POST", "/mail/send")):  # fmt: skip
            answer = await srv.call(method, path, headers=headers, expect=401)
            assert answer["code"] == "unauthorized", (headers.keys(), path)


async def test_a_key_session_token_is_not_an_account_session(srv: Any) -> None:
    token = await srv.key_login(make_identity("key-holder"))
    answer = await srv.call("GET", "/mail/inbox", headers={"X-Flux-Session": token}, expect=401)
    assert answer["code"] == "unauthorized"


async def test_wrong_password_and_unknown_user_answer_alike(srv: Any) -> None:
    await srv.register("known")
    claimed = make_identity("claimer")
    await srv.call("POST", "/account/claim", json_body=srv.claim_body(claimed, "claimed-one"))
    answers = [
        await srv.login("known", "wrong password!", expect=401),
        await srv.login("unknown", PASSWORD, expect=401),
        await srv.login("claimed-one", PASSWORD, expect=401),  # no password: same answer
        await srv.login("Not A Valid Name!", PASSWORD, expect=401),
    ]
    for answer in answers:
        assert answer == answers[0]
    assert answers[0]["code"] == "login_failed" and "field" not in answers[0]


async def test_login_is_case_insensitive_in_the_username(srv: Any) -> None:
    await srv.register("casey")
    assert (await srv.login("Casey"))["username"] == "casey"


async def test_rate_limit_after_five_failures(srv: Any) -> None:
    await srv.register("target")
    for _ in range(5):
        await srv.login("target", "guess guess guess", expect=401)
    limited = await srv.login("target", "guess guess guess", expect=429)
    assert limited["code"] == "rate_limited" and limited["field"] == "username"
    # the right password is not even checked while limited
    assert (await srv.login("target", PASSWORD, expect=429))["code"] == "rate_limited"
    # another username from the same peer is not affected
    await srv.register("bystander")
    await srv.login("bystander")
    srv.clock.advance(15 * 60_000)
    await srv.login("target")


async def test_success_resets_the_failure_count(srv: Any) -> None:
    await srv.register("forgetful")
    for _ in range(4):
        await srv.login("forgetful", "not it at all", expect=401)
    await srv.login("forgetful")
    for _ in range(4):
        await srv.login("forgetful", "not it at all", expect=401)
    await srv.login("forgetful")


async def test_taken_username_is_409(srv: Any) -> None:
    await srv.register("taken")
    answer = await srv.call("POST", "/account/register", expect=409,
                            json_body={"username": "taken", "password": "another password"})  # fmt: skip
    assert answer["code"] == "username_taken" and answer["field"] == "username"


async def test_usernames_are_checked(srv: Any) -> None:
    for name in ("Upper", "-dash-first", ".dot", "has space", "x" * 33, "ünï", "", "a/b", "a@b"):
        answer = await srv.call("POST", "/account/register", expect=400,
                                json_body={"username": name, "password": PASSWORD})  # fmt: skip
        assert answer["field"] == "username" and answer["code"] in ("invalid_value", "too_large")
    for name in ("a", "0", "a.b_c-d", "x" * 32):
        await srv.register(name)


async def test_registration_closed(make_server: Any) -> None:
    srv = await make_server(registration="closed")
    answer = await srv.call("POST", "/account/register", expect=403,
                            json_body={"username": "nobody", "password": PASSWORD})  # fmt: skip
    assert answer["code"] == "registration_closed"
    claim = srv.claim_body(make_identity("closed-claim"), "nobody")
    answer = await srv.call("POST", "/account/claim", json_body=claim, expect=403)
    assert answer["code"] == "registration_closed"


async def test_registration_by_invite_spends_each_code_once(make_server: Any) -> None:
    srv = await make_server(registration="invite", invites="one,two")
    body = {"username": "invited", "password": PASSWORD}
    assert (await srv.call("POST", "/account/register", json_body=body, expect=403))["code"] == "bad_invite"  # fmt: skip
    bad = await srv.call("POST", "/account/register", json_body={**body, "invite": "nope"}, expect=403)  # fmt: skip
    assert bad["field"] == "invite"
    await srv.call("POST", "/account/register", json_body={**body, "invite": "one"})
    reuse = {"username": "second", "password": PASSWORD, "invite": "one"}
    assert (await srv.call("POST", "/account/register", json_body=reuse, expect=403))["code"] == "bad_invite"  # fmt: skip
    # a claim spends codes from the same pool as /account/register and /register
    who = make_identity("invited-claimer")
    claim = {**srv.claim_body(who, "claimant"), "invite": "two"}
    assert (await srv.call("POST", "/account/claim", json_body=claim))["created"] is True
    t = srv.clock.now
    reg = {"address": who.address, "pub": who.pub_b64(), "t": t, "invite": "two",
           "sig": who.sign(f"flux-register:1:{srv.config.domain}:{who.address}:{t}")}  # fmt: skip
    answer = await srv.call("POST", "/register", json_body=reg)
    assert answer["registered"] is False  # already hosted by the claim; no invite needed
