"""The prototype's `flux.encryption` module, kept for code written against it.

FLUX encrypts while building (`build_message(..., encrypt_for=...)`) so that the signature
covers the ciphertext; `decrypt_message` works on both FLUX's and the prototype's messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .protocol.e2e import decrypt_content
from .protocol.errors import DecryptionError
from .protocol.identity import Identity


def decrypt_message(msg: Mapping[str, Any], identity: Identity) -> str | None:
    """The plaintext, or None when `identity` is not a recipient or decryption fails
    (the prototype's contract). Use `flux.protocol.decrypt_content` to get the reason."""
    try:
        return decrypt_content(msg, identity)
    except DecryptionError:
        return None


def is_encrypted(msg: Mapping[str, Any]) -> bool:
    return bool(msg.get("encrypted"))
