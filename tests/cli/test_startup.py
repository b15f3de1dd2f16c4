"""What a `flux` command imports before it does anything: not the server.

Every command is a new process, and a module imported at start-up is paid on every run
(the test suite alone runs some four hundred of them). The operator commands (`flux
admin …`, `flux server`, `flux demo`) import the server, the store and the accounts
modules when they run; the other commands never load them. Checked in a fresh
interpreter per case, after the command has run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import env

#: the server's side: aiohttp.web and the databases' drivers with it
SERVER_SIDE = ("flux.server", "flux.store", "flux.accounts", "aiohttp.web", "asyncpg", "uvloop",
               "prometheus_client", "flux.cli.demo_federation", "aiohttp", "flux.client.client")  # fmt: skip

RUN_THEN_LIST = """
import json, sys
from flux.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def _loaded_by(*args: str, code: int = 0) -> list[str]:
    """The modules loaded once `flux ARGS` has run (and exited with `code`), in a fresh
    interpreter."""
    result = subprocess.run([sys.executable, "-c", RUN_THEN_LIST, *args],
                            capture_output=True, text=True, env=env(), timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    ran = json.loads(result.stdout.strip().splitlines()[-1])
    assert ran["code"] == code, (result.stdout, result.stderr)
    return ran["modules"]


def _server_side(modules: list[str]) -> list[str]:
    return [m for m in modules if m.split(".")[0] in SERVER_SIDE or m.startswith(SERVER_SIDE)]


@pytest.mark.parametrize("args", [["--help"], ["admin", "--help"], ["keygen"], ["selfcheck"]])
def test_commands_without_a_server_load_none_of_its_modules(args: list[str]) -> None:
    assert _server_side(_loaded_by(*args)) == []


def test_verify_loads_none_of_the_servers_modules(tmp_path: Path) -> None:
    from flux import FluxIdentity, build_message

    alice, bob = FluxIdentity.generate(), FluxIdentity.generate()
    message = tmp_path / "m.json"
    message.write_text(json.dumps(build_message(alice, bob.address, "hi")))
    assert _server_side(_loaded_by("verify", str(message))) == []


def test_an_admin_command_still_finds_the_server_modules_it_needs(tmp_path: Path) -> None:
    # the same fresh interpreter, one admin command: its imports happen when it runs
    modules = _loaded_by("admin", "invite", "list", "--data-dir", str(tmp_path), code=1)
    assert "flux.server.config" in modules  # it read the settings (and found no database)
