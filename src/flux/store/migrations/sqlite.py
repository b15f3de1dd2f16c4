"""SQLite schema steps and their runner (framework: migrations/__init__.py).

Step 1 is the schema of the first release. Notes on it:

* `messages` holds each body once, keyed by body hash; two bodies may share an id (BCC
  copies are signed separately), which is why the id is not the key.
* `deliveries.id` is the arrival order. Listing orders by (received_at, id), both fixed at
  insert, so keyset cursors stay valid while rows change status.
* Listing indexes lead with the recipient and end with (received_at, id), one per filter
  (none, inbox, status; tags through `delivery_tags`, which copies received_at for the
  same reason): a page is an index range scan whatever the mailbox size.
* `hide_at` is the `expires` time (ms > 0); `delete_on_read` is `expires == 0`.
* `changes.seq` is AUTOINCREMENT, so a seq is never reused even after the newest row goes.

Step 2 adds the delivery queue: `outbound` holds each queued copy once per destination
(`qid` AUTOINCREMENT is the queue order, never reused), `destinations` the backoff and the
lease of each destination (docs/FEDERATION.md, "Delivery queue").

Step 3 adds `hits`, the shared rate counters (`Store.count_hit`): one row per counted hit,
(bucket, t), found by bucket and time, and pruned by time.

Step 4 keys a delivery by (recipient, sender, id) instead of (recipient, id): the id is
the sender's choice, so it names a message only with its sender (PROTOCOL.md §4.5).
`deliveries` gains `sender` and `re` (copied from `messages`) and is rebuilt, since SQLite
cannot drop a UNIQUE constraint; its unique index (recipient, msg_id, sender) also serves
lookups by bare id. `thread_root` becomes a key naming a message by sender and id
(`_rules.root_key`), or a reply's placeholder while its parent is missing
(`_rules.waiting_key`): a root that was a stored message's id names that message; one
that was a missing parent's id names the group's oldest reply's placeholder, so existing
threads stay together. `changes` gains `sender`. Row ids are kept, so `delivery_tags`,
cursors and seqs stay valid. The renames rewrite `delivery_tags`' foreign key to follow
the old table, which is why `delivery_tags` is rebuilt too, and both old tables are
dropped child first.

Step 5 adds `contacts`: (owner, peer) once `owner` has written to `peer` through this
server, recorded at submission. A sender is a stranger to a recipient until the recipient
has written to it, and strangers share a small part of the pending quota
(base.py StrangerShare). Its key serves both lookups the storing transaction makes: "is
this sender known" and, joined per pending row, "is that row a stranger's". An index on
`deliveries (recipient, sender, status)` counted one sender's pending mail in a mailbox,
until step 16 dropped it (with `messages_id`, which no query read): the count walks the
recipient's pending rows instead, bounded by its quota, and each message written updates
two B-trees fewer.

Step 6 changes nothing: it keeps the step numbers in line with PostgreSQL's step 6 (an
index for short ids in byte order); SQLite's unique index (recipient, msg_id, sender) is
in BINARY order already and serves a prefix range as it is (base.py, "Short ids").

Step 8 adds the operator's holds (`flux admin queue hold`): `destinations.held` and
`outbound.held`, 0 or 1. The lease and `next_due` pass over a held destination and over
held messages, so a held message never blocks the rest of its destination.

Step 11 gives each sent record a thread root (base.py, "A conversation includes the
owner's own sent mail"), indexed by (sender, thread_root) as deliveries are by (recipient,
thread_root). Its backfill computes the root of every existing sent row with the rule new
rows get (`_sqlite_ops.new_root`), in the order they were sent, so a reply's parent has its
root before the reply is computed; each row also adopts the placeholders of the received
replies that were waiting for it, so a conversation stored before this step comes together.

Step 12 makes the delivery queue fair between senders (docs/FEDERATION.md, "Delivery
queue"): `outbound.sender` (the envelope's `from`, backfilled from the stored envelopes)
and an index (destination, held, sender, qid) from which a lease numbers each sender's
sendable copies in queue order without reading an envelope (`_sqlite_queue.lease`).

Steps 13, 14 and 15 change nothing here: PostgreSQL's steps of those numbers (functions
that store a submission in one round trip) have no counterpart in a store in this
process (step 15's rate and contacts are written by `_sqlite_ops.store` itself).
"""

