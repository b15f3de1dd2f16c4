"""Registration (open/invite/closed) and challenge/session authentication."""

from __future__ import annotations

from typing import Any

import pytest

from flux.protocol import legacy_token


async def test_register_open(srv: Any, alice: Any) -> None:
    body = await srv.post("/register", srv.register_body(alice))
    assert body == {"ok": True, "address": alice.address, "registered": True}
    again = await srv.post("/register", srv.register_body(alice))
    assert again["registered"] is False
    assert (await srv.store.hosted(alice.address)).pub == alice.pub_b64()


async def test_register_closed(make_server: Any, alice: Any) -> None:
    srv = await make_server(registration="closed")
    body = await srv.post("/register", srv.register_body(alice), expect=403)
    assert body["code"] == "registration_closed"
    assert await srv.store.hosted(alice.address) is None


async def test_register_invite(make_server: Any, alice: Any, bob: Any, carol: Any) -> None:
    srv = await make_server(registration="invite", invites="code-1,code-2")
    missing = await srv.post("/register", srv.register_body(alice), expect=403)
    assert missing["code"] == "bad_invite" and missing["field"] == "invite"
    wrong = await srv.post("/register", srv.register_body(alice, invite="nope"), expect=403)
    assert wrong["code"] == "bad_invite"
    await srv.post("/register", srv.register_body(alice, invite="code-1"))
    reused = await srv.post("/register", srv.register_body(bob, invite="code-1"), expect=403)
    assert reused["code"] == "bad_invite"
    await srv.post("/register", srv.register_body(carol, invite="code-2"))


@pytest.mark.parametrize(
    ("mutate", "status", "code", "field"),
    [
        (lambda b, o: b | {"sig": o.sign("something else")}, 400, "bad_signature", "sig"),
        (lambda b, o: b | {"pub": o.pub_b64()}, 400, "address_mismatch", "pub"),
        (lambda b, o: b | {"t": b["t"] - 60_000}, 400, "bad_signature", "sig"),
        (lambda b, o: b | {"sig": "not base64!"}, 400, "invalid_value", "sig"),
        (lambda b, o: {k: v for k, v in b.items() if k != "t"}, 400, "missing_field", "t"),
        (lambda b, o: b | {"t": "now"}, 400, "wrong_type", "t"),
    ],
)
async def test_register_refusals(
    srv: Any, alice: Any, mallory: Any, mutate: Any, status: int, code: str, field: str
) -> None:
    body = mutate(srv.register_body(alice), mallory)
    answer = await srv.post("/register", body, expect=status)
    assert (answer["code"], answer.get("field")) == (code, field)
    assert await srv.store.hosted(alice.address) is None


async def test_register_stale_and_other_domain(srv: Any, alice: Any) -> None:
    stale = srv.register_body(alice, t=srv.clock.now - 6 * 60_000)
    assert (await srv.post("/register", stale, expect=400))["code"] == "stale"
    future = srv.register_body(alice, t=srv.clock.now + 6 * 60_000)
    assert (await srv.post("/register", future, expect=400))["code"] == "future"
    elsewhere = srv.register_body(alice, domain="other.example")
    assert (await srv.post("/register", elsewhere, expect=400))["code"] == "bad_signature"


async def _challenge(srv: Any, who: Any) -> str:
    return (await srv.get("/auth/challenge", address=who.address))["challenge"]


def _session_body(who: Any, challenge: str, domain: str = "flux.test") -> dict[str, Any]:
    sig = who.sign(f"flux-auth:1:{domain}:{challenge}")
    return {"address": who.address, "pub": who.pub_b64(), "challenge": challenge, "sig": sig}


async def test_session_round_trip_and_logout(srv: Any, alice: Any) -> None:
    challenge = await srv.get("/auth/challenge", address=alice.address)
    assert challenge["domain"] == "flux.test"
    assert challenge["expires"] == srv.clock.now + 5 * 60_000
    answer = await srv.post("/auth/session", _session_body(alice, challenge["challenge"]))
    token = answer["token"]
    headers = {"X-Flux-Token": token}  # the prototype's header works too
    resp = await srv.client.get(f"/inbox/{alice.address}", headers=headers)
    assert resp.status == 200
    out = await srv.client.post("/auth/logout", headers={"Authorization": f"Bearer {token}"})
    assert (await out.json())["revoked"] is True
    resp = await srv.client.get(f"/inbox/{alice.address}", headers=headers)
    assert resp.status == 401 and (await resp.json())["code"] == "unauthorized"


