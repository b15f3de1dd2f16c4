"""Fixtures for running the prototype's own clients against a real FLUX server.

`flux_server` is `python -m flux server --open --legacy-tokens` (SQLite, its own data
directory) with FLUX_SECRET = compat.proto.SECRET, so the prototype's clients derive the
tokens FLUX accepts. One server per test module; every test makes its own identities.
`Interactive` drives a prompting program (the prototype's `test_client.py`) through a
pipe, waiting for each prompt or answer in its output rather than sleeping.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli.cli_helpers import Running
from compat.proto import SECRET, proto_env, require_seed, run_proto, run_proto_script

WAIT = 60.0


@pytest.fixture(scope="module")
def flux_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a FLUX server in the prototype's compatibility setting."""
    require_seed()
    data = tmp_path_factory.mktemp("flux-server")
    server = Running(
        "server", "--host", "127.0.0.1", "--port", "0", "--backend", "sqlite",
        "--data-dir", str(data), "--open", "--legacy-tokens", FLUX_SECRET=SECRET,
    )  # fmt: skip
    try:
        yield server.wait_for(r"FLUX server for \S+ at (http://127\.0\.0\.1:\d+)").group(1)
    finally:
        code = server.interrupt()
        assert code == 0, server.output
        assert "Traceback" not in server.output, server.output


def proto_json(code: str, *args: str) -> Any:
    """Run prototype client code that prints one JSON value last; return that value."""
    done = run_proto(code, *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def proto_identity(path: Path) -> str:
    """A prototype identity saved by its own `main.py keygen --save`; returns its address."""
    done = run_proto_script("main.py", "keygen", "--save", str(path))
    assert done.returncode == 0, done.stderr
    return json.loads(path.read_text())["address"]


class Interactive:
    """A prompting prototype script on a pipe: `expect` waits for text in its output (a
    prompt has no newline, so output is read in chunks, not lines), `line` answers."""

    def __init__(self, script: str, *args: str, cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(require_seed() / script), *args], cwd=cwd,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=proto_env(),
        )  # fmt: skip
        self.output = ""
        self._seen = 0
        self._done = False
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while chunk := os.read(fd, 4096):
            with self._changed:
                self.output += chunk.decode("utf-8", "replace")
                self._changed.notify_all()
        with self._changed:
            self._done = True
            self._changed.notify_all()

    def expect(self, text: str, timeout: float = WAIT) -> str:
        """Wait until `text` appears after what earlier calls consumed; return the output
        up to and including it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while (at := self.output.find(text, self._seen)) < 0:
                left = deadline - time.monotonic()
                if self._done or left <= 0:
                    raise AssertionError(f"no {text!r} in the output:\n{self.output}")
                self._changed.wait(left)
            seen, self._seen = self._seen, at + len(text)
            return self.output[seen : self._seen]

    def line(self, text: str = "") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{text}\n".encode())
        self.proc.stdin.flush()

    def answer(self, prompt: str, text: str = "") -> None:
        self.expect(prompt)
        self.line(text)

    def close(self) -> str:
        """Quit (EOF), wait for the exit, and return the whole output."""
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=WAIT)
        with self._changed:
            while not self._done:
                self._changed.wait(WAIT)
        return self.output
