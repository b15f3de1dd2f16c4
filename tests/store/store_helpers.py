"""Helpers for the store tests: addresses, a hand-moved clock, message-shaped dicts."""

from __future__ import annotations

import itertools

from flux.protocol import body_hash
from flux.store import Incoming

T0 = 1_760_000_000_000
ALICE = "fx1" + "a" * 40
BOB = "fx1" + "b" * 40
CAROL = "fx1" + "c" * 40
SENDER = "fx1" + "5" * 40


class Clock:
    """A clock the test moves by hand (unix ms)."""

    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


_ids = itertools.count(1)


def envelope(**fields) -> dict:
    """A message-shaped dict. The store does not verify signatures, so `sig` is a dummy."""
    n = next(_ids)
    env = {
        "v": "1.0", "id": f"{n:032x}", "from": SENDER, "to": ALICE, "t": T0 + n,
        "content": f"message {n}", "sig": "c2ln", "pub": "cHVi",
    }  # fmt: skip
    env.update(fields)
    return env


def incoming(env: dict, *recipients: str, at: int | None = None, **kw) -> Incoming:
    return Incoming(
        envelope=env, body_hash=body_hash(env), recipients=recipients or (ALICE,),
        received_at=env["t"] if at is None else at, **kw,
    )  # fmt: skip


async def check_migrated_to_step_4(store, root: dict, reply: dict, orphan: dict) -> None:
    """What a store opened on mail stored at step 3 must show (the SQLite and PostgreSQL
    migration tests): the mail keyed by (recipient, sender, id), its tags, changes and
    threads kept, and another sender free to use the same id."""
    from flux.store import ListQuery, StoreOutcome

    got = await store.get(ALICE, root["id"])
    assert dict(got.envelope) == root and got.sender == SENDER and got.tags == ("old",)
    assert [m.id for m in await store.thread(ALICE, reply["id"], SENDER)] == [root["id"], reply["id"]]  # fmt: skip
    assert [m.id for m in await store.thread(ALICE, orphan["id"])] == [orphan["id"]]
    assert [m.id for m in (await store.list(ALICE, ListQuery(tag="old"))).items] == [
        orphan["id"], reply["id"], root["id"]]  # fmt: skip
    assert {c.sender for c in (await store.changes(ALICE, 0, 10)).changes} == {SENDER}
    other = envelope(**{"from": BOB, "id": root["id"]})
    assert await store.store_message(incoming(other, ALICE)) == {ALICE: StoreOutcome.STORED}
    assert (await store.get(ALICE, root["id"], SENDER)).envelope == root
