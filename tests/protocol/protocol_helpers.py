"""Shared fixtures-as-functions for the protocol tests: fixed identities, clocks, randomness.

Plain functions and constants rather than pytest fixtures so that Hypothesis tests can use
them too (function-scoped fixtures and `@given` do not mix). The module name is unique
across `tests/` because the suite uses rootdir-relative imports without packages.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from flux.protocol import (
    LOCAL_DELIVERY,
    ChainVerdict,
    Identity,
    PublishedKey,
    ServerSigner,
    append_hop,
    compose,
    sign_envelope,
)

SEED_PATH = Path(__file__).resolve().parents[1] / "data" / "seed-v1.json"
SEED: dict[str, Any] = json.loads(SEED_PATH.read_text(encoding="utf-8"))

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z, the seed vectors' epoch
MINUTE = 60_000


def identity(label: str) -> Identity:
    """A deterministic identity: the seed is SHA-256 of the label."""
    return Identity(hashlib.sha256(f"flux-test:{label}".encode()).digest())


ALICE = identity("alice")
BOB = identity("bob")
CAROL = identity("carol")
DAVE = identity("dave")
ERIN = identity("erin")
MALLORY = identity("mallory")


def seeded(seed: int) -> Callable[[int], bytes]:
    """A reproducible `randbytes` for the functions that take one."""
    return random.Random(seed).randbytes


def signed(msg: Mapping[str, Any], signer: Identity) -> dict[str, Any]:
    """`msg` re-signed by `signer` after a test changed it (isolates the check under test)."""
    fields = {k: v for k, v in msg.items() if k not in ("sig", "pub")}
    return sign_envelope(fields, signer)


def plain_message(content: str = "Hello Bob", **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("now_ms", NOW)
    kwargs.setdefault("randbytes", seeded(0))
    return compose(ALICE, BOB.address, content, **kwargs).primary


# -- servers ------------------------------------------------------------------------------


def server(name: str) -> ServerSigner:
    return ServerSigner(name, identity(f"server:{name}"))


SERVER_POOL: tuple[ServerSigner, ...] = tuple(server(f"s{i}.example") for i in range(8))
IMPOSTOR_KEY = identity("impostor")


def keyring(signers: Iterable[ServerSigner]) -> Callable[[str], list[PublishedKey]]:
    """A `KeyLookup` under which each signer publishes its own key (and nobody else's)."""
    published = {s.name: [PublishedKey(s.identity.public_key)] for s in signers}
    return lambda name: list(published.get(name, ()))


POOL_KEYS = keyring(SERVER_POOL)


def relay(
    msg: Mapping[str, Any],
    route: list[ServerSigner],
    *,
    start_ms: int = NOW + 1_000,
    final_next: str = LOCAL_DELIVERY,
) -> list[dict[str, Any]]:
    """Pass `msg` honestly along `route`; return the message as handed on after each hop.

    Server k hands on to server k+1; the last one delivers to `final_next`.
    """
    states: list[dict[str, Any]] = []
    current: Mapping[str, Any] = msg
    for k, signer in enumerate(route):
        nxt = route[k + 1].name if k + 1 < len(route) else final_next
        current = append_hop(
            current, signer, next_hop=nxt, now_ms=start_ms + k, cv=ChainVerdict.PASS
        )
        states.append(current)
    return states


def next_of(route: list[ServerSigner], k: int) -> str:
    return route[k + 1].name if k + 1 < len(route) else LOCAL_DELIVERY
