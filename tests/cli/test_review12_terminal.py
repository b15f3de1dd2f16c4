"""Review of issue 12: hostile message text never drives the reader's terminal, and rich
markup in it is shown as text.

A subject or body is anyone's words. Printed raw, ESC sequences would clear the screen,
retitle the window or rewrite lines above ("✓ signature verifies"), and bidi controls
reorder what is shown; `[/x]` in a subject must not be read as rich markup (which fails
the command or styles it). Checked against a real server with the commands a person uses
(`inbox`, `read`, `thread`, `sent`, `status`, `reply`, the `--json` forms), plus the pure
helpers of flux/cli/safe_text.py.
"""

from __future__ import annotations

import io
import json
import re

from cli_helpers import flux, registered_keys, user_env
from rich.table import Table
from rich.text import Text

from flux.cli.safe_text import SafeConsole, block, json_text, one_line

#: a window title, a screen clear, a cursor jump with a forged line, an 8-bit CSI (C1), a
#: bidi override, a BEL and a DEL
HOSTILE = "\x1b]0;owned\x07\x1b[2J\x1b[1A✓ signature verifies\x9b31m\u202egpj.exe\u202c\x07\x7f"
MARKUP = "[/oops] [link=https://evil.example]click[/link] [bold red]"
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _no_raw_controls(text: str) -> None:
    assert not RAW.search(text), repr(text)


def test_hostile_subjects_and_bodies_are_shown_inert(tmp_path, live_server):
    env = user_env(tmp_path, live_server)
    (alice_key, _), (bob_key, bob) = registered_keys(tmp_path, env, "alice", "bob")
    alice_env = {**env, "FLUX_KEY": str(alice_key)}
    bob_env = {**env, "FLUX_KEY": str(bob_key)}

    subject = f"{HOSTILE} {MARKUP}"
    sent = flux("send", bob, f"line one\n{HOSTILE}\n{MARKUP}", "--subject", subject, **alice_env)
    assert sent.returncode == 0, sent.stderr
    message_id = re.search(r"sent ([0-9a-f]{32})", sent.stdout).group(1)
    short_id = message_id[:8]

    # every human form: exit 0, no control character on stdout (NO_COLOR, TERM=dumb: rich
    # writes none of its own), the markup shown as text
    for args, who in (
        (("inbox",), bob_env),
        (("read", short_id), bob_env),
        (("thread", short_id), bob_env),
        (("sent",), alice_env),
        (("status", short_id), alice_env),
    ):
        shown = flux(*args, **who)
        assert shown.returncode == 0, (args, shown.stderr)
        _no_raw_controls(shown.stdout)
        _no_raw_controls(shown.stderr)
        assert "\ufffd" in shown.stdout, (args, shown.stdout)
        assert "[/oops]" in shown.stdout or args == ("inbox",), (args, shown.stdout)

    read = flux("read", short_id, "--no-mark", **bob_env)
    assert "[link=https://evil.example]click[/link]" in read.stdout  # not a link: the text
    assert "line one" in read.stdout  # a body keeps its lines

    # the JSON forms keep every character (the same value), escaped so none acts raw
    for args, who in (
        (("inbox", "--json"), bob_env),
        (("thread", short_id, "--json"), bob_env),
        (("sent", "--json"), alice_env),
        (("status", short_id, "--json"), alice_env),
    ):
        shown = flux(*args, **who)
        assert shown.returncode == 0, (args, shown.stderr)
        _no_raw_controls(shown.stdout.replace("\n", ""))
        value = json.loads(shown.stdout)
        first = value[0] if isinstance(value, list) else value
        assert first["subject"] == subject
    stored = flux("read", short_id, "--json", "--no-mark", **bob_env)
    _no_raw_controls(stored.stdout.rstrip("\n"))
    assert json.loads(stored.stdout)["subject"] == subject
    verified = tmp_path / "m.json"
    verified.write_text(stored.stdout)
    assert flux("verify", str(verified), **env).returncode == 0  # still what was signed

    # a reply to it (Re: the hostile subject) is announced inert too
    answered = flux("reply", short_id, "thanks", **bob_env)
    assert answered.returncode == 0, answered.stderr
    _no_raw_controls(answered.stdout)


