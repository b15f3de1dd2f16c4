"""Commands that act on one message of your mailbox: `reply`, `forward`, `thread`, `tag`,
`move`, `delete`, `mark`, and `claim` (a name for your key).

Every ID may be a short id (8+ hex digits, as git takes an abbreviated hash); an ambiguous
one fails listing the candidates (id, sender, subject). `tag`, `move`, `delete`, `mark`
(read and unread) and `thread` also work for a logged-in password account (no key),
through its /mail routes, and so do `reply` and `forward` (through /mail/send); an
account's server holds its key, so it decrypts the account's encrypted mail for the
session (`/mail/message/{id}/plain`).
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from ..protocol.errors import FluxError
from ._common import (
    CliError,
    KeyOption,
    LegacySecretOption,
    ServerOption,
    ok,
    out,
    run,
    short,
    typed_ids,
    when,
    with_client,
)
from .mail import _account, _plaintext, find_as_account, plain_as_account
from .safe_text import json_text, one_line
from .table import flags

if TYPE_CHECKING:  # the client is imported where a command runs (_common.py says why)
    from ..client import FluxClient

IdArgument = typer.Argument(
    ..., metavar="ID", help="Message id or its first 8+ hex digits.", callback=typed_ids
)
JsonOption = typer.Option(False, "--json", help="Print the answer as JSON.")
EncryptOption = typer.Option(
    None, "--encrypt/--no-encrypt", help="Encrypt (default: as the message was).",
    show_default=False,
)  # fmt: skip


def _emit(as_json: bool, data: Any, text: str) -> None:
    if as_json:
        print(json_text(data))
    else:
        ok(text)


def _content(text: str | None) -> str:
    return sys.stdin.read() if text in (None, "-") else text


async def _verified(client: FluxClient, message_id: str) -> dict[str, Any]:
    """The message, its signature and chain checked (CliError naming the failure)."""
    msg = await client.get(message_id)
    try:
        client.verify(msg)
    except FluxError as exc:
        raise CliError(f"message {message_id} does not verify: {exc.code}: {exc.message}; "
                       "see `flux read` for details") from exc  # fmt: skip
    return msg


def reply(
    message_id: str = IdArgument,
    content: str | None = typer.Argument(None, help="The reply text; none or '-': stdin."),
    encrypt: bool | None = EncryptOption,
    as_json: bool = JsonOption,
    key: Path | None = KeyOption,
    server: str = ServerOption,
    legacy_secret: str | None = LegacySecretOption,
) -> None:
    """Answer a message: to its sender, `Re:` its subject, linked to it (`re`)."""
    text = _content(content)
    if api := _account(key, legacy_secret, server):
        msg = run(find_as_account(api, message_id))
        subject = str(msg.get("subject") or "")
        if subject and not subject.lower().startswith("re:"):
            subject = f"Re: {subject}"
        lock = bool(msg.get("encrypted")) if encrypt is None else encrypt
        sent = _send_as_account(api, to=msg["from"], content=text, re=msg["id"],
                                encrypt=lock or None, subject=subject or None)  # fmt: skip
        _emit(as_json, {"id": sent.get("id"), "re": msg["id"], "recipients": sent.get("recipients")},
              f"replied {sent.get('id')} to {msg['from']}")  # fmt: skip
        return

    async def go(client: FluxClient) -> None:
        msg = await _verified(client, message_id)
        options = {} if encrypt is None else {"encrypt": encrypt}
        result = await client.reply(msg, text, **options)
        _emit(as_json, {"id": result.id, "re": msg["id"], "recipients": result.recipients},
              f"replied {result.id} to {msg['from']}")  # fmt: skip

    with_client(key, server, go, legacy_secret)


def forward(
    message_id: str = IdArgument,
    to: str = typer.Argument(..., help="fx1… address, fx1…@domain or name@domain."),
    note: str = typer.Option("", "--note", help="Text to put above the forwarded message."),
    encrypt: bool | None = EncryptOption,
    as_json: bool = JsonOption,
    key: Path | None = KeyOption,
    server: str = ServerOption,
    legacy_secret: str | None = LegacySecretOption,
) -> None:
    """Send a message on to someone else, as a new message signed by you.

    The original's signature cannot travel with changed recipients: its header is quoted."""

    def forwarded(msg: dict[str, Any], body: str) -> tuple[str, str, bool]:
        """(text, subject, encrypt) of the forward of `msg` whose text is `body`."""
        head = (f"---------- Forwarded message ----------\nFrom: {msg.get('from')}\n"
                f"Date: {when(msg.get('t'))}\nSubject: {msg.get('subject') or ''}\n"
                f"Id: {msg.get('id')}\n\n")  # fmt: skip
        text = f"{note}\n\n{head}{body}" if note else f"{head}{body}"
        subject = str(msg.get("subject") or "")
        if not subject.lower().startswith("fwd:"):
            subject = f"Fwd: {subject}".strip()
        return text, subject, bool(msg.get("encrypted")) if encrypt is None else encrypt

    if api := _account(key, legacy_secret, server):
        msg = run(find_as_account(api, message_id))
        plain = run(plain_as_account(api, msg)) if msg.get("encrypted") else msg.get("content", "")
        text, subject, lock = forwarded(msg, str(plain))
        sent = _send_as_account(api, to=to, content=text, subject=subject, encrypt=lock or None)
        _emit(as_json, {"id": sent.get("id"), "forwarded": msg["id"], "recipients": sent.get("recipients")},
              f"forwarded {msg['id']} to {to} as {sent.get('id')}")  # fmt: skip
        return

    async def go(client: FluxClient) -> None:
        msg = await _verified(client, message_id)
        text, subject, lock = forwarded(msg, _plaintext(client, msg).plain)
        result = await client.send(to, text, subject=subject, encrypt=lock)
        _emit(as_json, {"id": result.id, "forwarded": msg["id"], "recipients": result.recipients},
              f"forwarded {msg['id']} to {to} as {result.id}")  # fmt: skip

    with_client(key, server, go, legacy_secret)


