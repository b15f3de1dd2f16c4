"""Federation: how FLUX servers find, authenticate and deliver to each other
(docs/FEDERATION.md). `signing` is pure; the I/O layers build on it."""

from .signing import SignedRequest, sign_request, signature_base, verify_request

__all__ = ["SignedRequest", "sign_request", "signature_base", "verify_request"]
