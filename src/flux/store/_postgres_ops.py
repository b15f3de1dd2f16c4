"""The SQL of PostgresStore's mailboxes: one function per operation, each on a connection.

Write functions run inside a READ COMMITTED transaction that the caller opened, and each
takes its mailbox locks (_postgres_locks.py) as its first statement: from then on no other
transaction changes those mailboxes, and every later statement sees everything committed
before. That is what makes the dedupe check, the quota count and the seq order hold under
concurrency (postgres.py explains why). Read functions are single statements, or run in a
read-only REPEATABLE READ transaction when they need one snapshot. The lifecycle decisions
come from _rules.py, shared with the other stores.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from . import _rules
from ._postgres_locks import Locks
from .base import (
    REFUSED_REASONS,
    Change,
    ChangeKind,
    Changes,
    Incoming,
    ListQuery,
    MessageRef,
    MessageStatus,
    Page,
    PrefixMatches,
    SentMessage,
    StoredMessage,
    StoreOutcome,
    ThreadItem,
    prefix_upper,
)

ROW = """d.recipient, d.status, d.inbox, d.tags, d.received_at, d.seq, d.hide_at,
         m.envelope, d.id, d.msg_id, d.sender"""
FROM = "deliveries d JOIN messages m ON m.body_hash = d.body_hash"


def visible(now: str) -> str:
    """The row is not past its `expires` time at `now` (a placeholder such as "$2")."""
    return f"(d.hide_at IS NULL OR d.hide_at > {now})"


def to_message(row: asyncpg.Record, now: int) -> StoredMessage:
    rcpt, status, inbox, tags, received_at, seq, hide_at, envelope, _id, _msg_id, _sender = row
    return StoredMessage(
        envelope=json.loads(envelope), recipient=rcpt,
        status=_rules.effective_status(MessageStatus(status), hide_at, now), inbox=inbox,
        tags=tuple(tags), received_at=received_at, seq=seq,
    )  # fmt: skip


def rowcount(status: str) -> int:
    """The row count of a command tag such as "INSERT 0 1" or "UPDATE 3"."""
    return int(status.rsplit(" ", 1)[-1])


# -- writes ---------------------------------------------------------------------------------
async def store_batch(
    conn: asyncpg.Connection, locks: Locks, batch: Sequence[Incoming]
) -> list[dict[str, StoreOutcome]]:
    """Store every message of `batch`, in order, in the caller's transaction."""
    recipients = [_rules.recipients_of(inc) for inc in batch]  # TypeError before any SQL
    await conn.execute(TAKE_LOCKS, lock_keys(locks, batch, recipients))
    return [await store(conn, inc, rcpts) for inc, rcpts in zip(batch, recipients, strict=True)]


#: unnest yields the array in order, so the locks are taken in key order (_postgres_locks)
TAKE_LOCKS = "SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k"


def lock_keys(locks: Locks, batch: Sequence[Incoming], recipients: list[list[str]]) -> list[int]:
    """Every lock a storing transaction takes, in the order it takes them: its recipients'
    mailboxes, and its senders' where a sent record is written (its root is computed in
    the sender's mail: queue.record_sent); its bodies; and the rate buckets it counts in,
    whose lock is the one `flux_count_hit` takes (_postgres_hits.py), so a hit counted
    here and one counted there are counted one at a time."""
    everyone = {r for rcpts in recipients for r in rcpts}
    everyone |= {inc.envelope["from"] for inc in batch if inc.sent is not None}
    keys = set(locks.keys(everyone, {inc.body_hash for inc in batch}))
    keys |= {locks.key("hits", inc.rate.bucket) for inc in batch if inc.rate is not None}
    return sorted(keys)


#: SQLSTATE of `flux_store_batch`'s "not here: store this batch the general way"
GENERAL_WAY = "FX001"
STORE_AT_ONCE = "SELECT flux_store_batch($1::jsonb, $2::bigint[], $3::jsonb)"
#: what a sent record says of a recipient the store refused (sent_after)
_BOUNCE_REASONS = json.dumps({str(k): v for k, v in REFUSED_REASONS.items()})


