"""`flux.client`: the FLUX library client (HTTP + WebSocket) on aiohttp.

from flux import FluxIdentity, FluxClient

async with FluxClient(FluxIdentity.load("alice.json"), "http://localhost:8765") as c:
    await c.send("fx1…", "Hello Bob", subject="Hi")

    @c.on_message
    async def on_msg(msg):
        print(c.verify(msg).sender, c.decrypt(msg))

    await c.connect_ws()   # until c.close(); reconnects and catches up by itself
"""

from .bindings import KnownBindings
from .client import FluxClient
from .errors import AmbiguousId, BindingChanged, FluxClientError
from .resolve import Recipient, parse_recipient, resolve_name, resolve_url
from .results import Changes, Page, Peek, SendResult, Verified
from .ws import Backoff

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
