"""`flux admin queue list|show|hold|release|retry|fail|drop`: the delivery queue by hand
(mox's `mox queue` is the model).

A command picks queued mail by destination (`DEST` or `--to-server DEST`: every message
waiting for that server) or by message (`--id`: the full id or at least 8 of its hex
digits, as git takes them; every queued copy of that message, one per destination, or
only the one for `--to-server`).

* `hold` a destination: the delivery worker never leases it until `release`; its mail
  stays queued (and its retry window keeps running: a message older than the window when
  released bounces at the next attempt, as it would have). `hold --id`: that message is
  never handed out; the rest of its destination still goes (a held message does not block
  the others). A batch already in flight when the hold is set still completes.
* `retry`: due now (the worker looks within a few seconds; a held one stays held).
* `fail`: out of the queue at once, and the sender gets a bounce signed by this server
  saying "failed by the operator" (with `--reason`), its sent mail showing `bounced` with
  that reason, as when the worker gives up.
* `drop`: out of the queue without a bounce; the sender's sent mail shows `bounced`,
  reason "dropped by the operator" (final, so a late retry notice cannot revive it).

`fail` and `drop` leave alone a message a worker is sending at that moment (it may arrive):
the command says so, and it can be run again once the attempt is over. On more than one
message they ask first (or need `--yes`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.cells import cell_len
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ...protocol.chain import LOCAL_DELIVERY, ChainVerdict, ServerSigner, append_hop
from ...protocol.envelope import verify_envelope
from ...protocol.outgoing import make_bounce
from .._common import CliError, ok, out, short
from ._base import (
    DataDirOption,
    JsonOption,
    YesOption,
    config,
    confirm,
    now_ms,
    print_json,
    when,
    with_store,
)

if TYPE_CHECKING:  # imported where a command runs (_base.py says why)
    from ...server.config import ServerConfig
    from ...store.base import DestinationState, QueuedMessage, SentMessage, Store

__all__ = ["queue"]

FAILED = "failed by the operator"
DROPPED = "dropped by the operator"
MIN_PREFIX = 8
HEX = re.compile(r"[0-9a-f]+")

queue = typer.Typer(
    help="The delivery queue: list, show, hold, release, retry, fail or drop queued mail.",
    invoke_without_command=True,
    no_args_is_help=False,
)

DestArgument = typer.Argument(None, help="A destination (server or domain) as `list` shows it.")
ToServerOption = typer.Option(None, "--to-server", help="The destination (same as DEST).")
IdOption = typer.Option(
    None, "--id", help="A message: its full id or at least 8 hex digits of it, as git takes them."
)


@queue.callback()
def _queue(
    ctx: typer.Context,
    data_dir: Path | None = DataDirOption,
    retry_now: str | None = typer.Option(
        None, "--retry-now", help="Make this destination due at once (same as `retry DEST`)."
    ),
) -> None:
    """The delivery queue. Without a command: `list` (per destination)."""
    if ctx.invoked_subcommand is not None:
        if data_dir is not None:  # `flux admin queue --data-dir D list`: D for the command
            ctx.obj = {**(ctx.find_root().obj or {}), "data_dir": data_dir}
        return
    found = config(ctx, data_dir)
    if retry_now:
        woke = with_store(found, lambda s: s.wake(retry_now))
        out.print(f"✓ {retry_now} is due now" if woke else f"nothing queued for {retry_now}")
    _destinations(found, as_json=False)


def _config(ctx: typer.Context, data_dir: Path | None) -> ServerConfig:
    given = ctx.obj.get("data_dir") if isinstance(ctx.obj, dict) else None
    return config(ctx, data_dir if data_dir is not None else given)


# -- list, show --------------------------------------------------------------------------------
@queue.command("list")
def list_(
    ctx: typer.Context,
    dest: str | None = DestArgument,
    to_server: str | None = ToServerOption,
    messages: bool = typer.Option(False, "--messages", "-m", help="One row per message."),
    as_json: bool = JsonOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """Queued mail per destination, or with --messages per message.

    Per destination: state, count, oldest, attempts, next attempt, last error. --json: one
    JSON array."""
    found = _config(ctx, data_dir)
    where = _destination(dest, to_server)
    if messages or where is not None:
        rows = with_store(found, lambda s: _message_rows(s, where, None))
        if as_json:
            print_json(rows)
        else:
            _print_messages(rows)
        return
    _destinations(found, as_json=as_json)


def _destinations(found: ServerConfig, *, as_json: bool) -> None:
    states = with_store(found, lambda s: s.queue_state())
    now = now_ms()
    if as_json:
        print_json([_destination_json(s, now) for s in states])
        return
    if not states:
        out.print("the delivery queue is empty")
        return
    table = Table(title="delivery queue")
    wide = out.width >= 120
    rows = []
    for s in states:
        count = f"{s.queued} ({s.held_messages} held)" if s.held_messages else str(s.queued)
        rows.append([
            escape(s.destination), count, *([_brief(s.oldest_at, now)] if wide else []),
            str(s.attempts), "now" if s.next_attempt_at <= now else _brief(s.next_attempt_at, now),
            escape(" ".join((s.last_error or "").split())), _state(s, now),
        ])  # fmt: skip
    # the state last: scripts that read the first columns keep working; the oldest
    # message's time from 120 columns on (--json has it always)
    _columns(table, rows, ("destination", 28), ("queued", 14),
             *([("oldest", 11)] if wide else []), ("tries", 5), ("next", 11),
             ("last error", None), ("state", 20))  # fmt: skip
    for row in rows:
        table.add_row(*row)
    out.print(table)


ERROR_CELLS = 16  #: the least a table gives the last error before other columns shrink


def _columns(table: Table, rows: list[list[str]], *columns: tuple[str, int | None]) -> None:
    """Add `columns` (header, cap) to `table`: each one line wide enough for its header and
    cells up to its cap, cut with … past it; the one with no cap gets the cells that are
    left of the terminal's width (at least 5), cut with …, so each row stays one line even
    at 80 columns. `show` and --json have every value whole."""
    widths = [
        None if cap is None
        else min(cap, max([len(header)] + [cell_len(Text.from_markup(r[i]).plain) for r in rows]))
        for i, (header, cap) in enumerate(columns)
    ]  # fmt: skip
    # a cell is padded by one on each side, and a rule stands between and around columns
    frame = 3 * len(columns) + 1
    # the error keeps at least ERROR_CELLS: the widest other column gives way first
    while sum(w or 0 for w in widths) > out.width - frame - ERROR_CELLS:
        widest = max(range(len(widths)), key=lambda i: widths[i] or 0)
        if (widths[widest] or 0) <= 8:
            break
        widths[widest] = (widths[widest] or 0) - 1
    rest = max(5, out.width - frame - sum(w or 0 for w in widths))
    for (header, _cap), width in zip(columns, widths, strict=True):
        table.add_column(header, width=rest if width is None else width, no_wrap=True,
                         overflow="ellipsis")  # fmt: skip


def _brief(ms: int, now: int) -> str:
    """A queue time in few cells (local time): `06:39:46` today, `12-01 06:39` this year,
    else `2027-12-01`. time.localtime, not datetime: a retry far in the future (past year
    9999) is still a time."""
    try:
        at, today = time.localtime(ms / 1000), time.localtime(now / 1000)
    except (OverflowError, OSError, ValueError):
        return str(ms)
    if at[:3] == today[:3]:
        return time.strftime("%H:%M:%S", at)
    return time.strftime("%m-%d %H:%M" if at[0] == today[0] else "%Y-%m-%d", at)


def _state(s: DestinationState, now: int) -> str:
    if s.held:
        return "held"
    if s.leased_until > now:
        return "sending"
    if s.held_messages == s.queued:
        return "held (every message)"
    return "ready" if s.next_attempt_at <= now else "waiting"


def _destination_json(s: DestinationState, now: int) -> dict[str, Any]:
    return {
        "destination": s.destination, "state": _state(s, now), "held": s.held,
        "queued": s.queued, "held_messages": s.held_messages, "oldest_at": s.oldest_at,
        "attempts": s.attempts, "next_attempt_at": s.next_attempt_at,
        "last_error": s.last_error,
    }  # fmt: skip


async def _message_rows(store: Store, where: str | None, msg_id: str | None) -> list[dict]:
    """One JSON-able row per queued copy: the message, its destination's standing, and
    the last error in words (the sender's sent mail has them; the destination's technical
    error otherwise)."""
    if where is None and msg_id is None:
        copies = await store.queued()  # `list --messages`: everything
    else:
        copies = await _select(store, where, msg_id)
    states = {s.destination: s for s in await store.queue_state()}
    return [await _message_row(store, m, states.get(m.item.destination)) for m in copies]


async def _message_row(store: Store, m: QueuedMessage, dest: DestinationState | None) -> dict:
    env = m.item.envelope
    sender, msg_id = str(env.get("from")), str(env.get("id"))
    record = await store.sent_message(sender, msg_id)
    attempts = dest.attempts if dest else 0
    return {
        "qid": m.qid, "id": msg_id, "from": sender, "recipients": list(m.item.recipients),
        "destination": m.item.destination, "via": m.item.via or None,
        "queued_at": m.item.enqueued_at, "attempts": attempts,
        "next_attempt_at": dest.next_attempt_at if dest else None,
        "last_error": _words(record, m, attempts) or (dest.last_error if dest else None),
        "last_error_detail": dest.last_error if dest else None,
        "held": m.held or bool(dest and dest.held),
        "held_by": "message" if m.held else ("destination" if dest and dest.held else None),
        "sent": _sent_states(record, m),
    }  # fmt: skip


def _words(record: SentMessage | None, m: QueuedMessage, attempts: int) -> str | None:
    from ...store.base import DeliveryState

    if not attempts:
        return None
    for rcpt in m.item.recipients:
        state = (record.delivery.get(rcpt) if record else None) or {}
        if state.get("state") == DeliveryState.QUEUED and state.get("error"):
            return str(state["error"])
    return None


def _sent_states(record: SentMessage | None, m: QueuedMessage) -> dict[str, Any] | None:
    """The sender's sent-mail states of this copy's recipients (None: no sent record here,
    mail another server handed on)."""
    if record is None:
        return None
    return {r: dict(record.delivery.get(r) or {}) for r in m.item.recipients}


def _print_messages(rows: Sequence[dict]) -> None:
    if not rows:
        out.print("no queued messages")
        return
    table = Table(title="queued messages")
    now = now_ms()
    # below 120 columns: what the operator acts on (the id for `show`, `hold`, `fail`...),
    # where it goes and how it stands; wider: who sent it to whom, and the queue entry
    wide = out.width >= 120
    cells = []
    for r in rows:
        nxt = r["next_attempt_at"]
        who = [str(r["qid"]), r["id"][: 12 if wide else 8], short(r["from"], 8),
               ", ".join(short(x, 8) for x in r["recipients"])]  # fmt: skip
        cells.append([
            *(who if wide else who[1:2]), escape(r["destination"]),
            *([_brief(r["queued_at"], now)] if wide else []), str(r["attempts"]),
            "" if nxt is None else ("now" if nxt <= now else _brief(nxt, now)),
            escape(" ".join((r["last_error"] or "").split())), r["held_by"] or "",
        ])  # fmt: skip
    columns = [("qid", 8), ("id", 12), ("from", 13), ("to", 13)] if wide else [("id", 8)]
    columns += [("destination", 24), *([("queued", 11)] if wide else []), ("tries", 5),
                ("next", 11), ("last error", None), ("held", 11)]  # fmt: skip
    _columns(table, cells, *columns)
    for row in cells:
        table.add_row(*row)
    out.print(table)


@queue.command()
def show(
    ctx: typer.Context,
    msg_id: str = typer.Argument(..., metavar="ID", help="Full id or at least 8 hex digits."),
    to_server: str | None = ToServerOption,
    as_json: bool = JsonOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """One queued message in full, with the sender's delivery state per recipient.

    Envelope summary, destination, attempts so far, last error, the sender's delivery
    state per recipient."""
    found = _config(ctx, data_dir)
    rows = with_store(found, lambda s: _show_rows(s, to_server, msg_id))
    if as_json:
        print_json(rows[0] if len(rows) == 1 else rows)
        return
    for row in rows:
        _print_one(row)


async def _show_rows(store: Store, where: str | None, msg_id: str) -> list[dict]:
    rows = await _message_rows(store, where, msg_id)
    copies = {m.qid: m for m in await _select(store, where, msg_id)}
    for row in rows:
        env = copies[row["qid"]].item.envelope
        row["envelope"] = _summary(env)
    return rows


def _summary(env: Any) -> dict[str, Any]:
    """What the operator may see of a message: its routing, not its content (the subject
    only when it is not encrypted)."""
    encrypted = "encrypted" in env or isinstance(env.get("content"), dict)
    return {
        "id": env.get("id"), "from": env.get("from"), "to": env.get("to"),
        "cc": env.get("cc"), "t": env.get("t"), "re": env.get("re"),
        "subject": None if encrypted else env.get("subject"), "encrypted": encrypted,
        "hops": len(env.get("chain") or ()),
    }  # fmt: skip


def _print_one(row: dict) -> None:
    env = row["envelope"]
    out.print(f"[bold]{escape(row['id'])}[/]  (queue entry {row['qid']})")
    out.print(f"  from         {escape(str(env['from']))}")
    out.print(f"  to           {escape(', '.join(row['recipients']))}")
    if env.get("subject"):
        out.print(f"  subject      {escape(str(env['subject']))}")
    elif env.get("encrypted"):
        out.print("  subject      (encrypted)")
    out.print(f"  written      {when(env.get('t'))}")
    out.print(f"  destination  {escape(row['destination'])}"
              + (f" (through mesh {escape(row['via'])})" if row["via"] else ""))  # fmt: skip
    out.print(f"  queued       {when(row['queued_at'])}")
    tries = row["attempts"]
    nxt = row["next_attempt_at"]
    out.print(f"  attempts     {tries}" + (f", next {when(nxt)}" if nxt else ", next now"))
    if row["last_error"]:
        out.print(f"  last error   {escape(row['last_error'])}")
    if row["last_error_detail"] and row["last_error_detail"] != row["last_error"]:
        out.print(f"  (technical)  {escape(row['last_error_detail'])}")
    if row["held_by"]:
        out.print(f"  held         by the operator ({row['held_by']})")
    for rcpt, state in (row["sent"] or {}).items():
        out.print(f"  sent mail    {escape(short(rcpt))}: {escape(str(state.get('state')))}")


# -- selecting ---------------------------------------------------------------------------------
def _destination(dest: str | None, to_server: str | None) -> str | None:
    if dest and to_server and dest != to_server:
        raise CliError(f"two destinations given ({dest}, --to-server {to_server}); give one")
    return dest or to_server


async def _select(store: Store, where: str | None, msg_id: str | None) -> list[QueuedMessage]:
    """The queued copies a command acts on. Raises CliError for an id that matches none
    or several messages."""
    if msg_id is None:
        if where is None:
            raise CliError("say which mail: a destination (DEST or --to-server) or --id ID")
        return await store.queued(where)
    wanted = msg_id.strip().lower()
    is_prefix = len(wanted) >= MIN_PREFIX and HEX.fullmatch(wanted) is not None
    copies = await store.queued(where, id_prefix=msg_id.strip() if not is_prefix else wanted)
    exact = [m for m in copies if m.item.envelope.get("id") == msg_id.strip()]
    if exact or not is_prefix:
        copies = exact
    ids = sorted({str(m.item.envelope.get("id")) for m in copies})
    if not copies:
        hint = "at least 8 hex digits, or the full id" if not is_prefix else "the id"
        raise CliError(
            f"no queued message {msg_id}{f' for {where}' if where else ''}; check {hint} "
            "with `flux admin queue list --messages`"
        )
    if len(ids) > 1:
        raise CliError(
            f"{msg_id} matches {len(ids)} queued messages ({', '.join(ids[:5])}"
            f"{', …' if len(ids) > 5 else ''}); give more digits of the id"
        )
    return copies


def _target(
    dest: str | None, to_server: str | None, msg_id: str | None
) -> tuple[str | None, str | None]:
    where = _destination(dest, to_server)
    if where is None and msg_id is None:
        raise CliError("say which mail: a destination (DEST or --to-server) or --id ID")
    return where, msg_id


# -- hold, release, retry ----------------------------------------------------------------------
def _hold(ctx, dest, to_server, msg_id, data_dir, held: bool) -> None:
    where, msg_id = _target(dest, to_server, msg_id)
    found = _config(ctx, data_dir)
    word = "held" if held else "released"

    async def act(store: Store) -> str:
        if msg_id is None:
            assert where is not None
            if not await store.hold(where, held):
                raise CliError(f"nothing queued for {where}; see `flux admin queue list`")
            return f"{where} is {word}" + (
                ": the delivery worker will not send its mail until `flux admin queue "
                f"release {where}`" if held else ": its mail goes at its next attempt"
            )  # fmt: skip
        copies = await _select(store, where, msg_id)
        await store.hold_messages([m.qid for m in copies], held)
        places = ", ".join(sorted({m.item.destination for m in copies}))
        return f"message {copies[0].item.envelope['id']} is {word} (queued for {places})"

    ok(with_store(found, act))


@queue.command()
def hold(
    ctx: typer.Context,
    dest: str | None = DestArgument,
    to_server: str | None = ToServerOption,
    msg_id: str | None = IdOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """Stop sending to a destination (or one message) until released.

    A held destination (or message) is never handed to the delivery worker until
    released; a held message does not block the rest of its destination."""
    _hold(ctx, dest, to_server, msg_id, data_dir, True)


@queue.command()
def release(
    ctx: typer.Context,
    dest: str | None = DestArgument,
    to_server: str | None = ToServerOption,
    msg_id: str | None = IdOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """Undo `hold`: the mail goes at its next attempt (`retry` to make that now)."""
    _hold(ctx, dest, to_server, msg_id, data_dir, False)


@queue.command()
def retry(
    ctx: typer.Context,
    dest: str | None = DestArgument,
    to_server: str | None = ToServerOption,
    msg_id: str | None = IdOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """Make a destination (or the destinations of a message) due now.

    A running server tries within a few seconds. Held mail stays held."""
    where, msg_id = _target(dest, to_server, msg_id)
    found = _config(ctx, data_dir)

    async def act(store: Store) -> tuple[list[str], set[str]]:
        if msg_id is None:
            assert where is not None
            if not await store.wake(where):
                raise CliError(f"nothing queued for {where}; see `flux admin queue list`")
            places = [where]
        else:
            places = sorted({m.item.destination for m in await _select(store, where, msg_id)})
            for place in places:
                await store.wake(place)
        held = {s.destination for s in await store.queue_state() if s.held}
        return places, held

    places, held = with_store(found, act)
    for place in places:
        if place in held:
            ok(f"{place} is due now, but held: `flux admin queue release {place}`"
               " to send")  # fmt: skip
        else:
            ok(f"{place} is due now")


# -- fail, drop --------------------------------------------------------------------------------
def _remove(ctx, dest, to_server, msg_id, data_dir, yes: bool, reason: str, bounce: bool) -> None:
    where, msg_id = _target(dest, to_server, msg_id)
    found = _config(ctx, data_dir)
    signer = _server_signer(found) if bounce else None
    verb = "fail" if bounce else "drop"
    copies = with_store(found, lambda s: _select(s, where, msg_id))
    confirm(len(copies), verb, yes)

    async def act(store: Store) -> tuple[list[QueuedMessage], list[QueuedMessage]]:
        now = now_ms()
        removals = [(m.qid, _bounced(m, reason, now)) for m in copies]
        removed = set(await store.remove_queued(removals, now))
        done = [m for m in copies if m.qid in removed]
        if signer is not None:
            for m in done:
                await operator_bounce(store, signer, found, m, reason, now)
        return done, [m for m in copies if m.qid not in removed]

    done, busy = with_store(found, act)
    what = "failed (the sender gets a bounce)" if bounce else "dropped (no bounce)"
    for m in done:
        ok(f"{m.item.envelope['id']} for {m.item.destination} {what}")
    if busy:
        names = ", ".join(sorted({m.item.destination for m in busy}))
        raise CliError(
            f"{len(busy)} message(s) left alone: a delivery to {names} is under way right now; "
            f"run `flux admin queue {verb}` again in a minute (or `hold` first)"
        )


def _bounced(m: QueuedMessage, reason: str, now: int) -> dict:
    from ...store.base import DeliveryState

    env = m.item.envelope
    state = {"state": DeliveryState.BOUNCED.value, "at": now, "reason": reason}
    return {(str(env.get("from")), str(env.get("id"))): dict.fromkeys(m.item.recipients, state)}


def _server_signer(found: ServerConfig) -> ServerSigner:
    """The server's signing key, for the bounce: the same key the worker signs with."""
    from ...server.keys import KEY_FILE, load_or_create

    if not (found.data_dir / KEY_FILE).exists():
        raise CliError(
            f"no server key at {found.data_dir / KEY_FILE}; pass the server's --data-dir"
        )
    return load_or_create(found.data_dir, found.domain, now_ms()).signer


