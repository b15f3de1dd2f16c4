"""Commands that talk to a server: `register`, `send`, `inbox`, `read`, `watch` (the rest of
the mail commands are in mailbox.py, export.py and contacts.py)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.panel import Panel
from rich.text import Text

from ..protocol import ChainCheck, verify_chain, verify_envelope
from ..protocol.errors import DecryptionError, FluxError
from ..protocol.identity import is_address
from ..protocol.limits import WS_MAX_FRAME_BYTES
from ._account_api import AccountApi, account_session
from ._common import (
    CliError,
    KeyOption,
    LegacySecretOption,
    ServerOption,
    cached_client,
    contacts,
    load_identity,
    ok,
    out,
    run,
    short,
    typed_ids,
    when,
    with_client,
)
from .safe_text import block, json_text, one_line
from .table import inbox_table, unread_first

if TYPE_CHECKING:  # the client and aiohttp are imported where a command runs (_common.py)
    from ..client import FluxClient, KnownBindings, Verified


def register(
    invite: str | None = typer.Option(None, "--invite", help="Invite code, when required."),
    key: Path | None = KeyOption,
    server: str = ServerOption,
) -> None:
    """Register your key at the server, so it accepts mail for your address."""

    async def go(client: FluxClient) -> None:
        await client.register(invite)
        await client.authenticate()
        ok(f"registered {client.address} at {client.url} (domain {client.domain})")

    with_client(key, server, go)


def _key_pairs(values: list[str]) -> dict[str, str]:
    pairs = {}
    for value in values:
        address, sep, pub = value.partition("=")
        if not sep:
            raise CliError(f"--recipient-key wants ADDRESS=PUBKEY, not {value!r}")
        pairs[address.strip()] = pub.strip()
    return pairs


def send(
    to: str = typer.Argument(..., help="fx1… address, fx1…@domain or name@domain."),
    content: str = typer.Argument(..., help="The message text; '-' reads it from stdin."),
    subject: str | None = typer.Option(None, "--subject", help="Subject line."),
    cc: list[str] = typer.Option([], "--cc", help="Carbon copy (repeatable)."),
    bcc: list[str] = typer.Option([], "--bcc", help="Blind copy, own signed copy (repeatable)."),
    tag: list[str] = typer.Option([], "--tag", help="Tag (repeatable)."),
    reply_to: str | None = typer.Option(None, "--reply-to", help="Id of the message answered."),
    expires: int | None = typer.Option(None, "--expires", help="0: gone after first read."),
    encrypt: bool = typer.Option(False, "--encrypt", help="End-to-end encrypt."),
    recipient_key: list[str] = typer.Option(
        [], "--recipient-key", help="ADDRESS=PUBKEY to encrypt for, when the server has none."
    ),
    key: Path | None = KeyOption,
    server: str = ServerOption,
    legacy_secret: str | None = LegacySecretOption,
) -> None:
    """Sign (and optionally encrypt) a message and send it."""
    text = sys.stdin.read() if content == "-" else content
    keys = _key_pairs(recipient_key)

    def show(message_id: Any, encrypted: bool, recipients: dict[str, Any]) -> None:
        ok(f"sent {message_id}{' (encrypted)' if encrypted else ''}")
        for address, outcome in recipients.items():
            out.print(f"  {one_line(address)}: {one_line(outcome)}", markup=False)

    if api := _account(key, legacy_secret, server):
        if keys:
            raise CliError("--recipient-key needs --key: an account's server encrypts with "
                           "the keys it knows")  # fmt: skip
        body = {"to": to, "content": text, "subject": subject, "cc": cc or None,
                "bcc": bcc or None, "tags": tag or None, "re": reply_to, "expires": expires,
                "encrypt": encrypt or None}  # fmt: skip
        answer = run(api.call("POST", "/mail/send", json={k: v for k, v in body.items() if v is not None}))  # fmt: skip
        show(answer.get("id"), encrypt, dict(answer.get("recipients") or {}))
        return

    async def go(client: FluxClient) -> None:
        result = await client.send(
            to, text, subject=subject, cc=cc, bcc=bcc, tags=tag, reply_to=reply_to,
            expires=expires, encrypt=encrypt, keys=keys,
        )  # fmt: skip
        show(result.id, result.encrypted, result.recipients)

    with_client(key, server, go, legacy_secret)


def inbox(
    box: str | None = typer.Option(None, "--inbox", help="Which folder (default: all)."),
    status: str | None = typer.Option(None, "--status", help="pending|delivered|read|deleted"),
    tag: str | None = typer.Option(None, "--tag", help="Only messages with this tag."),
    sender: str | None = typer.Option(
        None,
        "--from",
        help="Only mail from this fx1 address, fx1…@domain or name@domain "
        "(or the start of the fx1 address of one of your contacts).",
    ),
    limit: int = typer.Option(20, "--limit", min=1, max=500, help="How many (newest first)."),
    as_json: bool = typer.Option(False, "--json", help="Print the messages as a JSON list."),
    key: Path | None = KeyOption,
    server: str = ServerOption,
    legacy_secret: str | None = LegacySecretOption,
) -> None:
    """List your messages: unread first, then newest first."""
    known = contacts()

    def show(messages: list[dict[str, Any]], more: Any, me: str) -> None:
        if as_json:
            print(json_text(messages, indent=2))
            return
        title = f"inbox of {one_line(known.name_of(me) or short(me))}"
        out.print(inbox_table(unread_first(messages), title, out.width, known.name_of))
        if more:
            out.print(f"[dim]more: use --limit to see more than {limit}[/]")

    # --from is the server's filter (`?from=`, a whole fx1 address): it pages, so `limit`
    # messages from that sender come back in one request however many others there are
    if api := _account(key, legacy_secret, server):
        address = _from_address(sender, known)
        if address is None and sender is not None:
            raise CliError(f"--from {sender}: give the fx1 address, or a name in your "
                           "contacts (`flux contacts`); an account session does not resolve "
                           "names at other domains")  # fmt: skip
        params = {"inbox": box, "status": status, "tag": tag, "limit": limit, "from": address}
        answer = run(api.call("GET", "/mail/inbox", params=params))
        show(list(answer.get("messages") or []), answer.get("next_cursor"), api.me)
        return

    async def go(client: FluxClient) -> None:
        address = _from_address(sender, known)
        if address is None and sender is not None:
            address = (await client.resolve(sender, field="from")).address
        page = await client.inbox(box, status=status, tag=tag, limit=limit, sender=address)
        show(list(page.messages), page.next_cursor, client.address)

    with_client(key, server, go, legacy_secret)


def _from_address(written: str | None, known: KnownBindings) -> str | None:
    """`--from` as a whole fx1 address (`fx1…@domain` is its address): as written, or the
    one contact address that starts with it; a name known in contacts as its address;
    None for a name to resolve at its domain (or no filter). Raises CliError for a start
    of an address that names no contact, or several."""
    if written is None:
        return None
    text = written.strip()
    if not text.startswith("fx1"):
        return known.get(text)
    address = text.split("@")[0]
    if is_address(address):
        return address
    # the server filters by the whole address (an index range on it): a start of one is
    # completed here from the addresses this CLI has seen, or refused
    seen = {*known.keys(), *(b["address"] for b in known.names().values())}
    matches = sorted(a for a in seen if a.startswith(address))
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CliError(f"--from {text}: not a whole fx1 address, and none of your contacts' "
                       "addresses starts with it; give the whole address")  # fmt: skip
    raise CliError(f"--from {text}: {len(matches)} contacts' addresses start with it "
                   f"({', '.join(short(a) for a in matches[:5])}); give more of it")  # fmt: skip


def _account(key: Path | None, legacy_secret: str | None, server: str) -> AccountApi | None:
    """Without a key: the logged-in password account's API (None: use the key).

    Raises CliError naming both ways in when there is neither."""
    if key is not None or legacy_secret:
        return None
    session = account_session(server, os.environ.get("FLUX_ACCOUNT") or None)
    if session is None:
        raise CliError(
            "no key: pass --key PATH or set FLUX_KEY (make one with `flux keygen`), "
            f"or log in to a password account at {server} with `flux account login NAME`"
        )
    return AccountApi(server, session)


def read(
    message_id: str = typer.Argument(
        ...,
        metavar="ID",
        help="The message id (from `inbox`), or its first 8+ hex digits.",
        callback=typed_ids,
    ),
    no_mark: bool = typer.Option(False, "--no-mark", help="Do not mark it read."),
    as_json: bool = typer.Option(
        False, "--json", help="Print the envelope exactly as stored (after verifying it)."
    ),
    key: Path | None = KeyOption,
    server: str = ServerOption,
    legacy_secret: str | None = LegacySecretOption,
) -> None:
    """Show a message: verify its signature and chain, decrypt it, mark it read."""
    if api := _account(key, legacy_secret, server):
        run(_read_as_account(api, message_id, no_mark, as_json))
        return

    async def go(client: FluxClient) -> None:
        msg = await client.get(message_id)
        try:
            verified = await _verify(client, msg)
        except FluxError as exc:
            reason = f"{exc.code}: {exc.message}"
            raise CliError(f"message {message_id} does not verify: {reason}") from exc
        client.bindings.see_key(verified.envelope.sender, str(msg["pub"]))
        if not no_mark:
            await client.read(msg["id"], sender=msg.get("from"))
        if as_json:
            print(stored_json(msg))
            return
        body = _plaintext(client, msg)
        chain = _chain_text(verified.chain)
        name = client.bindings.name_of(str(msg.get("from")))
        out.print(_panel({**msg, "from": f"{name} ({msg['from']})"} if name else msg, body, chain))

    with_client(key, server, go, legacy_secret)


def stored_json(msg: dict[str, Any]) -> str:
    """The envelope as the server stores it, without the server's own `_status`, `_inbox`,
    `_tags` annotations (not part of what was signed), as one line of JSON: what
    `flux verify FILE` reads."""
    return json_text({k: v for k, v in msg.items() if not k.startswith("_")},
                     separators=(",", ":"))  # fmt: skip


async def _read_as_account(
    api: AccountApi, message_id: str, no_mark: bool, as_json: bool = False
) -> None:
    """`read` for a password account: fetched by id or short id (`GET /mail/message`),
    verified here (signature, chain intact), shown; the server holds the key, so an
    encrypted body is decrypted there for this session (`GET /mail/message/{id}/plain`)."""
    msg = await find_as_account(api, message_id)
    await _show_as_account(api, msg, message_id, no_mark, as_json)


async def find_as_account(api: AccountApi, message_id: str) -> dict[str, Any]:
    """The message of the account's mailbox whose id is or starts with `message_id` (8+
    digits), as the server resolves it (`GET /mail/message/{id}`, docs/API.md "Short
    ids"). Raises CliError for a too-short id; FluxClientError for none (404) and
    AmbiguousId for several (409, listing the candidates)."""
    if len(message_id) < 8:
        raise CliError(f"{message_id!r}: give at least 8 digits of the id (see `flux inbox`)")
    answer = await api.call("GET", f"/mail/message/{message_id}")
    message = answer.get("message")
    if not isinstance(message, dict):
        raise CliError(f"the server's answer to GET /mail/message has no message: {answer}")
    return message


async def plain_as_account(api: AccountApi, msg: dict[str, Any]) -> str:
    """The text of an encrypted message of the account's mailbox: its server holds the
    account's key and decrypts it for the session (docs/API.md, "Accounts")."""
    answer = await api.call("GET", f"/mail/message/{msg['id']}/plain", params={"from": msg["from"]})
    return str(answer.get("content", ""))


async def _show_as_account(
    api: AccountApi, msg: dict[str, Any], message_id: str, no_mark: bool, as_json: bool
) -> None:
    try:
        verify_envelope(dict(msg))
        check = verify_chain(msg, None)
        check.raise_for_failure()
    except FluxError as exc:
        reason = f"{exc.code}: {exc.message}"
        raise CliError(f"message {message_id} does not verify: {reason}") from exc
    body = Text(block(msg.get("content", "")))
    if msg.get("encrypted"):
        body = Text(block(await plain_as_account(api, msg)))
    if not no_mark:
        await api.call("POST", "/mail/read", json={"ids": [{"id": msg["id"], "from": msg["from"]}]})
    if as_json:
        print(stored_json(msg))
        return
    hops = f"{len(check.hops)} hop(s), intact (seals checked against their own records)"
    out.print(_panel(msg, body, hops if check.hops else "no hops"))


async def _verify(client: FluxClient, msg: dict[str, Any]) -> Verified:
    from ..client.errors import FluxClientError

    try:
        return await client.verify_online(msg)
    except FluxClientError as exc:
        if exc.code != "bad_answer" or exc.field != "domain":
            raise
    # A server that names no domain is the prototype's, which publishes no keys (PROTOCOL.md
    # §13 item 4): each hop is checked against the key in its own record only, and the
    # chain is then shown as "not all sealed".
    return client.verify(msg)


def _chain_text(check: ChainCheck) -> str:
    if not check.hops:
        return "no hops"
    if check.sealed:
        return f"{len(check.hops)} hop(s), each sealed under its server's published key"
    return f"{len(check.hops)} hop(s), intact, not all sealed (prototype hops)"


def _plaintext(client: FluxClient, msg: dict[str, Any]) -> Text:
    if not msg.get("encrypted"):
        return Text(block(msg.get("content", "")))
    try:
        return Text(block(client.decrypt(msg)))
    except DecryptionError as exc:
        return Text(f"[cannot decrypt: {exc.message}]", style="red")


def _panel(msg: dict[str, Any], body: Text, chain: str) -> Panel:
    head = Text()
    rows = [
        ("From", msg.get("from")), ("To", msg.get("to")),
        ("Cc", ", ".join(msg.get("cc") or ()) or None), ("Subject", msg.get("subject")),
        ("Date", when(msg.get("t"))), ("Id", msg.get("id")), ("Re", msg.get("re")),
        ("Tags", ", ".join(msg.get("_tags") or msg.get("tags") or ()) or None),
    ]  # fmt: skip
    for label, value in rows:
        if value:
            head.append(f"{label:>8}: ", style="bold").append(f"{one_line(value)}\n")
    head.append("    ✓ signature verifies", style="green")
    head.append(f"\n    ✓ integrity chain: {chain}", style="green")
    if msg.get("encrypted"):
        head.append("\n    🔒 end-to-end encrypted", style="cyan")
    head.append("\n\n").append(body)
    # a Text, not a str: Panel reads a str title as markup, and a subject is anyone's text
    return Panel(head, title=Text(one_line(msg.get("subject") or "message")), expand=False)


def watch(
    box: str | None = typer.Option(None, "--inbox", help="Which inbox to watch."),
    key: Path | None = KeyOption,
    server: str = ServerOption,
    legacy_secret: str | None = LegacySecretOption,
) -> None:
    """Print each message as it arrives (WebSocket push). Ctrl-C stops."""
    if api := _account(key, legacy_secret, server):
        try:
            run(_watch_account(api, box))
        except KeyboardInterrupt:
            out.print("stopped")
        return
    identity = load_identity(key)

    async def go() -> None:
        async with cached_client(identity, server, legacy_secret) as client:

            @client.on_message
            def show(msg: dict[str, Any]) -> None:
                out.print(_line(client, msg))

            task = await client.start_ws(inbox=box, timeout=client.timeout)
            out.print(f"watching {client.address} at {client.url} (Ctrl-C to stop)")
            await task

    try:
        run(go())
    except KeyboardInterrupt:
        out.print("stopped")


def _line(client: FluxClient, msg: dict[str, Any]) -> str:
    try:
        client.verify(msg)
        mark = "[green]✓[/]"
    except FluxError as exc:
        mark = f"[red]✗ {exc.code}[/]"
    text = escape(one_line(_plaintext(client, msg).plain))
    subject = f" [bold]{escape(one_line(msg['subject']))}[/]:" if msg.get("subject") else ""
    return (
        f"{mark} {when(msg.get('t'))} {escape(one_line(msg.get('id')))} "
        f"from {escape(one_line(short(msg.get('from'))))}{subject} {text}"
    )


async def _watch_account(api: AccountApi, box: str | None) -> None:
    """`watch` for a password account: /ws authenticated with its session (docs/API.md,
    "WebSocket", "Password accounts"); each pending and pushed message printed as it comes,
    its signature checked here (its key is on the server, so encrypted mail is shown as
    such). aiohttp answers the server's pings as frames are read, which acknowledges what
    was printed. Raises CliError when the session ends (4401/4403) or the socket closes."""
    import aiohttp

    assert api.session is not None
    url = "ws" + api.url.removeprefix("http") + "/ws"
    auth = {"action": "auth", "session": api.session.token, **({"inbox": box} if box else {})}
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(url, max_msg_size=WS_MAX_FRAME_BYTES) as ws,
        ):
            await ws.send_json(auth)
            async for frame in ws:
                if frame.type is not aiohttp.WSMsgType.TEXT:
                    break
                _account_frame(api, json.loads(frame.data))
            code = ws.close_code
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise CliError(f"cannot reach {api.url}: {exc or type(exc).__name__}; is the server "
                       "running? Check --server or $FLUX_SERVER") from exc  # fmt: skip
    if code in (4401, 4403):
        name = api.session.username or "NAME"
        raise CliError(f"the session of {name} at {api.url} has ended (expired, revoked or "
                       f"disabled): log in again with `flux account login {name}`")  # fmt: skip
    raise CliError(f"the server closed the connection (code {code}); run `flux watch` again")


def _account_frame(api: AccountApi, frame: Any) -> None:
    if not isinstance(frame, dict):
        return
    action = frame.get("action")
    if action == "authed":
        out.print(f"watching {escape(one_line(api.me))} at {api.url} (Ctrl-C to stop)")
        for msg in frame.get("messages") or []:
            out.print(_account_line(msg))
    elif action == "message" and isinstance(frame.get("message"), dict):
        out.print(_account_line(frame["message"]))


def _account_line(msg: Any) -> str:
    try:
        verify_envelope(dict(msg))
        verify_chain(msg, None).raise_for_failure()
        mark = "[green]✓[/]"
    except FluxError as exc:
        mark = f"[red]✗ {escape(exc.code)}[/]"
    except (TypeError, ValueError):
        mark = "[red]✗ malformed[/]"
    body = "[encrypted end to end]" if msg.get("encrypted") else msg.get("content", "")
    subject = f" [bold]{escape(one_line(msg['subject']))}[/]:" if msg.get("subject") else ""
    sender = msg.get("_from_name") or short(msg.get("from"))
    return (
        f"{mark} {when(msg.get('t'))} {escape(one_line(msg.get('id')))} "
        f"from {escape(one_line(sender))}{subject} {escape(one_line(body))}"
    )
