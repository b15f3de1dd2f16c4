"""flux.protocol does no I/O: importing it loads no network, storage or server code
(STYLE.md §1), and its modules import nothing of FLUX outside the package."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import flux.protocol

PACKAGE_DIR = Path(flux.protocol.__file__).parent

#: Roots that must not be loaded by `import flux.protocol`. Checked empirically: neither
#: `cryptography` nor PyNaCl pulls in any of these at import time, so no exception is needed.
FORBIDDEN = (
    "asyncio", "aiohttp", "httpx", "starlette", "uvicorn", "websockets",
    "sqlite3", "_sqlite3", "psycopg", "asyncpg",
    "socket", "_socket", "ssl", "_ssl", "http", "selectors",
    "flux.server", "flux.store", "flux.client", "flux.federation", "flux.cli",
)  # fmt: skip


def loaded_modules(statement: str) -> list[str]:
    code = f"{statement}; import sys; print('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout.split()


def offending(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]


def test_importing_the_protocol_loads_no_io_layer() -> None:
    modules = loaded_modules("import flux.protocol")
    assert "flux.protocol.tamper" in modules  # the probe did import the package
    assert offending(modules) == []


def test_the_probe_would_notice() -> None:
    # Guards the test above: the same probe does see an I/O import when there is one.
    assert "asyncio" in offending(loaded_modules("import flux.protocol, asyncio"))


def test_protocol_modules_import_no_other_part_of_flux() -> None:
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.level <= 1, f"{path.name} imports from outside flux.protocol"
                names = [node.module or ""] if node.level == 0 else []
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                root = name.split(".")[0]
                assert root != "flux" or name.startswith("flux.protocol"), (path.name, name)
                assert not any(name == f or name.startswith(f + ".") for f in FORBIDDEN), (
                    path.name,
                    name,
                )
