"""`flux.client`: the FLUX library client (HTTP + WebSocket) on aiohttp.

from flux import FluxIdentity, FluxClient

async with FluxClient(FluxIdentity.load("alice.json"), "http://localhost:8765") as c:
    await c.send("fx1…", "Hello Bob", subject="Hi")

    @c.on_message
    async def on_msg(msg):
        print(c.verify(msg).sender, c.decrypt(msg))

    await c.connect_ws()   # until c.close(); reconnects and catches up by itself
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes
from .bindings import KnownBindings
from .errors import AmbiguousId, BindingChanged, FluxClientError
from .results import Changes, Page, Peek, SendResult, Verified

if TYPE_CHECKING:
    from .client import FluxClient
    from .resolve import Recipient, parse_recipient, resolve_name, resolve_url
    from .ws import Backoff

#: the names whose modules import aiohttp: loaded when first used, so the CLI's commands
#: that only need the errors, the bindings or the session cache start without it
_LAZY = {
    "FluxClient": ".client",
    "Backoff": ".ws",
    "Recipient": ".resolve",
    "parse_recipient": ".resolve",
    "resolve_name": ".resolve",
    "resolve_url": ".resolve",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = [
    "AmbiguousId",
    "Backoff",
    "BindingChanged",
    "Changes",
    "FluxClient",
    "FluxClientError",
    "KnownBindings",
    "Page",
    "Peek",
    "Recipient",
    "SendResult",
    "Verified",
    "parse_recipient",
    "resolve_name",
    "resolve_url",
]