def test_one_line_block_and_json_text():
    assert one_line("a\n\tb\x1b[2Jc\u202e") == "a b\ufffd[2Jc\ufffd"
    assert block("a\r\nb\tc\x1bd\x9b") == "a\nb\tc\ufffdd\ufffd"
    value = {"s": HOSTILE, "plain": "é ✓ 🎉 \u00a0"}
    text = json_text(value, indent=2)
    _no_raw_controls(text.replace("\n", ""))
    assert json.loads(text) == value
    assert "é ✓ 🎉" in text  # not ASCII-escaped: only what could act on a terminal
    compact = json_text(value, separators=(",", ":"))
    assert json.loads(compact) == value and "\n" not in compact


def test_safe_console_cleans_every_renderable_but_keeps_its_own_styles():
    sink = io.StringIO()
    console = SafeConsole(file=sink, force_terminal=True, color_system="standard", width=60)
    table = Table("subject")
    table.add_row(Text(HOSTILE))
    console.print(Text(HOSTILE, style="bold"))
    console.print(table)
    console.print(f"[green]ok[/] {HOSTILE}", markup=False)
    written = sink.getvalue()
    # rich's own escapes (SGR colours) remain, none from the text: no OSC, no clear, no
    # cursor move, no C1, no bidi, no BEL, no DEL
    assert "\x1b[1m" in written  # bold, rich's own
    assert "\x1b]" not in written and "\x1b[2J" not in written and "\x1b[1A" not in written
    _no_raw_controls(re.sub(r"\x1b\[[0-9;]*m", "", written).replace("\n", ""))


def test_watch_shows_hostile_mail_inert(tmp_path, live_server):
    from cli_helpers import Running

    env = user_env(tmp_path, live_server)
    (alice_key, _), (bob_key, bob) = registered_keys(tmp_path, env, "alice", "bob")
    watcher = Running("watch", FLUX_KEY=str(bob_key), forked=True, **env)
    try:
        watcher.wait_for(r"^watching fx1")
        sent = flux("send", bob, f"ping {HOSTILE}", "--subject", f"s {MARKUP}",
                    FLUX_KEY=str(alice_key), **env)  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        line = watcher.wait_for("ping").string
        _no_raw_controls(line)
        assert "[/oops]" in line and "\ufffd" in line
    finally:
        assert watcher.interrupt() in (0, 130)
        watcher.kill()


def test_tags_and_folders_are_never_markup(tmp_path, live_server):
    """A sender's tags arrive with the message; `[/x]` in one used to fail the recipient's
    wide `flux inbox` (rich read the cell as markup: MarkupError) and so would a folder."""
    env = user_env(tmp_path, live_server)
    (alice_key, _), (bob_key, bob) = registered_keys(tmp_path, env, "alice", "bob")
    sent = flux("send", bob, "x", "--tag", "[/x]", "--tag", "[bold]b", "--key", str(alice_key),
                **env)  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    message_id = re.search(r"sent ([0-9a-f]{32})", sent.stdout).group(1)
    bob_env = {**env, "FLUX_KEY": str(bob_key)}
    assert flux("move", message_id[:8], "[red]f", **bob_env).returncode == 0
    for args in (("inbox",), ("folders",), ("read", message_id[:8]), ("thread", message_id[:8])):
        shown = flux(*args, **bob_env, COLUMNS="200")  # wide: the tags and folder columns
        assert shown.returncode == 0, (args, shown.stderr)
        assert "[red]f" in shown.stdout or args[0] in ("read", "thread"), shown.stdout
    wide = flux("inbox", **bob_env, COLUMNS="200").stdout
    assert "[/x]" in wide and "[bold]b" in wide
