"""Transaction-scoped advisory locks of PostgresStore, on mailboxes and message bodies.

Why they exist and what they guarantee is in postgres.py ("Concurrency").
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True, slots=True)
class Locks:
    """Transaction-scoped advisory locks on mailboxes and message bodies.

    Advisory locks are per database, so keys are hashed together with `scope` (the
    schema) to keep two schemas of one database from waiting on each other. Every
    transaction takes all of its locks in one statement, in key order, before touching a
    row: two transactions can therefore never wait on each other in a cycle. A hash
    collision only makes two unrelated mailboxes take turns.
    """

    scope: str

    def key(self, kind: str, name: str) -> int:
        raw = f"{self.scope}\0{kind}\0{name}".encode()
        return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big", signed=True)

    def keys(self, mailboxes: Iterable[str] = (), bodies: Iterable[str] = ()) -> list[int]:
        """The lock keys of `mailboxes` and `bodies`, in the order they are taken."""
        keys = {self.key("mailbox", a) for a in mailboxes} | {self.key("body", b) for b in bodies}
        return sorted(keys)

    async def take(
        self, conn: asyncpg.Connection, mailboxes: Iterable[str] = (), bodies: Iterable[str] = ()
    ) -> None:
        keys = self.keys(mailboxes, bodies)
        if keys:
            # unnest yields the array in order, so the locks are taken in key order.
            sql = "SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k"
            await conn.execute(sql, keys)


async def scope_of(conn: asyncpg.Connection, schema: str | None) -> str:
    """The lock (and push channel) scope of a deployment: the schema its tables live in,
    whether named to the store or by the URL's search_path, so two deployments in two
    schemas of one database never share a lock or a channel. `public` keeps the scope ""
    that every deployment used before (a rolling upgrade of one keeps its keys)."""
    name = schema or await conn.fetchval("SELECT current_schema()") or ""
    return "" if name == "public" else name
