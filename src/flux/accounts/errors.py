"""The account system's refusals, as `FluxError`s with stable codes.

They live here, not in `flux.server.errors`, because `flux.accounts` sits below the server
and must not import it. Where a refusal means what a server error already means (no valid
session, registration closed, a bad invite, a recipient not hosted) the class reuses that
code, so the one table in `flux.server.errors` maps both alike; the new codes have rows
there too (tests/accounts/test_account_errors.py checks every class here has one).
"""

from __future__ import annotations

from ..protocol.errors import FluxError

__all__ = [
    "ACCOUNT_ERROR_CLASSES", "AccountDisabled", "AccountError", "AddressTaken", "BadInvite",
    "KdfBusy", "LoginFailed", "NoSession", "RegistrationClosed", "TooManyAttempts", "UnknownName", "UsernameTaken",
]  # fmt: skip


class AccountError(FluxError):
    """Base of the account system's refusals."""

    code = "account_error"


class NoSession(AccountError):
    """No X-Flux-Session header, or one that is unknown, expired or revoked (401)."""

    code = "unauthorized"


class LoginFailed(AccountError):
    """Unknown username or wrong password: one class and one message for both, on purpose,
    so an answer does not tell which usernames exist (401)."""

    code = "login_failed"


class TooManyAttempts(AccountError):
    """Too many failed logins for this username, from this address or in all (429, with
    Retry-After)."""

    code = "rate_limited"

    def __init__(self, message: str, *, field: str | None = None, retry_after_s: int = 1) -> None:
        super().__init__(message, field=field)
        self.retry_after_s = retry_after_s


class KdfBusy(AccountError):
    """Password work is queued past its bound (accounts/kdf.py): 503, with Retry-After."""

    code = "unavailable"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UsernameTaken(AccountError):
    code = "username_taken"  # 409


class AddressTaken(AccountError):
    """The address already has a name on this server (one name per address; 409)."""

    code = "address_taken"


class RegistrationClosed(AccountError):
    code = "registration_closed"  # 403, as for POST /register


class BadInvite(AccountError):
    code = "bad_invite"  # 403, as for POST /register


class AccountDisabled(AccountError):
    """The server's operator disabled this account (`flux admin accounts disable`): told
    only to someone who gave its right password, so it reveals nothing to others (403)."""

    code = "account_disabled"


class UnknownName(AccountError):
    """A `name` recipient with no account here (404, as an unhosted recipient)."""

    code = "unknown_recipient"


ACCOUNT_ERROR_CLASSES: tuple[type[FluxError], ...] = (
    AccountError, NoSession, LoginFailed, TooManyAttempts, UsernameTaken, AddressTaken,
    RegistrationClosed, BadInvite, UnknownName, KdfBusy, AccountDisabled,
)  # fmt: skip
