"""Ctrl-C typed at a real terminal (a pty whose line discipline turns ^C into SIGINT for
the foreground process group, as a shell's terminal does) ends `flux watch`, `flux demo`
and `python3 dev.py run` cleanly: exit status 0 or 130, and no traceback."""

from __future__ import annotations

import fcntl
import hashlib
import os
import pty
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import termios
import time
from pathlib import Path

from cli_helpers import WAIT, env, flux, make_key

ROOT = Path(__file__).resolve().parents[2]


class Terminal:
    """A process on its own pty (its controlling terminal); output read as it comes."""

    def __init__(self, argv: list[str], cwd: Path | None = None, **extra_env: str) -> None:
        master, slave = pty.openpty()

        def own_terminal() -> None:  # runs in the child: a session whose terminal is the pty
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd,
            env=env(COLUMNS="100", TERM="xterm", **extra_env), preexec_fn=own_terminal,
        )  # fmt: skip
        os.close(slave)
        self.master = master
        self.output = ""

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return False
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the other side closed
            return False
        self.output += chunk.decode(errors="replace")
        return bool(chunk)

    def wait_for(self, pattern: str) -> None:
        while not re.search(pattern, self.output):
            assert self._read(WAIT), f"no {pattern!r} in:\n{self.output}"

    def ctrl_c(self) -> int:
        os.write(self.master, b"\x03")
        code = self.proc.wait(timeout=WAIT)
        while self._read(0.5):
            pass
        os.close(self.master)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=WAIT)


def _clean_exit(term: Terminal) -> None:
    code = term.ctrl_c()
    assert code in (0, 130), term.output
    assert "Traceback" not in term.output, term.output
    assert "Unclosed" not in term.output, term.output  # asyncio's complaints on stderr


def test_ctrl_c_stops_watch(tmp_path, live_server):
    key = tmp_path / "k.json"
    make_key(key)
    extra = {"FLUX_KEY": str(key), "FLUX_SERVER": live_server,
             "XDG_CONFIG_HOME": str(tmp_path / "cfg")}  # fmt: skip
    assert flux("register", **extra).returncode == 0
    term = Terminal([sys.executable, "-m", "flux", "watch"], **extra)
    try:
        term.wait_for(r"Ctrl-C to stop")
        _clean_exit(term)
    finally:
        term.kill()


def test_ctrl_c_stops_demo(tmp_path):
    term = Terminal([sys.executable, "-m", "flux", "demo"], XDG_CONFIG_HOME=str(tmp_path))
    try:
        term.wait_for(r"Ctrl-C stops the server")
        _clean_exit(term)
    finally:
        term.kill()


def _dev_py_copy(tmp_path: Path) -> None:
    """A copy of the checkout's root whose .venv is this one's (marked installed, so
    nothing is fetched)."""
    shutil.copy(ROOT / "dev.py", tmp_path / "dev.py")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
    (bin_dir / "flux").write_text(f"#!{sys.executable}\nfrom flux.cli import main\nmain()\n")
    (bin_dir / "flux").chmod(0o755)
    digest = hashlib.sha256((tmp_path / "pyproject.toml").read_bytes()).hexdigest()
    (tmp_path / ".venv" / ".flux-installed").write_text(digest)


def test_ctrl_c_stops_dev_py_run(tmp_path):
    """`python3 dev.py run`: the demo, then Ctrl-C."""
    _dev_py_copy(tmp_path)
    term = Terminal([sys.executable, "dev.py", "run"], cwd=tmp_path,
                    XDG_CONFIG_HOME=str(tmp_path))  # fmt: skip
    try:
        term.wait_for(r"Ctrl-C stops the server")
        _clean_exit(term)
    finally:
        term.kill()


def test_sigterm_to_dev_py_alone_stops_the_demo_cleanly(tmp_path):
    """A SIGTERM sent to dev.py only (not its process group) reaches the demo, which stops
    and removes its key files instead of being left running."""
    _dev_py_copy(tmp_path)
    term = Terminal([sys.executable, "dev.py", "run"], cwd=tmp_path,
                    XDG_CONFIG_HOME=str(tmp_path))  # fmt: skip
    try:
        term.wait_for(r"Ctrl-C stops the server")
        key = Path(re.search(r"alice:\s+(\S+\.json)", term.output).group(1))
        assert key.exists()
        term.proc.send_signal(signal.SIGTERM)
        term.proc.wait(timeout=WAIT)
        deadline = time.monotonic() + WAIT
        while key.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not key.exists(), term.output
        assert "Traceback" not in term.output
    finally:
        term.kill()


def test_ctrl_c_during_a_request_that_never_answers(tmp_path):
    """A server that accepts and never answers: Ctrl-C once the request is on the wire."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"127.0.0.1:{silent.getsockname()[1]}"
        term = Terminal([sys.executable, "-m", "flux", "account", "login", "x"],
                        FLUX_SERVER=url, FLUX_PASSWORD="p" * 8,
                        XDG_CONFIG_HOME=str(tmp_path))  # fmt: skip
        try:
            silent.settimeout(WAIT)
            conn, _ = silent.accept()  # the request is under way
            with conn:
                conn.settimeout(WAIT)
                assert conn.recv(4096).startswith(b"POST /account/login")
                _clean_exit(term)
        finally:
            term.kill()
