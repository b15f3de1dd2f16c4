"""The prototype's interactive `test_client.py`, driven through its prompts against a real
FLUX server (issue 11, item 5; compat/http.py): register answers a `session`, login a
`flux_address` (its WebSocket listener authenticates with it), `/mail/send` takes
`reply_to` and answers `delivery`, `cc` and `bcc` per recipient, and the mailbox commands
(inbox, tag, read, move, inboxes, delete, me, logout) work unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from compat.conftest import Interactive

PASSWORD = "correct horse"


async def register(url: str, username: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        body = {"username": username, "password": PASSWORD}
        async with http.post(f"{url}/account/register", json=body) as r:
            answer = await r.json()
            assert r.status == 200, answer
            return answer


async def inbox(url: str, session: str, **params: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        headers = {"X-Flux-Session": session}
        async with http.get(f"{url}/mail/inbox", headers=headers, params=params) as r:
            answer = await r.json()
            assert r.status == 200, answer
            return answer["messages"]


def client(url: str, cwd: Path) -> Interactive:
    cwd.mkdir(parents=True, exist_ok=True)  # its session file lives here
    tc = Interactive("test_client.py", "--server", url, cwd=cwd)
    tc.expect("Type 'help'.")
    return tc


def send_mail(tc: Interactive, to: str, content: str, *, cc: str = "", bcc: str = "") -> None:
    """Answer `send_mail`'s prompts (the command itself already typed)."""
    for prompt, text in (("To            : ", to), ("Subject       : ", "greetings"),
                         ("CC            : ", cc), ("BCC           : ", bcc),
                         ("Tags          : ", ""), ("Delete after read? (y/N): ", "n"),
                         ("blank line to send):", content)):  # fmt: skip
        tc.answer(prompt, text)
    tc.line("")


async def test_register_send_with_cc_and_bcc_and_me(flux_server: str, tmp_path: Path) -> None:
    carol, dave, erin = [await register(flux_server, n) for n in ("carol1", "dave1", "erin1")]
    tc = client(flux_server, tmp_path / "ada")
    try:
        tc.line("register")
        tc.answer("Username     : ", "ada1")
        tc.answer("Password     : ", PASSWORD)
        tc.answer("Display name : ", "")
        tc.expect("✓ fx1")  # the answer's `address`, and a `session` saved for what follows
        tc.expect("✓  Connected.")  # its listener authenticated with `flux_address`
        tc.line("send")
        send_mail(tc, "carol1", "hi all", cc="dave1", bcc="erin1")
        tc.expect("✓ Sent  delivery=stored")
        tc.expect("CC  dave1: stored")
        tc.expect("BCC erin1: stored")
        tc.line("me")
        tc.expect("ada1  fx1")
    finally:
        output = tc.close()
    assert "Error" not in output and "Traceback" not in output, output
    [got] = await inbox(flux_server, carol["session"])
    assert got["content"] == "hi all" and got["cc"] == [dave["address"]] and "bcc" not in got
    [hidden] = await inbox(flux_server, erin["session"])
    assert hidden["bcc"] == [erin["address"]]
    assert [m["id"] for m in await inbox(flux_server, dave["session"])] == [got["id"]]