def thread(
    message_id: str = IdArgument,
    as_json: bool = typer.Option(False, "--json", help="Print the messages as a JSON list."),
    key: Path | None = KeyOption,
    server: str = ServerOption,
    legacy_secret: str | None = LegacySecretOption,
) -> None:
    """Show the conversation a message belongs to (linked by `re`), oldest first."""

    def show(messages: list[dict[str, Any]], name_of: Callable[[str], str | None],
             text_of: Callable[[dict[str, Any]], str]) -> None:  # fmt: skip
        if as_json:
            print(json_text(messages, indent=2))
            return
        if not messages:  # the message is there (else 404), but deleted: threads leave it out
            out.print("no messages to show: the thread leaves deleted mail out "
                      "(`flux inbox --status deleted`)")  # fmt: skip
        for msg in messages:
            depth = "  " if msg.get("re") else ""
            sender = str(msg.get("from"))
            # your own sent messages are in the conversation too (`_folder: "sent"`):
            # marked as yours, with S (sent) where a received one shows its status
            mine = msg.get("_folder") == "sent"
            name = (
                "you (sent)" if mine else name_of(sender) or msg.get("_from_name") or short(sender)
            )
            marks = "S" + flags(msg)[1:] if mine else flags(msg)
            line = one_line(text_of(msg))
            out.print(f"{depth}[bold]{escape(str(msg.get('id'))[:8])}[/] {escape(one_line(name))} "
                      f"{when(msg.get('t'))} {marks} "
                      f"[bold]{escape(one_line(msg.get('subject') or ''))}[/]")  # fmt: skip
            out.print(f"{depth}  {escape(line[:200])}", overflow="ellipsis", no_wrap=True)

    if api := _account(key, legacy_secret, server):
        if len(message_id) < 8:
            raise CliError(f"{message_id!r}: give at least 8 digits of the id (see `flux inbox`)")
        answer = run(api.call("GET", f"/mail/thread/{message_id}"))
        messages = list(answer.get("messages") or [])
        texts = run(_account_texts(api, messages))
        show(messages, lambda _a: None, lambda m: texts.get(str(m.get("id")), ""))
        return

    async def go(client: FluxClient) -> None:
        messages = await client.thread(message_id)
        show(messages, client.bindings.name_of, lambda m: _plaintext(client, m).plain)

    with_client(key, server, go, legacy_secret)


