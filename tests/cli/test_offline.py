"""CLI commands that need no server: help, keygen, selfcheck, verify, errors."""

from __future__ import annotations

import json
import re
import stat

import pytest
from cli_helpers import flux, make_key

from flux import FluxIdentity, build_message

COMMANDS = ["keygen", "selfcheck", "server", "register", "send", "inbox", "read", "watch",
            "verify", "demo", "logout", "reply", "forward", "thread", "tag", "move", "delete",
            "mark", "export", "claim", "contacts", "account", "admin", "sent", "status"]  # fmt: skip


def one_line_error(result) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)])
def test_help_everywhere(command):
    result = flux(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_version():
    assert flux("--version").stdout.startswith("flux ")


def test_keygen_saves_a_0600_key_file(tmp_path):
    path = tmp_path / "alice.json"
    made = flux("keygen", "--save", str(path))
    assert made.returncode == 0, made.stderr
    address = re.search(r"fx1[0-9a-f]{40}", made.stdout).group(0)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert FluxIdentity.load(path).address == address
    again = one_line_error(flux("keygen", "--save", str(path)))
    assert "exists" in again
    assert flux("keygen", "--save", str(path), "--force").returncode == 0
    assert FluxIdentity.load(path).address != address


def test_keygen_with_a_passphrase(tmp_path):
    path = tmp_path / "sealed.json"
    result = flux("keygen", "--save", str(path), "--passphrase", FLUX_PASSPHRASE="correct horse")
    assert result.returncode == 0, result.stderr
    assert FluxIdentity.file_is_protected(path)
    assert "private_key" not in json.loads(path.read_text())
    assert FluxIdentity.load(path, "correct horse").address in result.stdout


def test_keygen_without_save_prints_the_key():
    result = flux("keygen")
    assert result.returncode == 0
    lines = result.stdout.strip().splitlines()
    identity = FluxIdentity.from_keyfile(lines[-1])
    assert identity.address in lines[0]


def test_selfcheck():
    result = flux("selfcheck")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("✓") >= 7
    assert "all checks passed" in result.stdout


def _message_file(tmp_path, **changes):
    alice, bob = FluxIdentity.generate(), FluxIdentity.generate()
    msg = build_message(alice, bob.address, "verify me", subject="file")
    path = tmp_path / "msg.json"
    path.write_text(json.dumps({**msg, **changes}))
    return path, msg


def test_verify_a_good_file(tmp_path):
    path, msg = _message_file(tmp_path)
    result = flux("verify", str(path))
    assert result.returncode == 0, result.stderr
    assert f"✓ signature: {msg['id']}" in result.stdout
    assert "✓ integrity chain" in result.stdout


def test_verify_a_tampered_file(tmp_path):
    path, _ = _message_file(tmp_path, content="verify me, and pay Mallory")
    line = one_line_error(flux("verify", str(path)))
    assert "bad_signature" in line


def test_verify_a_file_that_is_not_json(tmp_path):
    path = tmp_path / "junk.json"
    path.write_text("{not json")
    one_line_error(flux("verify", str(path)))


def test_a_missing_key_is_one_line():
    line = one_line_error(flux("inbox"))
    assert "FLUX_KEY" in line


def test_a_missing_key_file_is_one_line(tmp_path):
    line = one_line_error(flux("inbox", "--key", str(tmp_path / "nope.json")))
    assert "not found" in line


def test_an_unreachable_server_is_one_line(tmp_path):
    key = tmp_path / "k.json"
    make_key(key)
    line = one_line_error(flux("inbox", "--key", str(key), "--server", "http://127.0.0.1:9"))
    assert "cannot reach" in line


def test_a_bad_recipient_is_one_line(tmp_path):
    key = tmp_path / "k.json"
    make_key(key)
    line = one_line_error(flux("send", "nobody", "hi", FLUX_KEY=str(key)))
    assert "to" in line


def test_a_bad_server_setting_is_one_line(tmp_path):
    line = one_line_error(flux("server", "--registration", "sometimes"))
    assert "registration" in line
