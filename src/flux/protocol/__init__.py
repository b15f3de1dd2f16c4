"""`flux.protocol`: the FLUX v1.0 protocol as code, with no I/O (docs/PROTOCOL.md).

No network, storage, server or clock access: keys, the time (`now_ms`) and randomness
(`randbytes`) are arguments, and server keys come from a lookup callable. Everything else in
FLUX imports this package; it imports nothing of the rest.
"""

from .canonical import canonical_bytes, canonical_json, loads_strict
from .chain import (
    LOCAL_DELIVERY,
    ChainCheck,
    ChainVerdict,
    HopCheck,
    HopStatus,
    KeyLookup,
    PublishedKey,
    ServerSigner,
    append_hop,
    make_hop,
    record_hash,
    sealed_servers_in_chain,
    servers_in_chain,
    verify_chain,
)
from .e2e import decrypt_content, encrypt_content
from .encoding import b64d, b64e
from .envelope import (
    Envelope,
    body_hash,
    check_freshness,
    check_shape,
    for_storage,
    integrity_hash,
    sign_envelope,
    signing_payload,
    verify_envelope,
)
from .errors import *  # noqa: F403 - the error tree is part of the surface
from .errors import __all__ as _error_names
from .identity import Identity, address_from_pub, is_address, verify_signature
from .limits import VERSION
from .outgoing import Outgoing, build_message, compose, new_message_id
from .spam import RateLimiter, SpamVerdict, check_spam
from .tamper import (
    Offense,
    OffenseKind,
    build_report,
    find_offense,
    run_key_flow,
    validate_report,
    validate_report_flow,
)
from .tokens import legacy_token, legacy_token_matches

__all__ = [
    "LOCAL_DELIVERY", "VERSION", "ChainCheck", "ChainVerdict", "Envelope", "HopCheck",
    "HopStatus", "Identity", "KeyLookup", "Offense", "OffenseKind", "Outgoing", "PublishedKey",
    "RateLimiter", "ServerSigner", "SpamVerdict", "address_from_pub", "append_hop", "b64d",
    "b64e", "body_hash", "build_message", "build_report", "canonical_bytes", "canonical_json",
    "check_freshness", "check_shape", "check_spam", "compose", "decrypt_content",
    "encrypt_content", "find_offense", "for_storage", "integrity_hash", "is_address",
    "legacy_token", "legacy_token_matches", "loads_strict", "make_hop", "new_message_id",
    "record_hash", "run_key_flow", "sealed_servers_in_chain", "servers_in_chain",
    "sign_envelope", "signing_payload", "validate_report", "validate_report_flow", "verify_chain", "verify_envelope",
    "verify_signature", *_error_names,
]  # fmt: skip
