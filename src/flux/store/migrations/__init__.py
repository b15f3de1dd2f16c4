"""Versioned schema migrations, shared by every SQL back end.

Each back end lists its steps as `Migration(version, description, sql)` in its own module
(`sqlite.py`; a `postgres.py` later), numbered 1, 2, 3... with no gaps. A released step is
never edited: a change to the schema is a new step. The database records every applied
step in `schema_version`; opening a store applies the missing steps in order, inside one
transaction, so a crash mid-migration leaves the previous version intact. A database whose
version is higher than the code knows is refused (`SchemaTooNew`) rather than written to
by code that does not understand it.

`plan()` is the back-end-neutral part (what to apply); each back end supplies the runner
that executes statements in its own transaction dialect.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Migration", "SchemaTooNew", "plan", "split_statements"]


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer FLUX; this code must not touch it."""

    def __init__(self, found: int, known: int, where: str) -> None:
        super().__init__(
            f"{where}: database schema version {found} is newer than this FLUX knows "
            f"({known}); upgrade FLUX or open a backup made by this version"
        )
        self.found = found
        self.known = known


@dataclass(frozen=True, slots=True)
class Migration:
    """One step. `backfill`, if given, runs after `sql` in the same transaction, with the
    back end's connection (a coroutine function for PostgreSQL): for data the step must
    compute by rules written in Python, which SQL would only duplicate (step 11's thread
    roots of sent mail)."""

    version: int
    description: str
    sql: str
    backfill: Callable[[Any], Any] | None = None


def check_sequence(steps: Sequence[Migration]) -> None:
    """Steps must be numbered 1..n in order (a programming error otherwise)."""
    for expected, step in enumerate(steps, start=1):
        if step.version != expected:
            raise AssertionError(f"migration {step.version} out of order, expected {expected}")


def plan(current: int, steps: Sequence[Migration], where: str) -> list[Migration]:
    """The steps to apply to a database at `current`. Raises SchemaTooNew."""
    check_sequence(steps)
    latest = steps[-1].version if steps else 0
    if current > latest:
        raise SchemaTooNew(current, latest, where)
    return [s for s in steps if s.version > current]


def split_statements(script: str, complete: Callable[[str], bool]) -> Iterator[str]:
    """Split a script into statements with the back end's own `complete(text) -> bool`
    (sqlite3.complete_statement for SQLite), so semicolons inside strings or triggers do
    not cut a statement in two."""
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if complete(buf):
            if buf.strip():
                yield buf.strip()
            buf = ""
    if buf.strip():
        raise ValueError(f"incomplete SQL statement at end of script: {buf.strip()[:60]!r}")
