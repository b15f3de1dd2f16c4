"""`flux sent` and `flux status ID` (issue 12) against real FLUX servers: each command a
real child process, as a user runs it. The servers run in this process (two federated
servers, plain HTTP between them, as in federation/fed_helpers.py `local_servers`).

Until the commands are registered in flux/cli/__init__.py, the child runs the module's
own typer app the way `flux.cli.main` runs the whole CLI (one-line errors, exit 1).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import flux, free_port

from federation.fed_helpers import local_servers, name
from flux import FluxIdentity
from flux.client import FluxClient
from flux.client.sent import delivery_state
from flux.protocol import Identity
from flux.server.config import ServerConfig
from flux.server.runner import start_server
from server.test_sent_mail import FAST, until


async def flux_sent(*args: str, key: Path, server: str) -> subprocess.CompletedProcess:
    """`python -m flux <args>` (the sent commands), in a child process."""
    return await asyncio.to_thread(flux, *args, FLUX_KEY=str(key), FLUX_SERVER=server)


def keyfile(tmp_path: Path) -> tuple[FluxIdentity, Path]:
    me = FluxIdentity.generate()
    return me, me.save(tmp_path / "me.key")


async def state_is(client: FluxClient, msg_id: str, rcpt: str, wanted: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        state = (await delivery_state(client, msg_id))["_delivery"][rcpt]
        return state if state["state"] == wanted else None

    return await until(check, f"{rcpt} to be {wanted}")


async def test_sent_shows_bounces_for_nxdomain_and_unknown_recipients(tmp_path: Path) -> None:
    me, key = keyfile(tmp_path)
    ghost, nobody, bob = Identity.generate(), Identity.generate(), Identity.generate()

    def hosted_b(label: str, names: dict[str, str]) -> dict[str, Any]:
        return {"open_mode": False} if label == "b" else {}

    async with local_servers(tmp_path, ("a", "b"), per_server=hosted_b, **FAST) as servers:
        a, b = servers["a"], servers["b"]
        async with FluxClient(me, a.url) as client:
            void = await client.send(f"{ghost.address}@nowhere.invalid", "x", subject="void")
            unknown = await client.send(f"{nobody.address}@{name(b)}", "y", subject="who")
            local = await client.send(bob.address, "z", subject="here")
            await state_is(client, void.id, ghost.address, "bounced")
            await state_is(client, unknown.id, nobody.address, "bounced")

        listing = await flux_sent("sent", key=key, server=a.url)
        assert listing.returncode == 0, listing.stderr
        lines = listing.stdout.splitlines()
        assert lines[0].startswith(local.id[:8]) and "here" in lines[0]
        assert "stored" in lines[1]
        assert any("bounced: the domain nowhere.invalid does not exist" in line for line in lines)
        assert any("bounced: the receiving server does not host this address" in line
                   for line in lines)  # fmt: skip

        as_json = await flux_sent("sent", "--json", key=key, server=a.url)
        items = json.loads(as_json.stdout)
        assert [m["id"] for m in items] == [local.id, unknown.id, void.id]
        assert items[2]["_delivery"][ghost.address]["state"] == "bounced"

        one = await flux_sent("status", void.id[:10], "--json", key=key, server=a.url)
        assert one.returncode == 0, one.stderr
        message = json.loads(one.stdout)
        assert message["id"] == void.id and message["subject"] == "void"
        assert message["_delivery"][ghost.address]["reason"] == (
            "the domain nowhere.invalid does not exist (no such domain)"
        )


async def test_status_of_a_down_peer_is_queued_then_delivered(tmp_path: Path) -> None:
    me, key = keyfile(tmp_path)
    bob = Identity.generate()
    port = free_port()
    down = f"127.0.0.1:{port}"
    async with local_servers(tmp_path, ("a",), extra_insecure=[down], **FAST) as servers:
        a = servers["a"]
        async with FluxClient(me, a.url) as client:
            result = await client.send(f"{bob.address}@{down}", "are you up?")
            await until(lambda: _attempted(client, result.id, bob.address), "a failed attempt")
            shown = await flux_sent("status", result.id, key=key, server=a.url)
            assert shown.returncode == 0, shown.stderr
            assert "queued (" in shown.stdout and " attempt" in shown.stdout
            assert "the receiving server did not answer (connection refused); next try at" in (
                shown.stdout
            )
            queued = json.loads((await flux_sent("status", result.id, "--json", key=key,
                                                 server=a.url)).stdout)  # fmt: skip
            state = queued["_delivery"][bob.address]
            if state["state"] == "queued":  # (the peer is still down: it stays queued)
                assert state["attempts"] >= 1 and state["next_retry_at"] >= state["at"] - 1
            b = await start_server(ServerConfig.from_env(
                {}, host="127.0.0.1", port=port, domain=down, data_dir=tmp_path / "b",
                backend="memory", insecure_peers=frozenset({name(a)}), open_mode=True,
            ))  # fmt: skip
            try:
                await state_is(client, result.id, bob.address, "delivered")
            finally:
                await b.stop()
        done = await flux_sent("status", result.id, key=key, server=a.url)
        assert done.returncode == 0 and "delivered" in done.stdout


async def _attempted(client: FluxClient, msg_id: str, rcpt: str) -> bool:
    state = (await delivery_state(client, msg_id))["_delivery"][rcpt]
    return state["state"] == "queued" and state.get("attempts", 0) >= 1


async def test_errors_are_one_line_with_exit_1(tmp_path: Path) -> None:
    _, key = keyfile(tmp_path)
    async with local_servers(tmp_path, ("a",)) as servers:
        a = servers["a"]
        empty = await flux_sent("sent", key=key, server=a.url)
        assert (empty.returncode, empty.stdout.strip()) == (0, "nothing sent yet")
        assert json.loads((await flux_sent("sent", "--json", key=key, server=a.url)).stdout) == []
        missing = await flux_sent("status", "f" * 32, key=key, server=a.url)
        assert missing.returncode == 1 and "Traceback" not in missing.stderr
        assert missing.stderr.strip().startswith("error: server refused:")
        assert len(missing.stderr.strip().splitlines()) == 1
        bad = await flux_sent("status", "xyz", key=key, server=a.url)
        assert bad.returncode == 1 and "id" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("args", [("sent", "--limit", "0"), ("status",)])
async def test_bad_arguments_are_refused_before_any_request(tmp_path: Path, args) -> None:
    _, key = keyfile(tmp_path)
    result = await flux_sent(*args, key=key, server=f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
