"""Review of issue 12: `flux demo` stopped by `kill` (SIGTERM) or a closed terminal
(SIGHUP) cleans up as Ctrl-C does: exit 0, no traceback, and its working directory, with
the private key files it wrote, is removed (they stayed in /tmp before)."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest
from cli_helpers import Running


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_demo_stopped_by_a_signal_removes_its_keys(tmp_path, sig):
    demo = Running("demo", XDG_CONFIG_HOME=str(tmp_path))
    try:
        key = Path(demo.wait_for(r"alice:\s+(\S+alice\.json)", timeout=120).group(1))
        demo.wait_for(r"Ctrl-C stops the server")
        assert key.exists()
        demo.proc.send_signal(sig)
        assert demo.proc.wait(timeout=30) == 0, demo.output
        while (line := demo._queue.get(timeout=30)) is not None:
            demo.lines.append(line)
        assert "Traceback" not in demo.output, demo.output
        assert re.search(r"demo stopped", demo.output), demo.output
        assert not key.parent.exists(), list(key.parent.iterdir())
    finally:
        demo.kill()
