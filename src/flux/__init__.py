"""FLUX: mail where identity is an Ed25519 key, every message is signed, every hop attested.

from flux import FluxIdentity, build_message
alice, bob = FluxIdentity.generate(), FluxIdentity.generate()
msg = build_message(alice, bob.address, "Hello Bob", encrypt_for={bob.address: bob.pub_b64()})

The prototype's names (`verify_message`, `make_app`, `run_server`, and `FluxClient` with its
methods) are here too, from `flux.compat.library`; like the client, they are imported only
when first used, so `import flux` loads no HTTP or server code.
"""

from __future__ import annotations

from typing import Any

from .identity import FluxIdentity
from .protocol import (
    FluxError,
    Outgoing,
    build_message,
    compose,
    verify_envelope,
)

__version__ = "0.1.0"
__all__ = [
    "FluxClient",
    "FluxError",
    "FluxIdentity",
    "Outgoing",
    "__version__",
    "build_message",
    "compose",
    "make_app",
    "run_server",
    "verify_envelope",
    "verify_message",
]

#: the prototype's names that are only a translation (flux/compat/library.py)
_PROTOTYPE_NAMES = frozenset({"make_app", "run_server", "verify_message"})


def __getattr__(name: str) -> Any:
    # The client pulls in the HTTP stack; import it only when asked for.
    if name == "FluxClient":
        from .client import FluxClient

        return FluxClient
    if name in _PROTOTYPE_NAMES:
        from .compat import library

        return getattr(library, name)
    raise AttributeError(f"module 'flux' has no attribute {name!r}")
