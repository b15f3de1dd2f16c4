"""The SQL of SQLiteStore's invites (base.py, `use_invite`; schema step 10).

Every write runs on the writer thread in one transaction, so the conditional UPDATE that
spends a use cannot interleave with another registration's: single use holds across every
process sharing the file (SQLite serialises its writers).
"""

from __future__ import annotations

import sqlite3

from .base import Invite, InviteUse

COLUMNS = "id, max_uses, uses_left, expires_at, note, created_at, revoked_at"


def create_invite(conn: sqlite3.Connection, invite: Invite, code_hash: str) -> None:
    conn.execute(
        f"INSERT INTO invites ({COLUMNS}, code_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (invite.id, invite.max_uses, invite.uses_left, invite.expires_at, invite.note,
         invite.created_at, invite.revoked_at, code_hash),
    )  # fmt: skip


def invites(conn: sqlite3.Connection) -> list[Invite]:
    uses: dict[str, list[tuple[str, int]]] = {}
    for invite_id, who, at in conn.execute(
        "SELECT invite_id, used_by, used_at FROM invite_uses ORDER BY used_at, rowid"
    ):
        uses.setdefault(invite_id, []).append((who, at))
    rows = conn.execute(f"SELECT {COLUMNS} FROM invites ORDER BY created_at DESC, id").fetchall()
    return [Invite(*row, used_by=tuple(uses.get(row[0], ()))) for row in rows]


def revoke_invite(conn: sqlite3.Connection, invite_id: str, now: int) -> bool:
    cur = conn.execute(
        "UPDATE invites SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now, invite_id)
    )
    return cur.rowcount == 1


def use_invite(conn: sqlite3.Connection, code_hash: str, used_by: str, now: int) -> InviteUse:
    cur = conn.execute(
        """UPDATE invites SET uses_left = uses_left - 1
           WHERE code_hash = ? AND uses_left > 0 AND revoked_at IS NULL
             AND (expires_at IS NULL OR expires_at > ?)""",
        (code_hash, now),
    )
    if cur.rowcount == 1:
        conn.execute(
            """INSERT INTO invite_uses (invite_id, used_by, used_at)
               SELECT id, ?, ? FROM invites WHERE code_hash = ?""",
            (used_by, now, code_hash),
        )
        return InviteUse.USED
    row = conn.execute(
        "SELECT uses_left, expires_at, revoked_at FROM invites WHERE code_hash = ?", (code_hash,)
    ).fetchone()
    return why_not(row, now)


def why_not(row: tuple | None, now: int) -> InviteUse:
    """Why an invite could not be used (the same order of reasons in every store)."""
    if row is None:
        return InviteUse.UNKNOWN
    _uses_left, expires_at, revoked_at = row
    if revoked_at is not None:
        return InviteUse.REVOKED
    if expires_at is not None and expires_at <= now:
        return InviteUse.EXPIRED
    return InviteUse.SPENT
