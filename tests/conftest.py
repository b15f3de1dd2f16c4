"""What every test directory shares: one bytecode cache for the Python processes tests start.

Hundreds of tests run `python -m flux …` (the CLI, servers, federation peers) as real
processes. CI runs with PYTHONDONTWRITEBYTECODE=1, so the checkout gets no `__pycache__`;
but then no child could keep its compiled bytecode either, and each one compiled every
module of flux (and the standard library and packages it imports) from source again:
~0.13 s of each `flux` command's ~0.45 s. Children of this session instead share a
bytecode cache in a temporary directory (PYTHONPYCACHEPREFIX), so the checkout still gets
no `__pycache__` and each module is compiled once per session. The code the children run
is the same; a cached file is used only while its source's mtime and size match, so an
edit during the session is compiled again.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_OWN_PREFIX: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    # Only where the caller forbade bytecode and chose no cache directory of their own.
    if os.environ.get("PYTHONDONTWRITEBYTECODE") and not os.environ.get("PYTHONPYCACHEPREFIX"):
        prefix = tempfile.mkdtemp(prefix="flux-test-pycache-")
        _OWN_PREFIX.append(prefix)
        del os.environ["PYTHONDONTWRITEBYTECODE"]
        os.environ["PYTHONPYCACHEPREFIX"] = prefix


def pytest_unconfigure(config: pytest.Config) -> None:
    for prefix in _OWN_PREFIX:
        os.environ.pop("PYTHONPYCACHEPREFIX", None)
        os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
        shutil.rmtree(prefix, ignore_errors=True)