from __future__ import annotations

import json
import sqlite3

from .._sqlite_ops import new_root
from . import Migration, plan, split_statements

STEPS: list[Migration] = [
    Migration(
        1,
        "first release",
        """
CREATE TABLE messages (
    body_hash   TEXT PRIMARY KEY,
    id          TEXT NOT NULL,
    sender      TEXT NOT NULL,
    t           INTEGER NOT NULL,
    re          TEXT,
    envelope    TEXT NOT NULL
);
CREATE INDEX messages_id ON messages (id);

CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY,
    recipient       TEXT NOT NULL,
    msg_id          TEXT NOT NULL,
    body_hash       TEXT NOT NULL REFERENCES messages (body_hash),
    status          TEXT NOT NULL
                    CHECK (status IN ('pending', 'delivered', 'read', 'deleted')),
    inbox           TEXT NOT NULL,
    tags            TEXT NOT NULL DEFAULT '[]',
    received_at     INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    delete_on_read  INTEGER NOT NULL DEFAULT 0,
    hide_at         INTEGER,
    thread_root     TEXT NOT NULL,
    UNIQUE (recipient, msg_id)
);
CREATE INDEX deliveries_list ON deliveries (recipient, received_at, id);
CREATE INDEX deliveries_inbox ON deliveries (recipient, inbox, received_at, id);
CREATE INDEX deliveries_status ON deliveries (recipient, status, received_at, id);
CREATE INDEX deliveries_thread ON deliveries (recipient, thread_root);
CREATE INDEX deliveries_hide ON deliveries (hide_at)
    WHERE hide_at IS NOT NULL AND status != 'deleted';

CREATE TABLE delivery_tags (
    delivery_id  INTEGER NOT NULL REFERENCES deliveries (id),
    tag          TEXT NOT NULL,
    recipient    TEXT NOT NULL,
    received_at  INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, tag)
) WITHOUT ROWID;
CREATE INDEX delivery_tags_list ON delivery_tags (recipient, tag, received_at, delivery_id);

CREATE TABLE changes (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    address  TEXT NOT NULL,
    msg_id   TEXT NOT NULL,
    kind     TEXT NOT NULL CHECK (kind IN ('created', 'updated'))
);
CREATE INDEX changes_address ON changes (address, seq);

CREATE TABLE hosted_addresses (
    address        TEXT PRIMARY KEY,
    pub            TEXT NOT NULL,
    registered_at  INTEGER NOT NULL
);

CREATE TABLE sessions (
    token_hash  TEXT PRIMARY KEY,
    address     TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX sessions_address ON sessions (address);

CREATE TABLE nonces (
    nonce       TEXT PRIMARY KEY,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX nonces_expiry ON nonces (expires_at);

CREATE TABLE strikes (
    n         INTEGER PRIMARY KEY,
    proof_id  TEXT NOT NULL UNIQUE,
    offender  TEXT NOT NULL,
    kind      TEXT NOT NULL,
    reporter  TEXT NOT NULL,
    msg_id    TEXT NOT NULL,
    t         INTEGER NOT NULL
);
CREATE INDEX strikes_offender ON strikes (offender);

CREATE TABLE quarantine_overrides (
    server  TEXT PRIMARY KEY,
    lifted  INTEGER NOT NULL,
    set_at  INTEGER NOT NULL
);
""",
    ),
    Migration(
        2,
        "delivery queue",
        """
CREATE TABLE outbound (
    qid          INTEGER PRIMARY KEY AUTOINCREMENT,
    destination  TEXT NOT NULL,
    body_hash    TEXT NOT NULL,
    envelope     TEXT NOT NULL,
    recipients   TEXT NOT NULL,
    cv           TEXT NOT NULL,
    via          TEXT NOT NULL DEFAULT '',
    enqueued_at  INTEGER NOT NULL,
    UNIQUE (destination, body_hash)
);

CREATE TABLE destinations (
    destination      TEXT PRIMARY KEY,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    holder           TEXT,
    leased_until     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX destinations_due ON destinations (next_attempt_at);
""",
    ),
    Migration(
        3,
        "rate counters",
        """
CREATE TABLE hits (
    bucket  TEXT NOT NULL,
    t       INTEGER NOT NULL
);
CREATE INDEX hits_bucket ON hits (bucket, t);
CREATE INDEX hits_t ON hits (t);
""",
    ),
    Migration(
        4,
        "messages keyed by (recipient, sender, id)",
        """
ALTER TABLE deliveries RENAME TO deliveries_v3;
ALTER TABLE delivery_tags RENAME TO delivery_tags_v3;

CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY,
    recipient       TEXT NOT NULL,
    sender          TEXT NOT NULL,
    msg_id          TEXT NOT NULL,
    re              TEXT,
    body_hash       TEXT NOT NULL REFERENCES messages (body_hash),
    status          TEXT NOT NULL
                    CHECK (status IN ('pending', 'delivered', 'read', 'deleted')),
    inbox           TEXT NOT NULL,
    tags            TEXT NOT NULL DEFAULT '[]',
    received_at     INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    delete_on_read  INTEGER NOT NULL DEFAULT 0,
    hide_at         INTEGER,
    thread_root     TEXT NOT NULL,
    UNIQUE (recipient, msg_id, sender)
);
INSERT INTO deliveries (id, recipient, sender, msg_id, re, body_hash, status, inbox, tags,
                        received_at, seq, delete_on_read, hide_at, thread_root)
SELECT d.id, d.recipient, m.sender, d.msg_id, m.re, d.body_hash, d.status, d.inbox, d.tags,
       d.received_at, d.seq, d.delete_on_read, d.hide_at,
       COALESCE(
           (SELECT r.msg_id || ' ' || rm.sender
              FROM deliveries_v3 r JOIN messages rm ON rm.body_hash = r.body_hash
             WHERE r.recipient = d.recipient AND r.msg_id = d.thread_root),
           (SELECT 're ' || d.thread_root || ' ' || fm.sender
              FROM deliveries_v3 f JOIN messages fm ON fm.body_hash = f.body_hash
             WHERE f.recipient = d.recipient AND f.thread_root = d.thread_root
             ORDER BY f.received_at, f.id LIMIT 1))
  FROM deliveries_v3 d JOIN messages m ON m.body_hash = d.body_hash;

CREATE TABLE delivery_tags (
    delivery_id  INTEGER NOT NULL REFERENCES deliveries (id),
    tag          TEXT NOT NULL,
    recipient    TEXT NOT NULL,
    received_at  INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, tag)
) WITHOUT ROWID;
INSERT INTO delivery_tags SELECT delivery_id, tag, recipient, received_at FROM delivery_tags_v3;
DROP TABLE delivery_tags_v3;
DROP TABLE deliveries_v3;

CREATE INDEX deliveries_list ON deliveries (recipient, received_at, id);
CREATE INDEX deliveries_inbox ON deliveries (recipient, inbox, received_at, id);
CREATE INDEX deliveries_status ON deliveries (recipient, status, received_at, id);
CREATE INDEX deliveries_thread ON deliveries (recipient, thread_root);
CREATE INDEX deliveries_hide ON deliveries (hide_at)
    WHERE hide_at IS NOT NULL AND status != 'deleted';
CREATE INDEX delivery_tags_list ON delivery_tags (recipient, tag, received_at, delivery_id);

ALTER TABLE changes ADD COLUMN sender TEXT NOT NULL DEFAULT '';
UPDATE changes SET sender = COALESCE(
    (SELECT d.sender FROM deliveries d
      WHERE d.recipient = changes.address AND d.msg_id = changes.msg_id), '');
""",
    ),
    Migration(
        5,
        "contacts: who each address has written to",
        """
CREATE TABLE contacts (
    owner  TEXT NOT NULL,
    peer   TEXT NOT NULL,
    since  INTEGER NOT NULL,
    PRIMARY KEY (owner, peer)
) WITHOUT ROWID;
CREATE INDEX deliveries_sender ON deliveries (recipient, sender, status);
""",
    ),
    Migration(
        6,
        "short ids: no change (the unique index serves prefix ranges)",
        # Kept so the step numbers match PostgreSQL's, whose step 6 adds an index in byte
        # order: here the unique index (recipient, msg_id, sender) is already in BINARY
        # (byte) order and serves `msg_id >= prefix AND msg_id < upper` as it is.
        "SELECT 1;",
    ),
    Migration(
        7,
        "sent mail: one row per submission with each recipient's delivery state",
        """
CREATE TABLE sent (
    sender      TEXT NOT NULL,
    msg_id      TEXT NOT NULL,
    sent_at     INTEGER NOT NULL,
    envelope    TEXT NOT NULL,
    delivery    TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (sender, msg_id)
) WITHOUT ROWID;
CREATE INDEX sent_list ON sent (sender, sent_at, msg_id);

-- a change to a sent message's delivery state is a change of its sender's mailbox
-- ('sent'): SQLite cannot alter a CHECK, so the table is rebuilt (seq values kept, and
-- AUTOINCREMENT goes on from the highest)
CREATE TABLE changes_v7 (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    address  TEXT NOT NULL,
    msg_id   TEXT NOT NULL,
    kind     TEXT NOT NULL CHECK (kind IN ('created', 'updated', 'sent')),
    sender   TEXT NOT NULL DEFAULT ''
);
INSERT INTO changes_v7 (seq, address, msg_id, kind, sender)
    SELECT seq, address, msg_id, kind, sender FROM changes;
DROP TABLE changes;
ALTER TABLE changes_v7 RENAME TO changes;
CREATE INDEX changes_address ON changes (address, seq);
""",
    ),
    Migration(
        8,
        "operator holds on the delivery queue: a held destination or message is not sent",
        """
-- `flux admin queue hold`: the delivery worker never leases a held destination, and never
-- takes a held message (the rest of its destination still goes)
ALTER TABLE destinations ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbound ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
""",
    ),
    Migration(
        9,
        "mail from one sender: an index listing it newest first",
        """
-- `GET /inbox/{address}?from=`: one sender's mail in a mailbox, newest first by
-- (received_at, id) as every listing, a range scan of this index per page (the index of
-- step 5 leads with the sender too but is not in listing order)
CREATE INDEX deliveries_from ON deliveries (recipient, sender, received_at, id);
""",
    ),
    Migration(
        10,
        "invites made by the operator: hashed codes, uses left, expiry, who used them",
        """
-- `flux admin invite create`: the code is shown once and kept only as its SHA-256
-- (`code_hash`); `id` is the public name `invite list` and `revoke` use
CREATE TABLE invites (
    id          TEXT PRIMARY KEY,
    code_hash   TEXT NOT NULL UNIQUE,
    max_uses    INTEGER NOT NULL,
    uses_left   INTEGER NOT NULL,
    expires_at  INTEGER,
    note        TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE TABLE invite_uses (
    invite_id  TEXT NOT NULL,
    used_by    TEXT NOT NULL,
    used_at    INTEGER NOT NULL
);
CREATE INDEX invite_uses_invite ON invite_uses (invite_id, used_at);
""",
    ),
    Migration(
        11,
        "sent mail in conversations: a thread root per sent record",
        """
-- '' until the backfill below computes it (a root is never empty: _rules.root_key)
ALTER TABLE sent ADD COLUMN thread_root TEXT NOT NULL DEFAULT '';
CREATE INDEX sent_thread ON sent (sender, thread_root);
""",
        backfill=lambda conn: backfill_sent_roots(conn),
    ),
    Migration(
        12,
        "a fair delivery queue: each queued copy names its sender",
        """
-- the lease takes a destination's mail round-robin across its senders (_sqlite_queue.py
-- FAIR_LEASE); the sender is the envelope's `from`, copied here so the turn of a copy
-- within its sender is read from this index alone, without parsing envelopes
ALTER TABLE outbound ADD COLUMN sender TEXT NOT NULL DEFAULT '';
UPDATE outbound SET sender = COALESCE(json_extract(envelope, '$.from'), '');
CREATE INDEX outbound_fair ON outbound (destination, held, sender, qid);
""",
    ),
    Migration(
        13,
        "no change: PostgreSQL's storing functions",
        # Kept so the step numbers match PostgreSQL's, whose steps 13 and 14 move the
        # submit path's writes into server-side functions to save round trips; here the
        # store runs in this process, where a statement costs no round trip.
        "SELECT 1;",
    ),
    Migration(14, "no change: PostgreSQL's storing functions decide replies", "SELECT 1;"),
    Migration(
        15,
        "no change: PostgreSQL's storing function counts the rate and keeps contacts",
        "SELECT 1;",
    ),
    Migration(
        16,
        "two indexes no query reads: fewer B-trees written per message",
        """
-- Issue 15 aim 1: every delivery wrote 8 B-trees and every body 3. No statement looks a
-- body up by its id (messages are reached through deliveries.body_hash); the stranger
-- share counts one sender's pending mail over the recipient's pending rows
-- (_sqlite_ops._BEFORE_STORING), and lists by sender use deliveries_from (step 9).
-- Measured on the writer: INSERT INTO deliveries 35-38 -> 29-30 us, INSERT INTO messages
-- 16-17 -> 13 us per message (6,000 messages, 2,000 recipients).
DROP INDEX IF EXISTS deliveries_sender;
DROP INDEX IF EXISTS messages_id;
""",
    ),
]


