"""Who may register: the server's registration policy, for both kinds of registration (a
key, `POST /register`; an account, `/account/register` and name claims).

`open` admits anyone, `invite` needs a valid invite code, `closed` nobody. Two kinds of
code are accepted:

* the static codes of FLUX_INVITES, each usable once: spent through the main store's
  nonces under the key `invite:{code}`;
* invites the operator makes with `flux admin invite create` (`new_invite`): kept in the
  store as the SHA-256 of the code only (a copy of the database yields no usable code),
  with a number of uses, an expiry and a note; the store spends a use atomically
  (`Store.use_invite`), so racing registrations never get more uses than it has.

Either way one code admits one registration of either kind per use.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable

from ..store.base import Invite, InviteUse, Store
from .errors import BadInvite, RegistrationClosed

__all__ = ["Admission", "code_hash", "new_invite"]

INVITE_TTL_MS = 10 * 365 * 86_400_000  # a spent invite is remembered "for ever"
CODE_PREFIX = "flux-invite-"

#: why a stored invite was refused, in words
REFUSED = {
    InviteUse.UNKNOWN: "registration needs a valid invite code",
    InviteUse.SPENT: "this invite code was already used",
    InviteUse.EXPIRED: "this invite code has expired",
    InviteUse.REVOKED: "this invite code was revoked",
}


def code_hash(code: str) -> str:
    """What the store keeps of an invite code: SHA-256, hex. The code is 128 random bits,
    so a fast hash is enough (nothing to guess from it)."""
    return hashlib.sha256(code.strip().encode()).hexdigest()


def new_invite(
    *, uses: int, expires_at: int | None, note: str, now_ms: int
) -> tuple[Invite, str, str]:
    """A fresh invite: (the invite, its code to give out once, the code's hash to store).
    Raises ValueError for uses < 1."""
    if uses < 1:
        raise ValueError("an invite needs at least one use")
    code = CODE_PREFIX + secrets.token_urlsafe(16)
    invite = Invite(secrets.token_hex(4), uses, uses, expires_at, note, now_ms)
    return invite, code, code_hash(code)


class Admission:
    def __init__(self, policy: str, invites: Iterable[str], nonces: Store) -> None:
        if policy not in ("open", "invite", "closed"):
            raise ValueError(f"unknown registration policy {policy!r}")
        self.policy = str(policy)
        self.invites = frozenset(invites)
        self.nonces = nonces  #: the main store: static codes' nonces and stored invites

    def check_open(self) -> None:
        """Raise RegistrationClosed when nobody may register (checked before any work)."""
        if self.policy == "closed":
            raise RegistrationClosed("registration is closed on this server")

    async def admit(self, invite: str | None, now_ms: int, used_by: str = "") -> None:
        """Admit one registration, spending `invite` in invite mode; `used_by` (the address
        or username registering) is kept with a stored invite's uses.

        Raises RegistrationClosed, BadInvite (missing, unknown, used up, expired or
        revoked)."""
        self.check_open()
        if self.policy == "open":
            return
        if not invite:
            raise BadInvite("registration needs a valid invite code", field="invite")
        if invite in self.invites:
            if not await self.nonces.use_nonce(f"invite:{invite}", now_ms + INVITE_TTL_MS, now_ms):
                raise BadInvite("this invite code was already used", field="invite")
            return
        outcome = await self.nonces.use_invite(code_hash(invite), used_by, now_ms)
        if outcome is not InviteUse.USED:
            raise BadInvite(REFUSED[outcome], field="invite")