def _send_as_account(api: Any, **body: Any) -> dict[str, Any]:
    """POST /mail/send with the fields of `body` that are set; the server's answer."""
    return run(api.call("POST", "/mail/send", json={k: v for k, v in body.items() if v is not None}))  # fmt: skip


async def _account_texts(api: Any, messages: list[dict[str, Any]]) -> dict[str, str]:
    """Each message's text by id, as an account session reads it: encrypted ones decrypted
    by its server, which holds its key (a sent one from the sent mail)."""
    texts = {}
    for msg in messages:
        if not msg.get("encrypted"):
            texts[str(msg.get("id"))] = str(msg.get("content", ""))
        elif msg.get("_folder") == "sent":
            answer = await api.call("GET", f"/mail/sent/{msg['id']}/plain")
            texts[str(msg["id"])] = str(answer.get("content", ""))
        else:
            texts[str(msg["id"])] = await plain_as_account(api, msg)
    return texts


def _account_or_key(
    key: Path | None,
    server: str,
    legacy_secret: str | None,
    with_key: Callable[[FluxClient], Awaitable[Any]],
    path: str,
    body: dict[str, Any],
) -> Any:
    """Run `with_key` with the key's client, or POST `body` to the account's `path`."""
    if api := _account(key, legacy_secret, server):
        return run(api.call("POST", path, json=body))
    return with_client(key, server, with_key, legacy_secret)


def tag(
    message_id: str = IdArgument,
    changes: list[str] = typer.Argument(
        ...,
        metavar="+TAG|-TAG...",
        help="+t adds t, -t removes it (a bare t adds it); "
        "put -- before the first -t if it could be read as an option.",
    ),
    as_json: bool = JsonOption,
    key: Path | None = KeyOption,
    server: str = ServerOption,
    legacy_secret: str | None = LegacySecretOption,
) -> None:
    """Add and remove tags on a message: `flux tag ID +work -todo`."""
    add = [c[1:] if c.startswith("+") else c for c in changes if not c.startswith("-")]
    remove = [c[1:] for c in changes if c.startswith("-")]
    if "" in add or "" in remove:
        raise CliError("a tag needs a name after + or -, e.g. +work")

    async def with_key(client: FluxClient) -> list[str]:
        return await client.tag(message_id, add, remove)

    body = {"id": message_id, "add": add, "remove": remove}
    answer = _account_or_key(key, server, legacy_secret, with_key, "/mail/tag", body)
    tags = answer.get("tags", []) if isinstance(answer, dict) else answer
    _emit(as_json, {"id": message_id, "tags": tags},
          f"{message_id}: tags {', '.join(tags) or '(none)'}")  # fmt: skip


def move(
    message_id: str = IdArgument,
    inbox: str = typer.Argument(..., metavar="INBOX", help="The folder to move it to."),
    as_json: bool = JsonOption,
    key: Path | None = KeyOption,
    server: str = ServerOption,
    legacy_secret: str | None = LegacySecretOption,
) -> None:
    """Move a message to another folder (`flux inbox --inbox NAME` lists one)."""

    async def with_key(client: FluxClient) -> str:
        return await client.move(message_id, inbox)

    body = {"id": message_id, "inbox": inbox}
    answer = _account_or_key(key, server, legacy_secret, with_key, "/mail/move", body)
    folder = answer.get("inbox", inbox) if isinstance(answer, dict) else answer
    _emit(as_json, {"id": message_id, "inbox": folder}, f"{message_id} moved to {folder}")