async def store_at_once(
    conn: asyncpg.Connection, locks: Locks, batch: Sequence[Incoming]
) -> list[dict[str, StoreOutcome]] | None:
    """`store_batch` and the sent records (`sent_after`, queue.record_sent) in one call of
    the server-side function `flux_store_batch` (schema steps 13 and 14): one statement,
    one round trip, its own transaction; the connection must not be in one. It takes
    every lock `store_batch` takes, in the same order, and then decides and writes by the
    same rules, each statement on a new snapshot (a reply's thread by _rules.parent_root,
    written again in SQL: flux_parent_root). None (nothing written, no seq drawn) for a
    batch it leaves to the general way: a sent record to merge into one already kept
    (base.py merge_sent: a BCC copy after the first), a reply to a message of the same
    batch, or to one whose stored JSON PostgreSQL does not read as JSONB."""
    recipients = [_rules.recipients_of(inc) for inc in batch]  # TypeError before any SQL
    payload = _rules.compact_json(
        [at_once_json(inc, rcpts) for inc, rcpts in zip(batch, recipients, strict=True)]
    )
    keys = lock_keys(locks, batch, recipients)
    try:
        raw = await conn.fetchval(STORE_AT_ONCE, payload, keys, _BOUNCE_REASONS)
    except asyncpg.PostgresError as exc:
        if exc.sqlstate == GENERAL_WAY:
            return None
        raise
    return [
        {r: StoreOutcome(o) for r, o in zip(rcpts, outcomes, strict=True)}
        for rcpts, outcomes in zip(recipients, json.loads(raw), strict=True)
    ]


def at_once_json(inc: Incoming, recipients: list[str]) -> dict[str, Any]:
    """One message as `flux_store_batch` reads it: what `store` and `save_body` write, and
    what the rules decided in Python without reading the mail (the root of a message
    with no parent in it, the placeholders it adopts, but for its owner's own)."""
    env = inc.envelope
    re_id = env.get("re") if isinstance(env.get("re"), str) else None
    delete_on_read, hide_at = _rules.expiry_of(env)
    share = inc.stranger_share
    sent = None
    if inc.sent is not None:
        record = inc.sent
        sent = {
            "sender": record.sender, "id": record.id, "sent_at": record.sent_at,
            "updated_at": record.updated_at,
            "envelope": _rules.envelope_text(record.envelope),
            "delivery": _rules.compact_json(record.delivery),
            **_threading(record.envelope),
        }  # fmt: skip
    return {
        "hash": inc.body_hash, "id": env["id"], "from": env["from"],
        "sender": str(env.get("from", "")), "t": int(env.get("t", 0)), "re": re_id,
        "envelope": _rules.envelope_text(env), "at": inc.received_at, "inbox": inc.inbox,
        "tags": list(_rules.normalise_tags(inc.tags)), "delete_on_read": delete_on_read,
        "hide_at": hide_at, "quota": inc.pending_quota,
        "share": None if share is None else [share.total, share.per_sender],
        "rcpts": recipients, "sent": sent, **_threading(env),
        "rate": None if inc.rate is None else [inc.rate.bucket, inc.rate.window_ms, inc.rate.limit],
        "contacts": list(dict.fromkeys(inc.contacts)),
        "notify": None if inc.announce is None else {
            "channel": inc.announce.channel, "payloads": dict(inc.announce.payloads),
        },
    }  # fmt: skip


def _threading(env: Mapping[str, Any]) -> dict[str, Any]:
    """What `new_root` takes from the message, for `flux_root` and `flux_adopt`: the
    parent to look for (`re`, if any), its sender and the addresses it names
    (`_rules.parent_root`), the root when no parent is found, and the placeholders of
    its participants but the owner."""
    re_id = env.get("re")
    parent = re_id if isinstance(re_id, str) and re_id else None
    named = sorted(_rules.named(env))
    return {
        "parent": parent, "from": env.get("from"), "named": named,
        "root": _rules.thread_start(env, None),
        "adopt": [_rules.waiting_key(who, env["id"]) for who in named],
    }  # fmt: skip


STORE_DELIVERY = """
WITH c AS (
    INSERT INTO changes (address, sender, msg_id, kind)
    VALUES ($1, $10, $2, 'created') RETURNING seq
), d AS (
    INSERT INTO deliveries (recipient, sender, msg_id, re, body_hash, status, inbox, tags,
                            received_at, seq, delete_on_read, hide_at, thread_root)
    SELECT $1, $10, $2, $11, $3, 'pending', $4, $5::text[], $6, c.seq, $7, $8, $9 FROM c
    RETURNING id
)
INSERT INTO delivery_tags (delivery_id, tag, recipient, received_at)
SELECT d.id, t, $1, $6 FROM d, unnest($5::text[]) AS t"""


