"""PostgreSQL-only properties: migrations (idempotent, safe when processes start together,
refusing a newer schema), races between connections and between stores (dedupe, quota,
the order of one mailbox's changes), session settings, and a clear error when the server
cannot be reached. The shared contract runs on PostgreSQL through test_contract.py.

Skipped without FLUX_TEST_POSTGRES_DSN (failed instead when FLUX_TEST_REQUIRE_POSTGRES=1).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from types import ModuleType

import pytest
from store_helpers import ALICE, BOB, check_migrated_to_step_4, envelope, incoming

from flux.store import Incoming, SchemaTooNew, StoreOutcome
from flux.store.base import RateBucket

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg(pg_dsn: str) -> ModuleType:
    """flux.store.postgres, imported only once PostgreSQL is known to be available."""
    from flux.store import postgres

    return postgres


@pytest.fixture
async def schema(pg_dsn: str, pg: ModuleType) -> AsyncIterator[str]:
    """A schema name no store has used yet; dropped afterwards, whoever created it."""
    import asyncpg

    name = f"flux_test_{uuid.uuid4().hex}"
    yield name
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
async def pg_store(pg_dsn: str, pg: ModuleType) -> AsyncIterator:
    s = pg.PostgresStore(pg_dsn, fresh_schema=True, pool_max=10)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def _versions(store) -> list[int]:
    rows = await store._live_pool().fetch("SELECT version FROM schema_version ORDER BY version")
    return [r[0] for r in rows]


# -- migrations -----------------------------------------------------------------------------
async def test_migrations_are_idempotent(pg_dsn, pg, schema):
    from flux.store.migrations.postgres import STEPS

    latest = STEPS[-1].version
    first = pg.PostgresStore(pg_dsn, schema=schema)
    await first.open()
    await first.open()  # a second open of an open store does nothing
    assert first.schema_version == latest
    await first.register_address(ALICE, "pub", 1)
    await first.close()
    again = pg.PostgresStore(pg_dsn, schema=schema)
    await again.open()
    try:
        assert again.schema_version == latest
        assert await _versions(again) == list(range(1, latest + 1))
        assert (await again.hosted(ALICE)).pub == "pub"  # nothing was recreated
    finally:
        await again.close()


async def test_step_4_migrates_mail_stored_at_step_3(pg_dsn, pg, schema):
    """A schema made at step 3 (deliveries keyed by (recipient, id)) opens at step 4 with
    its mail, tags, changes and threads, now keyed by (recipient, sender, id): the
    PostgreSQL twin of test_sqlite.py's test of the same name."""
    import json

    import asyncpg
    from store_helpers import SENDER

    from flux.protocol import body_hash
    from flux.store.migrations.postgres import STEPS, migrate

    conn = await asyncpg.connect(pg_dsn, server_settings={"search_path": schema})
    try:
        assert await migrate(conn, "test", lock_key=4, schema=schema, steps=STEPS[:3]) == 3
        root = envelope()
        reply = envelope(re=root["id"])
        orphan = envelope(re="f" * 32)
        for n, (env, thread_root) in enumerate(
            ((root, root["id"]), (reply, root["id"]), (orphan, "f" * 32)), start=1
        ):
            bh = body_hash(env)
            await conn.execute("INSERT INTO messages VALUES ($1, $2, $3, $4, $5, $6)",
                               bh, env["id"], SENDER, env["t"], env.get("re"), json.dumps(env))  # fmt: skip
            await conn.execute(
                "INSERT INTO changes (address, msg_id, kind) VALUES ($1, $2, 'created')",
                ALICE, env["id"],
            )  # fmt: skip
            delivery = await conn.fetchval(
                """INSERT INTO deliveries (recipient, msg_id, body_hash, status, inbox, tags,
                       received_at, seq, thread_root) VALUES ($1, $2, $3, 'pending', 'inbox',
                       '{old}', $4, $5, $6) RETURNING id""",
                ALICE, env["id"], bh, env["t"], n, thread_root,
            )  # fmt: skip
            await conn.execute("INSERT INTO delivery_tags VALUES ($1, 'old', $2, $3)",
                               delivery, ALICE, env["t"])  # fmt: skip
    finally:
        await conn.close()

    store = pg.PostgresStore(pg_dsn, schema=schema)
    await store.open()
    try:
        assert store.schema_version == STEPS[-1].version  # step 4 and every later one
        await check_migrated_to_step_4(store, root, reply, orphan)
    finally:
        await store.close()


