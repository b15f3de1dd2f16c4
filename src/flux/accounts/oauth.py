"""`complete_oauth_login`: the hook a deployment calls after its own OAuth exchange.

FLUX does not speak OAuth itself (each provider has its own flow, secrets and consent
screens, which belong to the deployment). A deployment runs the exchange, learns the
provider's stable subject id for the person, and calls:

    token, account = await complete_oauth_login(accounts, "github", "12345", "Ada Lovelace")

The first call for a (provider, subject) creates a custodial account bound to it: a new
key, sealed under the server's custody key (keys.py: there is no password to seal it
under), its address hosted here, and a username made from `suggested_username` (made
valid, with "-2", "-3"... or a random suffix when taken). Every later call logs in that same
account. Either way the answer is a session token used exactly like a password login's
(`X-Flux-Session`), and the account. The registration policy applies as to any new
account, except that invite mode admits the person: the deployment's own sign-in vouches
for them. Get `accounts` from a running app: `app[PARTS]["accounts"]`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from ..protocol.errors import InvalidValue, WrongType
from .names import MAX_USERNAME, username_from
from .service import Accounts
from .store import Account, Created, OAuthLink

__all__ = ["complete_oauth_login", "username_candidates"]

MAX_LABEL = 256
NUMBERED_TRIES = 9


def _label(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise WrongType(f"{field} must be a string", field=field)
    if not 0 < len(value) <= MAX_LABEL or not value.isprintable():
        raise InvalidValue(f"{field} must be 1-{MAX_LABEL} printable characters", field=field)
    return value


def username_candidates(suggested: str, randbytes: Callable[[int], bytes]) -> Iterator[str]:
    """The valid username closest to `suggested`, then numbered, then randomly suffixed."""
    base = username_from(suggested)
    yield base
    for n in range(2, NUMBERED_TRIES + 2):
        suffix = f"-{n}"
        yield base[: MAX_USERNAME - len(suffix)] + suffix
    while True:
        suffix = "-" + randbytes(4).hex()
        yield base[: MAX_USERNAME - len(suffix)] + suffix


async def complete_oauth_login(
    accounts: Accounts,
    provider: str,
    subject: str,
    suggested_username: str,
    *,
    randbytes: Callable[[int], bytes] = os.urandom,
) -> tuple[str, Account]:
    """Create or log in the account bound to (provider, subject); return (token, account).

    Raises WrongType/InvalidValue (provider, subject), RegistrationClosed (a new account
    on a closed server)."""
    link = OAuthLink(_label(provider, "provider"), _label(subject, "subject"))
    names = username_candidates(suggested_username, randbytes)
    while True:
        account = await accounts.store.linked_account(link)
        if account is not None:
            login = await accounts.oauth_login(account)
            return login.token, login.account
        # LINK_TAKEN (a concurrent first login won) loops back to log in; a taken name
        # tries the next candidate; the random suffixes make the loop end.
        outcome = await accounts.create_oauth_account(next(names), link)
        while outcome is Created.USERNAME_TAKEN:
            outcome = await accounts.create_oauth_account(next(names), link)
