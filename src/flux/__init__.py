"""FLUX: mail where identity is an Ed25519 key, every message is signed, every hop attested.

from flux import FluxIdentity, build_message
alice, bob = FluxIdentity.generate(), FluxIdentity.generate()
msg = build_message(alice, bob.address, "Hello Bob", encrypt_for={bob.address: bob.pub_b64()})

The prototype's names (`verify_message`, `make_app`, `run_server`, and `FluxClient` with its
methods) are here too, from `flux.compat.library`; like the client, they are imported only
when first used, so `import flux` loads no HTTP or server code.
"""

from __future__ import annotations

from ._lazy import lazy_attributes
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

#: loaded when first used: the client pulls in the HTTP stack, and the prototype's names
#: are only a translation (flux/compat/library.py)
__getattr__ = lazy_attributes(__name__, {
    "FluxClient": ".client",
    **dict.fromkeys(("make_app", "run_server", "verify_message"), ".compat.library"),
})  # fmt: skip
