"""The SQL of PostgresStore's invites (base.py, `use_invite`; schema step 10).

Spending a use is one conditional UPDATE: PostgreSQL locks the row, and a concurrent
UPDATE of it waits, then re-checks `uses_left > 0` against the committed row (READ
COMMITTED), so of several registrations racing for the last use exactly one succeeds.
"""

from __future__ import annotations

import asyncpg

from ._postgres_ops import rowcount
from ._sqlite_invites import why_not
from .base import Invite, InviteUse

COLUMNS = "id, max_uses, uses_left, expires_at, note, created_at, revoked_at"


async def create_invite(conn: asyncpg.Connection, invite: Invite, code_hash: str) -> None:
    await conn.execute(
        f"INSERT INTO invites ({COLUMNS}, code_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        invite.id, invite.max_uses, invite.uses_left, invite.expires_at, invite.note,
        invite.created_at, invite.revoked_at, code_hash,
    )  # fmt: skip


async def invites(conn: asyncpg.Connection) -> list[Invite]:
    uses: dict[str, list[tuple[str, int]]] = {}
    for invite_id, who, at in await conn.fetch(
        "SELECT invite_id, used_by, used_at FROM invite_uses ORDER BY used_at, n"
    ):
        uses.setdefault(invite_id, []).append((who, at))
    rows = await conn.fetch(
        f'SELECT {COLUMNS} FROM invites ORDER BY created_at DESC, id COLLATE "C"'
    )
    return [Invite(*row, used_by=tuple(uses.get(row[0], ()))) for row in rows]


async def revoke_invite(conn: asyncpg.Connection, invite_id: str, now: int) -> bool:
    status = await conn.execute(
        "UPDATE invites SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL", now, invite_id
    )
    return rowcount(status) == 1


async def use_invite(conn: asyncpg.Connection, code_hash: str, used_by: str, now: int) -> InviteUse:
    invite_id = await conn.fetchval(
        """UPDATE invites SET uses_left = uses_left - 1
           WHERE code_hash = $1 AND uses_left > 0 AND revoked_at IS NULL
             AND (expires_at IS NULL OR expires_at > $2)
           RETURNING id""",
        code_hash, now,
    )  # fmt: skip
    if invite_id is not None:
        await conn.execute(
            "INSERT INTO invite_uses (invite_id, used_by, used_at) VALUES ($1, $2, $3)",
            invite_id, used_by, now,
        )  # fmt: skip
        return InviteUse.USED
    row = await conn.fetchrow(
        "SELECT uses_left, expires_at, revoked_at FROM invites WHERE code_hash = $1", code_hash
    )
    return why_not(None if row is None else tuple(row), now)
