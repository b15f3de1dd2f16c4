"""The prototype's shared-secret token (docs/PROTOCOL.md §10.4), for compatibility only.

token = hex SHA-256("flux:" + address + ":" + FLUX_SECRET). Anyone holding the secret can
read any mailbox, so servers accept it only when the operator turns it on.
"""

from __future__ import annotations

import hashlib
import hmac

#: the prototype's fallback secret, published in its source: a server accepting legacy
#: tokens under it lets anyone derive every mailbox's token (PROTOCOL.md §13 item 3)
PUBLISHED_DEFAULT_SECRET = "insecure-default-change-me"


def legacy_token(address: str, secret: str) -> str:
    return hashlib.sha256(f"flux:{address}:{secret}".encode()).hexdigest()


def legacy_token_matches(address: str, secret: str, token: str) -> bool:
    """Constant-time comparison of `token` with the address's derived token."""
    return hmac.compare_digest(
        legacy_token(address, secret).encode(), token.encode("utf-8", "replace")
    )