async def store(
    conn: asyncpg.Connection, inc: Incoming, recipients: list[str]
) -> dict[str, StoreOutcome]:
    """One message; the caller holds the locks of its recipients and body."""
    env = inc.envelope
    msg_id, sender = env["id"], env["from"]
    re_id = env.get("re") if isinstance(env.get("re"), str) else None
    delete_on_read, hide_at = _rules.expiry_of(env)
    tags = list(_rules.normalise_tags(inc.tags))
    existing = dict(
        await conn.fetch(
            "SELECT recipient, body_hash FROM deliveries "
            "WHERE msg_id = $1 AND sender = $3 AND recipient = ANY($2::text[])",
            msg_id, recipients, sender,
        )
    )  # fmt: skip
    quota = inc.pending_quota
    fresh = [r for r in recipients if r not in existing]
    # Each recipient gets at most one row here, so counts read once stay right for this
    # message; the locks keep them right against other transactions.
    pending = await pending_counts(conn, fresh, inc.received_at) if quota is not None else {}
    out: dict[str, StoreOutcome] = {}
    body_saved = False
    rate = inc.rate
    # looked at once, before anything of the message is written, under the bucket's lock
    # (base.py notes, "Rate and contacts in the storing transaction")
    limited = rate is not None and (
        await conn.fetchval(HITS_IN_WINDOW, rate.bucket, inc.received_at, rate.window_ms)
        >= rate.limit
    )
    for rcpt in recipients:
        if rcpt in existing:
            same = existing[rcpt] == inc.body_hash
            out[rcpt] = StoreOutcome.DUPLICATE if same else StoreOutcome.CONFLICT
            continue
        if limited:
            out[rcpt] = StoreOutcome.RATE_LIMITED
            continue
        if quota is not None and pending.get(rcpt, 0) >= quota:
            out[rcpt] = StoreOutcome.OVER_QUOTA
            continue
        if inc.stranger_share is not None and await over_stranger_share(conn, inc, rcpt):
            out[rcpt] = StoreOutcome.OVER_STRANGER_SHARE
            continue
        if not body_saved:
            await save_body(conn, inc)
            body_saved = True
        root = await thread_root(conn, rcpt, env)
        await conn.execute(
            STORE_DELIVERY, rcpt, msg_id, inc.body_hash, inc.inbox, tags, inc.received_at,
            delete_on_read, hide_at, root, sender, re_id,
        )  # fmt: skip
        out[rcpt] = StoreOutcome.STORED
    if body_saved:
        await after_storing(conn, inc, [r for r, o in out.items() if o is StoreOutcome.STORED])
    return out


HITS_IN_WINDOW = "SELECT count(*) FROM hits WHERE bucket = $1 AND t > $2::bigint - $3::bigint"
#: flux_count_hit's forgetting and insert, for a bucket known not to be full
COUNT_HIT = """WITH gone AS (DELETE FROM hits WHERE bucket = $1 AND t <= $2::bigint - $3::bigint)
INSERT INTO hits (bucket, t) VALUES ($1, $2)"""
NOTIFY_EACH = "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p"


async def after_storing(conn: asyncpg.Connection, inc: Incoming, stored: list[str]) -> None:
    """What a message with `stored` recipients adds in its transaction: its rate hit, its
    sender's contacts, its NOTIFYs (which PostgreSQL sends at COMMIT)."""
    if inc.rate is not None:
        await conn.execute(COUNT_HIT, inc.rate.bucket, inc.received_at, inc.rate.window_ms)
    if inc.contacts:
        await add_contacts(conn, inc.envelope["from"], inc.contacts, inc.received_at)
    if inc.announce is not None:
        payloads = [inc.announce.payloads[r] for r in stored if r in inc.announce.payloads]
        await conn.execute(NOTIFY_EACH, inc.announce.channel, payloads)


STRANGER_COUNTS = f"""
SELECT EXISTS (SELECT 1 FROM contacts WHERE owner = $1 AND peer = $2),
       COUNT(*), COUNT(*) FILTER (WHERE d.sender = $2)
  FROM deliveries d
 WHERE d.recipient = $1 AND d.status = 'pending' AND {visible("$3")}
   AND d.sender <> d.recipient
   AND NOT EXISTS (SELECT 1 FROM contacts c WHERE c.owner = d.recipient AND c.peer = d.sender)"""


async def over_stranger_share(conn: asyncpg.Connection, inc: Incoming, rcpt: str) -> bool:
    """The stranger share's decision (_rules.over_stranger_share), counted under the
    recipient's lock in the storing transaction; the message's own earlier recipients in
    this batch are visible to it, as for the quota."""
    sender = inc.envelope["from"]
    known, strangers, from_sender = await conn.fetchrow(
        STRANGER_COUNTS, rcpt, sender, inc.received_at
    )
    return _rules.over_stranger_share(inc, rcpt, known, strangers, from_sender)


