"""The demo's closing hints work as printed, in a shell where `flux` is not on PATH.

`python3 dev.py run` starts the demo from .venv without activating it; a newcomer then
copies the printed lines into another terminal. This runs exactly those lines in a fresh
bash with a PATH that does not hold the venv, and checks each one answers.
"""

from __future__ import annotations

import os
import subprocess

from tests.cli.cli_helpers import Running


def _hint_lines(output: str) -> list[str]:
    block = output.split("Try, in another terminal:", 1)[1].split("Ctrl-C stops", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip()]


def test_closing_hints_run_as_printed_without_an_activated_venv(tmp_path):
    demo = Running("demo")
    try:
        demo.wait_for("Ctrl-C stops the server")
        lines = _hint_lines(demo.output)
        assert any(line.startswith('export PATH="') for line in lines), lines
        runnable = [line for line in lines if not line.startswith("flux watch")]
        script = "set -e\n" + "\n".join(runnable) + "\n"
        bare = {k: v for k, v in os.environ.items()
                if not k.startswith(("FLUX_", "VIRTUAL_ENV"))}  # fmt: skip
        bare["PATH"] = "/usr/bin:/bin"
        bare["XDG_CONFIG_HOME"] = str(tmp_path)  # the session cache of `flux inbox`
        done = subprocess.run(["bash", "-c", script], env=bare, capture_output=True,
                              text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        assert demo.interrupt() == 0
    finally:
        demo.kill()
