"""Running `python -m flux …` as a user would: real processes, output read line by line
(with timeouts, never sleeps)."""

from __future__ import annotations

import os
import queue
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from flux.identity import FluxIdentity

WAIT = 30.0
# XDG_CONFIG_HOME: the CLI caches sessions there; never the real ~/.config of whoever runs us
ENV = {
    "COLUMNS": "200", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1", "TERM": "dumb",
    "XDG_CONFIG_HOME": tempfile.mkdtemp(prefix="flux-cli-tests-"),
}  # fmt: skip


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLUX_")}
    return {**base, **ENV, **extra}


def flux(*args: str, stdin: str | None = None, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flux", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env(**extra_env),
        timeout=120,
    )


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on, for a server that must know its name before
    it starts. Picked below the kernel's ephemeral range: a port from that range can be
    taken by any outgoing connection between this check and the server's bind (EADDRINUSE:
    the whole kind of flaky start this avoids)."""
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(10_000, low) if low > 10_100 else 0
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise OSError("no free port below the ephemeral range")


class Running:
    """A long-running `flux` process whose merged output is read by a thread."""

    def __init__(self, *args: str, **extra_env: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flux", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env(**extra_env),
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float = WAIT) -> re.Match[str]:
        """The first new output line matching `pattern`; fails on timeout or exit."""
        regex = re.compile(pattern)
        while True:
            try:
                line = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r}; got {self.lines}") from None
            if line is None:
                raise AssertionError(f"process ended before {pattern!r}; got {self.lines}")
            self.lines.append(line)
            if match := regex.search(line):
                return match

    def interrupt(self, timeout: float = WAIT) -> int:
        """Ctrl-C, then the exit status; the rest of the output is collected."""
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=timeout)
        while (line := self._queue.get(timeout=timeout)) is not None:
            self.lines.append(line)
        return code

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=WAIT)


def make_key(path: Path) -> str:
    """A key file at `path`, as `flux keygen --save` writes it (FluxIdentity.save: mode
    0600); returns its address. Made in this process: the tests that use it are about the
    commands that read the key, and a `flux keygen` process for each of some fifty keys
    cost ~0.4 s apiece; `flux keygen` itself is tested in test_offline.py."""
    identity = FluxIdentity.generate()
    identity.save(path)
    return identity.address


def registered_keys(tmp_path: Path, env: dict[str, str], *names: str) -> list[tuple[Path, str]]:
    """A key file `tmp_path/<name>.json` per name, each registered on `env`'s server:
    [(path, address)] in the order given."""
    keys = []
    for name in names:
        path = tmp_path / f"{name}.json"
        address = make_key(path)
        assert flux("register", "--key", str(path), **env).returncode == 0
        keys.append((path, address))
    return keys


def user_env(tmp_path: Path, server: str, name: str = "cfg", **extra: str) -> dict[str, str]:
    """A CLI user of `server` whose config (saved sessions, contacts) is `tmp_path/name`."""
    return {"FLUX_SERVER": server, "XDG_CONFIG_HOME": str(tmp_path / name), **extra}


def live_account_sessions(tmp_path: Path) -> int:
    """Live account sessions in the `live_server` fixture's accounts database."""
    with sqlite3.connect(tmp_path / "server" / "accounts.db") as db:
        return db.execute("SELECT COUNT(*) FROM account_sessions WHERE NOT revoked").fetchone()[0]


def one_line_failure(result: subprocess.CompletedProcess, *words: str) -> None:
    """Exit 1 with exactly one line on stderr, no traceback, naming each of `words`."""
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
