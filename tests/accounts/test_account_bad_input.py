"""BAD INPUT: every account endpoint answers malformed input with a 4xx JSON error naming
the field (where one is to blame), never a 500, and nothing is created."""

from __future__ import annotations

import json
from typing import Any

import pytest
from accounts_helpers import PASSWORD, make_identity

POST_ENDPOINTS = ["/account/register", "/account/login", "/account/claim", "/mail/send",
                  "/mail/read", "/mail/delete", "/mail/tag", "/mail/move"]  # fmt: skip

#: (raw body, status, code, field) refused alike by every JSON endpoint
GENERIC_BODIES: list[tuple[bytes, int, str, str | None]] = [
    (b"", 400, "malformed_json", "body"),
    (b"not json", 400, "malformed_json", None),
    (b"{", 400, "malformed_json", None),
    (b'{"a": 1, "a": 2}', 400, "malformed_json", None),
    (b'{"a": 1.5}', 400, "malformed_json", None),
    (b"\xff\xfe", 400, "malformed_json", None),
    (b"[" * 50_000, 400, "malformed_json", None),
    (b"null", 400, "wrong_type", "body"),
    (b"[]", 400, "wrong_type", "body"),
    (b'[{"username": "a"}]', 400, "wrong_type", "body"),
    (b'"text"', 400, "wrong_type", "body"),
    (b"42", 400, "wrong_type", "body"),
    (b'{"pad": "' + b"x" * 300_000 + b'"}', 413, "payload_too_large", None),
]


async def _raw(srv: Any, path: str, data: bytes, headers: dict[str, str]) -> dict[str, Any]:
    answer = await srv.call("POST", path, data=data, headers=headers, expect=None)
    assert 400 <= answer["_status"] < 500 and answer["ok"] is False, (path, answer)
    return answer


@pytest.fixture
async def ada(srv: Any) -> Any:
    return await srv.account("ada")


@pytest.mark.parametrize("path", POST_ENDPOINTS)
async def test_generic_bad_bodies(srv: Any, ada: Any, path: str) -> None:
    for data, status, code, field in GENERIC_BODIES:
        answer = await _raw(srv, path, data, ada.headers)
        assert (answer["_status"], answer["code"]) == (status, code), (path, data[:30], answer)
        if field is not None:
            assert answer.get("field") == field, (path, data[:30], answer)
    assert await srv.accounts.resolve("a") is None


HUGE = "x" * 100_000


