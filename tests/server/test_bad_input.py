"""BAD INPUT: every endpoint answers malformed input with its 4xx and a JSON error (code,
and field where one is to blame), never a 500, and the store is left exactly as it was."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flux.protocol import sign_envelope

BODY_ENDPOINTS = ["/send", "/read", "/delete", "/tag", "/move", "/register", "/auth/session",
                  "/integrity/verify"]  # fmt: skip

#: (raw body, status, code, field) refused alike by every JSON endpoint
GENERIC_BODIES: list[tuple[bytes, int, str, str | None]] = [
    (b"", 400, "malformed_json", "body"),
    (b"not json", 400, "malformed_json", None),
    (b"{", 400, "malformed_json", None),
    (b'{"a": 1} trailing', 400, "malformed_json", None),
    (b'{"a": 1, "a": 2}', 400, "malformed_json", None),
    (b'{"a": 1.5}', 400, "malformed_json", None),
    (b'{"a": NaN}', 400, "malformed_json", None),
    (b'{"a": 9007199254740993}', 400, "malformed_json", None),
    (b'{"a": "\\ud800"}', 400, "malformed_json", None),
    (b"\xff\xfe", 400, "malformed_json", None),
    (b"[" * 50_000, 400, "malformed_json", None),
    (b"null", 400, "wrong_type", None),
    (b"[]", 400, "wrong_type", None),
    (b"42", 400, "wrong_type", None),
    (b'"text"', 400, "wrong_type", None),
    (b'{"pad": "' + b"x" * 300_000 + b'"}', 413, "payload_too_large", None),
]


async def _post_raw(srv: Any, path: str, data: bytes, headers: dict | None = None) -> tuple[int, dict]:  # fmt: skip
    h = {"Content-Type": "application/json", **(headers or {})}
    resp = await srv.client.post(path, data=data, headers=h)
    text = await resp.text()
    assert resp.content_type == "application/json", text[:200]
    return resp.status, json.loads(text)


@pytest.mark.parametrize("path", BODY_ENDPOINTS)
async def test_generic_bad_bodies(pair: Any, bob: Any, path: str) -> None:
    before = await pair.store.stats()
    for data, status, code, field in GENERIC_BODIES:
        got_status, answer = await _post_raw(pair, path, data, pair.auth(bob))
        assert got_status == status and answer["code"] == code, (path, data[:30], answer)
        assert answer["ok"] is False and isinstance(answer["error"], str)
        if field is not None:
            assert answer.get("field") == field, (path, data[:30], answer)
    assert await pair.store.stats() == before


def _resign(msg: dict, who: Any, **changes: Any) -> dict:
    fields = {k: v for k, v in msg.items() if k not in ("sig", "pub")} | changes
    return sign_envelope(fields, who)


async def test_send_bad_messages(pair: Any, alice: Any, bob: Any, mallory: Any) -> None:
    good = pair.message(alice, bob, "An ordinary message")
    now = pair.clock.now
    drop = lambda name: {k: v for k, v in good.items() if k != name}  # noqa: E731
    cases: list[tuple[Any, int, str, str | None]] = [
        (drop("sig"), 400, "missing_field", "sig"),
        (drop("from"), 400, "missing_field", "from"),
        (drop("t"), 400, "missing_field", "t"),
        (good | {"v": "2.0"}, 400, "unknown_version", "v"),
        (good | {"v": 1}, 400, "wrong_type", "v"),
        (good | {"t": "now"}, 400, "wrong_type", "t"),
        (good | {"t": True}, 400, "wrong_type", "t"),
        (good | {"content": 5}, 400, "wrong_type", "content"),
        (good | {"to": "bob@example.com"}, 400, "invalid_value", "to"),
        (good | {"id": "x" * 32}, 400, "invalid_value", "id"),
        (good | {"cc": "not-a-list"}, 400, "wrong_type", "cc"),
        (good | {"tags": ["UPPER"]}, 400, "invalid_value", "tags[0]"),
        (good | {"expires": -1}, 400, "invalid_value", "expires"),
        (good | {"surprise": 1}, 400, "invalid_value", "surprise"),
        (good | {"content": "x" * 70_000}, 400, "too_large", "content"),
        (good | {"subject": "s" * 5000}, 400, "too_large", "subject"),
        (good | {"cc": [bob.address] * 101}, 400, "too_large", "cc"),
        (good | {"sig": "not base64!"}, 400, "invalid_value", "sig"),
        (good | {"sig": "AAAA"}, 400, "invalid_value", "sig"),
        (good | {"pub": mallory.pub_b64()}, 400, "address_mismatch", "pub"),
        (good | {"content": "tampered after signing"}, 400, "bad_signature", "sig"),
        (_resign(good, alice, t=now - 6 * 60_000), 400, "stale", "t"),
        (_resign(good, alice, t=now + 6 * 60_000), 400, "future", "t"),
        (good | {"encrypted": True}, 400, "missing_field", "content_enc"),
        (good | {"route": "x"}, 400, "wrong_type", "route"),
        (good | {"integrity_chain": [1]}, 400, "wrong_type", "integrity_chain[0]"),
        (good | {"integrity_chain": [{"server": []}]}, 400, "chain_invalid", "integrity_chain[0]"),
        (
            good | {"integrity_chain": [{"server": "a.b", "t": 1}]},
            400,
            "chain_invalid",
            "integrity_chain[0]",
        ),
        (good | {"route": [{"server": 5, "t": 1}]}, 400, "wrong_type", "route[0].server"),
    ]
    before = await pair.store.stats()
    for msg, status, code, field in cases:
        answer = await pair.send(msg, expect=None)
        assert (answer["code"], answer.get("field")) == (code, field), (msg.keys(), answer)
        resp = await pair.client.post("/send", json=msg)
        assert resp.status == status
    assert await pair.store.stats() == before


async def test_send_replay_and_id_reuse(pair: Any, alice: Any, bob: Any) -> None:
    msg = pair.message(alice, bob, "The first body")
    await pair.send(msg)
    before = await pair.store.stats()
    assert (await pair.send(msg))["duplicate"] is True
    reuse = pair.message(alice, bob, "A second body", message_id=msg["id"])
    assert (await pair.send(reuse, expect=409))["code"] == "conflict"
    assert await pair.store.stats() == before


MID = "a" * 32


def mailbox_cases(bob: str) -> list[tuple[str, str, Any, dict, int, str, str | None]]:
    """(method, path, json body, query, status, code, field), all with bob's own token."""
    return [
        ("GET", "/fetch/notanaddress", None, {}, 400, "invalid_value", "address"),
        ("GET", f"/fetch/{bob}", None, {"limit": "many"}, 400, "wrong_type", "limit"),
        ("GET", f"/fetch/{bob}", None, {"limit": "0"}, 400, "invalid_value", "limit"),
        ("GET", f"/fetch/{bob}", None, {"limit": "100000"}, 400, "invalid_value", "limit"),
        ("GET", f"/inbox/{bob}", None, {"status": "lost"}, 400, "invalid_value", "status"),
        ("GET", f"/inbox/{bob}", None, {"cursor": "!!"}, 400, "invalid_value", "cursor"),
        ("GET", f"/inbox/{bob}", None, {"inbox": "a/b"}, 400, "invalid_value", "inbox"),
        ("GET", f"/inbox/{bob}", None, {"tag": "t" * 2000}, 400, "too_large", "tag"),
        ("GET", f"/inbox/{bob.upper()}", None, {}, 400, "invalid_value", "address"),
        ("GET", "/inboxes/fx1", None, {}, 400, "invalid_value", "address"),
        ("GET", "/peek/x", None, {}, 400, "invalid_value", "address"),
        ("GET", f"/message/{bob}/nothex", None, {}, 400, "invalid_value", "id"),
        ("GET", f"/message/{bob}/{MID}", None, {}, 404, "not_found", "id"),
        ("GET", "/thread/zz", None, {"address": bob}, 400, "invalid_value", "id"),
        ("GET", f"/thread/{MID}", None, {}, 400, "missing_field", "address"),
        ("GET", f"/thread/{MID}", None, {"address": bob}, 404, "not_found", "id"),
        ("GET", "/changes", None, {}, 400, "missing_field", "address"),
        ("GET", "/changes", None, {"address": bob, "since": "-1"}, 400, "cannot_calculate_changes", "since"),
        ("GET", "/changes", None, {"address": bob, "since": "x"}, 400, "cannot_calculate_changes", "since"),
        ("GET", "/status/nope", None, {}, 400, "invalid_value", "address"),
        ("GET", "/auth/challenge", None, {}, 400, "missing_field", "address"),
        ("GET", "/auth/challenge", None, {"address": "x"}, 400, "invalid_value", "address"),
        ("GET", "/federation/resolve/someone", None, {}, 404, "not_found", "name"),
        ("POST", "/read", {"ids": [MID]}, {}, 400, "missing_field", "address"),
        ("POST", "/read", {"address": 7, "ids": [MID]}, {}, 400, "wrong_type", "address"),
        ("POST", "/read", {"address": bob}, {}, 400, "missing_field", "ids"),
        ("POST", "/read", {"address": bob, "ids": MID}, {}, 400, "wrong_type", "ids"),
        ("POST", "/read", {"address": bob, "ids": [1]}, {}, 400, "wrong_type", "ids[0]"),
        ("POST", "/read", {"address": bob, "ids": [MID] * 501}, {}, 400, "too_large", "ids"),
        ("POST", "/delete", {"address": bob, "id": "short"}, {}, 400, "invalid_value", "id"),
        ("POST", "/tag", {"address": bob}, {}, 400, "missing_field", "id"),
        ("POST", "/tag", {"address": bob, "id": MID, "add": "x"}, {}, 400, "wrong_type", "add"),
        (
            "POST",
            "/tag",
            {"address": bob, "id": MID, "remove": [""]},
            {},
            400,
            "invalid_value",
            "remove[0]",
        ),
        (
            "POST",
            "/tag",
            {"address": bob, "id": MID, "add": ["t"] * 33},
            {},
            400,
            "too_large",
            "add",
        ),
        ("POST", "/tag", {"address": bob, "id": MID, "add": ["x"]}, {}, 404, "not_found", "id"),
        ("POST", "/move", {"address": bob, "id": MID}, {}, 400, "missing_field", "inbox"),
        ("POST", "/move", {"address": bob, "id": MID, "inbox": 3}, {}, 400, "wrong_type", "inbox"),
        (
            "POST",
            "/move",
            {"address": bob, "id": MID, "inbox": "x" * 65},
            {},
            400,
            "invalid_value",
            "inbox",
        ),
        ("POST", "/move", {"address": bob, "id": MID, "inbox": "box"}, {}, 404, "not_found", "id"),
        ("POST", "/auth/session", {"address": bob}, {}, 400, "missing_field", "pub"),
        (
            "POST",
            "/auth/session",
            {"address": bob, "pub": "AAAA", "challenge": "c", "sig": "AAAA"},
            {},
            400,
            "invalid_value",
            "pub",
        ),
        ("POST", "/register", {"address": bob, "pub": 1}, {}, 400, "wrong_type", "pub"),
        ("GET", "/no/such/endpoint", None, {}, 404, "not_found", None),
        ("DELETE", "/send", None, {}, 405, "method_not_allowed", None),
        ("GET", "/send", None, {}, 405, "method_not_allowed", None),
        ("GET", "/ws", None, {}, 400, "bad_request", None),
    ]


