"""Claiming a name with a key its owner holds (pure; docs/PROTOCOL.md §11.4).

A person who keeps their own key can still have `name@domain`: they sign

    "flux-claim:1:{domain}:{username}:{address}:{t}"

(UTF-8; `t` in unix ms) with that key and send `POST /account/claim {username, address,
pub, t, sig}`. Binding the domain makes a claim for one server useless at another; binding
the username and the address makes it useless for any other pair; `t` within ±5 minutes
(the envelope's own freshness rule) limits a replay to that window, and a replay can only
repeat the same claim. The server never holds this key: the account is `claimed`, has no
password, and its owner authenticates with key-proof sessions (`/auth/session`).
"""

from __future__ import annotations

from ..protocol.encoding import b64d
from ..protocol.envelope import check_freshness, require_address
from ..protocol.errors import AddressMismatch, BadSignature
from ..protocol.identity import address_from_pub, verify_signature
from .names import check_username

__all__ = ["claim_payload", "verify_claim"]


def claim_payload(domain: str, username: str, address: str, t: int) -> str:
    """The string a claimant signs (its UTF-8 bytes)."""
    return f"flux-claim:1:{domain}:{username}:{address}:{t}"


def verify_claim(
    *, domain: str, username: str, address: str, pub: str, t: int, sig: str, now_ms: int
) -> None:
    """Return None if the claim holds; else raise, naming the field: InvalidValue/WrongType
    (shape), AddressMismatch (`pub` is not the address's key), StaleMessage/FutureMessage
    (`t`), BadSignature (`sig`)."""
    check_username(username)
    require_address("address", address)
    pub_raw = b64d(pub, field="pub", length=32)
    sig_raw = b64d(sig, field="sig", length=64)
    if address_from_pub(pub_raw) != address:
        raise AddressMismatch("pub does not hash to address", field="pub")
    check_freshness(t, now_ms)
    payload = claim_payload(domain, username, address, t)
    try:
        verify_signature(pub_raw, payload.encode("utf-8"), sig_raw)
    except BadSignature as exc:
        raise BadSignature(f"sig does not verify over {payload}", field="sig") from exc
