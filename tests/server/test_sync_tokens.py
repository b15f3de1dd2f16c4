"""Sync tokens mean something (issue 10 §4; RFC 8620 §5.2, JMAP's cannotCalculateChanges).

`GET /changes?since=S` with a state the server never issued (above the mailbox's current
state, or not a state at all) used to echo S back with nothing, and new mail never showed
up from it. Now it is 400 `cannot_calculate_changes` on every backend, and FluxClient's
listener answers it by resyncing from 0.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from flux import FluxIdentity
from flux.client import FluxClient
from flux.server.config import ServerConfig
from flux.server.runner import start_server
from postgres_env import postgres_dsn

WAIT = 10.0


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def srv3(request: Any, make_server: Any, clock: Any, alice: Any, bob: Any) -> Any:
    store = None
    if request.param == "postgres":
        from flux.store import PostgresStore

        store = PostgresStore(postgres_dsn(), fresh_schema=True, clock=clock)
        await store.open()
    srv = await make_server(store=store, sqlite=request.param == "sqlite")
    await srv.register(alice, bob)
    await srv.login(alice)
    yield srv
    if store is not None:
        await srv.client.close()
        await store.close()


async def _changes(srv: Any, who: Any, since: Any, expect: int = 200) -> dict[str, Any]:
    return await srv.get("/changes", who, expect=expect, address=who.address, since=since)


async def test_a_state_never_issued_is_refused_and_issued_ones_still_answer(
    srv3: Any, alice: Any, bob: Any
) -> None:
    empty = await _changes(srv3, alice, 0)
    assert empty["state"] == 0 and empty["created"] == []
    refused = await _changes(srv3, alice, 5, expect=400)
    assert refused["code"] == "cannot_calculate_changes" and refused["field"] == "since"

    await srv3.send(srv3.message(bob, alice, "first"))
    state = (await _changes(srv3, alice, 0))["state"]
    assert state > 0
    assert (await _changes(srv3, alice, state))["created"] == []  # the current state answers
    far = await _changes(srv3, alice, state + 1, expect=400)
    assert far["code"] == "cannot_calculate_changes"

    # From an issued state, new mail does appear.
    second = srv3.message(bob, alice, "second")
    await srv3.send(second)
    after = await _changes(srv3, alice, state)
    assert [m["id"] for m in after["created"]] == [second["id"]]


@pytest.mark.parametrize("since", ["abc", "-1", "1.5", "99999999999999999999", " 1"])
async def test_a_malformed_state_is_cannot_calculate_changes(
    srv3: Any, alice: Any, since: str
) -> None:
    answer = await _changes(srv3, alice, since, expect=400)
    assert answer["code"] == "cannot_calculate_changes" and answer["field"] == "since"


async def test_another_mailboxs_state_is_not_this_ones(srv3: Any, alice: Any, bob: Any) -> None:
    """States are per mailbox: bob's state, above alice's, is refused for alice."""
    for n in range(3):
        await srv3.send(srv3.message(alice, bob, f"to bob {n}"))
    await srv3.login(bob)
    bobs = (await _changes(srv3, bob, 0))["state"]
    assert bobs > 0
    answer = await _changes(srv3, alice, bobs, expect=400)
    assert answer["code"] == "cannot_calculate_changes"


# -- FluxClient resyncs ------------------------------------------------------------------------


@pytest.fixture
async def live(tmp_path: Path) -> Any:
    config = ServerConfig.from_env(
        {}, data_dir=tmp_path, host="127.0.0.1", port=0, backend="sqlite"
    )
    running = await start_server(config)
    yield running
    await running.stop()


async def test_flux_client_resyncs_from_a_state_the_server_never_issued(live: Any) -> None:
    """A listener holding a state from elsewhere (a restored server, another server under
    the same name) used to die on the 400; now it fetches everything again, and mail that
    was already delivered elsewhere (so not pending, not in `authed`) still reaches it."""
    alice = FluxClient(FluxIdentity.generate(), live.url, reconnect_base=0.05, reconnect_cap=0.5)
    bob = FluxClient(FluxIdentity.generate(), live.url)
    try:
        await alice.register()
        await bob.register()
        sent = await bob.send(alice.address, "delivered on another device")
        assert [m["id"] for m in await alice.fetch()] == [sent.id]  # now delivered, not pending
        seen: asyncio.Queue[str] = asyncio.Queue()
        alice.on_message(lambda msg: seen.put_nowait(msg["id"]))
        task = await alice.start_ws(since=10**9, timeout=WAIT)
        assert await asyncio.wait_for(seen.get(), WAIT) == sent.id
        assert alice.state is not None and alice.state < 10**9
        assert not task.done()
    finally:
        await alice.close()
        await bob.close()
