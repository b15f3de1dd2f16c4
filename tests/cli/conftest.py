"""A real `flux server` process for the CLI tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Test modules find their neighbours on sys.path; conftest is imported before them.
sys.path.insert(0, str(Path(__file__).parent))
from cli_helpers import Running


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[str]:
    """`python -m flux server --port 0`; yields the URL it says it bound, once it is up.
    Forked (cli_helpers.Running): the tests using it are about the commands run against it."""
    server = Running(
        "server", "--host", "127.0.0.1", "--port", "0", "--backend", "sqlite",
        "--data-dir", str(tmp_path / "server"), "--hosted", forked=True,
    )  # fmt: skip
    try:
        yield server.wait_for(r"FLUX server for \S+ at (http://127\.0\.0\.1:\d+)").group(1)
    finally:
        code = server.interrupt()
        assert code == 0, server.output
        assert "Traceback" not in server.output
