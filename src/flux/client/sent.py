"""Sent mail and delivery state (docs/API.md, "Sent mail"), as functions taking a
FluxClient: what the caller sent, with each recipient's delivery state.

Each item is the envelope as sent plus `_sent_at` (unix ms) and `_delivery`:
`{recipient: {"state": "stored"|"queued"|"delivered"|"bounced", "at": ms, ...}}`, where a
queued recipient also has `attempts`, `next_retry_at` (ms) and `error` (words), and a
bounced one `reason` (words). Raise FluxClientError on a refusal (404 `not_found`: no sent
message with this id; 409 `ambiguous`: a short id naming several).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from .client import FluxClient

__all__ = ["delivery_state", "sent"]


async def sent(
    client: FluxClient, *, limit: int = 50, cursor: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """The caller's sent mail, newest first: (items, the cursor of the next page or None).
    GET /sent/{address}?limit&cursor."""
    address = quote(str(client.identity.address), safe="")
    answer = await client._request(
        "GET", f"/sent/{address}", params={"limit": limit, "cursor": cursor}
    )
    return list(answer["messages"]), answer.get("next_cursor")


async def delivery_state(client: FluxClient, message_id: str) -> dict[str, Any]:
    """One sent message (full id or a short id of 8+ hex digits) with its `_delivery`.
    GET /sent/{address}/{id}."""
    address = quote(str(client.identity.address), safe="")
    answer = await client._request("GET", f"/sent/{address}/{quote(message_id, safe='')}")
    return dict(answer["message"])