def _updated(answer: Any) -> list[str]:
    return list(answer.get("updated") or []) if isinstance(answer, dict) else list(answer)


def delete(
    message_ids: list[str] = typer.Argument(
        ..., metavar="ID...", help="Ids or short ids.", callback=typed_ids
    ),
    as_json: bool = JsonOption,
    key: Path | None = KeyOption,
    server: str = ServerOption,
    legacy_secret: str | None = LegacySecretOption,
) -> None:
    """Delete messages (the server keeps them: `flux inbox --status deleted` lists them)."""

    async def with_key(client: FluxClient) -> list[str]:
        return await client.delete(message_ids)

    answer = _account_or_key(key, server, legacy_secret, with_key, "/mail/delete",
                             {"ids": message_ids})  # fmt: skip
    done = _updated(answer)
    _emit(as_json, {"updated": done}, f"deleted {len(done)} message(s)")


def mark(
    message_ids: list[str] = typer.Argument(
        ..., metavar="ID...", help="Ids or short ids.", callback=typed_ids
    ),
    unread: bool = typer.Option(False, "--unread", help="Mark unread instead of read."),
    as_json: bool = JsonOption,
    key: Path | None = KeyOption,
    server: str = ServerOption,
    legacy_secret: str | None = LegacySecretOption,
) -> None:
    """Mark messages read (or, with --unread, unread again: a deleted message stays deleted)."""
    if unread:
        _mark_unread(message_ids, as_json, key, server, legacy_secret)
        return

    async def with_key(client: FluxClient) -> list[str]:
        return await client.read(message_ids)

    answer = _account_or_key(key, server, legacy_secret, with_key, "/mail/read",
                             {"ids": message_ids})  # fmt: skip
    done = _updated(answer)
    _emit(as_json, {"updated": done}, f"marked {len(done)} message(s) read")


def _mark_unread(
    message_ids: list[str], as_json: bool, key: Path | None, server: str,
    legacy_secret: str | None,
) -> None:  # fmt: skip
    """`mark --unread`: POST /unread (or /mail/unread). Read messages become delivered;
    named messages that are deleted (or expired, or read once) stay deleted, which fails
    the command naming them (the JSON form lists them under `deleted` and exits 0)."""

    async def with_key(client: FluxClient) -> dict[str, Any]:
        done = await client.unread(message_ids)
        return {"updated": list(done), "deleted": [{"id": i} for i in done.deleted]}

    answer = _account_or_key(key, server, legacy_secret, with_key, "/mail/unread",
                             {"ids": message_ids})  # fmt: skip
    done = _updated(answer)
    deleted = [str(r.get("id")) for r in answer.get("deleted") or [] if isinstance(r, dict)]
    if as_json:
        print(json_text({"updated": done, "deleted": deleted}))
        return
    ok(f"marked {len(done)} message(s) unread")
    if deleted:
        raise CliError(f"{len(deleted)} message(s) are deleted and stay deleted (a deleted "
                       f"message cannot be marked unread): {', '.join(deleted)}")  # fmt: skip


def claim(
    name: str = typer.Argument(..., help="The username to claim at your server."),
    as_json: bool = JsonOption,
    key: Path | None = KeyOption,
    server: str = ServerOption,
) -> None:
    """Claim NAME at your server for your key, so NAME@domain reaches your address.

    The server never holds your key."""

    async def go(client: FluxClient) -> dict[str, Any]:
        answer = await client.claim(name)
        handle = answer.get("name")
        # Remember our own name (the inbox title shows it), never over a binding already
        # known here: that one is trusted on first use, and `flux contacts` decides.
        mine = answer.get("address") == client.address and isinstance(handle, str)
        if mine and client.bindings.get(handle) is None:
            client.bindings.check(handle, client.address, client.identity.pub_b64())
        return answer

    answer = with_client(key, server, go)
    verb = "claimed" if answer.get("created", True) else "already yours:"
    _emit(as_json, answer, f"{verb} {answer.get('name')} for {answer.get('address')}")
