"""The FLUX error tree (docs/PROTOCOL.md §9).

Every failure the protocol can name is a subclass of `FluxError` with a stable `code`.
The wire layers (HTTP, WebSocket) map codes to statuses in exactly one table
(`flux.server.errors`); a test checks that every class here has its row. Errors carry the
`field` they concern, so a client is told *which* field was wrong and *why*.
"""

from __future__ import annotations

__all__ = [
    "AddressMismatch", "BadRequestSignature", "BadSignature", "ChainError", "DecryptionError", "FluxError",
    "FutureMessage", "InvalidInput", "InvalidProof", "InvalidValue", "KeyFileError",
    "MalformedJSON", "MissingField", "NotARecipient", "StaleMessage", "TooLarge",
    "UnknownServerKey", "UnknownVersion", "VerificationError", "WrongType",
    "all_error_classes",
]  # fmt: skip


class FluxError(Exception):
    """Base of every FLUX error. `code` is stable and part of the protocol."""

    code = "flux_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, str]:
        out = {"code": self.code, "error": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out


# -- shape of an input (§9.1) -------------------------------------------------------------


class InvalidInput(FluxError):
    """Input that is not the shape the protocol requires."""

    code = "invalid_input"


class MalformedJSON(InvalidInput):
    """Not JSON, duplicate keys, NaN, floats, or integers beyond ±(2^53-1)."""

    code = "malformed_json"


class MissingField(InvalidInput):
    code = "missing_field"


class WrongType(InvalidInput):
    code = "wrong_type"


class InvalidValue(InvalidInput):
    """A field of the right type whose value is not allowed (bad address, bad base64...)."""

    code = "invalid_value"


class UnknownVersion(InvalidInput):
    code = "unknown_version"


class TooLarge(InvalidInput):
    """Content over 65,536 bytes, too many recipients, tags or fields."""

    code = "too_large"


# -- authenticity (§9.2) ------------------------------------------------------------------


class VerificationError(FluxError):
    """A signature or binding that does not hold."""

    code = "verification_failed"


class AddressMismatch(VerificationError):
    """`pub` does not hash to `from`."""

    code = "address_mismatch"


class BadSignature(VerificationError):
    code = "bad_signature"


class StaleMessage(VerificationError):
    """`t` is further than the allowed clock skew in the past."""

    code = "stale"


class FutureMessage(VerificationError):
    """`t` is further than the allowed clock skew in the future."""

    code = "future"


class ChainError(VerificationError):
    """The integrity chain does not verify (see `chain.ChainCheck` for the hop and reason)."""

    code = "chain_invalid"


class InvalidProof(VerificationError):
    """A tamper report whose proof does not establish what it claims."""

    code = "invalid_proof"


class BadRequestSignature(VerificationError):
    """A server-to-server request whose signature (docs/FEDERATION.md) does not hold."""

    code = "bad_request_signature"


class UnknownServerKey(VerificationError):
    """A server signature under a key that server does not publish (or not at that time)."""

    code = "unknown_server_key"


# -- confidentiality (§9.3) ---------------------------------------------------------------


class DecryptionError(FluxError):
    """Decryption failed. Deliberately says nothing of which step failed."""

    code = "decryption_failed"


class NotARecipient(DecryptionError):
    code = "not_a_recipient"


class KeyFileError(FluxError):
    """A key file that cannot be read (bad JSON, wrong passphrase, mismatched address)."""

    code = "bad_key_file"


def all_error_classes() -> list[type[FluxError]]:
    """Every error class defined here (the wire table is tested against this list)."""
    seen: list[type[FluxError]] = []
    stack: list[type[FluxError]] = [FluxError]
    while stack:
        cls = stack.pop()
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    return seen
