"""A private PostgreSQL server for one test: its own data directory, port and socket
directory under a temporary directory, run with the distribution's `initdb` and `pg_ctl`.

Tests that stop and start a database use this, never the machine's shared server. The
binaries are looked for in /usr/lib/postgresql/*/bin (Debian's layout); the server runs as
the `postgres` user (through `runuser` when the tests run as root), which owns every
directory made here. `skip_reason()` says why an instance cannot be had here, if it cannot.

    with private_postgres() as pg:      # initdb + start; stop + remove on exit
        store = PostgresStore(pg.dsn)
        pg.stop(); pg.start()           # a fast shutdown and a restart, same data
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cli.cli_helpers import free_port

PG_USER = "postgres"
PG_CTL_WAIT_S = 60


def bindir() -> Path | None:
    """The newest PostgreSQL server's bin directory, or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in Path(p).parent.name.split(".")],
    )
    found = [p for p in found if (Path(p) / "pg_ctl").exists() and (Path(p) / "initdb").exists()]
    return Path(found[-1]) if found else None


def _postgres_uid() -> tuple[int, int] | None:
    try:
        entry = pwd.getpwnam(PG_USER)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def skip_reason() -> str | None:
    """Why a private instance cannot run here (None if it can)."""
    if bindir() is None:
        return "no PostgreSQL server binaries (initdb, pg_ctl) in /usr/lib/postgresql/*/bin"
    ids = _postgres_uid()
    if ids is None:
        return f"there is no {PG_USER!r} user to run a private PostgreSQL as"
    if os.geteuid() != 0 and os.geteuid() != ids[0]:
        return f"a private PostgreSQL needs root (to become {PG_USER!r}) or the {PG_USER!r} user"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return f"running as root, but there is no runuser to become {PG_USER!r}"
    return None


class PgInstance:
    """One private server. `init()` once, then `start()` / `stop()` as often as wanted;
    `remove()` stops it (if running) and deletes everything it made."""

    def __init__(self) -> None:
        reason = skip_reason()
        if reason is not None:
            raise RuntimeError(reason)
        self.bin = bindir()
        self.root = Path(tempfile.mkdtemp(prefix="flux-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.log = self.root / "postgres.log"
        self.sockets.mkdir()
        uid, gid = _postgres_uid()  # type: ignore[misc]
        for path in (self.root, self.sockets):
            os.chown(path, uid, gid)
        self.port = free_port()
        self.running = False

    @property
    def dsn(self) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", PG_USER, "--", *cmd]
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=PG_CTL_WAIT_S + 30, cwd=self.root,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}\n{log}"
            )

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", PG_USER, "--no-sync",
                  "-E", "UTF8", "--locale=C")  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1"
        # -l: the server's output goes to a file, not to pg_ctl's (captured) stdout, whose
        # pipe the server would otherwise hold open for as long as it runs.
        self.running = True  # even if the wait fails: remove() then stops what did start
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                  "-w", "-t", str(PG_CTL_WAIT_S), "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", str(PG_CTL_WAIT_S),
                  "stop", "-m", mode)  # fmt: skip
        self.running = False

    def remove(self) -> None:
        try:
            if self.running:
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def private_postgres() -> Iterator[PgInstance]:
    """A started private instance, stopped and removed on exit whatever happens."""
    pg = PgInstance()
    try:
        pg.init()
        pg.start()
        yield pg
    finally:
        pg.remove()