async def add_contacts(
    conn: asyncpg.Connection, owner: str, peers: Sequence[str], now: int
) -> None:
    await conn.execute(
        """INSERT INTO contacts (owner, peer, since) SELECT $1, p, $3 FROM unnest($2::text[]) p
           ON CONFLICT (owner, peer) DO NOTHING""",
        owner, list(dict.fromkeys(peers)), now,
    )  # fmt: skip


async def purge_expired(conn: asyncpg.Connection, locks: Locks, before: int) -> int:
    """Delete expired deliveries, their tags and the bodies no delivery holds (base.py),
    under the mailbox locks (as `expire`), so no writer of those mailboxes interleaves."""
    expired = "FROM deliveries WHERE hide_at IS NOT NULL AND hide_at <= $1"
    found = await conn.fetch(f"SELECT DISTINCT recipient, body_hash {expired}", before)
    if not found:
        return 0
    owners = list({r[0] for r in found})
    # the bodies too: a message being stored again at this moment keeps its body
    await locks.take(conn, owners, {r[1] for r in found})
    gone = await conn.fetch(
        f"SELECT id, body_hash {expired} AND recipient = ANY($2::text[])", before, owners
    )
    ids = [r["id"] for r in gone]
    await conn.execute("DELETE FROM delivery_tags WHERE delivery_id = ANY($1::bigint[])", ids)
    await conn.execute("DELETE FROM deliveries WHERE id = ANY($1::bigint[])", ids)
    await conn.execute(
        """DELETE FROM messages m WHERE m.body_hash = ANY($1::text[])
           AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.body_hash = m.body_hash)""",
        list({r["body_hash"] for r in gone} & {r[1] for r in found}),  # the locked ones
    )
    return len(gone)


async def save_body(conn: asyncpg.Connection, inc: Incoming) -> None:
    env = inc.envelope
    re_id = env.get("re")
    await conn.execute(
        """INSERT INTO messages (body_hash, id, sender, t, re, envelope)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (body_hash) DO NOTHING""",
        inc.body_hash, env["id"], str(env.get("from", "")), int(env.get("t", 0)),
        re_id if isinstance(re_id, str) else None, _rules.envelope_text(env),
    )  # fmt: skip


async def parent_candidates(
    conn: asyncpg.Connection, owner: str, re_id: str
) -> list[tuple[Mapping[str, Any], str]]:
    """(envelope, root) of `owner`'s messages of id `re_id`, received and sent, oldest
    first (base.py, "A conversation includes the owner's own sent mail")."""
    received = await conn.fetch(
        f"""SELECT d.received_at, m.envelope, d.thread_root FROM {FROM}
            WHERE d.recipient = $1 AND d.msg_id = $2 ORDER BY d.received_at, d.id""",
        owner, re_id,
    )  # fmt: skip
    sent = await conn.fetch(
        "SELECT sent_at, envelope, thread_root, delivery FROM sent WHERE sender = $1 AND msg_id = $2",
        owner, re_id,
    )  # fmt: skip
    return _rules.oldest_first(
        [(t, json.loads(e), r) for t, e, r in received],
        [(t, _rules.as_sent(json.loads(e), json.loads(d)), r) for t, e, r, d in sent],
    )


async def new_root(conn: asyncpg.Connection, owner: str, env: Mapping[str, Any]) -> str:
    """The root of a message new to `owner`'s mail, received or sent (base.py, "Threads");
    the replies waiting for it that its participants sent move under it, in both. The
    caller holds `owner`'s mailbox lock."""
    re_id = env.get("re")
    parent = None
    if isinstance(re_id, str) and re_id:
        parent = _rules.parent_root(env, owner, await parent_candidates(conn, owner, re_id))
    root = _rules.thread_start(env, parent)
    waiting = _rules.adoptable(env, owner)
    await conn.execute(
        "UPDATE deliveries SET thread_root = $1 "
        "WHERE recipient = $2 AND thread_root = ANY($3::text[])",
        root, owner, waiting,
    )  # fmt: skip
    await conn.execute(
        "UPDATE sent SET thread_root = $1 WHERE sender = $2 AND thread_root = ANY($3::text[])",
        root, owner, waiting,
    )  # fmt: skip
    return root


#: the root of a new delivery: the recipient is the owner
thread_root = new_root


