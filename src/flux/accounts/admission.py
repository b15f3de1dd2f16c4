"""Who may create an account: the server's registration policy, as for `POST /register`.

`open` admits anyone, `invite` needs an unused invite code, `closed` nobody. Invite codes
are spent through the main store's nonces under the same key as `/register` uses
(`invite:{code}`), so one code admits one registration of either kind, once.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..store.base import Store
from .errors import BadInvite, RegistrationClosed

__all__ = ["Admission"]

INVITE_TTL_MS = 10 * 365 * 86_400_000  # a spent invite is remembered "for ever"


class Admission:
    def __init__(self, policy: str, invites: Iterable[str], nonces: Store) -> None:
        if policy not in ("open", "invite", "closed"):
            raise ValueError(f"unknown registration policy {policy!r}")
        self.policy = str(policy)
        self.invites = frozenset(invites)
        self.nonces = nonces

    def check_open(self) -> None:
        """Raise RegistrationClosed when nobody may register (checked before any work)."""
        if self.policy == "closed":
            raise RegistrationClosed("registration is closed on this server")

    async def admit(self, invite: str | None, now_ms: int) -> None:
        """Admit one registration, spending `invite` in invite mode.

        Raises RegistrationClosed, BadInvite (missing, unknown or already used)."""
        self.check_open()
        if self.policy == "open":
            return
        if not invite or invite not in self.invites:
            raise BadInvite("registration needs a valid invite code", field="invite")
        if not await self.nonces.use_nonce(f"invite:{invite}", now_ms + INVITE_TTL_MS, now_ms):
            raise BadInvite("this invite code was already used", field="invite")
