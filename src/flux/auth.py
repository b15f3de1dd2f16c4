"""The prototype's `flux.auth`: the shared-secret mailbox token (docs/PROTOCOL.md §10.4).

    token = hex SHA-256("flux:" + address + ":" + secret)

Kept so that code written for the prototype (`from flux.auth import derive_token`) runs
unchanged; the arithmetic is `flux.protocol.tokens`, the same one a FLUX server checks when
its operator turns legacy tokens on. One difference, on purpose (PROTOCOL.md §13 item 3):
the prototype fell back to the published default secret "insecure-default-change-me", which
lets anyone read any mailbox of a server left at it. Here a secret must be given, as an
argument or as FLUX_SECRET in the environment; otherwise `MissingField` naming `secret`.
"""

from __future__ import annotations

import os

from .protocol.errors import MissingField
from .protocol.tokens import legacy_token, legacy_token_matches

__all__ = ["derive_token", "validate_token"]

SECRET_ENV = "FLUX_SECRET"


def _secret(secret: str | None) -> str:
    chosen = secret or os.environ.get(SECRET_ENV)
    if not chosen:
        raise MissingField(
            f"a legacy token needs the server's secret: pass secret= or set {SECRET_ENV} "
            "(FLUX has no default secret, PROTOCOL.md §13)",
            field="secret",
        )
    return chosen


def derive_token(address: str, secret: str | None = None) -> str:
    """The prototype's token for `address` (64 hex characters), from `secret` or
    $FLUX_SECRET. Raises MissingField (`secret`) when neither is set."""
    return legacy_token(address, _secret(secret))


def validate_token(address: str, token: str, secret: str | None = None) -> bool:
    """Whether `token` is `address`'s token under `secret` (constant-time); False for an
    empty address or token, as the prototype's. Raises MissingField as `derive_token`."""
    if not address or not token:
        return False
    return legacy_token_matches(address, _secret(secret), token)