async def test_token_is_stored_hashed(srv: Any, alice: Any) -> None:
    import hashlib

    token = await srv.login(alice)
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert (await srv.store.session(digest, srv.clock.now)).address == alice.address
    assert await srv.store.session(token, srv.clock.now) is None


async def test_challenge_for_another_domain_is_refused(srv: Any, alice: Any) -> None:
    body = _session_body(alice, await _challenge(srv, alice), domain="other.example")
    answer = await srv.post("/auth/session", body, expect=401)
    assert (answer["code"], answer["field"]) == ("auth_failed", "sig")


async def test_challenge_is_single_use(srv: Any, alice: Any) -> None:
    body = _session_body(alice, await _challenge(srv, alice))
    await srv.post("/auth/session", body)
    again = await srv.post("/auth/session", body, expect=401)
    assert (again["code"], again["field"]) == ("bad_challenge", "challenge")


async def test_challenge_expires(srv: Any, alice: Any) -> None:
    body = _session_body(alice, await _challenge(srv, alice))
    srv.clock.advance(5 * 60_000 + 1)
    answer = await srv.post("/auth/session", body, expect=401)
    assert answer["code"] == "bad_challenge"


async def test_challenge_is_bound_to_its_address(srv: Any, alice: Any, mallory: Any) -> None:
    body = _session_body(mallory, await _challenge(srv, alice))
    assert (await srv.post("/auth/session", body, expect=401))["code"] == "bad_challenge"


async def test_made_up_challenge(srv: Any, alice: Any) -> None:
    for fake in ("abc", "1.2.3", f"{srv.clock.now + 1000}.AAAA.BBBB"):
        body = _session_body(alice, fake)
        assert (await srv.post("/auth/session", body, expect=401))["code"] == "bad_challenge"


async def test_session_expires(srv: Any, alice: Any) -> None:
    await srv.login(alice)
    srv.clock.advance(30 * 86_400_000)
    answer = await srv.get(f"/inbox/{alice.address}", alice, expect=401)
    assert answer["code"] == "unauthorized"


async def test_wrong_key_cannot_open_session(srv: Any, alice: Any, mallory: Any) -> None:
    challenge = await _challenge(srv, alice)
    body = _session_body(alice, challenge) | {"sig": mallory.sign(f"flux-auth:1:flux.test:{challenge}")}  # fmt: skip
    assert (await srv.post("/auth/session", body, expect=401))["code"] == "auth_failed"
    body = _session_body(alice, challenge) | {"pub": mallory.pub_b64()}
    assert (await srv.post("/auth/session", body, expect=400))["code"] == "address_mismatch"


async def test_legacy_token_only_when_enabled(make_server: Any, alice: Any) -> None:
    off = await make_server(secret="s3cret")
    token = legacy_token(alice.address, "s3cret")
    resp = await off.client.get(f"/inbox/{alice.address}", headers={"X-Flux-Token": token})
    assert resp.status == 401
    on = await make_server(secret="s3cret", legacy_tokens=True)
    resp = await on.client.get(f"/inbox/{alice.address}", headers={"X-Flux-Token": token})
    assert resp.status == 200
    resp = await on.client.get(f"/inbox/{alice.address}", params={"token": token})
    assert resp.status == 200
    ws = await on.client.ws_connect("/ws")
    await ws.send_json({"action": "auth", "address": alice.address, "token": token})
    assert (await ws.receive_json(timeout=5))["action"] == "authed"
    await ws.close()


async def test_no_token_is_401(srv: Any, alice: Any) -> None:
    answer = await srv.get(f"/fetch/{alice.address}", expect=401)
    assert answer == {"ok": False, "code": "unauthorized", "error": answer["error"]}
    resp = await srv.client.get(f"/fetch/{alice.address}", headers={"Authorization": "Bearer x"})
    assert resp.status == 401