SET_STATUSES = """
WITH u AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
        WITH ORDINALITY AS u (address, sender, msg_id, status, n)
), c AS (
    INSERT INTO changes (address, sender, msg_id, kind)
    SELECT address, sender, msg_id, 'updated' FROM u ORDER BY n
    RETURNING seq, address, sender, msg_id
)
UPDATE deliveries d SET status = u.status, seq = c.seq
FROM c JOIN u USING (address, sender, msg_id)
WHERE d.recipient = c.address AND d.msg_id = c.msg_id AND d.sender = c.sender"""


async def set_statuses(conn: asyncpg.Connection, rows: Sequence[tuple[str, str, str, str]]) -> None:
    """Apply (address, sender, msg_id, status) rows with one change each, seqs in `rows`
    order (the INSERT draws them from the sequence in the ORDER BY order); the triples
    (address, sender, msg_id) are distinct."""
    if rows:
        addresses, senders_, ids, statuses = (list(col) for col in zip(*rows, strict=True))
        await conn.execute(SET_STATUSES, addresses, senders_, ids, statuses)


def update_with_change(assignment: str) -> str:
    """An UPDATE of one delivery ($1 recipient, $2 msg_id, $4 sender) that records one
    change."""
    return f"""
WITH c AS (
    INSERT INTO changes (address, sender, msg_id, kind)
    VALUES ($1, $4, $2, 'updated') RETURNING seq
)
UPDATE deliveries d SET {assignment}, seq = c.seq FROM c
WHERE d.recipient = $1 AND d.msg_id = $2 AND d.sender = $4"""


SET_TAGS = update_with_change("tags = $3::text[]")
SET_INBOX = update_with_change("inbox = $3")


async def senders_of(
    conn: asyncpg.Connection, address: str, msg_ids: Sequence[str]
) -> dict[str, list[str]]:
    """{id: senders holding it in `address`'s mailbox}."""
    rows = await conn.fetch(
        "SELECT msg_id, sender FROM deliveries WHERE recipient = $1 AND msg_id = ANY($2::text[])",
        address, list(msg_ids),
    )  # fmt: skip
    out: dict[str, list[str]] = {}
    for msg_id, sender in rows:
        out.setdefault(msg_id, []).append(sender)
    return out


async def find(
    conn: asyncpg.Connection, address: str, msg_id: str, sender: str | None
) -> str | None:
    """The sender of the row `msg_id` names (base.py); raises AmbiguousMessage."""
    held = await senders_of(conn, address, [msg_id])
    return _rules.pick(MessageRef(msg_id, sender), held.get(msg_id, ()))


async def mark(
    conn: asyncpg.Connection, locks: Locks, address: str, msg_ids: Sequence[str | MessageRef],
    status: MessageStatus, now: int, step: _rules.Step = _rules.next_status,
) -> list[StoredMessage]:  # fmt: skip
    """`Store.mark`; with `step=_rules.unread_status`, `Store.mark_unread`."""
    await locks.take(conn, [address])
    wanted = _rules.refs(msg_ids)
    rows = await conn.fetch(
        "SELECT sender, msg_id, status, delete_on_read, hide_at FROM deliveries "
        "WHERE recipient = $1 AND msg_id = ANY($2::text[])",
        address, list({r.id for r in wanted}),
    )  # fmt: skip
    found = {(r["sender"], r["msg_id"]): r for r in rows}
    held: dict[str, list[str]] = {}
    for sender, msg_id in found:
        held.setdefault(msg_id, []).append(sender)
    changed: list[tuple[str, str, str, str]] = []
    for key in _rules.resolve_all(wanted, held):
        row = found[key]
        new = step(
            MessageStatus(row["status"]), MessageStatus(status),
            delete_on_read=row["delete_on_read"], hidden=_rules.is_hidden(row["hide_at"], now),
        )  # fmt: skip
        if new is not None:
            changed.append((address, *key, str(new)))
    await set_statuses(conn, changed)
    return await get_many(conn, address, [(c[1], c[2]) for c in changed], now)


async def fetch_pending(
    conn: asyncpg.Connection, locks: Locks, address: str, limit: int, now: int
) -> list[StoredMessage]:
    await locks.take(conn, [address])  # two fetches of one mailbox never hand out one row
    rows = await conn.fetch(
        f"""SELECT d.sender, d.msg_id FROM deliveries d
            WHERE d.recipient = $1 AND d.status = 'pending' AND {visible("$2")}
            ORDER BY d.received_at, d.id LIMIT $3""",
        address, now, _rules.clamp_limit(limit),
    )  # fmt: skip
    keys = [(r[0], r[1]) for r in rows]
    await set_statuses(conn, [(address, s, m, str(MessageStatus.DELIVERED)) for s, m in keys])
    return await get_many(conn, address, keys, now)