async def test_mailbox_bad_input_table(pair: Any, alice: Any, bob: Any) -> None:
    await pair.send(pair.message(alice, bob))
    before = await pair.store.stats()
    state = await pair.store.state(bob.address)
    for method, path, body, query, status, code, field in mailbox_cases(bob.address):
        resp = await pair.client.request(method, path, json=body, params=query, headers=pair.auth(bob))  # fmt: skip
        answer = await resp.json()
        assert (resp.status, answer.get("code"), answer.get("field")) == (status, code, field), (
            method, path, body, query, answer)  # fmt: skip
        assert answer["ok"] is False
    assert await pair.store.stats() == before
    assert await pair.store.state(bob.address) == state


async def test_huge_headers_are_refused(pair: Any, bob: Any) -> None:
    resp = await pair.client.get("/health", headers={"X-Big": "x" * 20_000})
    assert 400 <= resp.status < 500


async def test_integrity_verify_reports_instead_of_refusing(pair: Any, alice: Any, bob: Any) -> None:  # fmt: skip
    msg = pair.message(alice, bob)
    answer = await pair.post("/integrity/verify", msg | {"content": "changed"})
    assert answer["signature"] == {"valid": False, "reason": answer["signature"]["reason"],
                                   "code": "bad_signature", "field": "sig"}  # fmt: skip
    odd = await pair.post("/integrity/verify", {"integrity_chain": 5})
    assert odd["signature"]["valid"] is False and odd["chain"]["verdict"] == "fail"
    forged = await pair.post("/integrity/verify", msg | {"integrity_chain": [{"server": "x"}]})
    assert forged["chain"]["verdict"] == "fail"
    assert forged["chain"]["keys"] == "unchecked"
