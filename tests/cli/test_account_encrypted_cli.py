"""A password account reads, threads and forwards its end-to-end encrypted mail from the
CLI: its server holds the account's key and decrypts for the session
(`GET /mail/message/{id}/plain`, `/mail/sent/{id}/plain`). Against a real server, with a
key user writing to the account encrypted."""

from __future__ import annotations

import json
import re

from cli_helpers import flux, make_key, user_env


def test_an_account_reads_threads_and_forwards_encrypted_mail(tmp_path, live_server):
    env = user_env(tmp_path, live_server, FLUX_PASSWORD="correct horse battery")
    assert flux("account", "register", "olga", **env).returncode == 0
    olga = json.loads(flux("account", "whoami", "--json", **env).stdout)["address"]
    key = tmp_path / "pat.json"
    pat = make_key(key)
    pat_env = user_env(tmp_path, live_server, "pat")
    assert flux("register", "--key", str(key), **pat_env).returncode == 0

    sent = flux("send", "--key", str(key), olga, "the secret plan", "--encrypt", **pat_env)
    assert sent.returncode == 0, sent.stderr
    message_id = re.search(r"sent ([0-9a-f]{32})", sent.stdout).group(1)

    read = flux("read", message_id[:8], **env)
    assert read.returncode == 0, read.stderr
    assert "the secret plan" in read.stdout

    answered = flux("reply", message_id[:8], "agreed", "--json", **env)
    assert answered.returncode == 0, answered.stderr  # encrypted, as the message was
    shown = flux("thread", message_id[:8], **env)
    assert shown.returncode == 0, shown.stderr
    assert "the secret plan" in shown.stdout and "agreed" in shown.stdout  # both decrypted

    forwarded = flux("forward", message_id[:8], pat, "--note", "FYI", "--json", **env)
    assert forwarded.returncode == 0, forwarded.stderr
    got = json.loads(flux("inbox", "--json", "--key", str(key), **pat_env).stdout)
    fwd = next(m for m in got if m["id"] == json.loads(forwarded.stdout)["id"])
    assert fwd["encrypted"] is True  # forwarded encrypted, as the original was
    opened = flux("read", fwd["id"][:8], "--key", str(key), **pat_env)
    assert "FYI" in opened.stdout and "the secret plan" in opened.stdout