async def test_stores_opening_one_new_schema_at_once_migrate_it_once(pg_dsn, pg, schema):
    stores = [pg.PostgresStore(pg_dsn, schema=schema) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))  # like processes starting together
    try:
        assert {s.schema_version for s in stores} == {len(await _versions(stores[0]))}
        assert await _versions(stores[0]) == list(range(1, stores[0].schema_version + 1))
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_a_schema_from_a_newer_flux_is_refused(pg_dsn, pg, schema):
    store = pg.PostgresStore(pg_dsn, schema=schema)
    await store.open()
    await store._live_pool().execute(
        "INSERT INTO schema_version (version, description) VALUES (999, 'from the future')"
    )
    await store.close()
    with pytest.raises(SchemaTooNew):
        await pg.PostgresStore(pg_dsn, schema=schema).open()


async def test_a_fresh_schema_is_dropped_on_close(pg_dsn, pg):
    store = pg.PostgresStore(pg_dsn, fresh_schema=True)
    assert store.schema.startswith("flux_test_")
    await store.open()
    pool = await _plain_pool(pg_dsn)  # looks from outside the store
    try:
        exists = "SELECT count(*) FROM pg_namespace WHERE nspname = $1"
        assert await pool.fetchval(exists, store.schema) == 1
        await store.close()
        await store.close()  # idempotent
        assert await pool.fetchval(exists, store.schema) == 0
    finally:
        await pool.close()


async def _plain_pool(dsn: str):
    import asyncpg

    return await asyncpg.create_pool(dsn, min_size=1, max_size=1)


# -- races ----------------------------------------------------------------------------------
async def test_one_id_stored_by_many_coroutines_at_once_is_stored_once(pg_store):
    env = envelope()
    outs = await asyncio.gather(*(pg_store.store_message(incoming(env, ALICE)) for _ in range(40)))
    alice = [o[ALICE] for o in outs]
    assert alice.count(StoreOutcome.STORED) == 1
    assert alice.count(StoreOutcome.DUPLICATE) == 39
    assert (await pg_store.stats())["deliveries"] == 1


async def test_different_bodies_under_one_id_race_to_one_winner(pg_store):
    base = envelope()
    bodies = [{**base, "content": f"variant {n}"} for n in range(20)]
    outs = await asyncio.gather(*(pg_store.store_message(incoming(e, ALICE)) for e in bodies))
    alice = [o[ALICE] for o in outs]
    assert alice.count(StoreOutcome.STORED) == 1
    assert alice.count(StoreOutcome.CONFLICT) == 19
    winner = bodies[alice.index(StoreOutcome.STORED)]
    assert (await pg_store.get(ALICE, base["id"])).envelope["content"] == winner["content"]