async def tag(
    conn: asyncpg.Connection, locks: Locks, address: str, msg_id: str, add: Sequence[str],
    remove: Sequence[str], now: int, sender: str | None = None,
) -> StoredMessage | None:  # fmt: skip
    await locks.take(conn, [address])
    sender = await find(conn, address, msg_id, sender)
    if sender is None:
        return None
    row = await conn.fetchrow(
        "SELECT id, tags, received_at FROM deliveries "
        "WHERE recipient = $1 AND msg_id = $2 AND sender = $3",
        address, msg_id, sender,
    )  # fmt: skip
    did, received_at = row["id"], row["received_at"]
    old = set(row["tags"])
    new = (old | set(add)) - set(remove)
    if new != old:
        await conn.execute(SET_TAGS, address, msg_id, list(_rules.normalise_tags(new)), sender)
        await conn.execute(
            "DELETE FROM delivery_tags WHERE delivery_id = $1 AND tag = ANY($2::text[])",
            did, sorted(old - new),
        )  # fmt: skip
        await conn.execute(
            "INSERT INTO delivery_tags (delivery_id, tag, recipient, received_at) "
            "SELECT $1, t, $2, $3 FROM unnest($4::text[]) AS t",
            did, address, received_at, sorted(new - old),
        )  # fmt: skip
    return await get(conn, address, msg_id, now, sender)


async def move(
    conn: asyncpg.Connection, locks: Locks, address: str, msg_id: str, inbox: str, now: int,
    sender: str | None = None,
) -> StoredMessage | None:  # fmt: skip
    await locks.take(conn, [address])
    sender = await find(conn, address, msg_id, sender)
    if sender is None:
        return None
    current = await conn.fetchval(
        "SELECT inbox FROM deliveries WHERE recipient = $1 AND msg_id = $2 AND sender = $3",
        address, msg_id, sender,
    )  # fmt: skip
    if current != inbox:
        await conn.execute(SET_INBOX, address, msg_id, inbox, sender)
    return await get(conn, address, msg_id, now, sender)


EXPIRED = """SELECT {cols} FROM deliveries
             WHERE hide_at IS NOT NULL AND status <> 'deleted' AND hide_at <= $1"""


async def expire(conn: asyncpg.Connection, locks: Locks, now: int) -> int:
    # Find whose mailboxes to lock, lock them, then read the rows again under the locks
    # (only in those mailboxes: one that expires meanwhile waits for the next sweep).
    owners = [r[0] for r in await conn.fetch(EXPIRED.format(cols="DISTINCT recipient"), now)]
    if not owners:
        return 0
    await locks.take(conn, owners)
    rows = await conn.fetch(
        EXPIRED.format(cols="recipient, sender, msg_id")
        + " AND recipient = ANY($2::text[]) ORDER BY received_at, id",
        now, owners,
    )  # fmt: skip
    await set_statuses(conn, [(r, s, m, str(MessageStatus.DELETED)) for r, s, m in rows])
    return len(rows)


# -- reads ----------------------------------------------------------------------------------
async def get(
    conn: asyncpg.Connection, address: str, msg_id: str, now: int, sender: str | None = None
) -> StoredMessage | None:
    """One statement: every row of that id, then the one `sender` names (base.py)."""
    rows = await conn.fetch(
        f"SELECT {ROW} FROM {FROM} WHERE d.recipient = $1 AND d.msg_id = $2", address, msg_id
    )
    by_sender = {r["sender"]: r for r in rows}
    who = _rules.pick(MessageRef(msg_id, sender), by_sender)
    return None if who is None else to_message(by_sender[who], now)


#: One mailbox's ids in [prefix, upper) in byte order, through `deliveries_id_prefix`
#: (recipient, msg_id COLLATE "C"; schema step 6): the database's default collation need
#: not be byte order, and an index is used only for comparisons in its own collation
#: (base.py, "Short ids"; the plan is checked in tests/store/test_short_ids.py).
PREFIX_WHERE = """d.recipient = $1 AND d.msg_id COLLATE "C" >= $2
  AND d.msg_id COLLATE "C" < $3 AND ($4::text IS NULL OR d.sender = $4)"""
