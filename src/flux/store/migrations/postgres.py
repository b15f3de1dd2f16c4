"""PostgreSQL schema steps and their runner (framework: migrations/__init__.py).

Step 1 is the same schema as SQLite's step 1 (read the notes in migrations/sqlite.py), in
PostgreSQL's types:

* Times are BIGINT unix ms; flags are BOOLEAN; a delivery's own tags are a sorted TEXT[]
  (`delivery_tags` still carries one row per tag, with received_at, for keyset listing
  by tag through an index).
* The envelope is TEXT, not JSONB: it comes back exactly as stored (JSONB would reorder
  keys and refuse some strings), as in SQLite.
* `deliveries.id` (arrival order, the keyset tie-break) and `changes.seq` are identity
  columns, i.e. sequences: store-wide, strictly increasing, never reused. A sequence
  value is handed out before its transaction commits, so on its own it does not make the
  changes of one address commit in seq order; PostgresStore takes a per-address lock
  before it draws one (see postgres.py).

Step 2 is SQLite's step 2, the delivery queue, plus an index on (destination, qid): a
lease reads a destination's oldest messages in queue order without sorting them.

Step 3 is SQLite's step 3, the shared rate counters (`hits`; see _postgres_hits.py for
how a hit is counted atomically across processes).

Step 4 is SQLite's step 4 (read its notes): deliveries keyed by (recipient, sender, id),
with `sender` and `re` copied from `messages`, thread roots rewritten as keys naming a
message by sender and id, and `changes.sender`. PostgreSQL alters the tables in place; the
UPDATE's subqueries read the rows as they were before the statement, so each old root is
mapped from the old values.

Step 5 is SQLite's step 5 (read its notes): `contacts`, who each address has written to,
and an index counting one sender's pending mail in a mailbox.

Step 6: short ids (base.py, "Short ids"): an index (recipient, msg_id COLLATE "C") so a
prefix is found by a range scan in byte order whatever the database's default collation
(the unique index on (recipient, msg_id, sender) is in that collation, and a comparison
uses an index only in the index's own collation). Building it locks writes to
`deliveries` for as long as the build takes, once.

Step 8 is SQLite's step 8 (read its notes): the operator's holds, `destinations.held` and
`outbound.held` (BOOLEAN). Adding a column with a constant default rewrites no rows.

Step 11 is SQLite's step 11 (read its notes): a thread root per sent record, computed for
the existing rows by the rule new rows get (`_postgres_ops.new_root`), in the order sent.

Several processes may start at once against one new database: `migrate` holds a
transaction-scoped advisory lock while it reads the version and applies steps, so exactly
one of them applies each step and the others then find it applied.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import asyncpg

from .._postgres_ops import new_root
from . import Migration, plan

STEPS: list[Migration] = [
    Migration(
        1,
        "first release",
        """
CREATE TABLE messages (
    body_hash   TEXT PRIMARY KEY,
    id          TEXT NOT NULL,
    sender      TEXT NOT NULL,
    t           BIGINT NOT NULL,
    re          TEXT,
    envelope    TEXT NOT NULL
);
CREATE INDEX messages_id ON messages (id);

CREATE TABLE deliveries (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recipient       TEXT NOT NULL,
    msg_id          TEXT NOT NULL,
    body_hash       TEXT NOT NULL REFERENCES messages (body_hash),
    status          TEXT NOT NULL
                    CHECK (status IN ('pending', 'delivered', 'read', 'deleted')),
    inbox           TEXT NOT NULL,
    tags            TEXT[] NOT NULL DEFAULT '{}',
    received_at     BIGINT NOT NULL,
    seq             BIGINT NOT NULL,
    delete_on_read  BOOLEAN NOT NULL DEFAULT FALSE,
    hide_at         BIGINT,
    thread_root     TEXT NOT NULL,
    UNIQUE (recipient, msg_id)
);
CREATE INDEX deliveries_list ON deliveries (recipient, received_at, id);
CREATE INDEX deliveries_inbox ON deliveries (recipient, inbox, received_at, id);
CREATE INDEX deliveries_status ON deliveries (recipient, status, received_at, id);
CREATE INDEX deliveries_thread ON deliveries (recipient, thread_root);
CREATE INDEX deliveries_hide ON deliveries (hide_at)
    WHERE hide_at IS NOT NULL AND status <> 'deleted';

CREATE TABLE delivery_tags (
    delivery_id  BIGINT NOT NULL REFERENCES deliveries (id),
    tag          TEXT NOT NULL,
    recipient    TEXT NOT NULL,
    received_at  BIGINT NOT NULL,
    PRIMARY KEY (delivery_id, tag)
);
CREATE INDEX delivery_tags_list ON delivery_tags (recipient, tag, received_at, delivery_id);

CREATE TABLE changes (
    seq      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    address  TEXT NOT NULL,
    msg_id   TEXT NOT NULL,
    kind     TEXT NOT NULL CHECK (kind IN ('created', 'updated'))
);
CREATE INDEX changes_address ON changes (address, seq);

CREATE TABLE hosted_addresses (
    address        TEXT PRIMARY KEY,
    pub            TEXT NOT NULL,
    registered_at  BIGINT NOT NULL
);

