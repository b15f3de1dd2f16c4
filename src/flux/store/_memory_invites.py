"""MemoryStore's invites (base.py, `use_invite`): one dict, changed without awaiting in
between, so a use is atomic on the event loop."""

from __future__ import annotations

import dataclasses

from ._sqlite_invites import why_not
from .base import Invite, InviteUse


class MemoryInvites:
    """A mixin of MemoryStore: invites by code hash."""

    @property
    def _invite_table(self) -> dict[str, Invite]:
        return self.__dict__.setdefault("_invites_by_hash", {})

    async def create_invite(self, invite: Invite, code_hash: str) -> None:
        if code_hash in self._invite_table or any(
            i.id == invite.id for i in self._invite_table.values()
        ):
            raise ValueError("an invite with this id or code exists")
        self._invite_table[code_hash] = invite

    async def invites(self) -> list[Invite]:
        return sorted(self._invite_table.values(), key=lambda i: (-i.created_at, i.id))

    async def revoke_invite(self, invite_id: str, now_ms: int) -> bool:
        for code_hash, invite in self._invite_table.items():
            if invite.id == invite_id and invite.revoked_at is None:
                self._invite_table[code_hash] = dataclasses.replace(invite, revoked_at=now_ms)
                return True
        return False

    async def use_invite(self, code_hash: str, used_by: str, now_ms: int) -> InviteUse:
        invite = self._invite_table.get(code_hash)
        if invite is None:
            return InviteUse.UNKNOWN
        expired = invite.expires_at is not None and invite.expires_at <= now_ms
        if invite.uses_left <= 0 or invite.revoked_at is not None or expired:
            return why_not((invite.uses_left, invite.expires_at, invite.revoked_at), now_ms)
        self._invite_table[code_hash] = dataclasses.replace(
            invite, uses_left=invite.uses_left - 1,
            used_by=(*invite.used_by, (used_by, now_ms)),
        )  # fmt: skip
        return InviteUse.USED
