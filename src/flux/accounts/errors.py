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
    "ACCOUNT_ERROR_CLASSES", "AccountError", "AddressTaken", "BadInvite", "LoginFailed",
    "NoSession", "RegistrationClosed", "TooManyAttempts", "UnknownName", "UsernameTaken",
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
    """Too many failed logins for this username from this peer (429)."""

    code = "rate_limited"


class UsernameTaken(AccountError):
    code = "username_taken"  # 409


class AddressTaken(AccountError):
    """The address already has a name on this server (one name per address; 409)."""

    code = "address_taken"


class RegistrationClosed(AccountError):
    code = "registration_closed"  # 403, as for POST /register


class BadInvite(AccountError):
    code = "bad_invite"  # 403, as for POST /register


class UnknownName(AccountError):
    """A `name` recipient with no account here (404, as an unhosted recipient)."""

    code = "unknown_recipient"


ACCOUNT_ERROR_CLASSES: tuple[type[FluxError], ...] = (
    AccountError, NoSession, LoginFailed, TooManyAttempts, UsernameTaken, AddressTaken,
    RegistrationClosed, BadInvite, UnknownName,
)  # fmt: skip
