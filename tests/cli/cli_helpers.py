"""Running `python -m flux …` as a user would: processes of their own, output read line by
line (with timeouts, never sleeps).

`flux(...)` forks each command from a process that has done the imports already
(forkserver.py: a process per command all the same, at a tenth of the cost);
`flux_process(...)` and `Running` start a new interpreter, for the tests whose subject
includes the interpreter's start-up, and for servers."""

from __future__ import annotations

import atexit
import json
import locale
import os
import queue
import random
import re
import shutil
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
    """`python -m flux ARGS` in a process of its own, forked from the fork server; what
    `subprocess.run(..., capture_output=True, text=True)` would return, stdin /dev/null
    unless `stdin` is given."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        _input(stdin) as source,
    ):
        proc = Forked(list(args), env(**extra_env), source.fileno(), out.fileno(), err.fileno())
        try:
            code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=WAIT)
            raise
        return subprocess.CompletedProcess(proc.args, code, _text(out), _text(err))


def flux_process(*args: str, stdin: str | None = None, **extra_env: str) -> subprocess.CompletedProcess:
    """`python -m flux ARGS` in a new interpreter: for a test of what happens from its start."""
    return subprocess.run(
        [sys.executable, "-m", "flux", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env(**extra_env),
        timeout=120,
    )


def _input(text: str | None):
    if text is None:
        return open(os.devnull, "rb")
    source = tempfile.TemporaryFile()  # noqa: SIM115  (the caller's `with` closes it)
    source.write(text.encode(locale.getencoding()))
    source.seek(0)
    return source


def _text(file) -> str:
    """A captured output as subprocess's text mode reads it (locale encoding, universal
    newlines)."""
    file.seek(0)
    text = file.read().decode(locale.getencoding())
    return text.replace("\r\n", "\n").replace("\r", "\n")


FORKSERVER = Path(__file__).with_name("forkserver.py")


class _ForkServer:
    """This test process's forkserver.py, started on first use; it ends with us (its stdin,
    a pipe from us, closes)."""

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="flux-forkserver-")
        self.path = os.path.join(self.directory, "socket")
        self.proc = subprocess.Popen([sys.executable, str(FORKSERVER), self.path],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=env())  # fmt: skip
        assert self.proc.stdout is not None
        if (line := self.proc.stdout.readline()) != "ready\n":
            raise RuntimeError(f"the fork server did not start: {line!r}")
        atexit.register(self.close)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=WAIT)
        shutil.rmtree(self.directory, ignore_errors=True)


_fork_server: list[_ForkServer] = []


class Forked:
    """A `flux` command forked by the fork server: the part of subprocess.Popen's interface
    the tests use (pid, args, wait, poll, send_signal, kill, returncode). `stdin`, `stdout`
    and `stderr` are file descriptors the command gets as 0, 1 and 2 (the caller keeps and
    closes its own)."""

    def __init__(self, argv: list[str], environ: dict[str, str], stdin: int, stdout: int,
                 stderr: int) -> None:  # fmt: skip
        if not _fork_server:
            _fork_server.append(_ForkServer())
        self.args = ["flux", *argv]
        self.returncode: int | None = None
        server = _fork_server[0]
        self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._conn.connect(server.path)
        except OSError as exc:  # it died: its traceback is on this process's stderr
            status = server.proc.poll()
            raise RuntimeError(f"the fork server is gone (exit status {status}): {exc}") from exc
        request = {"argv": argv, "env": environ, "cwd": os.getcwd()}
        socket.send_fds(self._conn, [json.dumps(request).encode()], [stdin, stdout, stderr])
        self.pid: int = self._receive(WAIT)["pid"]

    def _receive(self, timeout: float | None) -> dict:
        self._conn.settimeout(timeout)
        if not (data := self._conn.recv(4096)):
            raise RuntimeError(f"the fork server's handler of {self.args} ended without an answer")
        return json.loads(data)

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            try:
                self.returncode = self._receive(timeout)["status"]
            except (TimeoutError, BlockingIOError):
                raise subprocess.TimeoutExpired(self.args, timeout or 0) from None
            self._conn.close()
        return self.returncode

    def poll(self) -> int | None:
        try:
            return self.wait(timeout=0)
        except subprocess.TimeoutExpired:
            return None

    def send_signal(self, number: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, number)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


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
    """A long-running `flux` process whose merged output is read by a thread: a new
    interpreter, or with `forked=True` a fork of the fork server (for a server that is
    only the setting of a test, not its subject)."""

    def __init__(self, *args: str, forked: bool = False, **extra_env: str) -> None:
        self.proc: subprocess.Popen | Forked
        if forked:
            reading, writing = os.pipe()
            with open(os.devnull, "rb") as nothing:
                self.proc = Forked(list(args), env(**extra_env), nothing.fileno(), writing, writing)
            os.close(writing)
            self._stdout = open(reading, encoding=locale.getencoding())  # noqa: SIM115
        else:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "flux", *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env(**extra_env),
            )
            assert self.proc.stdout is not None
            self._stdout = self.proc.stdout
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        with self._stdout:
            for line in self._stdout:
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
