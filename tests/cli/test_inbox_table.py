"""`flux inbox` in a real terminal (a pty whose window is set with TIOCSWINSZ): at 80
columns no line is wider than 80 cells, whatever the subjects hold; a wider terminal shows
whole ids, status, folder and tags. Plus the table's pure parts (dates, flags, order)."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
from datetime import UTC, datetime, timedelta

from cli_helpers import env, flux, make_key
from rich.cells import cell_len

from flux.cli.table import flags, relative_time, unread_first

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def _in_terminal(columns: int, *args: str, **extra: str) -> list[str]:
    """Run `flux ARGS` with a pty as its terminal, `columns` wide; its lines, escapes gone."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    variables = env(TERM="xterm-256color", **extra)
    for name in ("COLUMNS", "LINES", "NO_COLOR"):
        variables.pop(name, None)
    proc = subprocess.Popen([sys.executable, "-m", "flux", *args], stdin=slave, stdout=slave,
                            stderr=slave, env=variables, close_fds=True)  # fmt: skip
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        assert ready, "the command printed nothing for 60 s"
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=60) == 0, b"".join(chunks).decode(errors="replace")
    text = ANSI.sub("", b"".join(chunks).decode())
    return text.replace("\r\n", "\n").split("\n")


def _mailbox(tmp_path, server):
    alice_key, bob_key = tmp_path / "alice.json", tmp_path / "bob.json"
    make_key(alice_key)
    bob = make_key(bob_key)
    keys = {"FLUX_SERVER": server, "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    for key in (alice_key, bob_key):
        assert flux("register", FLUX_KEY=str(key), **keys).returncode == 0
    subjects = [
        "a subject far too long for any eighty column terminal to show in one row " * 3,
        "短い件名ですが幅の広い文字ばかり、全角文字は二つのセルを使います。" * 2,
        "emoji 🎉🎉🎉 in the subject 🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉",
        "short",
    ]
    ids = []
    for n, subject in enumerate(subjects):
        extra = ["--encrypt"] if n == 1 else []
        sent = flux("send", bob, f"body {n}", "--subject", subject, "--tag", "t" * 30, *extra,
                    FLUX_KEY=str(alice_key), **keys)  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        ids.append(re.search(r"sent ([0-9a-f]{32})", sent.stdout).group(1))
    return {"FLUX_KEY": str(bob_key), **keys}, ids


def test_inbox_fits_80_columns_and_uses_more_when_wider(tmp_path, live_server):
    bob, ids = _mailbox(tmp_path, live_server)
    narrow = _in_terminal(80, "inbox", **bob)
    assert max(cell_len(line) for line in narrow) <= 80, "\n".join(narrow)
    rows = [line for line in narrow if any(i[:8] in line for i in ids)]
    assert len(rows) == len(ids)  # one line each: nothing wrapped onto a second line
    assert all(i not in "\n".join(narrow) for i in ids)  # the short id only
    assert "…" in "\n".join(narrow)
    assert "short" in "\n".join(narrow) and "now" in "\n".join(narrow)

    wide = _in_terminal(160, "inbox", **bob)
    assert max(cell_len(line) for line in wide) <= 160
    text = "\n".join(wide)
    assert all(i in text for i in ids) and "status" in text and "pending" in text
    assert "inbox" in text and "tags" in text

    plain = _in_terminal(80, "inbox", NO_COLOR="1", **bob)
    assert max(cell_len(line) for line in plain) <= 80


def test_inbox_without_a_terminal_has_no_colour(tmp_path, live_server):
    bob, _ = _mailbox(tmp_path, live_server)
    piped = flux("inbox", **bob)
    assert piped.returncode == 0 and "\x1b[" not in piped.stdout


def test_relative_time_and_flags():
    now = datetime(2026, 6, 15, 12, 0, tzinfo=UTC).astimezone()

    def ms(delta):
        return int((now - delta).timestamp() * 1000)

    assert relative_time(ms(timedelta(seconds=5)), now) == "now"
    assert relative_time(ms(timedelta(minutes=5)), now) == "5m ago"
    assert relative_time(ms(timedelta(hours=3)), now) == "3h ago"
    assert len(relative_time(ms(timedelta(days=40)), now)) == 6  # "May 06"
    assert relative_time(ms(timedelta(days=800)), now).startswith("2024-")
    assert relative_time(None, now) == "?"
    assert flags({"_status": "pending", "encrypted": True, "re": "x", "_tags": ["a"]}) == "NErT"
    assert flags({"_status": "read"}) == "R"
    listed = [{"id": 1, "_status": "read"}, {"id": 2, "_status": "delivered"},
              {"id": 3, "_status": "pending"}, {"id": 4, "_status": "read"}]  # fmt: skip
    assert [m["id"] for m in unread_first(listed)] == [2, 3, 1, 4]
