"""The prototype's library API, imported from FLUX's package and used as its README shows.

Issue 11 item 9. Every public name of the prototype (`flux/__init__.py`, `flux.auth`,
`flux.encryption`) comes from FLUX; what each side builds, the other verifies, derives or
decrypts (the prototype's own code runs in a child process, see compat/proto.py); and where
PROTOCOL.md §13 refuses the prototype's way (sign-then-encrypt, a default shared secret,
one envelope carrying BCC), the refusal is a named error.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import flux
from cli.cli_helpers import free_port
from compat.proto import SECRET, run_proto
from flux import (
    FluxClient,
    FluxIdentity,
    build_message,
    make_app,
    verify_message,
)
from flux.auth import derive_token, validate_token
from flux.client import FluxClientError
from flux.encryption import EncryptNeedsIdentity, decrypt_message, encrypt_message
from flux.protocol import verify_envelope
from flux.protocol.errors import BadSignature, InvalidValue, MissingField

pytestmark = pytest.mark.slow

#: the prototype's `flux/__init__.py` `__all__`, and its two modules' functions
PROTO_EXPORTS = ["FluxIdentity", "build_message", "verify_message", "FluxClient", "make_app", "run_server"]  # fmt: skip


def proto_json(code: str, *args: str) -> Any:
    """Run prototype code that prints one JSON value; return the value."""
    done = run_proto(textwrap.dedent(code), *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# -- names and call styles ---------------------------------------------------------------------


def test_every_prototype_export_is_in_flux() -> None:
    for name in PROTO_EXPORTS:
        assert name in flux.__all__ and getattr(flux, name) is not None


def test_every_prototype_module_path_imports() -> None:
    """The module paths the prototype's main.py, README and test_client.py import from."""
    from flux.auth import derive_token
    from flux.client import FluxClient
    from flux.encryption import decrypt_message, encrypt_message
    from flux.identity import FluxIdentity
    from flux.message import build_message, verify_message
    from flux.server import make_app, run_server

    assert (flux.FluxClient, flux.FluxIdentity) == (FluxClient, FluxIdentity)
    assert (flux.build_message, flux.verify_message) == (build_message, verify_message)
    assert (flux.make_app, flux.run_server) == (make_app, run_server)
    assert callable(derive_token) and callable(encrypt_message) and callable(decrypt_message)