PREFIX_COUNT = f"SELECT COUNT(*) FROM deliveries d WHERE {PREFIX_WHERE}"
PREFIX_ROWS = f"""SELECT {ROW} FROM {FROM} WHERE {PREFIX_WHERE}
ORDER BY d.msg_id COLLATE "C", d.sender COLLATE "C" LIMIT $5"""


async def match_prefix(
    conn: asyncpg.Connection, address: str, prefix: str, sender: str | None, limit: int,
    now: int,
) -> PrefixMatches:  # fmt: skip
    args = (address, prefix, prefix_upper(prefix), sender)
    count = await conn.fetchval(PREFIX_COUNT, *args)
    rows = await conn.fetch(PREFIX_ROWS, *args, _rules.clamp_limit(limit))
    return PrefixMatches(count, [to_message(r, now) for r in rows])


async def get_many(
    conn: asyncpg.Connection, address: str, keys: Sequence[tuple[str, str]], now: int
) -> list[StoredMessage]:
    """The rows of the (sender, msg_id) `keys` that exist, in `keys` order."""
    if not keys:
        return []
    rows = await conn.fetch(
        f"SELECT {ROW} FROM {FROM} WHERE d.recipient = $1 AND d.msg_id = ANY($2::text[])",
        address, list({m for _, m in keys}),
    )  # fmt: skip
    by_key = {(r["sender"], r["msg_id"]): r for r in rows}
    return [to_message(by_key[k], now) for k in keys if k in by_key]


class Placeholders:
    """Collects query arguments and hands out their `$n` placeholders."""

    def __init__(self) -> None:
        self.values: list[object] = []

    def __call__(self, value: object) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def list_sql(address: str, q: ListQuery, now: int) -> tuple[str, list[object]]:
    """The page query: newest first by (received_at, id), one index range scan per page
    whatever the mailbox size (the same shape as SQLite's, see _sqlite_ops.list_sql)."""
    p = Placeholders()
    a = p(address)
    where = [f"d.recipient = {a}"]
    order_cols = ("d.received_at", "d.id")
    source = FROM
    if q.tag is not None:
        # Walk the tag index, which carries received_at, and join each hit to its row.
        source = (
            "delivery_tags t JOIN deliveries d ON d.id = t.delivery_id "
            "JOIN messages m ON m.body_hash = d.body_hash"
        )
        where = [f"t.recipient = {a}", f"t.tag = {p(q.tag)}"]
        order_cols = ("t.received_at", "t.delivery_id")
    if q.sender is not None:
        # With no tag: the sender index (recipient, sender, received_at, id), schema step
        # 9, one range scan per page, newest first (tests/store/test_sender_list.py).
        where.append(f"d.sender = {p(q.sender)}")
    if q.inbox is not None:
        where.append(f"d.inbox = {p(q.inbox)}")
    if q.status == MessageStatus.DELETED:
        where.append(f"(d.status = 'deleted' OR d.hide_at <= {p(now)})")
    elif q.status is not None:
        where.append(f"d.status = {p(str(q.status))} AND {visible(p(now))}")
    elif not q.include_deleted:
        where.append(f"d.status <> 'deleted' AND {visible(p(now))}")
    if q.cursor:
        ca, cb = _rules.decode_cursor(q.cursor)
        where.append(f"({order_cols[0]}, {order_cols[1]}) < ({p(ca)}, {p(cb)})")
    limit = p(_rules.clamp_limit(q.limit) + 1)
    sql = (
        f"SELECT {ROW} FROM {source} WHERE {' AND '.join(where)} "
        f"ORDER BY {order_cols[0]} DESC, {order_cols[1]} DESC LIMIT {limit}"
    )
    return sql, p.values


async def list_page(conn: asyncpg.Connection, address: str, q: ListQuery, now: int) -> Page:
    sql, args = list_sql(address, q, now)
    rows = await conn.fetch(sql, *args)
    limit = _rules.clamp_limit(q.limit)
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = _rules.encode_cursor(rows[-1]["received_at"], rows[-1]["id"]) if more else None
    return Page([to_message(r, now) for r in rows], cursor)


async def pending_counts(
    conn: asyncpg.Connection, addresses: Sequence[str], now: int
) -> dict[str, int]:
    """Visible pending messages per address (addresses with none are left out)."""
    if not addresses:
        return {}
    rows = await conn.fetch(
        f"""SELECT d.recipient, COUNT(*) FROM deliveries d
            WHERE d.recipient = ANY($1::text[]) AND d.status = 'pending' AND {visible("$2")}
            GROUP BY d.recipient""",
        list(addresses), now,
    )  # fmt: skip
    return dict(rows)


