"""Commands that need no server: `keygen`, `selfcheck`, `verify FILE`."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import typer

from ..identity import FluxIdentity
from ..protocol import (
    ChainCheck,
    build_message,
    compose,
    decrypt_content,
    loads_strict,
    verify_chain,
    verify_envelope,
)
from ..protocol.errors import BadSignature, FluxError, NotARecipient
from ._common import CliError, fail, ok, out, short


def keygen(
    save: Path | None = typer.Option(
        None, "--save", help="Write the key file here (mode 0600).", show_default=False
    ),
    passphrase: bool = typer.Option(
        False, "--passphrase", help="Seal the saved key under a passphrase ($FLUX_PASSPHRASE)."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Make a new identity and print its address."""
    identity = FluxIdentity.generate()
    if save is None:
        if passphrase:
            raise CliError("--passphrase needs --save PATH")
        out.print(f"address: {identity.address}")
        out.print(identity.to_keyfile(), markup=False)
        return
    if save.exists() and not force:
        raise CliError(f"{save} exists; pass --force to overwrite it")
    secret = _new_passphrase() if passphrase else None
    identity.save(save, secret)
    out.print(f"address: {identity.address}")
    ok(f"key saved to {save} (mode 0600{', passphrase-protected' if secret else ''})")


def _new_passphrase() -> str:
    from_env = os.environ.get("FLUX_PASSPHRASE")
    if from_env:
        return from_env
    value = typer.prompt("passphrase", hide_input=True, confirmation_prompt=True, err=True)
    if not value:
        raise CliError("an empty passphrase protects nothing")
    return value


# -- selfcheck ------------------------------------------------------------------------------


def selfcheck() -> None:
    """Check this installation's cryptography end to end, with no server."""
    alice, bob, carol = (FluxIdentity.generate() for _ in range(3))
    now = int(time.time() * 1000)
    steps: list[tuple[str, Callable[[], str]]] = [
        ("generate keys", lambda: f"alice {short(alice.address)}, bob {short(bob.address)}"),
        ("key file round trip", lambda: _keyfile_round_trip(alice)),
        ("sign and verify", lambda: _sign_verify(alice, bob, now)),
        ("tampering is detected", lambda: _tamper_detected(alice, bob, now)),
        ("encrypt, sign, decrypt", lambda: _encrypt_round_trip(alice, bob, now)),
        ("a non-recipient cannot decrypt", lambda: _outsider_refused(alice, bob, carol, now)),
        ("BCC copies verify on their own", lambda: _bcc_copies(alice, bob, carol, now)),
    ]
    for name, step in steps:
        try:
            detail = step()
        except Exception as exc:
            out.print(f"[red]✗[/] {name}")
            fail(f"selfcheck failed at '{name}': {exc}")
        ok(f"{name}: {detail}")
    ok("all checks passed")


def _keyfile_round_trip(identity: FluxIdentity) -> str:
    again = FluxIdentity.from_keyfile(identity.to_keyfile())
    _expect(again.address == identity.address, "key file does not load back")
    return "address preserved"


def _sign_verify(alice: FluxIdentity, bob: FluxIdentity, now: int) -> str:
    msg = build_message(alice, bob.address, "Hello Bob", subject="selfcheck", now_ms=now)
    envelope = verify_envelope(msg, now_ms=now)
    return f"message {envelope.id[:12]}… signed by alice verifies"


def _tamper_detected(alice: FluxIdentity, bob: FluxIdentity, now: int) -> str:
    msg = build_message(alice, bob.address, "Pay 10", now_ms=now)
    try:
        verify_envelope({**msg, "content": "Pay 1000"})
    except BadSignature:
        return "changed content fails the signature"
    raise AssertionError("a changed message still verified")


def _encrypt_round_trip(alice: FluxIdentity, bob: FluxIdentity, now: int) -> str:
    secret = "the eagle lands at noon"
    msg = build_message(alice, bob.address, secret, encrypt_for={bob.address: bob.pub_b64()},
                        now_ms=now)  # fmt: skip
    _expect(secret not in str(msg), "plaintext is visible in the envelope")
    verify_envelope(msg)  # the signature covers the ciphertext
    _expect(decrypt_content(msg, bob) == secret, "bob got other text back")
    _expect(decrypt_content(msg, alice) == secret, "the sender cannot read its own copy")
    return "AES-256-GCM + X25519; bob and alice read it"


def _outsider_refused(a: FluxIdentity, b: FluxIdentity, c: FluxIdentity, now: int) -> str:
    msg = build_message(a, b.address, "private", encrypt_for={b.address: b.pub_b64()}, now_ms=now)
    try:
        decrypt_content(msg, c)
    except NotARecipient:
        return "carol is refused"
    raise AssertionError("carol decrypted a message not meant for her")


def _bcc_copies(a: FluxIdentity, b: FluxIdentity, c: FluxIdentity, now: int) -> str:
    sent = compose(a, b.address, "hi", bcc=[c.address], now_ms=now)
    for envelope in sent.all:
        verify_envelope(envelope)
    _expect("bcc" not in sent.primary, "the primary copy names the BCC recipient")
    return f"{len(sent.all)} copies, bcc hidden from bob"


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


# -- verify FILE ----------------------------------------------------------------------------


def verify(
    file: Path = typer.Argument(..., help="An envelope as JSON (as sent or as retrieved)."),
) -> None:
    """Verify a message file offline: sender signature and integrity chain."""
    try:
        msg = loads_strict(file.read_bytes())
        envelope = verify_envelope(msg)
    except FluxError as exc:
        raise CliError(f"{file}: signature check failed: {exc.code}: {exc.message}") from exc
    ok(f"signature: {envelope.id} from {envelope.sender}")
    check = verify_chain(msg, None)
    bad = check.first_failure
    if bad is not None:
        raise CliError(
            f"{file}: integrity chain fails at hop {bad.index} ({bad.server}): {bad.reason}"
        )
    ok(f"integrity chain: {_chain_summary(check)}")


def _chain_summary(check: ChainCheck) -> str:
    if not check.hops:
        return "no hops yet (not handled by a server)"
    servers = " → ".join(h.server for h in check.hops)
    kind = "sealed" if check.sealed else "includes unsealed prototype hops"
    # Offline, a seal is checked against the key in its own record: this shows the chain
    # is intact, not that each key is the one its server publishes.
    return f"{len(check.hops)} hop(s), {kind}: {servers} (keys as recorded; not checked online)"
