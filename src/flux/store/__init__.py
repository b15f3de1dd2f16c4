"""FLUX storage: the `Store` protocol and its implementations (see base.py for the rules).

store = open_store("memory:")              # MemoryStore, for tests
store = open_store("/var/lib/flux/flux.db") # SQLiteStore (also "sqlite:///abs/path")
store = open_store("postgresql://db/flux")  # PostgresStore
await store.open()

`PostgresStore` is importable from here, but lazily: asyncpg is loaded only when it is
first used, never by a server on SQLite.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from . import _rules
from .base import (
    MAX_PAGE,
    STATUS_ORDER,
    AmbiguousMessage,
    Change,
    ChangeKind,
    Changes,
    HostedAddress,
    Incoming,
    ListQuery,
    MessageRef,
    MessageStatus,
    Page,
    Session,
    Store,
    StoredMessage,
    StoreOutcome,
    StoreUnavailable,
    Strike,
)
from .memory import MemoryStore
from .migrations import SchemaTooNew
from .sqlite import SQLiteStore

__all__ = [
    "MAX_PAGE", "STATUS_ORDER", "AmbiguousMessage", "Change", "ChangeKind", "Changes", "HostedAddress",
    "Incoming", "ListQuery", "MemoryStore", "MessageRef", "MessageStatus", "Page", "SQLiteStore",
    "SchemaTooNew", "Session", "Store", "StoreOutcome", "StoreUnavailable", "StoredMessage", "Strike",
    "open_store",
]  # fmt: skip


#: names served by `__getattr__` below, from flux.store.postgres (which imports asyncpg)
_POSTGRES_NAMES = ("PostgresStore", "DatabaseUnavailable")


def __getattr__(name: str) -> object:
    if name in _POSTGRES_NAMES:
        from . import postgres

        return getattr(postgres, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_store(url: str | Path, *, clock: Callable[[], int] = _rules.wall_clock_ms) -> Store:
    """A store (not yet opened: `await store.open()`) for `url`.

    "memory:" → MemoryStore; "sqlite:///abs/path", "sqlite://rel/path" or a plain path →
    SQLiteStore; "postgresql://…" (or "postgres://…") → PostgresStore. Raises ValueError
    for another scheme.
    """
    text = str(url)
    if text in ("memory:", "memory://", ":memory:"):
        return MemoryStore(clock=clock)
    if text.startswith("sqlite://"):
        return SQLiteStore(text.removeprefix("sqlite://"), clock=clock)
    if text.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        return PostgresStore(text, clock=clock)
    if "://" in text:
        raise ValueError(f"no store for {text.split('://')[0]!r} URLs")
    return SQLiteStore(text, clock=clock)
