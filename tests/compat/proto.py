"""The prototype (levkris/flux-protocol 2.1.1) run for real, from `../shared/seed-prototype/`.

Its package is also called `flux`, so its code never runs in this process: `run_proto`
runs a snippet of the prototype's own client code in a child Python whose path starts at
the seed, and `ProtoServer` runs its `main.py server` in a temporary working directory
(where it looks for `mesh.config.json` and keeps its account database).

CI has `../shared`; there a missing seed fails these tests instead of skipping them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cli.cli_helpers import free_port

SEED = Path(__file__).resolve().parents[3] / "shared" / "seed-prototype"
#: the secret both sides derive legacy tokens from (`--legacy-tokens` on FLUX's side)
SECRET = "compat-test-secret"
WAIT = 30.0


def require_seed() -> Path:
    """The seed's directory; skips outside CI when it is absent, fails in CI."""
    if not (SEED / "main.py").exists():
        if os.environ.get("CI"):
            pytest.fail(f"the prototype's source is missing at {SEED}")
        pytest.skip(f"the prototype's source is not at {SEED}")
    return SEED


def proto_env(**extra: str) -> dict[str, str]:
    """The environment of a prototype process: its package first on the path, our secret."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLUX_")}
    return {
        **base, "PYTHONPATH": str(require_seed()), "FLUX_SECRET": SECRET,
        "PYTHONUNBUFFERED": "1", **extra,
    }  # fmt: skip


def run_proto(
    code: str, *args: str, stdin: str | None = None, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    """Run `code` (a Python snippet using the prototype's `flux` package) to completion."""
    return subprocess.run(
        [sys.executable, "-c", code, *args], input=stdin, capture_output=True, text=True,
        env=proto_env(), cwd=cwd or require_seed(), timeout=timeout,
    )  # fmt: skip


def run_proto_script(
    script: str,
    *args: str,
    stdin: str | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess:
    """Run one of the seed's scripts (`main.py`, `test_client.py`) to completion."""
    return subprocess.run(
        [sys.executable, str(require_seed() / script), *args], input=stdin,
        capture_output=True, text=True, env=proto_env(), cwd=cwd or require_seed(),
        timeout=timeout,
    )  # fmt: skip


class ProtoServer:
    """`python main.py server` of the prototype on 127.0.0.1, in its own working directory.

    `workdir` holds its `mesh.config.json` (write it before `start`), its SQLite files and
    its log (`server.log`, merged stdout and stderr, read on failure).
    """

    def __init__(self, workdir: Path, *, domain: str | None = None, backend: str = "memory"):
        self.workdir = workdir
        self.port = free_port()
        self.domain = domain
        self.backend = backend
        self.proc: subprocess.Popen | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        path = self.workdir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> ProtoServer:
        argv = [
            sys.executable, str(require_seed() / "main.py"), "server", "--host", "127.0.0.1",
            "--port", str(self.port), "--backend", self.backend,
            "--db", str(self.workdir / "flux.db"),
            "--accounts-db", str(self.workdir / "flux_accounts.db"),
        ]  # fmt: skip
        if self.domain:
            argv += ["--domain", self.domain]
        with (self.workdir / "server.log").open("ab") as log:
            self.proc = subprocess.Popen(
                argv, cwd=self.workdir, env=proto_env(), stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the prototype server exited:\n{self.log}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"the prototype server did not answer /health:\n{self.log}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=WAIT)

    def __enter__(self) -> ProtoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