async def pending_count(conn: asyncpg.Connection, address: str, now: int) -> int:
    return (await pending_counts(conn, [address], now)).get(address, 0)


async def inboxes(conn: asyncpg.Connection, address: str, now: int) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    rows = await conn.fetch(
        f"""SELECT d.inbox, d.status, COUNT(*) FROM deliveries d
            WHERE d.recipient = $1 AND d.status <> 'deleted' AND {visible("$2")}
            GROUP BY d.inbox, d.status""",
        address, now,
    )  # fmt: skip
    for inbox, status, n in rows:
        out.setdefault(inbox, {str(s): 0 for s in _rules.LIVE_STATUSES})[status] = n
    return out


async def thread(
    conn: asyncpg.Connection, address: str, msg_id: str, now: int, sender: str | None = None
) -> list[ThreadItem]:
    """Received and sent messages of one root (base.py). Run in one snapshot (the
    caller's transaction)."""
    root = await root_of(conn, address, msg_id, sender)
    if root is None:
        return []
    rows = await conn.fetch(
        f"""SELECT {ROW} FROM {FROM}
            WHERE d.recipient = $1 AND d.status <> 'deleted' AND {visible("$3")}
              AND d.thread_root = $2
            ORDER BY d.received_at, d.id""",
        address, root, now,
    )  # fmt: skip
    # a root of "" is a row an older process recorded during a rolling upgrade past
    # schema step 11 (docs/OPERATING.md): it stands alone rather than with every such row
    sent = await conn.fetch(
        """SELECT sender, sent_at, envelope, delivery, updated_at FROM sent
           WHERE sender = $1 AND thread_root = $2 AND ($2 <> '' OR msg_id = $3)
           ORDER BY sent_at, msg_id COLLATE "C" """,
        address, root, msg_id,
    )  # fmt: skip
    return _rules.conversation(
        [to_message(r, now) for r in rows],
        [SentMessage(s, json.loads(e), at, json.loads(d), up) for s, at, e, d, up in sent],
    )


async def root_of(
    conn: asyncpg.Connection, address: str, msg_id: str, sender: str | None
) -> str | None:
    """The root of the message (sender, msg_id) of `address`'s mail, received or sent;
    None if there is none. Raises AmbiguousMessage (base.py)."""
    held = (await senders_of(conn, address, [msg_id])).get(msg_id, [])
    sent_root = await conn.fetchval(
        "SELECT thread_root FROM sent WHERE sender = $1 AND msg_id = $2", address, msg_id
    )
    mine = [address] if sent_root is not None else []
    who = _rules.pick(MessageRef(msg_id, sender), [*held, *mine])
    if who is None:
        return None
    if who in held:
        return await conn.fetchval(
            "SELECT thread_root FROM deliveries "
            "WHERE recipient = $1 AND msg_id = $2 AND sender = $3",
            address, msg_id, who,
        )  # fmt: skip
    return sent_root


async def changes(conn: asyncpg.Connection, address: str, since: int, limit: int) -> Changes:
    limit = max(1, int(limit))
    rows = await conn.fetch(
        "SELECT seq, msg_id, kind, sender FROM changes WHERE address = $1 AND seq > $2 "
        "ORDER BY seq LIMIT $3",
        address, since, limit + 1,
    )  # fmt: skip
    page = [Change(seq, m, ChangeKind(k), who) for seq, m, k, who in rows[:limit]]
    return Changes(page, page[-1].seq if page else since, len(rows) > limit)


async def state(conn: asyncpg.Connection, address: str) -> int:
    sql = "SELECT COALESCE(MAX(seq), 0) FROM changes WHERE address = $1"
    return await conn.fetchval(sql, address)


async def stats(conn: asyncpg.Connection, now: int) -> dict[str, int]:
    """Run in one read-only snapshot (the caller's transaction)."""
    one = conn.fetchval
    out = {
        "messages": await one("SELECT COUNT(*) FROM messages"),
        "deliveries": await one("SELECT COUNT(*) FROM deliveries"),
    }
    out |= {str(s): 0 for s in MessageStatus}
    for status, n in await conn.fetch("SELECT status, COUNT(*) FROM deliveries GROUP BY status"):
        out[status] = n
    out["hosted_addresses"] = await one("SELECT COUNT(*) FROM hosted_addresses")
    out["sessions"] = await one(
        "SELECT COUNT(*) FROM sessions WHERE NOT revoked AND expires_at > $1", now
    )
    return out
