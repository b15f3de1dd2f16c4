"""Reading back what a server stored, for the end-to-end tests (any Store)."""

from __future__ import annotations

from collections.abc import Iterable

from flux.store.base import ListQuery, Store

#: These tests play many clients from one address (a load generator on 127.0.0.1): the
#: per-address submission budget, meant for strangers, would refuse them as one client.
LOAD_GENERATOR_ENV = {
    "FLUX_SUBMIT_PER_IP_PER_MINUTE": "1000000", "FLUX_REQUESTS_PER_ADDRESS_PER_S": "0",
}  # fmt: skip


async def mailbox_ids(store: Store, recipients: Iterable[str]) -> dict[str, list[str]]:
    """recipient -> ids of every message listed in its mailbox (all pages)."""
    out: dict[str, list[str]] = {}
    for rcpt in set(recipients):
        ids: list[str] = []
        cursor = None
        while True:
            page = await store.list(rcpt, ListQuery(limit=500, cursor=cursor))
            ids += [m.id for m in page.items]
            if not (cursor := page.next_cursor):
                break
        out[rcpt] = ids
    return out