def field_cases(srv: Any, mid: str) -> list[tuple[str, dict[str, Any], str, str]]:
    """(path, body, code, field): each body wrong in exactly one field."""
    reg = {"username": "newbie", "password": PASSWORD}
    claim = srv.claim_body(make_identity("bad-input-claim"), "claimant")
    send = {"to": "ada", "content": "a fine message"}
    cases = [
        ("/account/register", {"password": PASSWORD}, "missing_field", "username"),
        ("/account/register", {"username": "newbie"}, "missing_field", "password"),
        ("/account/register", {**reg, "username": None}, "wrong_type", "username"),
        ("/account/register", {**reg, "username": 7}, "wrong_type", "username"),
        ("/account/register", {**reg, "username": ["newbie"]}, "wrong_type", "username"),
        ("/account/register", {**reg, "username": HUGE}, "too_large", "username"),
        ("/account/register", {**reg, "username": "New Bie"}, "invalid_value", "username"),
        ("/account/register", {**reg, "password": 12345678}, "wrong_type", "password"),
        ("/account/register", {**reg, "password": "short"}, "invalid_value", "password"),
        ("/account/register", {**reg, "password": HUGE}, "too_large", "password"),
        ("/account/register", {**reg, "invite": 5}, "wrong_type", "invite"),
        ("/account/login", {"password": PASSWORD}, "missing_field", "username"),
        ("/account/login", {"username": "ada"}, "missing_field", "password"),
        ("/account/login", {"username": {}, "password": PASSWORD}, "wrong_type", "username"),
        ("/account/login", {"username": "ada", "password": HUGE}, "too_large", "password"),
        ("/account/login", {"username": "ada", "password": True}, "wrong_type", "password"),
    ]
    for name in ("username", "address", "pub", "t", "sig"):
        cases.append(("/account/claim", {k: v for k, v in claim.items() if k != name}, "missing_field", name))  # fmt: skip
    cases += [
        ("/account/claim", {**claim, "t": "now"}, "wrong_type", "t"),
        ("/account/claim", {**claim, "t": True}, "wrong_type", "t"),
        ("/account/claim", {**claim, "address": "nope"}, "invalid_value", "address"),
        ("/account/claim", {**claim, "address": HUGE}, "too_large", "address"),
        ("/account/claim", {**claim, "pub": "abc"}, "invalid_value", "pub"),
        ("/account/claim", {**claim, "pub": 5}, "wrong_type", "pub"),
        ("/account/claim", {**claim, "sig": HUGE}, "too_large", "sig"),
        ("/mail/send", {"content": "x"}, "missing_field", "to"),
        ("/mail/send", {"to": "ada"}, "missing_field", "content"),
        ("/mail/send", {**send, "to": 5}, "wrong_type", "to"),
        ("/mail/send", {**send, "to": HUGE}, "too_large", "to"),
        ("/mail/send", {**send, "to": "not a name!"}, "invalid_value", "to"),
        ("/mail/send", {**send, "content": 5}, "wrong_type", "content"),
        ("/mail/send", {**send, "content": "é" * 40_000}, "too_large", "content"),
        ("/mail/send", {**send, "subject": 5}, "wrong_type", "subject"),
        ("/mail/send", {**send, "cc": "ada"}, "wrong_type", "cc"),
        ("/mail/send", {**send, "cc": [5]}, "wrong_type", "cc[0]"),
        ("/mail/send", {**send, "bcc": ["ada", "x y"]}, "invalid_value", "bcc[1]"),
        ("/mail/send", {**send, "cc": ["ada"] * 101}, "too_large", "cc"),
        ("/mail/send", {**send, "tags": ["UPPER"]}, "invalid_value", "tags[0]"),
        ("/mail/send", {**send, "tags": "work"}, "wrong_type", "tags"),
        ("/mail/send", {**send, "re": "x"}, "invalid_value", "re"),
        ("/mail/send", {**send, "expires": "soon"}, "wrong_type", "expires"),
        ("/mail/send", {**send, "expires": -1}, "invalid_value", "expires"),
        ("/mail/send", {**send, "encrypt": "yes"}, "wrong_type", "encrypt"),
        ("/mail/send", {**send, "bc": ["ada"]}, "invalid_value", "bc"),
        ("/mail/send", {**send, "address": 5}, "wrong_type", "address"),
        ("/mail/read", {}, "missing_field", "ids"),
        ("/mail/read", {"ids": "x"}, "wrong_type", "ids"),
        ("/mail/read", {"ids": ["x"]}, "invalid_value", "ids[0]"),
        ("/mail/delete", {"ids": [mid] * 501}, "too_large", "ids"),
        ("/mail/tag", {"add": ["x"]}, "missing_field", "id"),
        ("/mail/tag", {"id": mid, "add": "x"}, "wrong_type", "add"),
        ("/mail/tag", {"id": mid, "remove": [""]}, "invalid_value", "remove[0]"),
        ("/mail/move", {"id": mid}, "missing_field", "inbox"),
        ("/mail/move", {"id": mid, "inbox": "a/b"}, "invalid_value", "inbox"),
        ("/mail/move", {"id": mid, "inbox": 5}, "wrong_type", "inbox"),
    ]
    return cases


async def test_each_bad_field_is_named(srv: Any, ada: Any) -> None:
    mid = (await srv.send(ada, to="ada", content="something to act on"))["id"]
    before = await srv.store.stats()
    for path, body, code, field in field_cases(srv, mid):
        data = json.dumps(body).encode()
        answer = await _raw(srv, path, data, ada.headers)
        assert (answer["_status"], answer["code"], answer.get("field")) == (400, code, field), (path, body if len(data) < 300 else field, answer)  # fmt: skip
    assert await srv.store.stats() == before
    for name in ("newbie", "claimant"):
        assert await srv.accounts.resolve(name) is None


async def test_bad_query_strings(srv: Any, ada: Any) -> None:
    for path, params, code, field in [
        ("/mail/inbox", {"limit": "abc"}, "wrong_type", "limit"),
        ("/mail/inbox", {"limit": "0"}, "invalid_value", "limit"),
        ("/mail/inbox", {"status": "lost"}, "invalid_value", "status"),
        ("/mail/inbox", {"inbox": "a/b"}, "invalid_value", "inbox"),
        ("/mail/inbox", {"cursor": "???"}, "invalid_value", "cursor"),
        ("/mail/peek", {"limit": "99999"}, "invalid_value", "limit"),
        ("/mail/inbox", {"tag": "x" * 2000}, "too_large", "tag"),
        ("/mail/inbox", {"tag": "a\u0000b"}, "invalid_value", "tag"),
        ("/mail/inbox", {"tag": "UPPER"}, "invalid_value", "tag"),  # the tag rule, as /inbox
    ]:
        answer = await srv.call("GET", path, params=params, headers=ada.headers, expect=400)
        assert (answer["code"], answer.get("field")) == (code, field), (path, params, answer)


async def test_wrong_methods_and_paths_are_json(srv: Any) -> None:
    for method, path, status in (("GET", "/account/register", 405), ("POST", "/account/me", 405),
                                 ("GET", "/mail/send", 405), ("GET", "/account/nothing", 404)):  # fmt: skip
        answer = await srv.call(method, path, expect=status)
        assert answer["ok"] is False