async def operator_bounce(
    store: Store, signer: ServerSigner, found: ServerConfig, m: QueuedMessage, reason: str,
    now: int,
) -> bool:  # fmt: skip
    """The bounce the delivery worker's sink (server/submission.py `Submitter.bounce`)
    gives a sender: signed by this server, `re` the original, stored in the sender's
    mailbox as local mail, without the spam and quota checks. A sender this server does
    not host (mail relayed for a peer) gets none; False then. A server running on the
    same store shows it to the sender at its next listing or /changes (this process
    cannot push to the server's sockets)."""
    from ...store.base import Incoming

    original = m.item.envelope
    sender = str(original["from"])
    if not (found.open_mode or await store.hosted(sender)):
        return False
    env = verify_envelope(make_bounce(original, list(m.item.recipients), reason,
                                      signer.identity, now))  # fmt: skip
    stamped = append_hop(env.data, signer, next_hop=LOCAL_DELIVERY, now_ms=now,
                         cv=ChainVerdict.NONE)  # fmt: skip
    await store.store_many([Incoming(stamped, env.body_hash, (sender,), now)])
    return True


@queue.command()
def fail(
    ctx: typer.Context,
    dest: str | None = DestArgument,
    to_server: str | None = ToServerOption,
    msg_id: str | None = IdOption,
    reason: str | None = typer.Option(
        None, "--reason", help="Words added to the bounce's reason ('failed by the operator')."
    ),
    yes: bool = YesOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """Bounce now: take the mail out of the queue and tell each sender.

    Each sender gets a bounce signed by this server ("failed by the operator") and sees
    `bounced` in its sent mail."""
    why = f"{FAILED}: {' '.join(reason.split())}" if reason and reason.strip() else FAILED
    _remove(ctx, dest, to_server, msg_id, data_dir, yes, why, bounce=True)


@queue.command()
def drop(
    ctx: typer.Context,
    dest: str | None = DestArgument,
    to_server: str | None = ToServerOption,
    msg_id: str | None = IdOption,
    yes: bool = YesOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """Remove from the queue without a bounce.

    The sender's sent mail shows `bounced`, reason "dropped by the operator"."""
    _remove(ctx, dest, to_server, msg_id, data_dir, yes, DROPPED, bounce=False)
