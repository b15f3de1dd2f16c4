"""`flux demo`: a real server in this process and two people exchanging signed and
encrypted mail through it, each step printed; then two federated servers delivering to
each other and a tampering relay caught (demo_federation.py). Then (unless --once) the
first server stays up with the two key files written, so the rest of the CLI can be
tried against it."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.text import Text

from ..identity import FluxIdentity
from ._common import ok, out, run, short

if TYPE_CHECKING:
    from ..client import FluxClient

WAIT_S = 10.0


def demo(
    once: bool = typer.Option(False, "--once", help="Exit after the exchange."),
    port: int = typer.Option(0, "--port", help="Port for the demo server (0: any free one)."),
) -> None:
    """Run a local server and show alice and bob exchanging signed, encrypted mail."""
    # The demo narrates each step itself; the servers' own warnings (a strike is one, and
    # the demo provokes three) would only interleave with it.
    logging.getLogger("flux").setLevel(logging.ERROR)
    workdir = Path(tempfile.mkdtemp(prefix="flux-demo-"))
    # `kill`, or closing the terminal, stops the demo as Ctrl-C does, so the key files it
    # wrote (private keys, in /tmp) are removed then too, not only on Ctrl-C
    previous = {sig: signal.signal(sig, _as_ctrl_c) for sig in STOP_SIGNALS}
    try:
        run(_demo(workdir, once, port))
    except KeyboardInterrupt:
        out.print("demo stopped")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _as_ctrl_c(_signum: int, _frame: Any) -> None:
    # SIGINT, however it is handled right now: asyncio's runner cancels the demo and
    # raises KeyboardInterrupt, outside it Python raises it directly
    signal.raise_signal(signal.SIGINT)


async def _demo(workdir: Path, once: bool, port: int) -> None:
    # the server, the client and the federation demo only when the demo runs: every other
    # command imports this module too (cli/__init__.py), and its start-up stays light
    import asyncio

    from ..server.config import ServerConfig
    from ..server.runner import start_server
    from .demo_federation import federation_demo

    out.rule("[bold]FLUX demo")
    config = ServerConfig.from_env(
        {},
        host="127.0.0.1",
        port=port,
        open_mode=True,
        backend="sqlite",  # the embedded default, durable like a real deployment
        data_dir=workdir / "server",
    )
    server = await start_server(config)
    try:
        ok(f"server running at {server.url} (open mode, data in {workdir})")
        keys = await _exchange(server.url, workdir)
        await federation_demo(workdir / "federation")
        if not once:
            _instructions(server.url, keys)
            await asyncio.Event().wait()  # until Ctrl-C
    finally:
        await server.stop()


async def _exchange(url: str, workdir: Path) -> dict[str, Path]:
    from ..client import FluxClient

    alice_id, bob_id = FluxIdentity.generate(), FluxIdentity.generate()
    keys = {
        "alice": alice_id.save(workdir / "alice.json"),
        "bob": bob_id.save(workdir / "bob.json"),
    }
    ok(f"alice is {alice_id.address}")
    ok(f"bob   is {bob_id.address}")
    async with FluxClient(alice_id, url) as alice, FluxClient(bob_id, url) as bob:
        for name, client in (("alice", alice), ("bob", bob)):
            await client.register()
            await client.authenticate()
            ok(f"{name} registered at the server and proved the key (signed challenge → token)")
        await _signed_by_fetch(alice, bob)
        encrypted = await _encrypted_by_push(alice, bob)
        await _reply(alice, bob, encrypted)
    out.rule("[bold green]exchange complete")
    return keys


async def _signed_by_fetch(alice: FluxClient, bob: FluxClient) -> None:
    out.rule("signed mail, received by fetch")
    sent = await alice.send(bob.address, "Hi Bob! This message is signed.", subject="Hello")
    ok(f"alice sent {sent.id} (signed with her Ed25519 key)")
    fetched = await bob.fetch()
    msg = next(m for m in fetched if m["id"] == sent.id)
    verified = await bob.verify_online(msg)
    ok(f"bob fetched it over HTTP: {msg['content']!r}")
    ok(f"bob verified alice's signature and the chain ({verified.hops} hop(s), each sealed "
       "under the key its server publishes)")  # fmt: skip


async def _encrypted_by_push(alice: FluxClient, bob: FluxClient) -> dict[str, Any]:
    import asyncio

    out.rule("encrypted mail, received by WebSocket push")
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    bob.on_message(inbox.put)
    await bob.start_ws(timeout=WAIT_S)
    ok("bob is connected by WebSocket")
    # An fx1 address is the hash of its key, so bob's key, however alice got it, proves
    # itself; here bob simply hands it over.
    sent = await alice.send(
        bob.address, "The meeting moved to 3pm. Only you can read this.",
        subject="Secret", encrypt=True, keys={bob.address: bob.identity.pub_b64()},
    )  # fmt: skip
    ok(f"alice sent {sent.id}, end-to-end encrypted (the server sees only ciphertext)")
    msg = await asyncio.wait_for(inbox.get(), WAIT_S)
    ok(f"bob got it pushed; on the wire the content is {msg['content']!r}")
    bob.verify(msg)
    ok("bob verified the signature (it covers the ciphertext)")
    ok(f"bob decrypted it: {bob.decrypt(msg)!r}")
    return msg


async def _reply(alice: FluxClient, bob: FluxClient, original: dict[str, Any]) -> None:
    out.rule("the reply")
    reply = await bob.reply(original, "Got it, see you at 3.")
    await bob.read(original["id"])
    ok(f"bob replied {reply.id} (encrypted for alice, re {short(original['id'], 8)})")
    msg = next(m for m in await alice.fetch() if m["id"] == reply.id)
    alice.verify(msg)
    ok(f"alice fetched, verified and decrypted it: {alice.decrypt(msg)!r}")
    ok(f"it answers {msg['re']} (its `re`), so clients thread the two")


def _instructions(url: str, keys: dict[str, Path]) -> None:
    text = (
        f"server:  {url}\n"
        f"alice:   {keys['alice']}\nbob:     {keys['bob']}\n\n"
        "Try, in another terminal:\n"
        f"{_path_hint()}"
        f"  export FLUX_SERVER={url}\n"
        f"  flux inbox --key {keys['bob']}\n"
        f"  flux watch --key {keys['alice']}\n"
        f'  flux send {FluxIdentity.load(keys["alice"]).address} "hello" --key {keys["bob"]}\n\n'
        "Ctrl-C stops the server (and removes these files)."
    )
    out.rule("the demo server keeps running")
    # soft_wrap: long paths stay on one line, so each command can be copied as printed
    out.print(Text(text), soft_wrap=True)


def _path_hint() -> str:
    """The line that puts this `flux` on PATH in another terminal, or "" when the shell
    already finds this same program there (an activated venv, pipx). `dev.py run` starts it
    from .venv without activating it, so the hints must not assume `flux` is on PATH."""
    bindir = Path(sys.prefix) / ("Scripts" if os.name == "nt" else "bin")
    found = shutil.which("flux")
    if found and Path(found).resolve() == (bindir / Path(found).name).resolve():
        return ""
    return f'  export PATH="{bindir}:$PATH"\n'
