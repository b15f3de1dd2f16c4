"""The prototype's `flux.message` module path: `build_message` and `verify_message`.

Code written for the prototype (levkris/flux-protocol 2.1.1) imports them from here; FLUX's
own code imports `flux.protocol`. See flux.compat.library and docs/API.md.
"""

from .compat.library import verify_message
from .protocol import build_message

__all__ = ["build_message", "verify_message"]
