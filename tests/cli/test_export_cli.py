"""`flux export`: the mailbox as JSON lines, every line a stored envelope that `flux verify`
accepts offline; folders and statuses; the file is 0600; stdout stays pure JSON lines."""

from __future__ import annotations

import json
import os
import re
import stat

from cli_helpers import flux, make_key
from test_inbox_table import _in_terminal


def _setup(tmp_path, server):
    alice_key, bob_key = tmp_path / "alice.json", tmp_path / "bob.json"
    make_key(alice_key)
    bob = make_key(bob_key)
    common = {"FLUX_SERVER": server, "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    for key in (alice_key, bob_key):
        assert flux("register", FLUX_KEY=str(key), **common).returncode == 0
    ids = []
    for n in range(5):
        extra = ["--encrypt"] if n == 0 else []
        sent = flux("send", bob, f"message {n}", "--subject", f"n{n}", *extra,
                    FLUX_KEY=str(alice_key), **common)  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        ids.append(re.search(r"sent ([0-9a-f]{32})", sent.stdout).group(1))
    return {"FLUX_KEY": str(bob_key), **common}, ids


def test_export_writes_verifiable_json_lines(tmp_path, live_server):
    bob, ids = _setup(tmp_path, live_server)
    assert flux("move", ids[1], "archive", **bob).returncode == 0
    assert flux("delete", ids[2], **bob).returncode == 0

    target = tmp_path / "mail.jsonl"
    done = flux("export", "-o", str(target), **bob)
    assert done.returncode == 0, done.stderr
    assert f"exported 4 message(s) to {target}" in done.stderr
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    lines = target.read_text().splitlines()
    assert {json.loads(line)["id"] for line in lines} == set(ids) - {ids[2]}
    for n, line in enumerate(lines):
        one = tmp_path / f"m{n}.json"
        one.write_text(line)
        checked = flux("verify", str(one))
        assert checked.returncode == 0, checked.stderr
        assert not any(k.startswith("_") for k in json.loads(line))
    assert any(json.loads(line).get("encrypted") for line in lines)

    piped = flux("export", **bob)
    assert piped.returncode == 0 and piped.stderr == ""
    assert [json.loads(line)["id"] for line in piped.stdout.splitlines()] == [
        json.loads(line)["id"] for line in lines
    ]
    archive = flux("export", "--inbox", "archive", **bob)
    assert [json.loads(line)["id"] for line in archive.stdout.splitlines()] == [ids[1]]
    deleted = flux("export", "--status", "deleted", **bob)
    assert [json.loads(line)["id"] for line in deleted.stdout.splitlines()] == [ids[2]]


def test_export_errors_are_one_line(tmp_path, live_server):
    bob, _ = _setup(tmp_path, live_server)
    bad = flux("export", "-o", str(tmp_path / "no" / "such" / "dir.jsonl"), **bob)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1
    assert "No such file or directory" in bad.stderr
    wrong = flux("export", "--status", "sideways", **bob)
    assert wrong.returncode == 1 and len(wrong.stderr.strip().splitlines()) == 1
    assert "status" in wrong.stderr and "Traceback" not in wrong.stderr


def test_export_shows_progress_in_a_terminal_and_keeps_it_off_the_file(tmp_path, live_server):
    bob, ids = _setup(tmp_path, live_server)
    target = tmp_path / "mail.jsonl"
    shown = "\n".join(_in_terminal(80, "export", "-o", str(target), **bob))
    assert "exporting:" in shown and f"exported {len(ids)} message(s)" in shown
    lines = target.read_text().splitlines()
    assert len(lines) == len(ids) and all(json.loads(line)["id"] in ids for line in lines)