async def test_login_listen_and_every_mailbox_command(flux_server: str, tmp_path: Path) -> None:
    sender = await register(flux_server, "zed2")
    me = await register(flux_server, "bea2")
    tc = client(flux_server, tmp_path / "sender")
    try:  # mail waiting for bea2 before she logs in
        tc.line("login")
        tc.answer("Username : ", "zed2")
        tc.answer("Password : ", PASSWORD)
        tc.expect("✓ fx1")
        tc.line("send")
        send_mail(tc, "bea2", "are you there")
        tc.expect("✓ Sent  delivery=stored")
    finally:
        tc.close()
    tc = client(flux_server, tmp_path / "bea")
    try:
        tc.line("login")
        tc.answer("Username : ", "bea2")
        tc.answer("Password : ", PASSWORD)
        tc.expect(f"✓ {me['address']}")
        tc.expect("✉  1 unread:")  # `authed` over a legacy token from `flux_address`
        tc.expect("are you there")
        tc.line("inbox")
        for prompt in ("Inbox (blank='inbox'): ", "Status filter (blank=all): ",
                       "Tag filter    (blank=none): "):  # fmt: skip
            tc.answer(prompt, "")
        tc.expect("1 message(s):")
        tc.line("tag")
        tc.answer("Index or ID: ", "0")
        tc.answer("Tag (important/favorited/custom): ", "important")
        tc.answer("Action (add/remove, default add): ", "")
        tc.expect("🏷️  important added.")
        tc.line("read")
        tc.answer("Index or ID: ", "0")
        tc.expect("✅ Marked as read.")
        tc.line("reply")
        tc.answer("Index or ID to reply to: ", "0")
        tc.expect("Replying to ")
        send_mail(tc, "zed2", "yes, here")
        tc.expect("✓ Sent  delivery=stored")
        tc.line("move")
        tc.answer("Index or ID: ", "0")
        tc.answer("Move to inbox: ", "work")
        tc.expect("📁 Moved to 'work'.")
        tc.line("inboxes")
        tc.expect("Inboxes: work")
        tc.line("delete")
        tc.answer("Index or ID: ", "0")
        tc.expect("🗑️  Soft-deleted.")
        tc.line("logout")
        tc.expect("Logged out.")
    finally:
        output = tc.close()
    assert "Error" not in output and "Traceback" not in output, output
    [original] = await inbox(flux_server, me["session"], status="deleted")
    assert original["_tags"] == ["important"] and original["_inbox"] == "work"
    [reply] = await inbox(flux_server, sender["session"])
    assert reply["re"] == original["id"] and reply["content"] == "yes, here"


async def test_refusals_are_named_to_the_user(flux_server: str, tmp_path: Path) -> None:
    """A display name (FLUX accounts have none) and a wrong password: a clear error on the
    prompt, never a crash of the next command."""
    tc = client(flux_server, tmp_path / "named")
    try:
        tc.line("register")
        tc.answer("Username     : ", "cid3")
        tc.answer("Password     : ", PASSWORD)
        tc.answer("Display name : ", "Cid the Third")
        tc.expect("Error: FLUX accounts have no display name")
        tc.line("login")
        tc.answer("Username : ", "cid3")
        tc.answer("Password : ", "not the password")
        tc.expect("Error: unknown username or wrong password")
    finally:
        output = tc.close()
    assert "Traceback" not in output, output


async def test_account_answers_carry_the_prototypes_fields(flux_server: str) -> None:
    """Item 5 at the HTTP level, for any client: `session` on register, `flux_address` on
    register/login/me, and /mail/send's per-field outcomes next to FLUX's `recipients`."""
    reg = await register(flux_server, "fay4")
    other = await register(flux_server, "gus4")
    assert reg["session"] and reg["flux_address"] == reg["address"]
    headers = {"X-Flux-Session": reg["session"]}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{flux_server}/account/me", headers=headers) as r:
            assert (await r.json())["flux_address"] == reg["address"]
        body = {"to": "gus4", "content": "x", "cc": [reg["address"]], "reply_to": "a" * 32}
        async with http.post(f"{flux_server}/mail/send", json=body, headers=headers) as r:
            sent = await r.json()
            assert r.status == 200, sent
        assert sent["delivery"] == "stored" and sent["cc"] == {reg["address"]: "stored"}
        assert sent["bcc"] == {} and sent["recipients"][other["address"]] == "stored"
        clash = {**body, "re": "b" * 32}
        async with http.post(f"{flux_server}/mail/send", json=clash, headers=headers) as r:
            refused = await r.json()
            assert (r.status, refused["field"]) == (400, "reply_to")
    [got] = await inbox(flux_server, other["session"])
    assert got["re"] == "a" * 32