async def test_the_quota_holds_across_stores_on_one_database(pg_dsn, pg, schema):
    # Two stores, two pools: as two server processes would submit to one database.
    stores = [pg.PostgresStore(pg_dsn, schema=schema) for _ in range(2)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        submissions = [
            stores[n % 2].store_message(incoming(envelope(), ALICE, BOB, pending_quota=7))
            for n in range(30)
        ]
        outs = await asyncio.gather(*submissions)
        for who in (ALICE, BOB):
            got = [o[who] for o in outs]
            assert got.count(StoreOutcome.STORED) == 7
            assert got.count(StoreOutcome.OVER_QUOTA) == 23
            assert await stores[0].pending_count(who) == 7
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_an_address_another_process_registers_is_hosted_at_once(pg_dsn, pg, schema):
    """`hosted` keeps what it found (a hosted address never changes), never what it did
    not: an address registered through another process is hosted here at once."""
    one, two = pg.PostgresStore(pg_dsn, schema=schema), pg.PostgresStore(pg_dsn, schema=schema)
    await one.open()
    await two.open()
    try:
        assert await one.hosted(ALICE) is None
        assert await two.register_address(ALICE, "cHVi", 5)
        found = await one.hosted(ALICE)
        assert found is not None and (found.pub, found.registered_at) == ("cHVi", 5)
        assert await one.hosted(ALICE) == found
    finally:
        await one.close()
        await two.close()


async def test_a_reader_following_changes_during_writes_misses_none(pg_store):
    """Concurrent writers to one mailbox; a reader polling `changes(since)` with its state
    token must see every change: a seq below one it has seen never commits later."""
    done = asyncio.Event()

    async def writer(n: int) -> None:
        for _ in range(15):
            env = envelope()
            await pg_store.store_message(incoming(env, ALICE))
            await pg_store.tag(ALICE, env["id"], [f"w{n}"], [])

    async def reader() -> list[int]:
        seen, since = [], 0
        while True:
            finished = done.is_set()
            page = await pg_store.changes(ALICE, since, 1000)
            seen += [c.seq for c in page.changes]
            since = page.state
            if finished and not page.has_more:
                return seen
            await asyncio.sleep(0)

    follow = asyncio.create_task(reader())
    await asyncio.gather(*(writer(n) for n in range(8)))
    done.set()
    seen = await follow
    everything = [c.seq for c in (await pg_store.changes(ALICE, 0, 1000)).changes]
    assert len(everything) == 8 * 15 * 2
    assert seen == everything


async def test_store_many_is_one_transaction(pg_store):
    from asyncpg.exceptions import NotNullViolationError

    ok = incoming(envelope(), ALICE)
    bad = Incoming(
        envelope={"id": None, "from": ALICE}, body_hash="h", recipients=[ALICE], received_at=1
    )
    with pytest.raises(NotNullViolationError):  # a message without an id
        await pg_store.store_many([ok, bad])
    assert (await pg_store.stats())["deliveries"] == 0  # the first was rolled back too


# -- connections ----------------------------------------------------------------------------
async def test_session_settings(pg_dsn, pg):
    store = pg.PostgresStore(pg_dsn, fresh_schema=True, statement_timeout_ms=1234)
    await store.open()
    try:
        pool = store._live_pool()
        assert await pool.fetchval("SHOW statement_timeout") == "1234ms"
        assert await pool.fetchval("SHOW synchronous_commit") == "on"
        assert await pool.fetchval("SELECT current_schema()") == store.schema
    finally:
        await store.close()


async def test_a_rate_hit_alone_does_not_wait_for_a_flush_and_mail_still_does(pg_store):
    """count_hit turns synchronous_commit off for its own statement's transaction only
    (a rate counter: a crash may forget its last hits), never for the connection or a
    transaction around it, where mail would lose its durability."""
    from flux.store import _postgres_hits as hits

    pool = pg_store._live_pool()
    batch = [hits.Hit(RateBucket("ip-send:x", 60_000, 2), t) for t in range(3)]
    async with pool.acquire() as conn:
        assert await hits.count_hits(conn, pg_store._locks, batch) == [False, False, True]
        assert await conn.fetchval("SHOW synchronous_commit") == "on"
        async with conn.transaction():
            with pytest.raises(RuntimeError, match="on its own"):
                await hits.count_hits(conn, pg_store._locks, batch)
            assert await conn.fetchval("SHOW synchronous_commit") == "on"


async def test_hits_counted_together_keep_each_buckets_order_and_exact_limit(pg_store):
    """One statement of hits of several buckets, interleaved: they go in the order of
    their lock keys, one bucket's in arrival order, and each answer comes back to its own
    place, exactly as one hit at a time would count them."""
    from flux.store import _postgres_hits as hits

    batch = [hits.Hit(RateBucket(f"b{i % 3}", 60_000, 2), 100 + i) for i in range(9)]
    pool = pg_store._live_pool()
    async with pool.acquire() as conn:
        assert await hits.count_hits(conn, pg_store._locks, batch) == [False] * 6 + [True] * 3
        kept = await conn.fetch("SELECT bucket, t FROM hits ORDER BY bucket, t")
    assert [(r["bucket"], r["t"]) for r in kept] == [
        ("b0", 100), ("b0", 103), ("b1", 101), ("b1", 104), ("b2", 102), ("b2", 105)
    ]  # fmt: skip


async def test_a_prune_and_a_statement_of_several_hits_do_not_deadlock(pg_dsn, pg_store):
    """A statement counting hits of two buckets deletes their old rows bucket by bucket;
    a prune deletes old rows of every bucket in its own order. A prune held up on one row
    (a trigger that sleeps in the prune's session only) while the statement waits for it:
    the prune never waits for a row another holds (SKIP LOCKED), so both finish, where
    they deadlocked before (found in review)."""
    import asyncpg

    from flux.store import _postgres_hits as hits

    day, locks, schema = 24 * 3_600_000, pg_store._locks, pg_store.schema
    a, b = sorted(["ip-send:a", "ip-send:b"], key=lambda n: locks.key("hits", n))
    admin = await asyncpg.connect(pg_dsn, server_settings={"search_path": schema})
    pruner = await asyncpg.connect(
        pg_dsn, server_settings={"search_path": schema, "flux_test.who": "prune"}
    )
    counter = await asyncpg.connect(pg_dsn, server_settings={"search_path": schema})
    try:
        await admin.execute("INSERT INTO hits (bucket, t) VALUES ($1, 1), ($2, 2)", b, a)
        await admin.execute(f"""
            CREATE FUNCTION slow_prune() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF current_setting('flux_test.who', true) = 'prune' AND OLD.bucket = '{b}'
                THEN PERFORM pg_sleep(0.5); END IF;
                RETURN OLD;
            END $$;
            CREATE TRIGGER slow BEFORE DELETE ON hits
                FOR EACH ROW EXECUTE FUNCTION slow_prune()""")

        async def prune() -> int:
            async with pruner.transaction():  # as PostgresStore.prune_hits runs it
                return await hits.prune_hits(pruner, 10 * day, day)

        async def count() -> list[bool]:
            await asyncio.sleep(0.2)  # the prune is asleep on b's row
            batch = [hits.Hit(RateBucket(n, 60_000, 5), 10 * day) for n in (a, b)]
            return await hits.count_hits(counter, locks, batch)

        pruned, counted = await asyncio.wait_for(asyncio.gather(prune(), count()), 10)
        assert counted == [False, False]
        assert pruned + await admin.fetchval("SELECT count(*) FROM hits WHERE t < 10") == 2
    finally:
        for conn in (admin, pruner, counter):
            await conn.close()


async def test_a_closed_port_is_a_clear_error():
    from flux.store import postgres as pg  # no server needed: nothing listens on port 1

    store = pg.PostgresStore("postgresql://flux:s3cret@127.0.0.1:1/flux", connect_timeout_s=5)
    with pytest.raises(pg.DatabaseUnavailable) as exc:
        await store.open()
    text = str(exc.value)
    assert "127.0.0.1:1" in text and "s3cret" not in text and "\n" not in text
    assert isinstance(exc.value, ConnectionError)
    with pytest.raises(RuntimeError):
        await store.hosted(ALICE)  # not open


def test_open_store_and_the_package_name_postgres_lazily():
    from flux.store import PostgresStore, open_store

    store = open_store("postgresql://flux:s3cret@db.example/flux")
    assert isinstance(store, PostgresStore) and store.schema is None
    assert "s3cret" not in repr(store)


# -- when the database goes away (StoreUnavailable) -------------------------------------------
async def test_a_closed_port_is_store_unavailable():
    from flux.store import StoreUnavailable
    from flux.store import postgres as pg

    store = pg.PostgresStore("postgresql://flux@127.0.0.1:1/flux", connect_timeout_s=5)
    with pytest.raises(StoreUnavailable) as exc:
        await store.open()
    assert isinstance(exc.value, pg.DatabaseUnavailable) and exc.value.__cause__ is not None


@pytest.fixture
def private_pg():
    """A private PostgreSQL server (tests/e2e/pg_instance.py) this test may stop and start."""
    from e2e.pg_instance import private_postgres, skip_reason

    if (reason := skip_reason()) is not None:
        pytest.skip(reason)
    with private_postgres() as instance:
        yield instance


async def _every_call_fails_cleanly(store, env) -> None:
    from flux.store import ListQuery, StoreUnavailable

    calls = [
        store.ping, lambda: store.hosted(ALICE), lambda: store.get(ALICE, env["id"]),
        lambda: store.store_message(incoming(envelope(), ALICE)),
        lambda: store.list(ALICE, ListQuery()), store.stats,
        lambda: store.lease("w", 0, 1000, 10), lambda: store.register_address(BOB, "k", 1),
        store.strikes,
    ]  # fmt: skip
    for call in calls:
        with pytest.raises(StoreUnavailable) as exc:
            await call()
        assert exc.value.__cause__ is not None, "chained to the driver's error"
        assert "unreachable" in str(exc.value)


async def _until_it_answers(store, within_s: float = 30.0) -> None:
    """Poll `ping` (a condition, not a sleep-as-synchronisation) until the store answers."""
    from flux.store import StoreUnavailable

    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        try:
            await store.ping()
            return
        except StoreUnavailable:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_a_database_that_goes_away_is_store_unavailable_then_recovers(private_pg):
    from flux.store import postgres as pg

    store = pg.PostgresStore(private_pg.dsn, pool_min=2, pool_max=4, connect_timeout_s=5)
    await store.open()
    try:
        env = envelope()
        assert (await store.store_message(incoming(env, ALICE)))[ALICE] is StoreOutcome.STORED
        await asyncio.gather(*(store.get(ALICE, env["id"]) for _ in range(8)))  # warm the pool
        # Stopped with the event loop blocked: the pool's idle connections are dead but
        # not yet seen to be. They must fail as StoreUnavailable, not as anything else.
        private_pg.stop()
        await _every_call_fails_cleanly(store, env)
        await _every_call_fails_cleanly(store, env)  # and again, now that nothing connects
        private_pg.start()
        await _until_it_answers(store)
        # No broken connection is handed out again: a burst wider than the pool succeeds.
        got = await asyncio.gather(*(store.get(ALICE, env["id"]) for _ in range(16)))
        assert all(g is not None and g.id == env["id"] for g in got)
        assert (await store.store_message(incoming(envelope(), ALICE)))[
            ALICE
        ] is StoreOutcome.STORED
        # A restart the pool never saw (stop and start while the loop is blocked).
        private_pg.stop()
        private_pg.start()
        await _until_it_answers(store)
        got = await asyncio.gather(*(store.get(ALICE, env["id"]) for _ in range(16)))
        assert all(g is not None for g in got)
    finally:
        await store.close()


async def test_a_statement_timeout_is_store_unavailable(pg_dsn, pg):
    import asyncpg

    from flux.store import StoreUnavailable

    store = pg.PostgresStore(pg_dsn, fresh_schema=True, statement_timeout_ms=200)
    await store.open()
    blocker = await asyncpg.connect(pg_dsn)
    try:
        # Another session holds ALICE's mailbox lock: the write waits, then is cancelled.
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute(
            "SELECT pg_advisory_xact_lock($1)", store._locks.key("mailbox", ALICE)
        )
        with pytest.raises(StoreUnavailable) as exc:
            await store.store_message(incoming(envelope(), ALICE))
        assert isinstance(exc.value.__cause__, asyncpg.QueryCanceledError)
        await tx.rollback()
        env = envelope()
        assert (await store.store_message(incoming(env, ALICE)))[ALICE] is StoreOutcome.STORED
        assert (await store.stats())["deliveries"] == 1  # the cancelled write left nothing
    finally:
        await blocker.close()
        await store.close()


async def test_an_exhausted_pool_is_store_unavailable_after_the_acquire_timeout(pg_dsn, pg):
    from flux.store import StoreUnavailable

    store = pg.PostgresStore(pg_dsn, fresh_schema=True, pool_min=1, pool_max=1,
                             acquire_timeout_s=0.2)  # fmt: skip
    await store.open()
    try:
        async with store._live_pool().acquire():  # the only connection is taken
            with pytest.raises(StoreUnavailable) as exc:
                await store.hosted(ALICE)
            assert isinstance(exc.value.__cause__, TimeoutError)
        await store.ping()  # and it is back once the connection is
    finally:
        await store.close()