CREATE TABLE sessions (
    token_hash  TEXT PRIMARY KEY,
    address     TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked     BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX sessions_address ON sessions (address);

CREATE TABLE nonces (
    nonce       TEXT PRIMARY KEY,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX nonces_expiry ON nonces (expires_at);

CREATE TABLE strikes (
    n         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    proof_id  TEXT NOT NULL UNIQUE,
    offender  TEXT NOT NULL,
    kind      TEXT NOT NULL,
    reporter  TEXT NOT NULL,
    msg_id    TEXT NOT NULL,
    t         BIGINT NOT NULL
);
CREATE INDEX strikes_offender ON strikes (offender);

CREATE TABLE quarantine_overrides (
    server  TEXT PRIMARY KEY,
    lifted  BOOLEAN NOT NULL,
    set_at  BIGINT NOT NULL
);
""",
    ),
    Migration(
        2,
        "delivery queue",
        """
CREATE TABLE outbound (
    qid          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    destination  TEXT NOT NULL,
    body_hash    TEXT NOT NULL,
    envelope     TEXT NOT NULL,
    recipients   TEXT[] NOT NULL,
    cv           TEXT NOT NULL,
    via          TEXT NOT NULL DEFAULT '',
    enqueued_at  BIGINT NOT NULL,
    UNIQUE (destination, body_hash)
);
CREATE INDEX outbound_queue ON outbound (destination, qid);

CREATE TABLE destinations (
    destination      TEXT PRIMARY KEY,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL DEFAULT 0,
    last_error       TEXT,
    holder           TEXT,
    leased_until     BIGINT NOT NULL DEFAULT 0
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
    t       BIGINT NOT NULL
);
CREATE INDEX hits_bucket ON hits (bucket, t);
CREATE INDEX hits_t ON hits (t);
""",
    ),
    Migration(
        4,
        "messages keyed by (recipient, sender, id)",
        """
ALTER TABLE deliveries ADD COLUMN sender TEXT, ADD COLUMN re TEXT;
UPDATE deliveries d SET sender = m.sender, re = m.re FROM messages m
 WHERE m.body_hash = d.body_hash;
ALTER TABLE deliveries ALTER COLUMN sender SET NOT NULL;
ALTER TABLE deliveries DROP CONSTRAINT deliveries_recipient_msg_id_key;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_recipient_msg_id_sender_key
    UNIQUE (recipient, msg_id, sender);
UPDATE deliveries d SET thread_root = COALESCE(
    (SELECT r.msg_id || ' ' || r.sender FROM deliveries r
      WHERE r.recipient = d.recipient AND r.msg_id = d.thread_root),
    (SELECT 're ' || d.thread_root || ' ' || f.sender FROM deliveries f
      WHERE f.recipient = d.recipient AND f.thread_root = d.thread_root
      ORDER BY f.received_at, f.id LIMIT 1));
ALTER TABLE changes ADD COLUMN sender TEXT NOT NULL DEFAULT '';
UPDATE changes c SET sender = d.sender FROM deliveries d
 WHERE d.recipient = c.address AND d.msg_id = c.msg_id;
""",
    ),
    Migration(
        5,
        "contacts: who each address has written to",
        """
CREATE TABLE contacts (
    owner  TEXT NOT NULL,
    peer   TEXT NOT NULL,
    since  BIGINT NOT NULL,
    PRIMARY KEY (owner, peer)
);
CREATE INDEX deliveries_sender ON deliveries (recipient, sender, status);
""",
    ),
    Migration(
        6,
        "short ids: message ids by prefix in byte order",
        """
CREATE INDEX deliveries_id_prefix ON deliveries (recipient, msg_id COLLATE "C");
""",
    ),
    Migration(
        7,
        "sent mail: one row per submission with each recipient's delivery state",
        """
CREATE TABLE sent (
    sender      TEXT NOT NULL,
    msg_id      TEXT NOT NULL,
    sent_at     BIGINT NOT NULL,
    envelope    TEXT NOT NULL,
    delivery    TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (sender, msg_id)
);
CREATE INDEX sent_list ON sent (sender, sent_at, msg_id);
-- a change to a sent message's delivery state is a change of its sender's mailbox
ALTER TABLE changes DROP CONSTRAINT changes_kind_check;
ALTER TABLE changes ADD CONSTRAINT changes_kind_check
    CHECK (kind IN ('created', 'updated', 'sent'));
""",
    ),
    Migration(
        8,
        "operator holds on the delivery queue: a held destination or message is not sent",
        """
-- `flux admin queue hold`: the delivery worker never leases a held destination, and never
-- takes a held message (the rest of its destination still goes)
ALTER TABLE destinations ADD COLUMN held BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE outbound ADD COLUMN held BOOLEAN NOT NULL DEFAULT FALSE;
""",
    ),
    Migration(
        9,
        "mail from one sender: an index listing it newest first",
        """
-- SQLite's step 9 (read its note): one sender's mail in a mailbox, newest first
CREATE INDEX deliveries_from ON deliveries (recipient, sender, received_at, id);
""",
    ),
    Migration(
        10,
        "invites made by the operator: hashed codes, uses left, expiry, who used them",
        """
-- SQLite's step 10 (read its note); `n` orders the uses as SQLite's rowid does
CREATE TABLE invites (
    id          TEXT PRIMARY KEY,
    code_hash   TEXT NOT NULL UNIQUE,
    max_uses    INTEGER NOT NULL,
    uses_left   INTEGER NOT NULL,
    expires_at  BIGINT,
    note        TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE TABLE invite_uses (
    n          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    invite_id  TEXT NOT NULL,
    used_by    TEXT NOT NULL,
    used_at    BIGINT NOT NULL
);
CREATE INDEX invite_uses_invite ON invite_uses (invite_id, used_at);
""",
    ),
    Migration(
        11,
        "sent mail in conversations: a thread root per sent record",
        """
-- SQLite's step 11 (read its note); '' until the backfill computes it. ADD COLUMN holds
-- `sent` exclusively until COMMIT, so no row is written meanwhile without a root.
ALTER TABLE sent ADD COLUMN thread_root TEXT NOT NULL DEFAULT '';
CREATE INDEX sent_thread ON sent (sender, thread_root);
""",
        backfill=lambda conn: backfill_sent_roots(conn),
    ),
    Migration(
        12,
        "a fair delivery queue: each queued copy names its sender",
        """
-- SQLite's step 12 (read its note): the sender of each queued copy, backfilled from the
-- stored envelope's `from`, and the index a lease numbers each sender's turns from
ALTER TABLE outbound ADD COLUMN sender TEXT NOT NULL DEFAULT '';
UPDATE outbound SET sender = COALESCE(envelope::jsonb ->> 'from', '');
CREATE INDEX outbound_fair ON outbound (destination, held, sender, qid);
""",
    ),
    Migration(
        13,
        "the submit path's writes as server-side functions: one round trip each",
        """
-- Issue 15, aim 3: the submit path's writes as server-side functions, so each is one
-- statement, one round trip, its own transaction (autocommit): the locks a function
-- takes first are held to its COMMIT, and each statement after them, in a VOLATILE
-- function, reads a new snapshot, so it sees everything committed before the lock was
-- granted (the same guarantees as the transactions they replace: _postgres_hits.py,
-- postgres.py "Concurrency").

-- Store.count_hit (_postgres_hits.py): the bucket's lock, forget, count, add.
CREATE FUNCTION flux_count_hit(lock_key BIGINT, hit_bucket TEXT, now_ms BIGINT,
                               window_ms BIGINT, hit_limit BIGINT) RETURNS BOOLEAN
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    n BIGINT;
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    DELETE FROM hits WHERE bucket = hit_bucket AND t <= now_ms - window_ms;
    SELECT count(*) INTO n FROM hits WHERE bucket = hit_bucket AND t > now_ms - window_ms;
    IF n < hit_limit THEN
        INSERT INTO hits (bucket, t) VALUES (hit_bucket, now_ms);
    END IF;
    RETURN n >= hit_limit;
END
$fn$;

-- Store.store_many (_postgres_ops.store_at_once): the rules of _postgres_ops.store and of
-- the sent record (_postgres_queue.record_sent) for the cases that need no Python rule: a
-- reply whose parent is already in the owner's mail, and a sent record to merge into one
-- already kept, raise SQLSTATE FX001 instead, which rolls everything back, and the caller
-- stores the batch the general way. `batch` is a JSON array, one object per message (the
-- keys are listed in _postgres_ops.at_once_json); the result, one array of outcomes per
-- message, in its recipients' order.
CREATE FUNCTION flux_store_batch(batch JSONB, lock_keys BIGINT[], reasons JSONB)
RETURNS JSONB LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    m JSONB;
    rcpt TEXT;
    existing TEXT;
    body_saved BOOLEAN;
    outcome TEXT;
    outcomes JSONB;
    bounced JSONB;
    delivery_text TEXT;
    kept BIGINT;
    result JSONB := '[]';
    n INT := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(k) FROM unnest(lock_keys) AS k;
    -- Decided before any write, so that leaving the batch to the general way draws no
    -- seq (a sequence is not rolled back): under the locks, no one else adds a parent
    -- or a sent record for these owners meanwhile, and this batch can add only those
    -- whose id is one of its own.
    IF flux_needs_general_way(batch) THEN
        RAISE EXCEPTION 'a batch for the general way' USING ERRCODE = 'FX001';
    END IF;
    FOR m IN SELECT value FROM jsonb_array_elements(batch) LOOP
        outcomes := '[]';
        body_saved := FALSE;
        FOR rcpt IN SELECT value FROM jsonb_array_elements_text(m->'rcpts') LOOP
            SELECT d.body_hash INTO existing FROM deliveries d
             WHERE d.msg_id = m->>'id' AND d.sender = m->>'from' AND d.recipient = rcpt;
            IF FOUND THEN
                outcome := CASE WHEN existing = m->>'hash' THEN 'duplicate' ELSE 'conflict' END;
            ELSIF m->'quota' <> 'null' AND (
                SELECT count(*) FROM deliveries d
                 WHERE d.recipient = rcpt AND d.status = 'pending'
                   AND (d.hide_at IS NULL OR d.hide_at > (m->>'at')::BIGINT)
            ) >= (m->>'quota')::BIGINT THEN
                outcome := 'over_quota';
            ELSIF m->'share' <> 'null' AND rcpt <> m->>'from' AND NOT EXISTS (
                SELECT 1 FROM contacts WHERE owner = rcpt AND peer = m->>'from'
            ) AND (
                SELECT count(*) >= (m->'share'->>0)::BIGINT
                       OR count(*) FILTER (WHERE d.sender = m->>'from') >= (m->'share'->>1)::BIGINT
                  FROM deliveries d
                 WHERE d.recipient = rcpt AND d.status = 'pending'
                   AND (d.hide_at IS NULL OR d.hide_at > (m->>'at')::BIGINT)
                   AND d.sender <> d.recipient
                   AND NOT EXISTS (SELECT 1 FROM contacts c
                                    WHERE c.owner = d.recipient AND c.peer = d.sender)
            ) THEN
                outcome := 'over_stranger_share';
            ELSE
                outcome := 'stored';
                IF NOT body_saved THEN
                    INSERT INTO messages (body_hash, id, sender, t, re, envelope)
                    VALUES (m->>'hash', m->>'id', m->>'sender', (m->>'t')::BIGINT, m->>'re',
                            m->>'envelope')
                    ON CONFLICT (body_hash) DO NOTHING;
                    body_saved := TRUE;
                END IF;
                PERFORM flux_no_parent(rcpt, m->>'parent');
                PERFORM flux_adopt(rcpt, m->>'root', m->'adopt', m->>'id');
                WITH c AS (
                    INSERT INTO changes (address, sender, msg_id, kind)
                    VALUES (rcpt, m->>'from', m->>'id', 'created') RETURNING seq
                ), d AS (
                    INSERT INTO deliveries (recipient, sender, msg_id, re, body_hash, status,
                                            inbox, tags, received_at, seq, delete_on_read,
                                            hide_at, thread_root)
                    SELECT rcpt, m->>'from', m->>'id', m->>'re', m->>'hash', 'pending',
                           m->>'inbox', ARRAY(SELECT jsonb_array_elements_text(m->'tags')),
                           (m->>'at')::BIGINT, c.seq, (m->>'delete_on_read')::BOOLEAN,
                           (m->>'hide_at')::BIGINT, m->>'root'
                      FROM c
                    RETURNING id
                )
                INSERT INTO delivery_tags (delivery_id, tag, recipient, received_at)
                SELECT d.id, t, rcpt, (m->>'at')::BIGINT
                  FROM d, jsonb_array_elements_text(m->'tags') AS t;
            END IF;
            outcomes := outcomes || to_jsonb(outcome);
        END LOOP;
        result := result || jsonb_build_array(outcomes);
    END LOOP;
    -- the sent records, in batch order, of the messages stored for someone
    FOR m IN SELECT value FROM jsonb_array_elements(batch) LOOP
        n := n + 1;
        CONTINUE WHEN m->'sent' = 'null' OR NOT (result->(n - 1) ? 'stored');
        SELECT jsonb_object_agg(rcpt_, jsonb_build_object(
                   'state', 'bounced', 'at', m->'sent'->'sent_at', 'reason', reasons->>o))
          INTO bounced
          FROM jsonb_array_elements_text(m->'rcpts') WITH ORDINALITY AS r (rcpt_, i)
          JOIN jsonb_array_elements_text(result->(n - 1)) WITH ORDINALITY AS s (o, j)
            ON i = j
         WHERE reasons ? o;
        delivery_text := CASE WHEN bounced IS NULL THEN m->'sent'->>'delivery'
                         ELSE (((m->'sent'->>'delivery')::JSONB) || bounced)::TEXT END;
        PERFORM flux_no_parent(m->'sent'->>'sender', m->'sent'->>'parent');
        PERFORM flux_adopt(m->'sent'->>'sender', m->'sent'->>'root', m->'sent'->'adopt',
                           m->'sent'->>'id');
        INSERT INTO sent (sender, msg_id, sent_at, envelope, delivery, updated_at, thread_root)
        VALUES (m->'sent'->>'sender', m->'sent'->>'id', (m->'sent'->>'sent_at')::BIGINT,
                m->'sent'->>'envelope',
                delivery_text, (m->'sent'->>'updated_at')::BIGINT, m->'sent'->>'root')
        ON CONFLICT DO NOTHING;
        GET DIAGNOSTICS kept = ROW_COUNT;
        IF kept = 0 THEN  -- a guard, as flux_no_parent's
            RAISE EXCEPTION 'a sent record to merge' USING ERRCODE = 'FX001';
        END IF;
    END LOOP;
    RETURN result;
END
$fn$;

-- Whether a message of `batch` may have a parent in its owners' mail (a recipient's, or
-- its sender's for its sent record), or its sent record one to merge into.
CREATE FUNCTION flux_needs_general_way(batch JSONB) RETURNS BOOLEAN
LANGUAGE sql VOLATILE AS $fn$
WITH b AS (
    SELECT value AS m FROM jsonb_array_elements(batch)
), owners AS (
    SELECT b.m, o.owner_ FROM b, jsonb_array_elements_text(b.m->'rcpts') AS o (owner_)
    UNION ALL
    SELECT b.m->'sent', b.m->'sent'->>'sender' FROM b WHERE b.m->'sent' <> 'null'
)
SELECT EXISTS (
    SELECT 1 FROM owners WHERE owners.m->>'parent' IS NOT NULL AND (
        owners.m->>'parent' IN (SELECT b.m->>'id' FROM b
                                UNION ALL SELECT b.m->'sent'->>'id' FROM b)
        OR EXISTS (SELECT 1 FROM deliveries d
                    WHERE d.recipient = owners.owner_ AND d.msg_id = owners.m->>'parent')
        OR EXISTS (SELECT 1 FROM sent s
                    WHERE s.sender = owners.owner_ AND s.msg_id = owners.m->>'parent'
                      AND s.thread_root <> ''))
) OR EXISTS (
    SELECT 1 FROM b WHERE b.m->'sent' <> 'null' AND EXISTS (
        SELECT 1 FROM sent s
         WHERE s.sender = b.m->'sent'->>'sender' AND s.msg_id = b.m->'sent'->>'id')
) OR EXISTS (
    SELECT 1 FROM b WHERE b.m->'sent' <> 'null'
     GROUP BY b.m->'sent'->>'sender', b.m->'sent'->>'id' HAVING count(*) > 1
)
$fn$;

-- _postgres_ops.new_root's parent: only the case of none is decided here (a guard: the
-- check above has left any other to the general way)
CREATE FUNCTION flux_no_parent(owner_ TEXT, re_id TEXT) RETURNS VOID
LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    IF re_id IS NOT NULL AND (
        EXISTS (SELECT 1 FROM deliveries WHERE recipient = owner_ AND msg_id = re_id)
        OR EXISTS (SELECT 1 FROM sent WHERE sender = owner_ AND msg_id = re_id
                                        AND thread_root <> '')
    ) THEN
        RAISE EXCEPTION 'a reply whose parent is in the mail' USING ERRCODE = 'FX001';
    END IF;
END
$fn$;

-- _postgres_ops.new_root's adoption: the replies waiting for this message move under it
CREATE FUNCTION flux_adopt(owner_ TEXT, root TEXT, adopt JSONB, of_id TEXT) RETURNS VOID
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    waiting TEXT[] := ARRAY(SELECT jsonb_array_elements_text(adopt))
                      || ('re ' || of_id || ' ' || owner_);
BEGIN
    UPDATE deliveries SET thread_root = root
     WHERE recipient = owner_ AND thread_root = ANY(waiting);
    UPDATE sent SET thread_root = root WHERE sender = owner_ AND thread_root = ANY(waiting);
END
$fn$;
""",
    ),
    Migration(
        14,
        "a reply's thread decided in the storing function too: one round trip for replies",
        """
-- Step 13's storing function decides a reply's thread in SQL too (_rules.parent_root), so
-- a reply costs one round trip like any message; a batch is left to the general way
-- (before any write) only when it holds the parent of one of its own replies, or when
-- PostgreSQL cannot read the stored JSON of a candidate parent as JSONB.

-- _rules.named without `cc`/`bcc` unless listed in `lists`: `from` and `to` if strings,
-- the strings of the listed fields that are arrays.
CREATE FUNCTION flux_names(env JSONB, lists TEXT[]) RETURNS TEXT[]
LANGUAGE sql IMMUTABLE AS $fn$
SELECT ARRAY(
    SELECT env->>f FROM unnest(ARRAY['from', 'to']) AS f
     WHERE jsonb_typeof(env->f) = 'string'
    UNION
    SELECT a #>> '{}' FROM unnest(lists) AS f,
           jsonb_array_elements(CASE WHEN jsonb_typeof(env->f) = 'array' THEN env->f
                                     ELSE '[]' END) AS a
     WHERE jsonb_typeof(a) = 'string'
)
$fn$;

-- _rules.named of a candidate parent: a received message's envelope, or a sent record's as
-- _rules.as_sent shows it (the recipients its envelope does not name are its `bcc`, in
-- place of the envelope's own, when there are any)
CREATE FUNCTION flux_candidate_names(env JSONB, delivery JSONB) RETURNS TEXT[]
LANGUAGE sql IMMUTABLE AS $fn$
SELECT CASE WHEN extra IS NULL THEN flux_names(env, ARRAY['cc', 'bcc'])
            ELSE flux_names(env, ARRAY['cc']) || extra END
  FROM (SELECT array_agg(k) AS extra FROM jsonb_object_keys(COALESCE(delivery, '{}')) AS k
         WHERE NOT k = ANY(flux_names(env, ARRAY['cc', 'bcc']))) AS x
$fn$;

-- _postgres_ops.parent_candidates and _rules.parent_root: the root of the thread a reply
-- from `reply_from` naming `addressed` to `re_id` joins in `owner_`'s mail; NULL: none
CREATE FUNCTION flux_parent_root(owner_ TEXT, re_id TEXT, reply_from TEXT, addressed TEXT[])
RETURNS TEXT LANGUAGE sql VOLATILE AS $fn$
WITH c AS (
    SELECT d.received_at AS at, 0 AS kind, d.id AS n, m.envelope::JSONB AS env,
           NULL::JSONB AS delivery, d.thread_root AS root
      FROM deliveries d JOIN messages m ON m.body_hash = d.body_hash
     WHERE d.recipient = owner_ AND d.msg_id = re_id
    UNION ALL
    SELECT s.sent_at, 1, 0, s.envelope::JSONB, s.delivery::JSONB, s.thread_root
      FROM sent s WHERE s.sender = owner_ AND s.msg_id = re_id AND s.thread_root <> ''
)
SELECT root FROM c
 WHERE reply_from = owner_ OR reply_from = ANY(flux_candidate_names(env, delivery))
 ORDER BY (jsonb_typeof(env->'from') = 'string' AND env->>'from' = ANY(addressed)) DESC,
          at, kind, n
 LIMIT 1
$fn$;

-- whether PostgreSQL reads `value` as JSONB (a stored envelope may hold what JSONB refuses)
CREATE FUNCTION flux_reads_as_jsonb(value TEXT) RETURNS BOOLEAN
LANGUAGE plpgsql IMMUTABLE AS $fn$
BEGIN
    PERFORM value::JSONB;
    RETURN TRUE;
EXCEPTION WHEN OTHERS THEN
    RETURN FALSE;
END
$fn$;

-- _postgres_ops.new_root's root: the parent's, else the one Python computed for none
-- (`t`: a message or its sent record, as flux_store_batch reads them)
CREATE FUNCTION flux_root(owner_ TEXT, t JSONB) RETURNS TEXT
LANGUAGE sql VOLATILE AS $fn$
SELECT COALESCE(
    CASE WHEN t->>'parent' IS NOT NULL THEN flux_parent_root(
        owner_, t->>'parent', t->>'from', ARRAY(SELECT jsonb_array_elements_text(t->'named')))
    END,
    t->>'root')
$fn$;

-- Whether a message of `batch` is a reply to one of the batch's own, or to one whose
-- stored JSON PostgreSQL cannot read, in its owners' mail (a recipient's, or its sender's
-- for its sent record); or its sent record has one to merge into.
CREATE OR REPLACE FUNCTION flux_needs_general_way(batch JSONB) RETURNS BOOLEAN
LANGUAGE sql VOLATILE AS $fn$
WITH b AS (
    SELECT value AS m FROM jsonb_array_elements(batch)
), owners AS (
    SELECT b.m, o.owner_ FROM b, jsonb_array_elements_text(b.m->'rcpts') AS o (owner_)
    UNION ALL
    SELECT b.m->'sent', b.m->'sent'->>'sender' FROM b WHERE b.m->'sent' <> 'null'
)
SELECT EXISTS (
    SELECT 1 FROM owners WHERE owners.m->>'parent' IS NOT NULL AND (
        owners.m->>'parent' IN (SELECT b.m->>'id' FROM b
                                UNION ALL SELECT b.m->'sent'->>'id' FROM b)
        OR EXISTS (SELECT 1 FROM deliveries d JOIN messages e ON e.body_hash = d.body_hash
                    WHERE d.recipient = owners.owner_ AND d.msg_id = owners.m->>'parent'
                      AND NOT flux_reads_as_jsonb(e.envelope))
        OR EXISTS (SELECT 1 FROM sent s
                    WHERE s.sender = owners.owner_ AND s.msg_id = owners.m->>'parent'
                      AND s.thread_root <> ''
                      AND NOT (flux_reads_as_jsonb(s.envelope)
                               AND flux_reads_as_jsonb(s.delivery))))
) OR EXISTS (
    SELECT 1 FROM b WHERE b.m->'sent' <> 'null' AND EXISTS (
        SELECT 1 FROM sent s
         WHERE s.sender = b.m->'sent'->>'sender' AND s.msg_id = b.m->'sent'->>'id')
) OR EXISTS (
    SELECT 1 FROM b WHERE b.m->'sent' <> 'null'
     GROUP BY b.m->'sent'->>'sender', b.m->'sent'->>'id' HAVING count(*) > 1
)
$fn$;

-- Store.store_many (_postgres_ops.store_at_once), as step 13's but a reply's root from
-- flux_root; FX001 (nothing written) for a batch flux_needs_general_way leaves to the
-- general way.
CREATE OR REPLACE FUNCTION flux_store_batch(batch JSONB, lock_keys BIGINT[], reasons JSONB)
RETURNS JSONB LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    m JSONB;
    rcpt TEXT;
    existing TEXT;
    body_saved BOOLEAN;
    outcome TEXT;
    outcomes JSONB;
    bounced JSONB;
    delivery_text TEXT;
    kept BIGINT;
    root TEXT;
    result JSONB := '[]';
    n INT := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(k) FROM unnest(lock_keys) AS k;
    -- Decided before any write, so that leaving the batch to the general way draws no
    -- seq (a sequence is not rolled back): under the locks, no one else adds a parent
    -- or a sent record for these owners meanwhile, and this batch can add only those
    -- whose id is one of its own.
    IF flux_needs_general_way(batch) THEN
        RAISE EXCEPTION 'a batch for the general way' USING ERRCODE = 'FX001';
    END IF;
    FOR m IN SELECT value FROM jsonb_array_elements(batch) LOOP
        outcomes := '[]';
        body_saved := FALSE;
        FOR rcpt IN SELECT value FROM jsonb_array_elements_text(m->'rcpts') LOOP
            SELECT d.body_hash INTO existing FROM deliveries d
             WHERE d.msg_id = m->>'id' AND d.sender = m->>'from' AND d.recipient = rcpt;
            IF FOUND THEN
                outcome := CASE WHEN existing = m->>'hash' THEN 'duplicate' ELSE 'conflict' END;
            ELSIF m->'quota' <> 'null' AND (
                SELECT count(*) FROM deliveries d
                 WHERE d.recipient = rcpt AND d.status = 'pending'
                   AND (d.hide_at IS NULL OR d.hide_at > (m->>'at')::BIGINT)
            ) >= (m->>'quota')::BIGINT THEN
                outcome := 'over_quota';
            ELSIF m->'share' <> 'null' AND rcpt <> m->>'from' AND NOT EXISTS (
                SELECT 1 FROM contacts WHERE owner = rcpt AND peer = m->>'from'
            ) AND (
                SELECT count(*) >= (m->'share'->>0)::BIGINT
                       OR count(*) FILTER (WHERE d.sender = m->>'from') >= (m->'share'->>1)::BIGINT
                  FROM deliveries d
                 WHERE d.recipient = rcpt AND d.status = 'pending'
                   AND (d.hide_at IS NULL OR d.hide_at > (m->>'at')::BIGINT)
                   AND d.sender <> d.recipient
                   AND NOT EXISTS (SELECT 1 FROM contacts c
                                    WHERE c.owner = d.recipient AND c.peer = d.sender)
            ) THEN
                outcome := 'over_stranger_share';
            ELSE
                outcome := 'stored';
                IF NOT body_saved THEN
                    INSERT INTO messages (body_hash, id, sender, t, re, envelope)
                    VALUES (m->>'hash', m->>'id', m->>'sender', (m->>'t')::BIGINT, m->>'re',
                            m->>'envelope')
                    ON CONFLICT (body_hash) DO NOTHING;
                    body_saved := TRUE;
                END IF;
                root := flux_root(rcpt, m);
                PERFORM flux_adopt(rcpt, root, m->'adopt', m->>'id');
                WITH c AS (
                    INSERT INTO changes (address, sender, msg_id, kind)
                    VALUES (rcpt, m->>'from', m->>'id', 'created') RETURNING seq
                ), d AS (
                    INSERT INTO deliveries (recipient, sender, msg_id, re, body_hash, status,
                                            inbox, tags, received_at, seq, delete_on_read,
                                            hide_at, thread_root)
                    SELECT rcpt, m->>'from', m->>'id', m->>'re', m->>'hash', 'pending',
                           m->>'inbox', ARRAY(SELECT jsonb_array_elements_text(m->'tags')),
                           (m->>'at')::BIGINT, c.seq, (m->>'delete_on_read')::BOOLEAN,
                           (m->>'hide_at')::BIGINT, root
                      FROM c
                    RETURNING id
                )
                INSERT INTO delivery_tags (delivery_id, tag, recipient, received_at)
                SELECT d.id, t, rcpt, (m->>'at')::BIGINT
                  FROM d, jsonb_array_elements_text(m->'tags') AS t;
            END IF;
            outcomes := outcomes || to_jsonb(outcome);
        END LOOP;
        result := result || jsonb_build_array(outcomes);
    END LOOP;
    -- the sent records, in batch order, of the messages stored for someone
    FOR m IN SELECT value FROM jsonb_array_elements(batch) LOOP
        n := n + 1;
        CONTINUE WHEN m->'sent' = 'null' OR NOT (result->(n - 1) ? 'stored');
        SELECT jsonb_object_agg(rcpt_, jsonb_build_object(
                   'state', 'bounced', 'at', m->'sent'->'sent_at', 'reason', reasons->>o))
          INTO bounced
          FROM jsonb_array_elements_text(m->'rcpts') WITH ORDINALITY AS r (rcpt_, i)
          JOIN jsonb_array_elements_text(result->(n - 1)) WITH ORDINALITY AS s (o, j)
            ON i = j
         WHERE reasons ? o;
        delivery_text := CASE WHEN bounced IS NULL THEN m->'sent'->>'delivery'
                         ELSE (((m->'sent'->>'delivery')::JSONB) || bounced)::TEXT END;
        root := flux_root(m->'sent'->>'sender', m->'sent');
        PERFORM flux_adopt(m->'sent'->>'sender', root, m->'sent'->'adopt', m->'sent'->>'id');
        INSERT INTO sent (sender, msg_id, sent_at, envelope, delivery, updated_at, thread_root)
        VALUES (m->'sent'->>'sender', m->'sent'->>'id', (m->'sent'->>'sent_at')::BIGINT,
                m->'sent'->>'envelope',
                delivery_text, (m->'sent'->>'updated_at')::BIGINT, root)
        ON CONFLICT DO NOTHING;
        GET DIAGNOSTICS kept = ROW_COUNT;
        IF kept = 0 THEN  -- a guard: flux_needs_general_way has seen to it
            RAISE EXCEPTION 'a sent record to merge' USING ERRCODE = 'FX001';
        END IF;
    END LOOP;
    RETURN result;
END
$fn$;
""",
    ),
    Migration(
        15,
        "the sender's rate, its contacts and the push's NOTIFY in the storing function",
        """
-- Issue 15, aim 3: step 14's storing function, and in the same transaction what were
-- three more round trips of a submission (base.py notes, "Rate and contacts in the
-- storing transaction"): each message may carry its sender's rate bucket (`rate`:
-- [bucket, window ms, limit], counted as flux_count_hit counts, whose lock the caller
-- puts in lock_keys): a full one refuses every recipient that is not a duplicate or a
-- conflict as 'rate_limited', before anything of the message is written; a message
-- stored for someone counts its hit and keeps its sender's `contacts`. `notify`
-- ({channel, payloads: {recipient: text}}) is NOTIFYed for each recipient stored:
-- PostgreSQL delivers it at COMMIT, so no listener hears of mail that could be lost
-- (server/fanout.py). A batch without these keys is stored as step 14 stored it.
CREATE OR REPLACE FUNCTION flux_store_batch(batch JSONB, lock_keys BIGINT[], reasons JSONB)
RETURNS JSONB LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    m JSONB;
    rcpt TEXT;
    existing TEXT;
    body_saved BOOLEAN;
    outcome TEXT;
    outcomes JSONB;
    bounced JSONB;
    delivery_text TEXT;
    kept BIGINT;
    root TEXT;
    limited BOOLEAN;
    result JSONB := '[]';
    n INT := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(k) FROM unnest(lock_keys) AS k;
    -- Decided before any write, so that leaving the batch to the general way draws no
    -- seq (a sequence is not rolled back): under the locks, no one else adds a parent
    -- or a sent record for these owners meanwhile, and this batch can add only those
    -- whose id is one of its own.
    IF flux_needs_general_way(batch) THEN
        RAISE EXCEPTION 'a batch for the general way' USING ERRCODE = 'FX001';
    END IF;
    FOR m IN SELECT value FROM jsonb_array_elements(batch) LOOP
        outcomes := '[]';
        body_saved := FALSE;
        -- the sender's rate, looked at once before anything of the message is written,
        -- under the bucket's lock (in lock_keys), on a snapshot taken after it
        limited := m->'rate' <> 'null' AND (
            SELECT count(*) FROM hits
             WHERE bucket = m->'rate'->>0
               AND t > (m->>'at')::BIGINT - (m->'rate'->>1)::BIGINT
        ) >= (m->'rate'->>2)::BIGINT;
        FOR rcpt IN SELECT value FROM jsonb_array_elements_text(m->'rcpts') LOOP
            SELECT d.body_hash INTO existing FROM deliveries d
             WHERE d.msg_id = m->>'id' AND d.sender = m->>'from' AND d.recipient = rcpt;
            IF FOUND THEN
                outcome := CASE WHEN existing = m->>'hash' THEN 'duplicate' ELSE 'conflict' END;
            ELSIF limited THEN
                outcome := 'rate_limited';
            ELSIF m->'quota' <> 'null' AND (
                SELECT count(*) FROM deliveries d
                 WHERE d.recipient = rcpt AND d.status = 'pending'
                   AND (d.hide_at IS NULL OR d.hide_at > (m->>'at')::BIGINT)
            ) >= (m->>'quota')::BIGINT THEN
                outcome := 'over_quota';
            ELSIF m->'share' <> 'null' AND rcpt <> m->>'from' AND NOT EXISTS (
                SELECT 1 FROM contacts WHERE owner = rcpt AND peer = m->>'from'
            ) AND (
                SELECT count(*) >= (m->'share'->>0)::BIGINT
                       OR count(*) FILTER (WHERE d.sender = m->>'from') >= (m->'share'->>1)::BIGINT
                  FROM deliveries d
                 WHERE d.recipient = rcpt AND d.status = 'pending'
                   AND (d.hide_at IS NULL OR d.hide_at > (m->>'at')::BIGINT)
                   AND d.sender <> d.recipient
                   AND NOT EXISTS (SELECT 1 FROM contacts c
                                    WHERE c.owner = d.recipient AND c.peer = d.sender)
            ) THEN
                outcome := 'over_stranger_share';
            ELSE
                outcome := 'stored';
                IF NOT body_saved THEN
                    INSERT INTO messages (body_hash, id, sender, t, re, envelope)
                    VALUES (m->>'hash', m->>'id', m->>'sender', (m->>'t')::BIGINT, m->>'re',
                            m->>'envelope')
                    ON CONFLICT (body_hash) DO NOTHING;
                    body_saved := TRUE;
                END IF;
                root := flux_root(rcpt, m);
                PERFORM flux_adopt(rcpt, root, m->'adopt', m->>'id');
                WITH c AS (
                    INSERT INTO changes (address, sender, msg_id, kind)
                    VALUES (rcpt, m->>'from', m->>'id', 'created') RETURNING seq
                ), d AS (
                    INSERT INTO deliveries (recipient, sender, msg_id, re, body_hash, status,
                                            inbox, tags, received_at, seq, delete_on_read,
                                            hide_at, thread_root)
                    SELECT rcpt, m->>'from', m->>'id', m->>'re', m->>'hash', 'pending',
                           m->>'inbox', ARRAY(SELECT jsonb_array_elements_text(m->'tags')),
                           (m->>'at')::BIGINT, c.seq, (m->>'delete_on_read')::BOOLEAN,
                           (m->>'hide_at')::BIGINT, root
                      FROM c
                    RETURNING id
                )
                INSERT INTO delivery_tags (delivery_id, tag, recipient, received_at)
                SELECT d.id, t, rcpt, (m->>'at')::BIGINT
                  FROM d, jsonb_array_elements_text(m->'tags') AS t;
                -- sent at COMMIT, and only then (server/fanout.py)
                IF m->'notify' <> 'null' AND m->'notify'->'payloads' ? rcpt THEN
                    PERFORM pg_notify(m->'notify'->>'channel',
                                      m->'notify'->'payloads'->>rcpt);
                END IF;
            END IF;
            outcomes := outcomes || to_jsonb(outcome);
        END LOOP;
        -- stored for someone: the hit counts and the contacts are kept, before the next
        -- message of the batch is decided
        IF body_saved THEN
            IF m->'rate' <> 'null' THEN
                DELETE FROM hits WHERE bucket = m->'rate'->>0
                   AND t <= (m->>'at')::BIGINT - (m->'rate'->>1)::BIGINT;
                INSERT INTO hits (bucket, t) VALUES (m->'rate'->>0, (m->>'at')::BIGINT);
            END IF;
            INSERT INTO contacts (owner, peer, since)
            SELECT m->>'from', p, (m->>'at')::BIGINT
              FROM jsonb_array_elements_text(m->'contacts') AS p
            ON CONFLICT (owner, peer) DO NOTHING;
        END IF;
        result := result || jsonb_build_array(outcomes);
    END LOOP;
    -- the sent records, in batch order, of the messages stored for someone
    FOR m IN SELECT value FROM jsonb_array_elements(batch) LOOP
        n := n + 1;
        CONTINUE WHEN m->'sent' = 'null' OR NOT (result->(n - 1) ? 'stored');
        SELECT jsonb_object_agg(rcpt_, jsonb_build_object(
                   'state', 'bounced', 'at', m->'sent'->'sent_at', 'reason', reasons->>o))
          INTO bounced
          FROM jsonb_array_elements_text(m->'rcpts') WITH ORDINALITY AS r (rcpt_, i)
          JOIN jsonb_array_elements_text(result->(n - 1)) WITH ORDINALITY AS s (o, j)
            ON i = j
         WHERE reasons ? o;
        delivery_text := CASE WHEN bounced IS NULL THEN m->'sent'->>'delivery'
                         ELSE (((m->'sent'->>'delivery')::JSONB) || bounced)::TEXT END;
        root := flux_root(m->'sent'->>'sender', m->'sent');
        PERFORM flux_adopt(m->'sent'->>'sender', root, m->'sent'->'adopt', m->'sent'->>'id');
        INSERT INTO sent (sender, msg_id, sent_at, envelope, delivery, updated_at, thread_root)
        VALUES (m->'sent'->>'sender', m->'sent'->>'id', (m->'sent'->>'sent_at')::BIGINT,
                m->'sent'->>'envelope',
                delivery_text, (m->'sent'->>'updated_at')::BIGINT, root)
        ON CONFLICT DO NOTHING;
        GET DIAGNOSTICS kept = ROW_COUNT;
        IF kept = 0 THEN  -- a guard: flux_needs_general_way has seen to it
            RAISE EXCEPTION 'a sent record to merge' USING ERRCODE = 'FX001';
        END IF;
    END LOOP;
    RETURN result;
END
$fn$;
""",
    ),
    Migration(
        16,
        "no change: SQLite's step 16 drops two indexes it never reads",
        # Kept so the step numbers match SQLite's; PostgreSQL's storing function and its
        # indexes were not measured for this and stay as they are.
        "SELECT 1;",
    ),
]


async def backfill_sent_roots(conn: asyncpg.Connection) -> None:
    """Step 11: every sent row's root, in the order sent (migrations/sqlite.py, step 11)."""
    rows = await conn.fetch(
        'SELECT sender, msg_id, envelope FROM sent ORDER BY sent_at, sender, msg_id COLLATE "C"'
    )
    for sender, msg_id, envelope in rows:
        root = await new_root(conn, sender, json.loads(envelope))
        await conn.execute(
            "UPDATE sent SET thread_root = $1 WHERE sender = $2 AND msg_id = $3",
            root, sender, msg_id,
        )  # fmt: skip


def version_table(name: str) -> str:
    """The DDL of a table recording applied steps (`schema_version` for the mail store;
    the accounts store keeps its own, so the two schemas evolve apart)."""
    return f"""
CREATE TABLE IF NOT EXISTS {quote_ident(name)} (
    version      INTEGER PRIMARY KEY,
    description  TEXT NOT NULL,
    applied_at   BIGINT NOT NULL
                 DEFAULT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT
)"""


def quote_ident(name: str) -> str:
    """`name` as an SQL identifier, quoted (a double quote inside is doubled)."""
    return '"' + name.replace('"', '""') + '"'


async def current_version(conn: asyncpg.Connection, table: str = "schema_version") -> int:
    return await conn.fetchval(f"SELECT COALESCE(MAX(version), 0) FROM {quote_ident(table)}")


async def migrate(
    conn: asyncpg.Connection,
    where: str,
    *,
    lock_key: int,
    schema: str | None = None,
    steps: Sequence[Migration] = STEPS,
    table: str = "schema_version",
    schema_lock: int | None = None,
) -> int:
    """Bring the schema up to the newest step in one transaction; return the version.

    `lock_key` names the advisory lock that serialises concurrent migrations of these
    steps; `table` records them. `schema`, if given, is created first when missing (the
    connection's search_path must already point at it), under `schema_lock` too when
    another set of steps may be creating it at the same time: two concurrent CREATE SCHEMA
    IF NOT EXISTS can fail on each other. Raises SchemaTooNew.
    """
    async with conn.transaction():
        # A migration (or waiting for another process's) may legitimately take longer than
        # the store's per-statement limit.
        await conn.execute("SET LOCAL statement_timeout = 0")
        # Taken before the version is read, so two processes opening one new database at
        # once cannot both apply step 1; released by COMMIT or ROLLBACK.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key)
        if schema is not None:
            await _create_schema(conn, schema, schema_lock)
        await conn.execute(version_table(table))
        for step in plan(await current_version(conn, table), steps, where):
            await conn.execute(step.sql)  # no arguments: a multi-statement script is allowed
            if step.backfill is not None:
                await step.backfill(conn)
            await conn.execute(
                f"INSERT INTO {quote_ident(table)} (version, description) VALUES ($1, $2)",
                step.version,
                step.description,
            )
        return await current_version(conn, table)


async def _create_schema(conn: asyncpg.Connection, schema: str, lock: int | None) -> None:
    exists = "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)"
    if await conn.fetchval(exists, schema):
        return
    if lock is not None:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock)
    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