def backfill_sent_roots(conn: sqlite3.Connection) -> None:
    """Step 11: every sent row's root, oldest first (module notes)."""
    rows = conn.execute(
        "SELECT sender, msg_id, envelope FROM sent ORDER BY sent_at, sender, msg_id"
    ).fetchall()
    for sender, msg_id, envelope in rows:
        root = new_root(conn, sender, json.loads(envelope))
        conn.execute(
            "UPDATE sent SET thread_root = ? WHERE sender = ? AND msg_id = ?",
            (root, sender, msg_id),
        )


VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version      INTEGER PRIMARY KEY,
    description  TEXT NOT NULL,
    applied_at   INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER) * 1000)
)"""


def current_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return row[0] or 0


def migrate(conn: sqlite3.Connection, where: str, steps: list[Migration] = STEPS) -> int:
    """Bring the database up to the newest step in one IMMEDIATE transaction; return the
    version. `conn` must be in autocommit mode (isolation_level=None). Raises SchemaTooNew.

    IMMEDIATE takes the write lock before the version is read, so two processes opening
    one new database at once cannot both apply step 1.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(VERSION_TABLE)
        todo = plan(current_version(conn), steps, where)
        for step in todo:
            for stmt in split_statements(step.sql, sqlite3.complete_statement):
                conn.execute(stmt)
            if step.backfill is not None:
                step.backfill(conn)
            conn.execute(
                "INSERT INTO schema_version (version, description) VALUES (?, ?)",
                (step.version, step.description),
            )
        version = current_version(conn)
        conn.execute("COMMIT")
        return version
    except BaseException:
        conn.execute("ROLLBACK")
        raise
