"""Stored invites, part of the Store contract (base.py `create_invite`, `invites`,
`revoke_invite`, `use_invite`), run against every implementation through the `store`
fixture of conftest.py."""

from __future__ import annotations

import asyncio

from store_helpers import T0

from flux.accounts.admission import new_invite
from flux.store.base import InviteUse


async def test_an_invite_is_used_up_then_refused(store):
    invite, code, code_hash = new_invite(uses=2, expires_at=None, note="team", now_ms=T0)
    assert code not in code_hash and len(code_hash) == 64
    await store.create_invite(invite, code_hash)
    assert await store.use_invite(code_hash, "alice", T0 + 1) is InviteUse.USED
    assert await store.use_invite(code_hash, "bob", T0 + 2) is InviteUse.USED
    assert await store.use_invite(code_hash, "carol", T0 + 3) is InviteUse.SPENT
    (listed,) = await store.invites()
    assert (listed.id, listed.max_uses, listed.uses_left, listed.note) == (invite.id, 2, 0, "team")
    assert listed.used_by == (("alice", T0 + 1), ("bob", T0 + 2))


async def test_unknown_expired_and_revoked_invites_are_refused_by_reason(store):
    assert await store.use_invite("0" * 64, "x", T0) is InviteUse.UNKNOWN
    late, _, late_hash = new_invite(uses=1, expires_at=T0 + 10, note="", now_ms=T0)
    await store.create_invite(late, late_hash)
    assert await store.use_invite(late_hash, "x", T0 + 10) is InviteUse.EXPIRED
    gone, _, gone_hash = new_invite(uses=1, expires_at=None, note="", now_ms=T0 + 1)
    await store.create_invite(gone, gone_hash)
    assert await store.revoke_invite(gone.id, T0 + 2)
    assert not await store.revoke_invite(gone.id, T0 + 3)  # once
    assert not await store.revoke_invite("nope", T0 + 3)
    assert await store.use_invite(gone_hash, "x", T0 + 4) is InviteUse.REVOKED
    listed = {i.id: i for i in await store.invites()}
    assert listed[gone.id].revoked_at == T0 + 2 and listed[late.id].uses_left == 1
    assert [i.id for i in await store.invites()] == [gone.id, late.id]  # newest first


async def test_a_single_use_invite_admits_one_of_many_racing_registrations(store):
    invite, _, code_hash = new_invite(uses=1, expires_at=None, note="", now_ms=T0)
    await store.create_invite(invite, code_hash)
    outcomes = await asyncio.gather(
        *(store.use_invite(code_hash, f"user{i}", T0 + 1) for i in range(12))
    )
    assert outcomes.count(InviteUse.USED) == 1
    assert outcomes.count(InviteUse.SPENT) == 11
    (listed,) = await store.invites()
    assert listed.uses_left == 0 and len(listed.used_by) == 1
