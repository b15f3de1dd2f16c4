#!/usr/bin/env python3
"""The two commands a newcomer needs, with nothing but Python installed.

    python3 dev.py run     # set up .venv, then start FLUX (the demo, then a server)
    python3 dev.py test    # set up .venv with the test tools, then lint and run every test

`make run` / `make test` call these. A plain script rather than make alone, because a bare
machine with only Python has no make; it only creates the virtual environment and runs the
commands a developer would type by hand.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"


def ensure_venv(extras: str) -> None:
    """Create .venv and install the project; reinstall only when pyproject.toml changed."""
    if not PY.exists():
        print("creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()
    stamp = VENV / ".flux-installed"
    if stamp.exists() and stamp.read_text() == digest:
        return
    target = f".[{extras}]" if extras else "."
    first = not stamp.exists()
    print(f"installing {target} into .venv"
          + (" (the first time takes a minute or two; pip shows each package)" if first else "")
          + " ...", flush=True)  # fmt: skip
    # The first install downloads everything: pip's own lines are its progress. Later
    # reinstalls (pyproject.toml changed) are short and stay quiet.
    quiet = [] if first else ["-q"]
    run([str(PY), "-m", "pip", "install", "-q", "--upgrade", "pip"])
    run([str(PY), "-m", "pip", "install", *quiet, "--progress-bar", "on", "-e", target])
    stamp.write_text(digest)


def run(argv: list[str]) -> None:
    child = subprocess.Popen(argv, cwd=ROOT)
    # A SIGTERM or SIGHUP sent to dev.py alone (a closed terminal, `kill`) is passed on, so
    # the child stops cleanly (the demo removes its key files) instead of being orphaned.
    forwarded = [s for s in ("SIGTERM", "SIGHUP") if hasattr(signal, s)]
    previous = {name: signal.signal(getattr(signal, name),
                                    lambda number, _frame: child.send_signal(number))
                for name in forwarded}  # fmt: skip
    try:
        code = child.wait()
    except KeyboardInterrupt:
        # Ctrl-C reached the child too (same process group): let it finish its own clean
        # stop, then leave quietly with its status (130 if it had none to give).
        code = child.wait() or 130
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)
    if code:
        sys.exit(code)


def cmd_run(args: list[str]) -> None:
    ensure_venv("")
    flux = str(BIN / "flux")
    if args:
        run([flux, *args])
        return
    run([flux, "selfcheck"])
    # The demo: a real server on the embedded SQLite store, alice and bob exchanging
    # signed and encrypted mail through it; then the server stays up until Ctrl-C.
    run([flux, "demo"])


def cmd_test(args: list[str]) -> None:
    ensure_venv("dev")
    run([str(BIN / "ruff"), "check", "src", "tests", "benchmarks", "scripts"])
    # A worker process per core (pytest-xdist), a test file to each in turn: on a 2-core
    # machine the suite must finish within 15 minutes. `-n 0` among the arguments runs it in
    # this one process, as plain `pytest` does.
    run([str(PY), "-m", "pytest", "-n", "auto", "--dist", "loadfile", *args])


def main() -> None:
    commands = {"run": cmd_run, "test": cmd_test}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    try:
        commands[sys.argv[1]](sys.argv[2:])
    except KeyboardInterrupt:  # between commands, or while creating .venv: no traceback
        sys.exit(130)


if __name__ == "__main__":
    main()