def test_import_flux_stays_light() -> None:
    """`import flux`, and the prototype's pure names, load no HTTP, server or client code."""
    code = (
        "import sys, flux\n"
        "from flux import FluxIdentity, build_message, verify_message\n"
        "from flux.auth import derive_token\n"
        "from flux.encryption import encrypt_message, decrypt_message\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'aiohttp'"
        " or m.startswith(('flux.server', 'flux.client', 'flux.store'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_flux_client_has_the_prototype_methods() -> None:
    wanted = {
        "send": ["to", "content", "reply_to"], "fetch": [], "peek": [], "status": ["address"],
        "on_message": ["handler"], "connect_ws": [], "send_ws": ["to", "content", "reply_to"],
        "close": [],
    }  # fmt: skip
    for method, params in wanted.items():
        sig = inspect.signature(getattr(FluxClient, method))
        positional = [
            p.name for p in sig.parameters.values()
            if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "self"
        ]  # fmt: skip
        assert positional[: len(params)] == params, (method, positional)
        required = [p for p in sig.parameters.values() if p.default is p.empty and p.name != "self"]
        assert [p.name for p in required] == params[: len(required)], method


def test_flux_client_takes_the_prototypes_server_keyword() -> None:
    identity = FluxIdentity.generate()
    assert FluxClient(identity, server="http://127.0.0.1:9/").url == "http://127.0.0.1:9"
    assert FluxClient(identity, "http://127.0.0.1:9").url == "http://127.0.0.1:9"
    with pytest.raises(TypeError):
        FluxClient(identity, "http://a:1", server="http://b:2")


def test_identity_prototype_accessors_and_files(tmp_path: Path) -> None:
    alice = FluxIdentity.generate()
    assert alice.pub_bytes() == alice.public_key and len(alice.pub_bytes()) == 32
    again = FluxIdentity.from_private_b64(alice.export_private())
    assert again.address == alice.address

    # a key file FLUX saves opens in the prototype, and the other way round
    ours = tmp_path / "ours.json"
    alice.save(ours)
    theirs = tmp_path / "theirs.json"
    seen = proto_json(
        """
        import json, sys
        from flux import FluxIdentity
        print(json.dumps(FluxIdentity.from_file(sys.argv[1]).address))
        FluxIdentity.generate().save(sys.argv[2])
        """,
        str(ours), str(theirs),
    )  # fmt: skip
    assert seen == alice.address
    assert FluxIdentity.from_file(theirs).address == json.loads(theirs.read_text())["address"]


# -- build_message / verify_message, both ways ------------------------------------------------


def test_flux_build_message_in_the_prototype_style_verifies_in_the_prototype() -> None:
    alice, bob, carol = (FluxIdentity.generate() for _ in range(3))
    # build_message(identity, to, content, subject, reply_to, cc, bcc, tags, expires)
    msg = build_message(alice, bob.address, "Hello Bob ✓", "Hi", "f" * 32, [carol.address],
                        None, ["Work", "x"], 0)  # fmt: skip
    assert verify_message(msg)
    verdict = proto_json(
        """
        import json, sys
        from flux import verify_message
        from flux.message import validate_fields
        msg = json.loads(sys.stdin.read() if False else sys.argv[1])
        print(json.dumps([verify_message(msg), validate_fields(msg)]))
        """,
        json.dumps(msg),
    )  # fmt: skip
    assert verdict == [True, True]


def test_prototype_build_message_verifies_in_flux() -> None:
    bob, carol = FluxIdentity.generate(), FluxIdentity.generate()
    msgs = proto_json(
        """
        import json, sys
        from flux import FluxIdentity, build_message
        alice = FluxIdentity.generate()
        plain = build_message(alice, sys.argv[1], "Hello ✓")
        full = build_message(alice, sys.argv[1], "Full", subject="S", reply_to="ab" * 16,
                             cc=[sys.argv[2]], tags=["A", "b"], expires=0)
        print(json.dumps([plain, full]))
        """,
        bob.address, carol.address,
    )  # fmt: skip
    for msg in msgs:
        assert verify_message(msg), msg
        verify_envelope(msg)  # and FLUX's strict reading agrees
    tampered = {**msgs[0], "content": "changed"}
    assert not verify_message(tampered)
    assert not verify_message({"not": "a message"})


def test_build_message_with_bcc_is_refused_by_name() -> None:
    alice, bob, carol = (FluxIdentity.generate() for _ in range(3))
    with pytest.raises(InvalidValue) as caught:
        build_message(alice, bob.address, "hi", bcc=[carol.address])
    assert caught.value.field == "bcc"  # one envelope cannot carry BCC (§13 item 1)


# -- derive_token ---------------------------------------------------------------------------------


def test_derive_token_equals_the_prototypes(monkeypatch: pytest.MonkeyPatch) -> None:
    address = FluxIdentity.generate().address
    theirs = proto_json(
        """
        import json, sys
        from flux.auth import derive_token
        print(json.dumps([derive_token(sys.argv[1]), derive_token(sys.argv[1], "other")]))
        """,
        address,
    )  # fmt: skip
    assert derive_token(address, SECRET) == theirs[0]  # the child's FLUX_SECRET is SECRET
    assert derive_token(address, "other") == theirs[1]
    monkeypatch.setenv("FLUX_SECRET", SECRET)
    assert derive_token(address) == theirs[0]
    assert validate_token(address, theirs[0]) and not validate_token(address, theirs[1])
    assert not validate_token("", theirs[0])


def test_derive_token_without_a_secret_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLUX_SECRET", raising=False)
    with pytest.raises(MissingField) as caught:  # no published default secret (§13 item 3)
        derive_token(FluxIdentity.generate().address)
    assert caught.value.field == "secret"


# -- encryption -----------------------------------------------------------------------------------


def test_the_readme_encryption_example() -> None:
    alice, bob = FluxIdentity.generate(), FluxIdentity.generate()
    msg = build_message(alice, bob.address, "Secret content")
    # the README's call, unchanged: refused by name, since the result could not verify
    with pytest.raises(EncryptNeedsIdentity) as caught:
        encrypt_message(msg, {bob.address: bob.pub_b64()})
    assert caught.value.field == "identity" and isinstance(caught.value, MissingField)

    encrypted_msg = encrypt_message(msg, {bob.address: bob.pub_b64()}, identity=alice)
    assert encrypted_msg["content"] == "[encrypted]" and encrypted_msg["content_enc"]
    assert encrypted_msg["id"] == msg["id"] and msg["content"] == "Secret content"
    assert verify_message(encrypted_msg)  # signed again over the ciphertext
    assert decrypt_message(encrypted_msg, bob) == "Secret content"
    assert decrypt_message(encrypted_msg, alice) == "Secret content"  # the sender reads it
    assert decrypt_message(encrypted_msg, FluxIdentity.generate()) is None


def test_encrypt_message_refusals_are_named() -> None:
    alice, bob = FluxIdentity.generate(), FluxIdentity.generate()
    msg = build_message(alice, bob.address, "x")
    cases = [
        (msg, {bob.address: alice.pub_b64()}, alice, "encrypt_for"),  # not bob's key
        (msg, {bob.address: bob.pub_b64()}, bob, "from"),  # bob cannot sign alice's
        (encrypt_message(msg, {bob.address: bob.pub_b64()}, alice), {}, alice, "encrypted"),
        ({**msg, "integrity_chain": [{"server": "a"}]}, {}, alice, "integrity_chain"),
    ]
    for message, keys, identity, field in cases:
        with pytest.raises(InvalidValue) as caught:
            encrypt_message(message, keys, identity=identity)
        assert caught.value.field == field


def test_flux_encryption_interoperates_with_the_prototypes() -> None:
    alice, bob = FluxIdentity.generate(), FluxIdentity.generate()
    ours = encrypt_message(build_message(alice, bob.address, "from FLUX"),
                           {bob.address: bob.pub_b64()}, identity=alice)  # fmt: skip
    found = proto_json(
        """
        import json, sys
        from flux import FluxIdentity, build_message, verify_message
        from flux.encryption import encrypt_message, decrypt_message
        bob = FluxIdentity.from_private_b64(sys.argv[1])
        ours = json.loads(sys.argv[2])
        alice = FluxIdentity.generate()
        theirs = encrypt_message(build_message(alice, bob.address, "from the prototype"),
                                 {bob.address: bob.pub_b64()})
        print(json.dumps({"read": decrypt_message(ours, bob), "verifies": verify_message(ours),
                          "theirs": theirs}))
        """,
        bob.export_private(), json.dumps(ours),
    )  # fmt: skip
    # FLUX's encrypted message opens and verifies in the prototype
    assert found["read"] == "from FLUX" and found["verifies"] is True
    # the prototype's opens in FLUX, but never verified anywhere: it signed the plaintext
    theirs = found["theirs"]
    assert decrypt_message(theirs, bob) == "from the prototype"
    assert not verify_message(theirs)
    with pytest.raises(BadSignature):
        verify_envelope(theirs)


# -- make_app and run_server start a real FLUX server ---------------------------------------------


async def test_make_app_serves_the_readme_library_example() -> None:
    app = make_app(domain="127.0.0.1", mesh_config_path=None, legacy_secret=SECRET)
    runner = web.AppRunner(app)  # as the prototype's demo runs it
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    alice, bob = FluxIdentity.generate(), FluxIdentity.generate()
    client = FluxClient(alice, url)
    bob_client = FluxClient(bob, url, legacy_secret=SECRET)
    try:
        got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        @bob_client.on_message
        async def on_msg(msg: dict[str, Any]) -> None:
            await got.put(msg)

        task = await bob_client.start_ws(timeout=30)  # connect_ws, in a task
        result = await client.send(bob.address, "Hello Bob")
        assert result["ok"] is True and result.recipients == {bob.address: "stored"}
        msg = await asyncio.wait_for(got.get(), 30)
        assert msg["content"] == "Hello Bob" and verify_message(msg)
        # with legacy tokens on, presence is public, as it was in the prototype
        assert await client.status(bob.address)
        assert await client.peek() == 0

        # bob answers on his socket, in the prototype's frame (a legacy-token socket)
        alice_task, alice_got = await _listening(client)
        envelope = await bob_client.send_ws(alice.address, "Hi Alice", msg["id"])
        back = await asyncio.wait_for(alice_got.get(), 30)
        assert back["id"] == envelope["id"] and back["re"] == msg["id"]
        await client.close()
        await asyncio.gather(alice_task, return_exceptions=True)
        await bob_client.close()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        await client.close()
        await bob_client.close()
        await runner.cleanup()


async def test_make_app_without_a_secret_keeps_presence_private(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FLUX_SECRET", raising=False)
    runner = web.AppRunner(make_app(domain="127.0.0.1", mesh_config_path=None))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with FluxClient(FluxIdentity.generate(), url) as client:
            other = FluxIdentity.generate().address
            status = await client.status(other)
            assert status["hosted"] is False
            with pytest.raises(FluxClientError) as caught:  # not a silent False
                bool(status)
            assert caught.value.field == "online"
            # send_ws in FLUX's own frame, on a session socket
            carol = FluxClient(FluxIdentity.generate(), url)
            task = await carol.start_ws(timeout=30)
            listening, got = await _listening(client)
            envelope = await carol.send_ws(client.address, "over FLUX's socket")
            assert (await asyncio.wait_for(got.get(), 30))["id"] == envelope["id"]
            for each, running in ((carol, task), (client, listening)):
                await each.close()
                await asyncio.gather(running, return_exceptions=True)
        async with FluxClient(FluxIdentity.generate(), url, legacy_secret=SECRET) as legacy:
            with pytest.raises(FluxClientError) as refused:  # no shared secret by default
                await legacy.fetch()
            assert refused.value.status == 401
    finally:
        await runner.cleanup()


async def _listening(
    client: FluxClient,
) -> tuple[asyncio.Task[None], asyncio.Queue[dict[str, Any]]]:
    """`client` on its WebSocket, each message it is pushed put on the queue returned."""
    got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    client.on_message(got.put)
    return await client.start_ws(timeout=30), got


def test_make_app_refuses_a_prototype_presence_registry() -> None:
    with pytest.raises(InvalidValue) as caught:
        make_app(presence=object(), mesh_config_path=None)
    assert caught.value.field == "presence"


def test_run_server_in_the_prototype_call_style(tmp_path: Path) -> None:
    port = free_port()
    code = (
        "from flux import run_server\n"
        f"run_server(host='127.0.0.1', port={port}, backend='sqlite', db_path='m.db', "
        f"accounts_db='a.db', domain='127.0.0.1:{port}')\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("FLUX_")}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # it says where it listens once it does
            if "FLUX server for" in line:
                break
        else:
            raise AssertionError(f"run_server exited: {proc.wait()}")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=30) as resp:
            health = json.loads(resp.read())
        assert health["ok"] is True and health["domain"] == f"127.0.0.1:{port}"
        assert (tmp_path / "m.db").exists() and (tmp_path / "flux-data").is_dir()
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
